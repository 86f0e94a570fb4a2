//! Opening a database: read the checkpoint, cut the derived files back to it, and replay the
//! log from there, checking every replayed tx against the chain. A torn tail of the last
//! segment is cut and reported; anything else that fails a check is an error naming the file
//! and offset, and nothing is repaired.
//!
//! Work done here is bounded by what follows the last checkpoint (at most
//! `Options::checkpoint_txs` txs or `memtable_versions_max` versions), not by the size of the
//! database: sealed segments before the checkpoint are only mapped and their headers read.

use super::chain::{check_map_root, check_record, Link};
use super::checkpoint::Checkpoint;
use super::checkpoint::Runs;
use super::map::MapWriter;
use super::writer::{Queue, Writer};
use super::{
    codec, encode_location, Damage, HistoryNodes, Ledger, LedgerError, Options, Recovery, Result,
    Shared, State, TxFault, View,
};
use crate::fs;
use crate::index::{run, run::Run, Index, ValueRef, Version};
use crate::integrity::merkle::{self, leaf_hash, Frontier};
use crate::integrity::{Digest, TxHeader, TxId};
use crate::storage::frame::FRAME_HEADER_BYTES;
use crate::storage::records::{RecordReader, RecordWriter};
use crate::storage::segment::{
    self, ActiveSegment, ScanEnd, SegmentHeader, SegmentReader, SEGMENT_HEADER_BYTES,
};
use crate::storage::{len_u32, usize_of, Corruption, StorageError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};

/// What opening a database found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The last tx the checkpoint covered.
    pub checkpoint_tx: TxId,
    /// Txs read back from the log after the checkpoint.
    pub replayed_txs: u64,
    /// A torn tail that was cut: the file, the offset it was cut at, and the bytes removed.
    pub truncated: Option<(PathBuf, u64, u64)>,
    /// Txs that `tx.idx` or `history.nodes` showed were committed but the log no longer
    /// holds, cut because the options said [`Recovery::AcceptLoss`]: first and last.
    pub lost: Option<(TxId, TxId)>,
    /// The last tx after recovery.
    pub last_tx: TxId,
}

/// Segment paths by id, checked to be 1, 2, 3, … with no gap.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u32, PathBuf)>> {
    let mut out = Vec::new();
    for p in fs::list(dir, "seg")? {
        let id = segment::id_of(&p)
            .ok_or_else(|| StorageError::corrupt(&p, 0, Corruption::FileHeader))?;
        let expected = len_u32(out.len()) + 1;
        if id != expected {
            let missing = dir.join(segment::file_name(expected));
            return Err(StorageError::corrupt(missing, 0, Corruption::ShortFile).into());
        }
        out.push((id, p));
    }
    Ok(out)
}

/// Replayed txs between two publications of the map's nodes, which bounds the memory they
/// take before they are written.
const MAP_PUBLISH_TXS: u64 = 1024;

struct Replay<'a> {
    lock: &'a fs::DirLock,
    history: RecordWriter<32>,
    locations: RecordWriter<16>,
    map: MapWriter,
    frontier: Frontier,
    index: Index,
    last: Option<TxHeader>,
    last_id: TxId,
    last_alh: Digest,
    /// The last tx's epoch.
    epoch: u64,
    replayed: u64,
    nodes: Vec<Digest>,
}

