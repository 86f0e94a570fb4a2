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
#![deny(clippy::cast_possible_truncation)]

mod chain;
mod check;
mod checkpoint;
pub mod codec;
mod error;
mod history;
mod map;
mod options;
mod prepare;
mod prove;
mod read;
mod recovery;
pub mod stats;
mod stream;
mod truncate;
mod writer;

pub use crate::index::Order;
pub use crate::storage::{Corruption, StorageError};
pub use check::{check, check_and_collect, check_with_progress, CheckReport};
pub use error::{ChainBreak, Damage, LedgerError, Result, TxFault};
pub use options::{Durability, Options, Recovery};
pub use recovery::RecoveryReport;
pub use stream::{check_value_len, StreamedEntry, ValueSource};
pub use truncate::{truncate, would_drop, Truncation};

use crate::index::Index;
use crate::integrity::{Digest, EntryMeta, TxHeader, TxId};
use crate::storage::records::RecordReader;
use crate::storage::segment::SegmentReader;
use bytes::Bytes;
use history::HistoryNodes;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};

/// The format's limits (docs/format.md), enforced at commit.
pub use crate::integrity::{ENTRIES_PER_TX_MAX, KEY_BYTES_MAX, TX_BYTES_MAX, VALUE_BYTES_MAX};

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
            meta: EntryMeta::DELETE,
        }
    }

    /// This entry, expiring at `expires_at` (seconds since the Unix epoch).
    #[must_use]
    pub fn expiring_at(mut self, expires_at: u64) -> NewEntry {
        self.meta.expires_at = Some(expires_at);
        self
    }

    /// This entry, left out of the key index (readable by its tx only).
    #[must_use]
    pub fn not_indexed(mut self) -> NewEntry {
        self.meta.not_indexed = true;
        self
    }
}

/// A tx queued by [`Ledger::enqueue`], on its way to being committed.
pub struct Committing(tokio::sync::oneshot::Receiver<Result<TxHeader>>);

impl Committing {
    /// The tx's header once it is committed (durable as the database's durability says), or
    /// why it was not.
    pub async fn wait(self) -> Result<TxHeader> {
        self.0.await.unwrap_or(Err(LedgerError::Closed))
    }
}

/// A condition on the database as it is when a tx is committed (immudb's preconditions):
/// the writer checks it in commit order, so no other tx can come between the check and the
/// commit. A tx whose condition fails is refused with [`LedgerError::PreconditionFailed`]
/// and writes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// The key has a live value (its latest version is not a delete).
    MustExist(Vec<u8>),
    /// The key has no live value (never written, or deleted).
    MustNotExist(Vec<u8>),
    /// The key's latest version (a delete included) was written by tx `tx` or before; a key
    /// never written passes. With the tx a read returned, this is compare-and-set.
    NotModifiedAfter { key: Vec<u8>, tx: TxId },
}

impl Precondition {
    pub fn key(&self) -> &[u8] {
        match self {
            Precondition::MustExist(k) | Precondition::MustNotExist(k) => k,
            Precondition::NotModifiedAfter { key, .. } => key,
        }
    }

