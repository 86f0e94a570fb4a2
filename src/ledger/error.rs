//! The ledger's errors, and the one vocabulary for a broken hash chain ([`ChainBreak`]) that
//! recovery, the offline check, reads, the writer and replica apply all speak.

use crate::integrity::TxId;
use crate::storage::{Corruption, StorageError};
use std::path::PathBuf;

/// How a tx record fails to extend the chain it must, or to agree with itself. The same
/// words whether recovery, the offline check, a read or a replica finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    /// Its tx id is not the one its position needs (the next id, or the id it is filed under).
    #[error("its tx id is not the one its position needs")]
    Id,
    /// Its previous Alh is not the Alh of the tx before it.
    #[error("its previous Alh is not the previous tx's Alh")]
    PrevAlh,
    /// Its history size or root is not the history tree's over every earlier Alh.
    #[error("its history root is not the history tree's")]
    HistoryRoot,
    /// Its timestamp is before the previous tx's.
    #[error("its timestamp is before the previous tx's")]
    Timestamp,
    /// A value does not hash to its stored value hash.
    #[error("a value does not match its stored hash")]
    ValueHash,
    /// Its entries do not hash to its entries root.
    #[error("its entries do not hash to its entries root")]
    EntriesRoot,
    /// Its stored Alh is not the Alh of its header.
    #[error("its stored Alh is not its header's")]
    Alh,
    /// Its epoch is below the previous tx's: history written by a primary that a newer one
    /// had already replaced.
    #[error("its epoch is below the previous tx's")]
    Epoch,
    /// Its map root is not the root of the key map after its entries are applied to the map
    /// before it.
    #[error("its map root is not the key map's after its entries")]
    MapRoot,
}

/// What is wrong with a stored tx.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxFault {
    /// Its frame is damaged (checksums, length, truncation).
    #[error(transparent)]
    Frame(Corruption),
    /// Its record does not decode.
    #[error("undecodable record: {0}")]
    Decode(&'static str),
    /// It does not chain, or does not agree with itself.
    #[error(transparent)]
    Chain(ChainBreak),
}