impl Replay<'_> {
    fn apply(
        &mut self,
        path: &Path,
        segment: u32,
        offset: u64,
        frame_len: usize,
        payload: &[u8],
    ) -> Result<()> {
        let id = self.last_id + 1;
        let bad = |reason| LedgerError::BadTx {
            tx: id,
            path: path.to_path_buf(),
            offset,
            reason,
        };
        let rec = codec::decode(payload).map_err(|r| bad(TxFault::Decode(r)))?;
        let link = Link {
            last_id: self.last_id,
            last_alh: self.last_alh,
            last_ts: self.last.map_or(0, |l| l.timestamp_us),
            last_epoch: self.epoch,
            history_root: self.frontier.root(),
        };
        let leaves = check_record(&rec, &link).map_err(|b| bad(TxFault::Chain(b)))?;
        let map_root = self.map.update(&leaves)?;
        check_map_root(&rec.header, &map_root.hash()).map_err(|b| bad(TxFault::Chain(b)))?;
        self.map.accept(map_root);
        if self.replayed % MAP_PUBLISH_TXS == MAP_PUBLISH_TXS - 1 {
            self.map.publish(self.lock)?;
        }
        self.locations
            .push(&encode_location(segment, offset, len_u32(frame_len)));
        self.nodes.clear();
        self.frontier.append(leaf_hash(&rec.alh.0), &mut self.nodes);
        for n in &self.nodes {
            self.history.push(&n.0);
        }
        let body_at = offset + FRAME_HEADER_BYTES as u64;
        for e in rec.entries.iter().filter(|e| !e.meta.not_indexed) {
            let value = ValueRef {
                segment,
                offset: len_u32(usize_of(body_at) + e.value_hash_at),
                len: len_u32(e.value.len()),
            };
            self.index.insert(
                e.key,
                Version {
                    tx: id,
                    deleted: e.meta.deleted,
                    expiring: e.meta.expires_at.is_some(),
                    reference: e.meta.reference,
                    value,
                },
            );
        }
        self.last = Some(rec.header);
        self.epoch = rec.header.epoch;
        self.last_id = id;
        self.last_alh = rec.alh;
        self.replayed += 1;
        Ok(())
    }
}

/// The last tx that `tx.idx` or `history.nodes` hold a checksum-valid record for, from tx
/// `from + 1` on. The writer writes those records only after the tx's segment write is
/// synced (`Durability::Synced`), so each is evidence that the tx was committed, and a log
/// that ends before it lost a committed tx rather than an unfinished write.
pub(crate) fn evidenced_through(dir: &Path, from: TxId) -> TxId {
    let mut through = from;
    if let Ok(locations) = RecordReader::<16>::open(&dir.join("tx.idx")) {
        let n = locations.len().unwrap_or(0);
        while through < n && locations.read(through).is_ok() {
            through += 1;
        }
    }
    if let Ok(history) = RecordReader::<32>::open(&dir.join("history.nodes")) {
        let n = history.len().unwrap_or(0);
        let mut tx = from;
        loop {
            let pos = merkle::postorder_position(0, tx);
            if pos >= n || history.read(pos).is_err() {
                break;
            }
            tx += 1;
        }
        through = through.max(tx);
    }
    through
}

/// The error for a log that ends before txs its derived files show were committed.
fn lost_txs(path: &Path, offset: u64, last: TxId, evidenced: TxId) -> LedgerError {
    LedgerError::Lost {
        first: last + 1,
        last: evidenced,
        path: path.to_path_buf(),
        offset,
    }
}

