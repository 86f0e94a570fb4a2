//! One database: the only writer. Composes storage, integrity and index, and owns commit
//! order, group commit, checkpoints and recovery.
//!
//! # Files in a database directory
//!
//! ```text
//! LOCK                     advisory lock: one process per database
//! segments/NNNNNNNNNN.seg  the log: a header, then one frame per transaction
//! history.nodes            the history tree's perfect subtrees, post-order, 36-byte records
//! tx.idx                   tx id -> (segment, offset, frame length), 20-byte records
//! index/run-NNNNNNNNNN.idx the key index's sorted runs
//! checkpoint               what the files above cover, durably (replaced atomically)
//! ```
//!
//! Only the segments are the truth; everything else is derived from them and is rebuilt
//! from the log tail after a crash (at most one checkpoint interval of it).
//!
//! # Invariants
//!
//! - Tx ids are 1, 2, 3, … with no gap; tx `n` chains from Alh(n-1) and carries the root of
//!   the history tree over Alh(1..n-1) (checked at commit, at recovery and by [`check`]).
//! - A commit returns `Ok` only after its tx is written and, under [`Durability::Synced`],
//!   fsynced; readers see a tx only after that point.
//! - After an I/O error on the write path the ledger refuses further commits
//!   ([`LedgerError::Poisoned`]): what reached the disk is unknown until reopened.

mod check;
mod checkpoint;
pub mod codec;
mod recovery;
mod writer;

pub use crate::index::Order;
pub use crate::storage::{Corruption, StorageError};
pub use check::{check, check_with_progress, CheckReport};
pub use recovery::RecoveryReport;

use crate::index::{Index, Version};
use crate::integrity::merkle::{self, NodeSource};
use crate::integrity::{
    value_hash, Digest, EntryMeta, EntryProof, StateProof, TxHeader, TxId, TxProof,
};
use crate::storage::records::RecordReader;
use crate::storage::segment::SegmentReader;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};

/// The format's limits (docs/format.md), enforced at commit.
pub use crate::integrity::{ENTRIES_PER_TX_MAX, KEY_BYTES_MAX, TX_BYTES_MAX, VALUE_BYTES_MAX};

/// When a commit returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// After the tx is written and fsynced: it survives a power loss. The default.
    #[default]
    Synced,
    /// After the tx is written to the OS: it survives a crash of the process, not of the
    /// machine. Segments are still fsynced at checkpoints, rolls and close.
    Buffered,
}

/// Settings of one open database. Every field has a documented default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Default [`Durability::Synced`].
    pub durability: Durability,
    /// A segment is sealed and a new one started once it would grow past this. Default 64 MiB;
    /// 1 MiB..=1 GiB.
    pub segment_bytes_max: u64,
    /// A checkpoint is taken after this many txs. Bounds the log replayed at reopen after a
    /// crash. Default 100,000; at least 1.
    pub checkpoint_txs: u64,
    /// A checkpoint is also taken once the memtable holds this many versions. Default 250,000.
    pub memtable_versions_max: usize,
    /// Runs are merged by size tiers (four of a size become one); more than this many are
    /// merged whole. Bounds the files a lookup may search. Default 16; at least 1.
    pub runs_max: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            durability: Durability::Synced,
            segment_bytes_max: 64 << 20,
            checkpoint_txs: 100_000,
            memtable_versions_max: 250_000,
            runs_max: 16,
        }
    }
}

