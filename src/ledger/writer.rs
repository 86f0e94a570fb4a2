//! The write path: validation and hashing on the caller's thread, then one writer thread that
//! orders, chains, writes and fsyncs transactions in groups (ARCHITECTURE.md, "Write path").

use super::chain::{self, Link};
use super::checkpoint::{Checkpoint, Job, Runs};
use super::prepare::Prepared;
use super::{codec, encode_location, lock_poisoned, LedgerError, Result, Shared, State};
use crate::index::{ValueRef, Version};
use crate::integrity::merkle::{leaf_hash, Frontier};
use crate::integrity::{Digest, TxHeader, TxId, FORMAT_VERSION};
use crate::storage::frame::{self, FRAME_HEADER_BYTES};
use crate::storage::records::RecordWriter;
use crate::storage::segment::{ActiveSegment, SegmentHeader};
use crate::storage::{len_u32, usize_of, StorageError};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;

/// Most txs written by one group commit.
const BATCH_TXS_MAX: usize = 4096;
/// Most bytes written by one group commit (a larger tx still goes alone).
const BATCH_BYTES_MAX: usize = 32 << 20;

/// Where the writer puts a commit's outcome. Committers wait on `Shared::done_signal`, which
/// the writer notifies once per group: one wake-up call for the whole group instead of one
/// per committer on the writer's thread.
type Slot = Arc<Mutex<Option<Result<TxHeader>>>>;

/// How a committer waits for its outcome: a blocked thread on the shared condvar, or an async
/// task woken through a oneshot channel (no thread parked per commit).
enum Reply {
    Slot(Slot),
    Async(tokio::sync::oneshot::Sender<Result<TxHeader>>),
}

struct Pending {
    tx: Prepared,
    reply: Reply,
}