    /// Whether the key's latest version (`tx`, `deleted`) satisfies it.
    pub(crate) fn holds(&self, latest: Option<(TxId, bool)>) -> bool {
        match self {
            Precondition::MustExist(_) => latest.is_some_and(|(_, deleted)| !deleted),
            Precondition::MustNotExist(_) => latest.is_none_or(|(_, deleted)| deleted),
            Precondition::NotModifiedAfter { tx, .. } => latest.is_none_or(|(t, _)| t <= *tx),
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
    /// Empty when `value_truncated`.
    pub value: Vec<u8>,
    pub tx: TxId,
    /// The value was dropped by a truncation (in a scan; a get fails with
    /// [`LedgerError::ValueTruncated`] instead).
    pub value_truncated: bool,
    /// The version's metadata (an expiry time, a reference).
    pub meta: EntryMeta,
}

/// One version in the history of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVersion {
    pub tx: TxId,
    pub deleted: bool,
    /// The version's metadata (`deleted` included).
    pub meta: EntryMeta,
    /// Empty when `value_truncated`.
    pub value: Vec<u8>,
    /// The value was dropped by a truncation: the version is still in the history.
    pub value_truncated: bool,
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
    /// Empty when `dropped`.
    pub value: Vec<u8>,
    pub value_hash: Digest,
    /// The value was dropped (a truncation, or a digest-only replica): only its hash is left,
    /// which is all the entry's digest needs.
    pub dropped: bool,
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

pub(crate) struct Shared {
    /// Held from open until close.
    lock: Mutex<Option<crate::fs::DirLock>>,
    dir: PathBuf,
    options: Options,
    view: RwLock<View>,
    index: RwLock<Index>,
    history: HistoryNodes,
    locations: RecordReader<16>,
    map: map::MapReader,
    queue: Mutex<writer::Queue>,
    queue_signal: Condvar,
    /// Bumped by the writer each time it has filled the outcome slots of a group.
    done_generation: Mutex<u64>,
    done_signal: Condvar,
    /// The last committed tx id, for async waiters (replication streams).
    published: tokio::sync::watch::Sender<TxId>,
    /// The writer's counters, for metrics.
    stats: stats::WriteStats,
    /// Values of txs below this one were dropped by a truncation ([`truncate()`]).
    values_from: TxId,
    /// Replicated txs are stored with their values dropped (a digest-only replica).
    digest_only: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// Runs `f` with the directory lock, which maps of sealed files need as evidence; the
    /// ledger is closed once it is released.
    fn locked<T>(
        &self,
        f: impl FnOnce(&crate::fs::DirLock) -> Result<T, StorageError>,
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

    /// Opens a database that must already exist: a missing directory or `segments/` is an
    /// error, never a new empty database (for a server's catalog, which lists what it holds).
    pub fn open_existing(dir: impl AsRef<Path>, options: Options) -> Result<Ledger> {
        let segments = dir.as_ref().join("segments");
        if !segments.is_dir() {
            return Err(StorageError::io(segments, std::io::ErrorKind::NotFound.into()).into());
        }
        Ledger::open(dir, options)
    }

    /// Whether [`Ledger::close`] was called (the server may have opened the database again
    /// as another `Ledger`: streams on this one should end).
    pub fn is_closed(&self) -> bool {
        lock_poisoned(self.shared.lock.lock()).is_none()
    }

    /// Values of txs below this one were dropped by a truncation (1 when none were).
    pub fn values_from(&self) -> TxId {
        self.shared.values_from
    }

    /// Makes [`Ledger::apply_records`] store replicated txs with their values dropped (after
    /// checking them): a digest-only replica, which keeps the chain and every proof but no
    /// value.
    pub fn set_digest_only(&self, on: bool) {
        self.shared
            .digest_only
            .store(on, std::sync::atomic::Ordering::Relaxed);
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

    /// What the writer has counted since the database was opened (commits, group sizes,
    /// fsync times).
    pub fn write_stats(&self) -> &stats::WriteStats {
        &self.shared.stats
    }

    /// Bytes the database's files take on disk (allocated blocks, so free space written
    /// ahead in the last segment counts, and sparse holes do not).
    pub fn disk_bytes(&self) -> u64 {
        fn walk(dir: &Path) -> u64 {
            use std::os::unix::fs::MetadataExt;
            let Ok(entries) = std::fs::read_dir(dir) else {
                return 0;
            };
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.blocks() * 512,
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.shared.dir)
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

    /// Whether an earlier write failed, so that commits are refused until the database is
    /// reopened ([`LedgerError::Poisoned`]).
    pub fn poisoned(&self) -> bool {
        lock_poisoned(self.shared.queue.lock()).failure.is_some()
    }

    /// The header of the last committed tx, if any.
    pub fn last_header(&self) -> Option<TxHeader> {
        lock_poisoned(self.shared.view.read()).last
    }

    /// The epoch of the last committed tx (1 for an empty database): the database's current
    /// epoch once the marker of a new one is committed ([`Ledger::start_epoch`]).
    pub fn epoch(&self) -> u64 {
        self.last_header().map_or(1, |h| h.epoch)
    }

    /// Starts epoch `epoch` (above the current one): commits the marker tx that records it in
    /// the chain (one entry, the reserved key `\0chainlog/epoch`, the epoch in decimal) and
    /// returns its header. Txs after it are written in that epoch. A replica promoted to
    /// primary does this first, so that history written by its former primary afterwards can
    /// be told apart and refused (docs/replication.md, "Epochs and fencing").
    pub fn start_epoch(&self, epoch: u64) -> Result<TxHeader> {
        let current = self.epoch();
        if epoch <= current {
            return Err(LedgerError::EpochOrder {
                asked: epoch,
                current,
            });
        }
        writer::submit(&self.shared, prepare::prepare_epoch(epoch)?)
    }

    /// Commits `entries` as one transaction and returns its header once it is durable.
    /// Blocks; many threads may commit at once and share one fsync.
    pub fn commit(&self, entries: Vec<NewEntry>) -> Result<TxHeader> {
        let prepared = prepare::prepare(entries)?;
        writer::submit(&self.shared, prepared)
    }

    /// Commits `entries` as one transaction if every one of `conditions` holds when the
    /// writer reaches it (checked in commit order: nothing can be written in between); else
    /// nothing is written and [`LedgerError::PreconditionFailed`] names the first that failed.
    pub async fn commit_if_async(
        &self,
        entries: Vec<NewEntry>,
        conditions: Vec<Precondition>,
    ) -> Result<TxHeader> {
        if conditions.len() > ENTRIES_PER_TX_MAX {
            return Err(LedgerError::TooManyEntries {
                count: conditions.len(),
                max: ENTRIES_PER_TX_MAX,
            });
        }
        if let Some(index) = conditions
            .iter()
            .position(|c| c.key().is_empty() || c.key().len() > KEY_BYTES_MAX)
        {
            return Err(LedgerError::EmptyKey { index });
        }
        let mut prepared = prepare::prepare(entries)?;
        prepared.conditions = conditions;
        let done = writer::submit_async(&self.shared, prepared)?;
        done.await.unwrap_or(Err(LedgerError::Closed))
    }

    /// Prepares `entries` as one tx on the calling thread and queues it for the writer
    /// without waiting: the returned [`Committing`] gives its outcome. Txs queued one after
    /// another are committed in that order and share group commits, so a caller can keep many
    /// in flight (a pipeline) and still learn each outcome in order.
    pub fn enqueue(&self, entries: Vec<NewEntry>) -> Result<Committing> {
        let prepared = prepare::prepare(entries)?;
        Ok(Committing(writer::submit_async(&self.shared, prepared)?))
    }

    /// [`Ledger::commit`] for async callers: the task waits, no thread does. Validation and
    /// hashing run on the calling task (on a blocking thread for txs over 64 KiB of values).
    pub async fn commit_async(&self, entries: Vec<NewEntry>) -> Result<TxHeader> {
        let bytes: usize = entries.iter().map(|e| e.key.len() + e.value.len()).sum();
        let prepared = if bytes > 64 << 10 {
            tokio::task::spawn_blocking(move || prepare::prepare(entries))
                .await
                .map_err(|_| LedgerError::Closed)??
        } else {
            prepare::prepare(entries)?
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
        let digest_only = self
            .shared
            .digest_only
            .load(std::sync::atomic::Ordering::Relaxed);
        let prepare = move || {
            let mut out = Vec::with_capacity(records.len());
            for r in records {
                let prepared = if digest_only {
                    prepare::prepare_record_digest_only(r)
                } else {
                    prepare::prepare_record(r)
                };
                match prepared {
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
        let prepared = prepare::prepare_record(record.into())?;
        writer::submit(&self.shared, prepared)
    }

    /// Logically deletes `keys` in one transaction. Fails with the key's limit error for an
    /// empty or over-long key, and [`LedgerError::KeyNotFound`] if one of them is not live.
    pub fn delete(&self, keys: &[&[u8]]) -> Result<TxHeader> {
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
        self.commit(self.deletes(&keys)?)
    }

    /// The entries that delete `keys`, after checking each is a valid key that is live.
    pub fn deletes(&self, keys: &[Vec<u8>]) -> Result<Vec<NewEntry>> {
        for (index, k) in keys.iter().enumerate() {
            if k.is_empty() {
                return Err(LedgerError::EmptyKey { index });
            }
            if k.len() > KEY_BYTES_MAX {
                return Err(LedgerError::KeyTooLong {
                    index,
                    len: k.len(),
                    max: KEY_BYTES_MAX,
                });
            }
            if self.get(k)?.is_none() {
                return Err(LedgerError::KeyNotFound);
            }
        }
        Ok(keys.iter().map(|k| NewEntry::delete(k.clone())).collect())
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

impl Drop for Ledger {
    fn drop(&mut self) {
        let _ = self.close();
    }
}