impl Options {
    pub fn validate(&self) -> Result<(), LedgerError> {
        let bad = |name, reason| Err(LedgerError::InvalidOption { name, reason });
        if !(1 << 20..=1 << 30).contains(&self.segment_bytes_max) {
            return bad("segment_bytes_max", "must be between 1 MiB and 1 GiB");
        }
        if self.checkpoint_txs == 0 {
            return bad("checkpoint_txs", "must be at least 1");
        }
        if self.memtable_versions_max == 0 {
            return bad("memtable_versions_max", "must be at least 1");
        }
        if self.runs_max == 0 {
            return bad("runs_max", "must be at least 1");
        }
        Ok(())
    }
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
        reason: Corruption,
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
    #[error("key not found")]
    KeyNotFound,
    /// A replicated tx record that cannot be decoded.
    #[error("malformed tx record: {reason}")]
    BadRecord { reason: &'static str },
    /// A replicated tx that does not extend this database exactly: the histories differ.
    #[error("tx {tx} does not extend this database: {reason}")]
    NotNext { tx: TxId, reason: &'static str },
    #[error("tx {id} does not exist; the last is {last}")]
    TxNotFound { id: TxId, last: TxId },
    #[error("invalid option {name}: {reason}")]
    InvalidOption {
        name: &'static str,
        reason: &'static str,
    },
    #[error("a write to {path} failed earlier ({kind}); reopen the database")]
    Poisoned {
        path: PathBuf,
        kind: std::io::ErrorKind,
    },
    #[error("the database is closed")]
    Closed,
}

pub type Result<T, E = LedgerError> = std::result::Result<T, E>;

/// An entry to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub meta: EntryMeta,
}

impl NewEntry {
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> NewEntry {
        NewEntry {
            key: key.into(),
            value: value.into(),
            meta: EntryMeta::default(),
        }
    }

    pub fn delete(key: impl Into<Vec<u8>>) -> NewEntry {
        NewEntry {
            key: key.into(),
            value: Vec::new(),
            meta: EntryMeta { deleted: true },
        }
    }
}

/// A verified state of a database: the id and Alh of its last tx (0 and `ALH_GENESIS` when
/// empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    pub tx_id: TxId,
    pub alh: Digest,
}

/// A value as read, with the tx that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub tx: TxId,
}

/// One version in the history of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVersion {
    pub tx: TxId,
    pub deleted: bool,
    pub value: Vec<u8>,
}

/// A committed transaction with its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tx {
    pub header: TxHeader,
    pub alh: Digest,
    pub entries: Vec<TxEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxEntry {
    pub key: Vec<u8>,
    pub meta: EntryMeta,
    pub value: Vec<u8>,
    pub value_hash: Digest,
}

impl TxEntry {
    pub fn digest(&self) -> Digest {
        crate::integrity::entry_digest(&self.key, self.meta, &self.value_hash)
    }
}

/// tx.idx record: u32 segment | u32 frame length | u64 offset.
pub(crate) type TxLocation = [u8; 16];

/// The header and Alh at the start of a tx record, as [`Ledger::records`] gives them; nothing
/// is checked but the layout ([`Ledger::apply_records`] checks the rest).
pub fn record_header(record: &[u8]) -> Result<(TxHeader, Digest)> {
    codec::decode_header(record).map_err(|reason| LedgerError::BadRecord { reason })
}

pub(crate) fn encode_location(segment: u32, offset: u64, frame_len: u32) -> TxLocation {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&segment.to_le_bytes());
    b[4..8].copy_from_slice(&frame_len.to_le_bytes());
    b[8..].copy_from_slice(&offset.to_le_bytes());
    b
}

pub(crate) fn decode_location(b: &TxLocation) -> (u32, u64, u32) {
    let w = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut o = [0u8; 8];
    o.copy_from_slice(&b[8..]);
    (w(0), u64::from_le_bytes(o), w(4))
}

/// What readers see: only durable, committed txs.
struct View {
    last: Option<TxHeader>,
    state: State,
    segments: BTreeMap<u32, SegmentReader>,
}

/// The history tree's nodes as the readers reach them. Nodes at `CACHED_LEVEL_MIN` and above
/// (one per 16 txs or fewer) are kept in memory once read: every proof passes through the
/// upper levels, and a stored node never changes.
struct HistoryNodes {
    file: RecordReader<32>,
    cache: RwLock<std::collections::HashMap<u64, Digest>>,
}

const CACHED_LEVEL_MIN: u32 = 4;
/// At most this many cached nodes (about 48 MiB); the cache is emptied when full.
const CACHED_NODES_MAX: usize = 1 << 20;

impl HistoryNodes {
    fn new(file: RecordReader<32>) -> HistoryNodes {
        HistoryNodes {
            file,
            cache: RwLock::default(),
        }
    }
}

impl NodeSource for HistoryNodes {
    type Error = StorageError;
    fn perfect_node(&self, level: u32, index: u64) -> Result<Digest, StorageError> {
        let pos = merkle::postorder_position(level, index);
        if level < CACHED_LEVEL_MIN {
            return self.file.read(pos).map(Digest);
        }
        if let Some(d) = lock_poisoned(self.cache.read()).get(&pos) {
            return Ok(*d);
        }
        let d = Digest(self.file.read(pos)?);
        let mut cache = lock_poisoned(self.cache.write());
        if cache.len() >= CACHED_NODES_MAX {
            cache.clear();
        }
        cache.insert(pos, d);
        Ok(d)
    }
}