impl Pending {
    fn reply(self, result: Result<TxHeader>) {
        match self.reply {
            Reply::Slot(slot) => *lock_poisoned(slot.lock()) = Some(result),
            Reply::Async(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

/// Wakes every committer waiting for an outcome (after slots were filled).
fn announce(shared: &Shared) {
    *lock_poisoned(shared.done_generation.lock()) += 1;
    shared.done_signal.notify_all();
}

/// A tx body at least this long goes to the segment straight from the prepared tx.
const DIRECT_BODY_BYTES_MIN: usize = 1 << 20;

#[derive(Default)]
pub(crate) struct Queue {
    pending: VecDeque<Pending>,
    pub closing: bool,
    /// The first write-path failure; commits are refused from then on.
    pub failure: Option<(PathBuf, std::io::ErrorKind)>,
    /// The writer waits for work on `queue_signal` (set and cleared under the lock, so a
    /// committer that finds it clear knows the writer will look at the queue again before it
    /// waits, and need not wake it: a futex call saved per commit while the writer is busy).
    writer_waiting: bool,
}

/// Queues `tx` for the writer and waits until it is durable (or failed).
/// Puts prepared txs in the writer's queue, in order and with nothing between them, unless
/// the ledger is failed or closing.
fn enqueue(shared: &Shared, pending: impl IntoIterator<Item = Pending>) -> Result<()> {
    {
        let mut q = lock_poisoned(shared.queue.lock());
        if let Some((path, kind)) = &q.failure {
            return Err(LedgerError::Poisoned {
                path: path.clone(),
                kind: *kind,
            });
        }
        if q.closing {
            return Err(LedgerError::Closed);
        }
        q.pending.extend(pending);
        if !std::mem::take(&mut q.writer_waiting) {
            return Ok(());
        }
    }
    shared.queue_signal.notify_one();
    Ok(())
}

/// Queues `txs` for the writer together, so that they can share one group commit; each
/// outcome arrives on its channel.
pub(crate) fn submit_all_async(
    shared: &Shared,
    txs: Vec<Prepared>,
) -> Result<Vec<tokio::sync::oneshot::Receiver<Result<TxHeader>>>> {
    let mut receivers = Vec::with_capacity(txs.len());
    let mut pending = Vec::with_capacity(txs.len());
    for tx in txs {
        let (reply, done) = tokio::sync::oneshot::channel();
        pending.push(Pending {
            tx,
            reply: Reply::Async(reply),
        });
        receivers.push(done);
    }
    enqueue(shared, pending)?;
    Ok(receivers)
}

/// Queues `tx` for the writer; the outcome arrives on the returned channel.
pub(crate) fn submit_async(
    shared: &Shared,
    tx: Prepared,
) -> Result<tokio::sync::oneshot::Receiver<Result<TxHeader>>> {
    let (reply, done) = tokio::sync::oneshot::channel();
    enqueue(
        shared,
        [Pending {
            tx,
            reply: Reply::Async(reply),
        }],
    )?;
    Ok(done)
}

pub(crate) fn submit(shared: &Shared, tx: Prepared) -> Result<TxHeader> {
    let slot: Slot = Arc::new(Mutex::new(None));
    enqueue(
        shared,
        [Pending {
            tx,
            reply: Reply::Slot(slot.clone()),
        }],
    )?;
    let mut generation = lock_poisoned(shared.done_generation.lock());
    loop {
        if let Some(result) = lock_poisoned(slot.lock()).take() {
            return result;
        }
        // The writer is done with the commit. It may have filled the slot and let go of it
        // just after the look above, so look again: only an empty slot means the writer
        // dropped the commit without an outcome (it panicked).
        if Arc::strong_count(&slot) == 1 {
            return lock_poisoned(slot.lock())
                .take()
                .unwrap_or(Err(LedgerError::Closed));
        }
        generation = lock_poisoned(shared.done_signal.wait(generation));
    }
}

pub(crate) fn close(shared: &Shared) {
    lock_poisoned(shared.queue.lock()).closing = true;
    shared.queue_signal.notify_all();
}

fn failure_of(e: &LedgerError) -> (PathBuf, std::io::ErrorKind) {
    match e {
        LedgerError::Storage(StorageError::Io { path, source }) => (path.clone(), source.kind()),
        LedgerError::Storage(StorageError::Corrupt { path, .. }) => {
            (path.clone(), std::io::ErrorKind::InvalidData)
        }
        _ => (PathBuf::new(), std::io::ErrorKind::Other),
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Should the writer thread end any other way (a panic), the committers still waiting are
/// told the ledger is closed rather than left waiting.
struct WakeOnExit(Arc<Shared>);

impl Drop for WakeOnExit {
    fn drop(&mut self) {
        let mut q = lock_poisoned(self.0.queue.lock());
        q.closing = true;
        for p in q.pending.drain(..) {
            p.reply(Err(LedgerError::Closed));
        }
        drop(q);
        announce(&self.0);
    }
}

/// Everything the writer thread owns.
pub(crate) struct Writer {
    pub shared: Arc<Shared>,
    pub segment: ActiveSegment,
    pub history: RecordWriter<32>,
    pub locations: RecordWriter<16>,
    pub map: super::map::MapWriter,
    pub frontier: Frontier,
    pub last_id: TxId,
    pub last_alh: Digest,
    pub last_ts: u64,
    /// The epoch fresh txs are written in: the last tx's, or a newer one started since.
    pub epoch: u64,
    pub since_checkpoint: u64,
    /// The index runs, while no checkpoint is under way; the checkpoint thread has them
    /// while one is.
    pub runs: Option<Runs>,
    pub checkpointing: Option<std::thread::JoinHandle<(Runs, Result<()>)>>,
}

impl Writer {
    pub fn spawn(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("chainlog-writer".into())
            .spawn(move || self.run())
    }

    fn next_batch(&self) -> Option<Vec<Pending>> {
        let mut q = lock_poisoned(self.shared.queue.lock());
        loop {
            if !q.pending.is_empty() {
                let mut batch = Vec::new();
                let mut bytes = 0;
                while let Some(p) = q.pending.front() {
                    let n = p.tx.body.len() + codec::HEADER_BYTES + FRAME_HEADER_BYTES;
                    if !batch.is_empty()
                        && (batch.len() >= BATCH_TXS_MAX || bytes + n > BATCH_BYTES_MAX)
                    {
                        break;
                    }
                    bytes += n;
                    batch.extend(q.pending.pop_front());
                }
                return Some(batch);
            }
            if q.closing {
                return None;
            }
            q.writer_waiting = true;
            q = lock_poisoned(self.shared.queue_signal.wait(q));
            q.writer_waiting = false;
        }
    }

    fn run(mut self) {
        let _wake = WakeOnExit(self.shared.clone());
        let mut failed = None;
        while let Some(batch) = self.next_batch() {
            let mut batch = batch;
            let error = match self.write(&mut batch) {
                Ok(results) => {
                    for (p, h) in batch.into_iter().zip(results) {
                        p.reply(h);
                    }
                    announce(&self.shared);
                    let due = self.since_checkpoint >= self.shared.options.checkpoint_txs
                        || lock_poisoned(self.shared.index.read()).mem_versions()
                            >= self.shared.options.memtable_versions_max;
                    let started = if due { self.checkpoint(false) } else { Ok(()) };
                    started.and_then(|()| self.poll_checkpoint()).err()
                }
                Err(e) => {
                    let (path, kind) = failure_of(&e);
                    for p in batch {
                        p.reply(Err(LedgerError::Poisoned {
                            path: path.clone(),
                            kind,
                        }));
                    }
                    announce(&self.shared);
                    Some(e)
                }
            };
            if let Some(e) = error {
                tracing::error!(error = %e, "write failed; refusing further commits");
                failed = Some(failure_of(&e));
                break;
            }
        }
        if failed.is_none() {
            // The checkpoint records where the frames end; the file then ends there too.
            if let Err(e) = self
                .checkpoint(true)
                .and_then(|()| Ok(self.segment.trim()?))
            {
                tracing::error!(error = %e, "final checkpoint failed");
                failed = Some(failure_of(&e));
            }
        }
        let mut q = lock_poisoned(self.shared.queue.lock());
        q.closing = true;
        if q.failure.is_none() {
            q.failure = failed;
        }
        let failure = q.failure.clone();
        for p in q.pending.drain(..) {
            p.reply(Err(match &failure {
                Some((path, kind)) => LedgerError::Poisoned {
                    path: path.clone(),
                    kind: *kind,
                },
                None => LedgerError::Closed,
            }));
        }
        drop(q);
        announce(&self.shared);
    }

    /// Starts a new segment for txs from `first_tx` on, sealing the current one.
    fn roll(&mut self, first_tx: TxId) -> Result<()> {
        let header = SegmentHeader {
            id: self.segment.header().id + 1,
            base: first_tx,
        };
        // Free space is cut off before the next segment exists: only the last has any.
        self.segment.trim()?;
        let next = ActiveSegment::create(&self.shared.dir.join("segments"), header)?;
        let old = std::mem::replace(&mut self.segment, next);
        let old_id = old.header().id;
        let sealed = self.shared.locked(|l| old.seal(l))?;
        let mut view = lock_poisoned(self.shared.view.write());
        view.segments.insert(old_id, sealed);
        view.segments.insert(header.id, self.segment.reader());
        Ok(())
    }

    /// Writes one group of txs and makes it durable and visible. Returns each tx's header, or
    /// why a replicated tx does not extend this database (it is then not written).
    /// Takes the keys out of the prepared txs, into the index.
    /// The first of `conditions` that does not hold against the map as it is now (every tx
    /// before this one applied), as the error that refuses the tx.
    fn failed_condition(
        &mut self,
        conditions: &[super::Precondition],
    ) -> Result<Option<LedgerError>> {
        use super::Precondition as P;
        for (index, c) in conditions.iter().enumerate() {
            let latest = self
                .map
                .latest(&crate::integrity::map::key_hash(c.key()))?
                .map(|l| (l.tx_id, l.deleted));
            if !c.holds(latest) {
                let key = String::from_utf8_lossy(c.key()).into_owned();
                let reason = match (c, latest) {
                    (P::MustExist(_), _) => {
                        format!("key {key:?} must exist, and has no live value")
                    }
                    (P::MustNotExist(_), Some((tx, _))) => {
                        format!("key {key:?} must not exist, and has a value written by tx {tx}")
                    }
                    (P::NotModifiedAfter { tx, .. }, Some((last, _))) => format!(
                        "key {key:?} must not be modified after tx {tx}, and tx {last} wrote it"
                    ),
                    _ => format!("key {key:?}"),
                };
                return Ok(Some(LedgerError::PreconditionFailed { index, reason }));
            }
        }
        Ok(None)
    }

    fn write(&mut self, batch: &mut [Pending]) -> Result<Vec<Result<TxHeader>>> {
        let mut results = Vec::with_capacity(batch.len());
        let mut written = 0u64;
        let mut updates: Vec<(Vec<u8>, Version)> = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut nodes = Vec::new();
        let mut head = Vec::with_capacity(codec::HEADER_BYTES);
        for tx in batch.iter_mut().map(|p| &mut p.tx) {
            let id = self.last_id + 1;
            if let Some((h, _)) = &tx.fixed {
                let link = Link {
                    last_id: self.last_id,
                    last_alh: self.last_alh,
                    last_ts: self.last_ts,
                    last_epoch: self.epoch,
                    history_root: self.frontier.root(),
                };
                if let Err(reason) = chain::check_link(h, &link) {
                    results.push(Err(LedgerError::NotNext { tx: h.id, reason }));
                    continue;
                }
            }
            if let Some(asked) = tx.epoch {
                if asked <= self.epoch {
                    results.push(Err(LedgerError::EpochOrder {
                        asked,
                        current: self.epoch,
                    }));
                    continue;
                }
            }
            if let Some(failed) = self.failed_condition(&tx.conditions)? {
                results.push(Err(failed));
                continue;
            }
            for l in &mut tx.leaves {
                l.tx_id = id;
            }
            let mark = self.map.mark();
            let map_root = self.map.update(&tx.leaves)?;
            let (header, alh) = match &tx.fixed {
                None => {
                    let h = TxHeader {
                        version: FORMAT_VERSION,
                        id,
                        timestamp_us: now_us().max(self.last_ts),
                        prev_alh: self.last_alh,
                        entry_count: tx.entry_count,
                        entries_root: tx.entries_root,
                        history_size: id - 1,
                        history_root: self.frontier.root(),
                        epoch: tx.epoch.unwrap_or(self.epoch),
                        map_root: map_root.hash(),
                    };
                    (h, h.alh())
                }
                Some((h, alh)) => {
                    if let Err(reason) = chain::check_map_root(h, &map_root.hash()) {
                        self.map.rollback(mark);
                        results.push(Err(LedgerError::NotNext { tx: h.id, reason }));
                        continue;
                    }
                    (*h, *alh)
                }
            };
            self.map.accept(map_root);
            let frame_len = FRAME_HEADER_BYTES + codec::HEADER_BYTES + tx.body.len();
            let seg_max = self.shared.options.segment_bytes_max;
            if self.segment.len() + (buf.len() + frame_len) as u64 > seg_max
                && !(self.segment.is_empty() && buf.is_empty())
            {
                self.segment.append(&buf)?;
                buf.clear();
                self.roll(id)?;
            }
            let offset = self.segment.len() + buf.len() as u64;
            head.clear();
            codec::encode_header(&header, &alh, &mut head);
            if tx.body.len() >= DIRECT_BODY_BYTES_MIN {
                // A large body (a streamed value) is written from where it is, not copied
                // into the group's buffer first.
                frame::encode_parts_head(&mut buf, &head, &tx.body, &tx.body_crc);
                self.segment.append(&buf)?;
                buf.clear();
                self.segment.append(&tx.body)?;
            } else {
                frame::encode_parts(&mut buf, &head, &tx.body, &tx.body_crc);
            }
            let segment = self.segment.header().id;
            self.locations
                .push(&encode_location(segment, offset, len_u32(frame_len)));
            nodes.clear();
            self.frontier.append(leaf_hash(&alh.0), &mut nodes);
            for n in &nodes {
                self.history.push(&n.0);
            }
            let body_at = offset + (FRAME_HEADER_BYTES + codec::HEADER_BYTES) as u64;
            for (key, meta, at, len) in tx.refs.drain(..) {
                let value = ValueRef {
                    segment,
                    offset: len_u32(usize_of(body_at) + at),
                    len,
                };
                updates.push((
                    key,
                    Version {
                        tx: id,
                        deleted: meta.deleted,
                        expiring: meta.expires_at.is_some(),
                        reference: meta.reference,
                        value,
                    },
                ));
            }
            self.last_id = id;
            self.last_alh = alh;
            self.last_ts = header.timestamp_us;
            self.epoch = header.epoch;
            written += 1;
            results.push(Ok(header));
        }
        self.segment.append(&buf)?;
        if self.shared.options.durability == super::Durability::Synced {
            let started = std::time::Instant::now();
            self.segment.sync()?;
            self.shared.stats.fsync(started.elapsed());
        }
        // Only now the derived records: a record in history.nodes or tx.idx is then evidence
        // that its tx's frame was synced, which recovery relies on to tell a committed tx
        // that was damaged from an unfinished write (`recovery::evidenced_through`).
        self.history.flush()?;
        self.locations.flush()?;
        let map = &mut self.map;
        self.shared.locked(|l| map.publish(l))?;
        self.since_checkpoint += written;
        {
            let mut idx = lock_poisoned(self.shared.index.write());
            for (k, v) in updates {
                idx.insert(&k, v);
            }
        }
        let mut view = lock_poisoned(self.shared.view.write());
        if let Some(Ok(h)) = results.iter().rev().find(|r| r.is_ok()) {
            view.last = Some(*h);
        }
        view.state = State {
            tx_id: self.last_id,
            alh: self.last_alh,
        };
        drop(view);
        self.shared.published.send_replace(self.last_id);
        self.shared.stats.group(written);
        Ok(results)
    }

    /// Waits for the checkpoint under way, if any, and takes back the runs.
    fn finish_checkpoint(&mut self) -> Result<Runs> {
        if let Some(h) = self.checkpointing.take() {
            let (runs, result) = h.join().map_err(|_| LedgerError::Poisoned {
                path: self.shared.dir.join(super::checkpoint::FILE_NAME),
                kind: std::io::ErrorKind::Other,
            })?;
            self.runs = Some(runs);
            result?;
        }
        Ok(self.runs.take().unwrap_or(Runs {
            next_id: 1,
            runs: Vec::new(),
        }))
    }

    /// Checks on a checkpoint running in the background without waiting for it.
    fn poll_checkpoint(&mut self) -> Result<()> {
        if self.checkpointing.as_ref().is_some_and(|h| h.is_finished()) {
            let runs = self.finish_checkpoint()?;
            self.runs = Some(runs);
        }
        Ok(())
    }

    /// Makes the derived files durable up to the last tx, writes the memtable as a run
    /// (merging runs), and records all of it in the checkpoint file. In the background unless
    /// `wait`; a checkpoint still running from last time is waited for first.
    pub fn checkpoint(&mut self, wait: bool) -> Result<()> {
        let mut runs = self.finish_checkpoint()?;
        self.history.flush()?;
        self.locations.flush()?;
        let map = &mut self.map;
        self.shared.locked(|l| map.publish(l))?;
        let memtable = lock_poisoned(self.shared.index.write()).freeze();
        let mut syncs = vec![
            self.segment.sync_handle(),
            self.history.sync_handle(),
            self.locations.sync_handle(),
        ];
        syncs.extend(self.map.sync_handles()?);
        let job = Job {
            shared: self.shared.clone(),
            memtable,
            checkpoint: Checkpoint {
                tx_id: self.last_id,
                alh: self.last_alh,
                epoch: self.epoch,
                segment: self.segment.header().id,
                segment_len: self.segment.len(),
                map_nodes: self.map.node_count(),
                next_run_id: 0,
                runs: Vec::new(),
            },
            syncs,
        };
        self.since_checkpoint = 0;
        if wait {
            let result = job.run(&mut runs);
            self.runs = Some(runs);
            return result;
        }
        let handle = std::thread::Builder::new()
            .name("chainlog-checkpoint".into())
            .spawn(move || {
                let result = job.run(&mut runs);
                (runs, result)
            })
            .map_err(|e| StorageError::io(&self.shared.dir, e))?;
        self.checkpointing = Some(handle);
        Ok(())
    }
}