pub(crate) fn open(dir: &Path, options: Options) -> Result<Ledger> {
    let seg_dir = dir.join("segments");
    let index_dir = dir.join("index");
    fs::create_dir_all(&seg_dir)?;
    fs::create_dir_all(&index_dir)?;
    let lock = fs::DirLock::acquire(dir)?;
    fs::remove_temps(dir)?;
    super::truncate::finish(dir, &lock)?;
    let values_from = super::truncate::values_from(dir)?;
    let cp = Checkpoint::read(dir)?.unwrap_or_else(Checkpoint::empty);
    let mut report = RecoveryReport {
        checkpoint_tx: cp.tx_id,
        ..RecoveryReport::default()
    };

    let mut paths = list_segments(&seg_dir)?;
    if paths.is_empty() {
        if cp.tx_id != 0 {
            let missing = seg_dir.join(segment::file_name(cp.segment));
            return Err(StorageError::corrupt(missing, 0, Corruption::ShortFile).into());
        }
        let seg = ActiveSegment::create(&seg_dir, SegmentHeader { id: 1, base: 1 })?;
        paths.push((1, seg.path().to_path_buf()));
    }
    if cp.segment as usize > paths.len() {
        let missing = seg_dir.join(segment::file_name(cp.segment));
        return Err(StorageError::corrupt(missing, 0, Corruption::ShortFile).into());
    }

    // Read before the derived files are cut back: how far they show the log went.
    let evidenced = evidenced_through(dir, cp.tx_id);
    let accept_loss = options.recovery == Recovery::AcceptLoss;

    // Derived files, cut back to what the checkpoint made durable.
    let history = RecordWriter::<32>::open(
        &dir.join("history.nodes"),
        merkle::postorder_count(cp.tx_id),
    )?;
    let history_reader = HistoryNodes::new(history.reader());
    let frontier = Frontier::load(&history_reader, cp.tx_id)?;
    if cp.tx_id > 0 {
        let pos = merkle::postorder_position(0, cp.tx_id - 1);
        if history_reader.file.read(pos)? != leaf_hash(&cp.alh.0).0 {
            return Err(LedgerError::Damaged {
                path: history_reader.file.path().to_path_buf(),
                offset: pos * RecordWriter::<32>::RECORD_BYTES,
                reason: Damage::HistoryNode,
            });
        }
    }
    let locations = RecordWriter::<16>::open(&dir.join("tx.idx"), cp.tx_id)?;
    let locations_reader = locations.reader();
    let (map, map_reader) = MapWriter::open(dir, cp.map_nodes, cp.tx_id, &lock)?;

    let mut runs = Vec::with_capacity(cp.runs.len());
    for &id in &cp.runs {
        runs.push(Arc::new(Run::open(
            &index_dir.join(run::file_name(id)),
            id,
            &lock,
        )?));
    }
    for p in fs::list(&index_dir, "idx")?
        .into_iter()
        .chain(fs::list(&index_dir, "tmp")?)
    {
        let used = cp
            .runs
            .iter()
            .any(|&id| p.file_name().and_then(|n| n.to_str()) == Some(&run::file_name(id)));
        if !used {
            fs::remove(&p)?;
        }
    }

    let run_list = runs.clone();
    let mut replay = Replay {
        lock: &lock,
        history,
        locations,
        map,
        frontier,
        index: Index::new(runs.clone()),
        last: None,
        last_id: cp.tx_id,
        last_alh: cp.alh,
        epoch: cp.epoch,
        replayed: 0,
        nodes: Vec::new(),
    };

    let mut segments = BTreeMap::new();
    for (id, path) in &paths[..cp.segment as usize - 1] {
        let (reader, header) = SegmentReader::open_sealed(path, &lock)?;
        if header.id != *id {
            return Err(StorageError::corrupt(path, 0, Corruption::FileHeader).into());
        }
        segments.insert(*id, reader);
    }
    let mut active = None;
    let last_seg = len_u32(paths.len());
    for (id, path) in &paths[cp.segment as usize - 1..] {
        let start = if *id == cp.segment {
            cp.segment_len
        } else {
            SEGMENT_HEADER_BYTES
        };
        let (mut seg, bytes) = ActiveSegment::open(path, start)?;
        if seg.header().id != *id {
            return Err(StorageError::corrupt(path, 0, Corruption::FileHeader).into());
        }
        let end = segment::scan(&bytes, start, |offset, n, payload| {
            replay.apply(path, *id, offset, n, payload)
        })?;
        let frames_end = match end {
            ScanEnd::Clean => seg.len(),
            ScanEnd::Free { offset } | ScanEnd::Torn { offset } => offset,
            ScanEnd::Corrupt { offset, .. } => offset,
        };
        let ends_short = *id == last_seg
            && evidenced > replay.last_id
            && !matches!(end, ScanEnd::Corrupt { .. });
        if ends_short {
            if !accept_loss {
                return Err(lost_txs(path, frames_end, replay.last_id, evidenced));
            }
            tracing::error!(
                file = %path.display(), offset = frames_end, first = replay.last_id + 1, last = evidenced,
                "cut txs that tx.idx or history.nodes show were committed: the log no longer holds them (accepted: recovery = accept-loss)"
            );
            report.lost = Some((replay.last_id + 1, evidenced));
        }
        match end {
            ScanEnd::Clean => {}
            ScanEnd::Free { offset } if *id == last_seg => seg.resume_at(offset),
            ScanEnd::Torn { offset } if *id == last_seg => {
                let cut = seg.len() - offset;
                if report.lost.is_none() {
                    tracing::warn!(file = %path.display(), offset, bytes = cut, "cut a torn tail: an unfinished write that no committed tx's records point to");
                }
                seg.truncate(offset)?;
                report.truncated = Some((path.clone(), offset, cut));
            }
            ScanEnd::Torn { offset } | ScanEnd::Free { offset } => {
                return Err(StorageError::corrupt(path, offset, Corruption::FrameTruncated).into());
            }
            ScanEnd::Corrupt { offset, reason } => {
                return Err(LedgerError::BadTx {
                    tx: replay.last_id + 1,
                    path: path.clone(),
                    offset,
                    reason: TxFault::Frame(reason),
                });
            }
        }
        if *id == last_seg {
            segments.insert(*id, seg.reader());
            active = Some(seg);
        } else {
            segments.insert(*id, seg.seal(&lock)?);
        }
    }
    let Some(segment) = active else {
        return Err(StorageError::corrupt(&seg_dir, 0, Corruption::ShortFile).into());
    };
    // Only now that the log checked out: the derived files hold exactly what it does.
    replay.history.cut()?;
    replay.locations.cut()?;
    replay.map.publish(&lock)?;
    replay.map.cut()?;
    let Replay {
        history: replay_history,
        locations: replay_locations,
        map: replay_map,
        frontier: replay_frontier,
        index: replay_index,
        last: replay_last,
        last_id: replay_last_id,
        last_alh: replay_last_alh,
        replayed: replay_replayed,
        ..
    } = replay;
    report.replayed_txs = replay_replayed;
    report.last_tx = replay_last_id;
    if report.replayed_txs > 0 || report.truncated.is_some() {
        tracing::info!(
            checkpoint_tx = cp.tx_id,
            replayed = replay_replayed,
            last_tx = replay_last_id,
            "recovered"
        );
    }

    let shared = Arc::new(Shared {
        lock: Mutex::new(Some(lock)),
        dir: dir.to_path_buf(),
        options,
        view: RwLock::new(View {
            last: replay_last,
            state: State {
                tx_id: replay_last_id,
                alh: replay_last_alh,
            },
            segments,
        }),
        index: RwLock::new(replay_index),
        history: history_reader,
        locations: locations_reader,
        map: map_reader,
        queue: Mutex::new(Queue::default()),
        queue_signal: Condvar::new(),
        done_generation: Mutex::new(0),
        done_signal: Condvar::new(),
        published: tokio::sync::watch::Sender::new(replay_last_id),
        stats: super::stats::WriteStats::default(),
        values_from,
        digest_only: std::sync::atomic::AtomicBool::new(false),
    });
    let ledger = Ledger {
        shared: shared.clone(),
        writer: Mutex::new(None),
        recovery: report,
    };
    // With nothing replayed, the last header is the checkpoint's tx, read back and checked.
    let last = match replay_last {
        Some(h) => Some(h),
        None if cp.tx_id > 0 => {
            let h = ledger.header(cp.tx_id)?;
            if h.alh() != cp.alh {
                return Err(LedgerError::Damaged {
                    path: dir.join(super::checkpoint::FILE_NAME),
                    offset: 0,
                    reason: Damage::Checkpoint,
                });
            }
            lock_view(&shared).last = Some(h);
            Some(h)
        }
        None => None,
    };
    if replay_map.root() != last.map_or(crate::integrity::map::MAP_EMPTY, |h| h.map_root) {
        return Err(LedgerError::Damaged {
            path: dir.join(super::map::ROOTS_FILE),
            offset: 0,
            reason: Damage::MapNode,
        });
    }
    let writer = Writer {
        shared,
        segment,
        history: replay_history,
        locations: replay_locations,
        map: replay_map,
        frontier: replay_frontier,
        last_id: replay_last_id,
        last_alh: replay_last_alh,
        last_ts: last.map_or(0, |h| h.timestamp_us),
        epoch: last.map_or(1, |h| h.epoch),
        since_checkpoint: replay_replayed,
        runs: Some(Runs {
            next_id: cp.next_run_id,
            runs: run_list,
        }),
        checkpointing: None,
    };
    let handle = writer.spawn().map_err(|e| StorageError::io(dir, e))?;
    *super::lock_poisoned(ledger.writer.lock()) = Some(handle);
    Ok(ledger)
}

fn lock_view(shared: &Shared) -> std::sync::RwLockWriteGuard<'_, View> {
    super::lock_poisoned(shared.view.write())
}