pub(crate) struct Shared {
    /// Held from open until close.
    lock: Mutex<Option<crate::storage::fs::DirLock>>,
    dir: PathBuf,
    options: Options,
    view: RwLock<View>,
    index: RwLock<Index>,
    history: HistoryNodes,
    locations: RecordReader<16>,
    queue: Mutex<writer::Queue>,
    queue_signal: Condvar,
    /// Bumped by the writer each time it has filled the outcome slots of a group.
    done_generation: Mutex<u64>,
    done_signal: Condvar,
    /// The last committed tx id, for async waiters (replication streams).
    published: tokio::sync::watch::Sender<TxId>,
}

impl Shared {
    /// Runs `f` with the directory lock, which maps of sealed files need as evidence; the
    /// ledger is closed once it is released.
    fn locked<T>(
        &self,
        f: impl FnOnce(&crate::storage::fs::DirLock) -> Result<T, StorageError>,
    ) -> Result<T> {
        match lock_poisoned(self.lock.lock()).as_ref() {
            Some(l) => Ok(f(l)?),
            None => Err(LedgerError::Closed),
        }
    }
}

/// Replicated txs queued to the writer by [`Ledger::apply_records_queued`].
#[must_use = "the txs are applied only when the writer gets to them: wait for the outcome"]
pub struct Queued {
    receivers: Vec<tokio::sync::oneshot::Receiver<Result<TxHeader>>>,
    /// A tx that failed verification: it and the txs after it were never queued.
    prepare_error: Option<LedgerError>,
}

impl Queued {
    /// Waits until the writer has stored (or refused) every queued tx; returns the headers
    /// applied and the first error, if any.
    pub async fn wait(self) -> (Vec<TxHeader>, Option<LedgerError>) {
        let mut applied = Vec::with_capacity(self.receivers.len());
        let mut first_error = None;
        for r in self.receivers {
            match r.await.unwrap_or(Err(LedgerError::Closed)) {
                Ok(h) if first_error.is_none() => applied.push(h),
                Ok(_) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        // A refusal in the queue comes before any tx that failed to prepare (those were never
        // queued, and come after every queued one).
        (applied, first_error.or(self.prepare_error))
    }
}

/// An open database. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Ledger {
    shared: Arc<Shared>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    recovery: RecoveryReport,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("dir", &self.shared.dir)
            .finish()
    }
}