/// Derived or indexed data that contradicts the log (the log is the truth).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    /// A value at an indexed location does not match its stored hash.
    #[error("a value does not match its stored hash")]
    ValueHash,
    /// An index entry points at something other than its key's entry in the log (another
    /// key's, another tx's, or no entry at all).
    #[error("the index points at something other than this key's entry")]
    IndexEntry,
    /// An index run's record differs from the log's entry for its key and tx.
    #[error("an index run's record differs from the log")]
    IndexRun,
    /// An index run holds a record for an entry the log does not have.
    #[error("an index run holds a record the log does not have")]
    IndexExtra,
    /// A stored history node differs from the tree recomputed from the log.
    #[error("a history node differs from the tree recomputed from the log")]
    HistoryNode,
    /// A stored tx location differs from where the log holds the tx.
    #[error("a tx location differs from the log")]
    TxLocation,
    /// The checkpoint names a tx or an Alh the log does not have.
    #[error("the checkpoint does not match the log")]
    Checkpoint,
    /// A stored node or root of the key map differs from the map recomputed from the log.
    #[error("a key map node or root differs from the map recomputed from the log")]
    MapNode,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("tx {tx} in {path} at offset {offset} is bad: {reason}")]
    BadTx {
        tx: TxId,
        path: PathBuf,
        offset: u64,
        reason: TxFault,
    },
    #[error("{path} at offset {offset}: {reason}")]
    Damaged {
        path: PathBuf,
        offset: u64,
        reason: Damage,
    },
    #[error("a transaction needs at least one entry")]
    EmptyTx,
    #[error("{count} entries in one transaction; the limit is {max}")]
    TooManyEntries { count: usize, max: usize },
    #[error("entry {index}: the key is empty")]
    EmptyKey { index: usize },
    #[error("entry {index}: key of {len} bytes; the limit is {max}")]
    KeyTooLong {
        index: usize,
        len: usize,
        max: usize,
    },
    #[error("entry {index}: value of {len} bytes; the limit is {max}")]
    ValueTooLarge {
        index: usize,
        len: usize,
        max: usize,
    },
    #[error("entry {index}: the key appears twice in one transaction")]
    DuplicateKey { index: usize },
    #[error("transaction of {bytes} bytes encoded; the limit is {max}")]
    TxTooLarge { bytes: usize, max: usize },
    #[error("entry {index}: a delete carries no value")]
    DeleteWithValue { index: usize },
    /// A streamed value whose bytes do not add up to the length announced first.
    #[error("the value was announced as {announced} bytes and {received} were sent")]
    ValueLength { announced: usize, received: usize },
    /// StreamGet of a reference (read it with Get, which follows it).
    #[error("the key is a reference: read it with Get, or stream the key it references")]
    StreamReference,
    /// A reference whose value does not name a key (docs/format.md, "References").
    #[error("entry {index}: a reference's value must be u64 at_tx then the referenced key")]
    BadReference { index: usize },
    /// An entry's metadata is a combination the format forbids.
    #[error("entry {index}: {reason}")]
    BadMetadata {
        index: usize,
        reason: crate::integrity::MetaError,
    },
    #[error("key not found")]
    KeyNotFound,
    /// A condition of the tx did not hold when it was to be committed: nothing was written.
    #[error("precondition {index} failed: {reason}")]
    PreconditionFailed { index: usize, reason: String },
    /// The version asked for is in a tx whose values were dropped (a truncation, or a
    /// digest-only replica): its hash, and every proof, remain.
    #[error("value truncated: the value written by tx {tx} was dropped (values are kept from tx {values_from} on)")]
    ValueTruncated { tx: TxId, values_from: TxId },
    /// A replicated tx record that cannot be decoded.
    #[error("malformed tx record: {reason}")]
    BadRecord { reason: &'static str },
    /// A replicated tx that does not extend this database exactly: the histories differ.
    #[error("tx {tx} does not extend this database: {reason}")]
    NotNext { tx: TxId, reason: ChainBreak },
    #[error("tx {id} does not exist; the last is {last}")]
    TxNotFound { id: TxId, last: TxId },
    /// A proof between states asked for in the wrong order (or from the empty state, which
    /// every state extends: no proof is needed).
    #[error("no proof from state {old} to state {new}: the old state must be a tx from 1 up to the new one")]
    StateOrder { old: TxId, new: TxId },
    /// The log ends before txs that `tx.idx` or `history.nodes` show were committed: their
    /// records were lost or damaged. Nothing was cut; restore the segment (from a replica or a
    /// backup), or open with `Recovery::AcceptLoss` to cut them, knowingly.
    #[error("txs {first}..={last} were committed (tx.idx or history.nodes hold their records) but the log ends at {path} offset {offset}: refusing to drop them; restore the segment from a replica or backup, or reopen accepting the loss")]
    Lost {
        first: TxId,
        last: TxId,
        path: PathBuf,
        offset: u64,
    },
    /// The index runs lack an entry of the log before the checkpoint: that key would read
    /// as absent (or older) than it is.
    #[error(
        "the index runs in {path} lack key {} of tx {tx}",
        crate::integrity::hex::encode(key)
    )]
    IndexMissing {
        path: PathBuf,
        tx: TxId,
        key: Vec<u8>,
    },
    /// A state a client trusted is not a state of this log: rolled back (the log lacks the
    /// tx) or forked (another Alh there).
    #[error("a trusted state, tx {tx} with Alh {trusted}, is not in this log: {}", match found { Some(a) => format!("it has Alh {a} there (forked)"), None => format!("it ends at tx {last} (rolled back)") })]
    StateMismatch {
        tx: TxId,
        trusted: crate::integrity::Digest,
        found: Option<crate::integrity::Digest>,
        last: TxId,
    },
    #[error("invalid option {name}: {reason}")]
    InvalidOption {
        name: &'static str,
        reason: &'static str,
    },
    #[error("a write to {path} failed ({kind}): the database refuses writes until it is reopened (chainlog database reopen; a server also reopens it once writes succeed again); the commit that met the failure may or may not have been written")]
    Poisoned {
        path: PathBuf,
        kind: std::io::ErrorKind,
    },
    #[error("the database is closed")]
    Closed,
    /// A new epoch must be above the database's current one.
    #[error(
        "epoch {asked} does not follow epoch {current}: a new epoch must be above the current one"
    )]
    EpochOrder { asked: u64, current: u64 },
    /// Keys starting with `\0chainlog/` are the database's own (the epoch marker).
    #[error("entry {index}: keys starting with \\0chainlog/ are reserved for the database itself")]
    ReservedKey { index: usize },
}

pub type Result<T, E = LedgerError> = std::result::Result<T, E>;

impl From<crate::fs::FsError> for LedgerError {
    fn from(e: crate::fs::FsError) -> LedgerError {
        LedgerError::Storage(e.into())
    }
}