fn lock_poisoned<T>(r: std::sync::LockResult<T>) -> T {
    // A panic while holding a lock leaves consistent data here (every writer publishes by
    // swapping whole values), so a poisoned lock is read through.
    r.unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Ledger {
    /// Opens the database in `dir`, creating it if absent, and recovers from a crash if the
    /// last run ended in one (see [`Ledger::recovery`]).
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Ledger> {
        options.validate()?;
        recovery::open(dir.as_ref(), options)
    }

    /// What opening found and repaired.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The current state: id and Alh of the last committed tx.
    pub fn state(&self) -> State {
        lock_poisoned(self.shared.view.read()).state
    }

    /// Follows the last committed tx id as it changes, without polling.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<TxId> {
        self.shared.published.subscribe()
    }

    /// Waits until tx `tx` is committed, at most `timeout`; whether it is.
    pub fn wait_for(&self, tx: TxId, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut generation = lock_poisoned(self.shared.done_generation.lock());
        loop {
            if self.state().tx_id >= tx {
                return true;
            }
            let now = std::time::Instant::now();
            if now >= deadline || lock_poisoned(self.shared.queue.lock()).closing {
                return false;
            }
            generation = lock_poisoned(
                self.shared
                    .done_signal
                    .wait_timeout(generation, deadline - now),
            )
            .0;
        }
    }

    /// The header of the last committed tx, if any.
    pub fn last_header(&self) -> Option<TxHeader> {
        lock_poisoned(self.shared.view.read()).last
    }

    /// Commits `entries` as one transaction and returns its header once it is durable.
    /// Blocks; many threads may commit at once and share one fsync.
    pub fn commit(&self, entries: Vec<NewEntry>) -> Result<TxHeader> {
        let prepared = writer::prepare(entries)?;
        writer::submit(&self.shared, prepared)
    }

    /// [`Ledger::commit`] for async callers: the task waits, no thread does. Validation and
    /// hashing run on the calling task (on a blocking thread for txs over 64 KiB of values).
    pub async fn commit_async(&self, entries: Vec<NewEntry>) -> Result<TxHeader> {
        let bytes: usize = entries.iter().map(|e| e.key.len() + e.value.len()).sum();
        let prepared = if bytes > 64 << 10 {
            tokio::task::spawn_blocking(move || writer::prepare(entries))
                .await
                .map_err(|_| LedgerError::Closed)??
        } else {
            writer::prepare(entries)?
        };
        let done = writer::submit_async(&self.shared, prepared)?;
        done.await.unwrap_or(Err(LedgerError::Closed))
    }

    /// Most records [`Ledger::apply_records`] verifies on the calling task rather than on a
    /// blocking thread.
    pub const APPLY_INLINE_TXS_MAX: usize = 16;

    /// Appends txs copied from another database (a replica applying its primary's log), given
    /// as the records their source stores ([`Ledger::records`]), in order and queued together
    /// so that they share group commits. A record is written only if it is well formed, its
    /// values match their hashes, its entries hash to its entries root, its Alh matches, and
    /// it extends this database exactly (next id, previous Alh, history root); the first that
    /// does not is refused ([`LedgerError::NotNext`] when the histories differ) with every
    /// record after it. The stored txs are byte-identical to the source's. Returns the headers
    /// applied and that error, if any.
    pub async fn apply_records(&self, records: Vec<Bytes>) -> (Vec<TxHeader>, Option<LedgerError>) {
        self.apply_records_queued(records).await.wait().await
    }

    /// The first half of [`Ledger::apply_records`]: verifies `records` and queues them to the
    /// writer, then returns at once, so that a replica can verify its next batch while the
    /// writer stores this one. Batches queued one after another are applied in that order.
    pub async fn apply_records_queued(&self, records: Vec<Bytes>) -> Queued {
        let inline = records.len() <= Self::APPLY_INLINE_TXS_MAX;
        let prepare = move || {
            let mut out = Vec::with_capacity(records.len());
            for r in records {
                match writer::prepare_record(r) {
                    Ok(p) => out.push(p),
                    Err(e) => return (out, Some(e)),
                }
            }
            (out, None)
        };
        // A few txs are hashed in place (microseconds): a hop to a blocking thread would cost
        // more than it saves, and it lengthens every synchronous commit on the primary.
        let (prepared, prepare_error) = if inline {
            prepare()
        } else {
            match tokio::task::spawn_blocking(prepare).await {
                Ok(p) => p,
                Err(_) => (Vec::new(), Some(LedgerError::Closed)),
            }
        };
        match writer::submit_all_async(&self.shared, prepared) {
            Ok(receivers) => Queued {
                receivers,
                prepare_error,
            },
            Err(e) => Queued {
                receivers: Vec::new(),
                prepare_error: Some(e),
            },
        }
    }

    /// Blocking [`Ledger::apply_records`] for one tx given by its parts: the same header, Alh
    /// and entries as the source's tx, encoded into its record first.
    pub fn apply(&self, header: TxHeader, alh: Digest, entries: Vec<NewEntry>) -> Result<TxHeader> {
        let record = codec::encode_record(&header, &alh, &entries);
        let prepared = writer::prepare_record(record.into())?;
        writer::submit(&self.shared, prepared)
    }

    /// Logically deletes `keys` in one transaction. Fails with [`LedgerError::KeyNotFound`] if
    /// one of them is not live.
    pub fn delete(&self, keys: &[&[u8]]) -> Result<TxHeader> {
        for k in keys {
            if self.get(k)?.is_none() {
                return Err(LedgerError::KeyNotFound);
            }
        }
        self.commit(keys.iter().map(|k| NewEntry::delete(k.to_vec())).collect())
    }

    /// The live value of `key`, or `None` if it was never set or is deleted.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        self.get_at(key, TxId::MAX)
    }

    /// The value of `key` as of tx `tx` (the newest version written by a tx `<= tx`).
    pub fn get_at(&self, key: &[u8], tx: TxId) -> Result<Option<KeyValue>> {
        let v = lock_poisoned(self.shared.index.read()).get(key, tx)?;
        match v {
            Some(v) if !v.deleted => Ok(Some(KeyValue {
                key: key.to_vec(),
                value: self.value(&v)?,
                tx: v.tx,
            })),
            _ => Ok(None),
        }
    }

    /// Versions of `key`, deletions included, skipping `offset`, at most `limit`.
    pub fn history(
        &self,
        key: &[u8],
        offset: u64,
        limit: usize,
        order: Order,
    ) -> Result<Vec<KeyVersion>> {
        let versions =
            lock_poisoned(self.shared.index.read()).history(key, offset, limit, order)?;
        versions
            .iter()
            .map(|v| {
                Ok(KeyVersion {
                    tx: v.tx,
                    deleted: v.deleted,
                    value: self.value(v)?,
                })
            })
            .collect()
    }

    /// Live keys starting with `prefix`, after the key `after` if given, in `order`, at most
    /// `limit`, as of tx `as_of` (`TxId::MAX` for the latest).
    pub fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        order: Order,
        as_of: TxId,
    ) -> Result<Vec<KeyValue>> {
        let found =
            lock_poisoned(self.shared.index.read()).scan(prefix, after, limit, order, as_of)?;
        found
            .into_iter()
            .map(|(key, v)| {
                Ok(KeyValue {
                    value: self.value(&v)?,
                    key,
                    tx: v.tx,
                })
            })
            .collect()
    }

    fn segment(&self, id: u32) -> Result<SegmentReader> {
        let view = lock_poisoned(self.shared.view.read());
        view.segments.get(&id).cloned().ok_or_else(|| {
            LedgerError::Storage(StorageError::corrupt(
                self.shared
                    .dir
                    .join("segments")
                    .join(crate::storage::segment::file_name(id)),
                0,
                Corruption::ShortFile,
            ))
        })
    }

    /// Reads a value and checks it against its stored hash.
    fn value(&self, v: &Version) -> Result<Vec<u8>> {
        let seg = self.segment(v.value.segment)?;
        let bytes = seg.read(u64::from(v.value.offset), 32 + v.value.len as usize)?;
        let (stored, value) = bytes.split_at(32);
        if value_hash(value).0 != stored {
            return Err(StorageError::corrupt(
                seg.path(),
                u64::from(v.value.offset),
                Corruption::ValueHash,
            )
            .into());
        }
        Ok(value.to_vec())
    }

    fn check_committed(&self, id: TxId) -> Result<()> {
        let last = self.state().tx_id;
        if id == 0 || id > last {
            return Err(LedgerError::TxNotFound { id, last });
        }
        Ok(())
    }

    /// Reads and decodes tx `id`, checking its frame checksum and its Alh.
    fn read_tx<T>(&self, id: TxId, f: impl FnOnce(codec::TxRecord<'_>) -> T) -> Result<T> {
        self.check_committed(id)?;
        let (segment, offset, frame_len) = decode_location(&self.shared.locations.read(id - 1)?);
        let seg = self.segment(segment)?;
        let payload = seg.read_frame(offset, frame_len as usize)?;
        let bad = |reason| LedgerError::BadTx {
            tx: id,
            path: seg.path().to_path_buf(),
            offset,
            reason,
        };
        let rec = codec::decode(&payload).map_err(|r| bad(Corruption::Decode(r)))?;
        if rec.header.id != id {
            return Err(bad(Corruption::Chain("tx id differs from its position")));
        }
        if rec.header.alh() != rec.alh {
            return Err(bad(Corruption::Chain(
                "stored Alh differs from the header's",
            )));
        }
        Ok(f(rec))
    }

    /// The stored records of txs `from..=to` (header, Alh and entries, docs/format.md) for
    /// another database to apply: the first (if `from <= to`), then no more once they reach
    /// `bytes_max`. Each frame's checksum is checked; the hashes are left to the receiver,
    /// which checks them all before applying. Consecutive frames are read together.
    pub fn records(&self, from: TxId, to: TxId, bytes_max: usize) -> Result<Vec<Bytes>> {
        self.check_committed(from)?;
        self.check_committed(to)?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut id = from;
        while id <= to && (out.is_empty() || bytes < bytes_max) {
            // One run: consecutive frames in one segment, within the byte budget.
            let (segment, start, first_len) = decode_location(&self.shared.locations.read(id - 1)?);
            let mut lens = vec![first_len];
            let mut end = start + u64::from(first_len);
            loop {
                let next = id + lens.len() as u64;
                if next > to || bytes + (end - start) as usize >= bytes_max {
                    break;
                }
                let (s, offset, len) = decode_location(&self.shared.locations.read(next - 1)?);
                if s != segment || offset != end {
                    break;
                }
                lens.push(len);
                end += u64::from(len);
            }
            let seg = self.segment(segment)?;
            let run = Bytes::from(seg.read(start, (end - start) as usize)?.into_owned());
            let mut at = 0usize;
            for len in lens {
                let offset = start + at as u64;
                let bad = |reason| LedgerError::BadTx {
                    tx: id,
                    path: seg.path().to_path_buf(),
                    offset,
                    reason,
                };
                let frame = &run[at..at + len as usize];
                let payload = crate::storage::frame::decode_exact(frame).map_err(bad)?;
                let (header, _) =
                    codec::decode_header(payload).map_err(|r| bad(Corruption::Decode(r)))?;
                if header.id != id {
                    return Err(bad(Corruption::Chain("tx id differs from its position")));
                }
                let from = at + crate::storage::frame::FRAME_HEADER_BYTES;
                out.push(run.slice(from..from + payload.len()));
                bytes += len as usize;
                at += len as usize;
                id += 1;
            }
        }
        Ok(out)
    }

    /// The header of tx `id`.
    pub fn header(&self, id: TxId) -> Result<TxHeader> {
        self.read_tx(id, |r| r.header)
    }

    /// Tx `id` with all its entries.
    pub fn tx(&self, id: TxId) -> Result<Tx> {
        self.read_tx(id, |r| Tx {
            header: r.header,
            alh: r.alh,
            entries: r
                .entries
                .iter()
                .map(|e| TxEntry {
                    key: e.key.to_vec(),
                    meta: e.meta,
                    value: e.value.to_vec(),
                    value_hash: e.value_hash,
                })
                .collect(),
        })?
        .check_values(self)
    }

    /// Proof that the entry for `key` is in tx `id`, with that entry.
    pub fn entry_proof(&self, id: TxId, key: &[u8]) -> Result<(TxEntry, EntryProof)> {
        let tx = self.tx(id)?;
        let leaves: Vec<Digest> = tx
            .entries
            .iter()
            .map(|e| merkle::leaf_hash(&e.digest().0))
            .collect();
        let index = tx
            .entries
            .iter()
            .position(|e| e.key == key)
            .ok_or(LedgerError::KeyNotFound)?;
        let proof = EntryProof {
            index: index as u32,
            entry_count: tx.header.entry_count,
            path: merkle::path_of_leaf(&leaves, index),
        };
        Ok((tx.entries[index].clone(), proof))
    }

    /// Proof that tx `id` is in the state at tx `state` (`id <= state`).
    pub fn tx_proof(&self, id: TxId, state: TxId) -> Result<TxProof> {
        self.check_committed(state)?;
        if id > state {
            return Err(LedgerError::TxNotFound { id, last: state });
        }
        let tx = self.header(id)?;
        let state_header = self.header(state)?;
        let path = if id == state {
            Vec::new()
        } else {
            self.inclusion_path(id - 1, state - 1)?
        };
        Ok(TxProof {
            tx,
            state: state_header,
            path,
        })
    }

    /// Proof that the state at tx `new` extends the state at tx `old` (`1 <= old <= new`).
    pub fn state_proof(&self, old: TxId, new: TxId) -> Result<StateProof> {
        self.check_committed(new)?;
        if old == 0 || old > new {
            return Err(LedgerError::TxNotFound { id: old, last: new });
        }
        let (old_h, new_h) = (self.header(old)?, self.header(new)?);
        if old == new {
            return Ok(StateProof {
                old: old_h,
                new: new_h,
                inclusion: Vec::new(),
                consistency: Vec::new(),
            });
        }
        Ok(StateProof {
            old: old_h,
            new: new_h,
            inclusion: self.inclusion_path(old - 1, new - 1)?,
            consistency: self.consistency_path(old - 1, new - 1)?,
        })
    }

    /// Audit path of leaf `leaf` (Alh of tx `leaf + 1`) in the history tree of `size` leaves.
    pub fn inclusion_path(&self, leaf: u64, size: u64) -> Result<Vec<Digest>> {
        self.check_tree_size(size)?;
        if leaf >= size {
            return Err(LedgerError::TxNotFound {
                id: leaf + 1,
                last: size,
            });
        }
        Ok(merkle::inclusion_path(&self.shared.history, leaf, size)?)
    }

    /// Consistency proof of the history tree from `old_size` to `new_size` leaves.
    pub fn consistency_path(&self, old_size: u64, new_size: u64) -> Result<Vec<Digest>> {
        self.check_tree_size(new_size)?;
        if old_size > new_size {
            return Err(LedgerError::TxNotFound {
                id: old_size,
                last: new_size,
            });
        }
        Ok(merkle::consistency_path(
            &self.shared.history,
            old_size,
            new_size,
        )?)
    }

    /// Root of the history tree over the first `size` Alhs.
    pub fn history_root(&self, size: u64) -> Result<Digest> {
        self.check_tree_size(size)?;
        Ok(merkle::subtree_root(&self.shared.history, 0, size)?)
    }

    fn check_tree_size(&self, size: u64) -> Result<()> {
        let last = self.state().tx_id;
        if size > last {
            return Err(LedgerError::TxNotFound { id: size, last });
        }
        Ok(())
    }

    /// Stops the writer after the commits already queued, takes a checkpoint and syncs every
    /// file. Commits after this fail with [`LedgerError::Closed`]. Also done on drop.
    pub fn close(&self) -> Result<()> {
        writer::close(&self.shared);
        let handle = lock_poisoned(self.writer.lock()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
        lock_poisoned(self.shared.lock.lock()).take();
        match lock_poisoned(self.shared.queue.lock()).failure.clone() {
            Some((path, kind)) => Err(LedgerError::Poisoned { path, kind }),
            None => Ok(()),
        }
    }
}

/// Checks a decoded record against the chain it must extend: its id, previous Alh, history
/// root, entries root, value hashes and stored Alh. Used by recovery and by [`check`].
pub(crate) fn check_record(
    rec: &codec::TxRecord<'_>,
    id: TxId,
    prev_alh: &Digest,
    history_root: &Digest,
) -> Result<(), Corruption> {
    let h = &rec.header;
    if h.id != id {
        return Err(Corruption::Chain("tx id is not the next one"));
    }
    if h.prev_alh != *prev_alh {
        return Err(Corruption::Chain(
            "previous Alh differs from the last tx's Alh",
        ));
    }
    if h.history_size != id - 1 || h.history_root != *history_root {
        return Err(Corruption::Chain(
            "history root differs from the history tree's",
        ));
    }
    let mut digests = Vec::with_capacity(rec.entries.len());
    for e in &rec.entries {
        if value_hash(e.value) != e.value_hash {
            return Err(Corruption::ValueHash);
        }
        digests.push(crate::integrity::entry_digest(e.key, e.meta, &e.value_hash));
    }
    if crate::integrity::tx::entries_root(&digests) != h.entries_root {
        return Err(Corruption::Chain("entries root differs from the entries"));
    }
    if h.alh() != rec.alh {
        return Err(Corruption::Chain("stored Alh differs from the header's"));
    }
    Ok(())
}

impl Tx {
    /// Assert twice: the values and the entries root of a tx read back are checked again.
    fn check_values(self, ledger: &Ledger) -> Result<Tx> {
        let digests: Vec<Digest> = self.entries.iter().map(TxEntry::digest).collect();
        let root_ok = crate::integrity::tx::entries_root(&digests) == self.header.entries_root;
        for e in &self.entries {
            if !root_ok || value_hash(&e.value) != e.value_hash {
                let (segment, offset, _) =
                    decode_location(&ledger.shared.locations.read(self.header.id - 1)?);
                let seg = ledger.segment(segment)?;
                return Err(LedgerError::BadTx {
                    tx: self.header.id,
                    path: seg.path().to_path_buf(),
                    offset,
                    reason: if root_ok {
                        Corruption::ValueHash
                    } else {
                        Corruption::Chain("entries root")
                    },
                });
            }
        }
        Ok(self)
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        let _ = self.close();
    }
}
