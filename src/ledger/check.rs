//! The offline check: walks a database directory and verifies every frame checksum, chain
//! link, entries root and value hash; recomputes the history tree and the key map (every
//! tx's map root) and compares them with the stored ones; compares every tx location, every index run record and the checkpoint with
//! the log; and, given states a client trusted, proves the log consistent with each.
//!
//! Blame goes to the real culprit: a broken chain in the log is reported before any derived
//! file that disagrees with it (a rewritten tx makes its successor's link break, and that is
//! what is named, not the history node that no longer matches); a log that ends before what
//! its derived files or the checkpoint show was committed is [`LedgerError::Lost`] or a short
//! segment, not a bad checkpoint.

use super::chain::{check_map_root, check_record, Link};
use super::checkpoint::Checkpoint;
use super::recovery::{evidenced_through, list_segments};
use super::{codec, encode_location, Damage, LedgerError, Result, TxFault};
use crate::fs;
use crate::index::run::{self, Run};
use crate::integrity::map::MemoryMap;
use crate::integrity::merkle::{leaf_hash, Frontier};
use crate::integrity::{Digest, TxId, ALH_GENESIS};
use crate::storage::frame::FRAME_HEADER_BYTES;
use crate::storage::records::RecordReader;
use crate::storage::segment::{self, ScanEnd, SegmentHeader, SegmentReader, SEGMENT_HEADER_BYTES};
use crate::storage::{len_u32, usize_of, Corruption, StorageError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a successful check saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Segment files read.
    pub segments: usize,
    /// Txs in the log.
    pub txs: u64,
    /// The last tx and its Alh (the database's state).
    pub last_tx: TxId,
    pub last_alh: Digest,
    /// An unfinished write at the end of the last segment (file, offset), which the next open
    /// cuts: no committed tx's records point to it.
    pub torn_tail: Option<(PathBuf, u64)>,
    /// Index runs checked, and the records in them, each equal to its entry in the log.
    pub index_runs: usize,
    pub index_records: u64,
    /// Trusted states proven consistent with the log.
    pub states_checked: usize,
}

/// [`check_with_progress`] without progress or trusted states.
pub fn check(dir: &Path) -> Result<CheckReport> {
    check_with_progress(dir, &[], |_, _| {})
}

/// One entry as the index must hold it: key, tx, deleted, segment, offset of its value
/// hash, value length.
/// Key, tx, run record flags, segment, offset, length.
type IndexedEntry = (Vec<u8>, TxId, u8, u32, u32, u32);

/// Checks the database in `dir`, and that each `(tx id, Alh)` in `trusted` is a state of its
/// log (a client trusted it: a log that lacks it was rolled back, one with another Alh there
/// forked). Calls `progress(bytes_done, bytes_total)` as it reads the segments. Takes the
/// database's lock: fails with `Locked` while a server has it open.
pub fn check_with_progress(
    dir: &Path,
    trusted: &[(TxId, Digest)],
    progress: impl FnMut(u64, u64),
) -> Result<CheckReport> {
    check_and_collect(dir, trusted, None, progress).map(|(r, _)| r)
}

/// Live keys and their latest values, as [`check_and_collect`] gathers them.
pub type Collected = BTreeMap<Vec<u8>, Vec<u8>>;

/// [`check_with_progress`], also returning the latest value of every live key that starts
/// with `prefix` (when given), as the log holds them: for reading a database's records
/// offline without opening it (`chainlog verify` reads the system database's list of
/// databases this way).
pub fn check_and_collect(
    dir: &Path,
    trusted: &[(TxId, Digest)],
    prefix: Option<&[u8]>,
    mut progress: impl FnMut(u64, u64),
) -> Result<(CheckReport, Collected)> {
    let mut collected: Collected = BTreeMap::new();
    if !dir.join("segments").is_dir() {
        return Err(
            StorageError::io(dir.join("segments"), std::io::ErrorKind::NotFound.into()).into(),
        );
    }
    let lock = fs::DirLock::acquire(dir)?;
    let paths = list_segments(&dir.join("segments"))?;
    let total: u64 = paths.iter().map(|(_, p)| fs::len(p).unwrap_or(0)).sum();
    let history_path = dir.join("history.nodes");
    let locations_path = dir.join("tx.idx");
    let roots_path = dir.join(super::map::ROOTS_FILE);
    let history = RecordReader::<32>::open(&history_path).ok();
    let locations = RecordReader::<16>::open(&locations_path).ok();
    let roots = RecordReader::<{ super::map::ROOT_BYTES }>::open(&roots_path).ok();
    let (stored_nodes, stored_locations, stored_roots) = (
        history.as_ref().map_or(Ok(0), RecordReader::len)?,
        locations.as_ref().map_or(Ok(0), RecordReader::len)?,
        roots.as_ref().map_or(Ok(0), RecordReader::len)?,
    );
    let mut map = MemoryMap::new();
    let cp = Checkpoint::read(dir)?;
    let cp_tx = cp.as_ref().map_or(0, |c| c.tx_id);
    let wanted: BTreeMap<TxId, Digest> = trusted.iter().copied().collect();
    let mut found: BTreeMap<TxId, Digest> = BTreeMap::new();

    let mut frontier = Frontier::new();
    let mut nodes = Vec::new();
    let mut node_pos = 0u64;
    let (mut last_id, mut last_alh, mut last_ts) = (0u64, ALH_GENESIS, 0u64);
    let mut last_epoch = 1u64;
    let mut torn_tail = None;
    let mut log_end = (PathBuf::new(), 0u64);
    let mut done = 0u64;
    // The first derived record that disagrees with the log: reported only once the whole
    // log has checked out, so that a broken chain is blamed first.
    let mut derived_mismatch: Option<LedgerError> = None;
    let mut indexed: Vec<IndexedEntry> = Vec::new();
    for (i, (id, path)) in paths.iter().enumerate() {
        let (reader, header) = SegmentReader::open_sealed(path, &lock)?;
        if header
            != (SegmentHeader {
                id: *id,
                base: last_id + 1,
            })
        {
            return Err(StorageError::corrupt(path, 0, Corruption::FileHeader).into());
        }
        let bytes = reader.read(0, usize_of(fs::len(path)?))?;
        let end = segment::scan(
            bytes
                .get(usize_of(SEGMENT_HEADER_BYTES)..)
                .unwrap_or_default(),
            SEGMENT_HEADER_BYTES,
            |offset, n, payload| -> Result<()> {
                let tx = last_id + 1;
                let bad = |reason| LedgerError::BadTx {
                    tx,
                    path: path.clone(),
                    offset,
                    reason,
                };
                let rec = codec::decode(payload).map_err(|r| bad(TxFault::Decode(r)))?;
                let link = Link {
                    last_id,
                    last_alh,
                    last_ts,
                    last_epoch,
                    history_root: frontier.root(),
                };
                let mut leaves = check_record(&rec, &link).map_err(|b| bad(TxFault::Chain(b)))?;
                let map_root = map.set(&mut leaves);
                check_map_root(&rec.header, &map_root).map_err(|b| bad(TxFault::Chain(b)))?;
                if let (Some(r), true, None) = (&roots, tx <= stored_roots, &derived_mismatch) {
                    if r.read(tx - 1)?[..32] != map_root.0 {
                        derived_mismatch = Some(LedgerError::Damaged {
                            path: roots_path.clone(),
                            offset: (tx - 1) * (super::map::ROOT_BYTES as u64 + 4),
                            reason: Damage::MapNode,
                        });
                    }
                }
                if let (Some(l), true, None) =
                    (&locations, tx <= stored_locations, &derived_mismatch)
                {
                    if l.read(tx - 1)? != encode_location(*id, offset, len_u32(n)) {
                        derived_mismatch = Some(LedgerError::Damaged {
                            path: locations_path.clone(),
                            offset: (tx - 1) * 20,
                            reason: Damage::TxLocation,
                        });
                    }
                }
                nodes.clear();
                frontier.append(leaf_hash(&rec.alh.0), &mut nodes);
                for n in &nodes {
                    if let (Some(h), true, None) =
                        (&history, node_pos < stored_nodes, &derived_mismatch)
                    {
                        if h.read(node_pos)? != n.0 {
                            derived_mismatch = Some(LedgerError::Damaged {
                                path: history_path.clone(),
                                offset: node_pos * 36,
                                reason: Damage::HistoryNode,
                            });
                        }
                    }
                    node_pos += 1;
                }
                if tx <= cp_tx {
                    let body_at = offset + FRAME_HEADER_BYTES as u64;
                    for e in rec.entries.iter().filter(|e| !e.meta.not_indexed) {
                        indexed.push((
                            e.key.to_vec(),
                            tx,
                            crate::index::Version::flags_of(
                                e.meta.deleted,
                                e.meta.expires_at.is_some(),
                                e.meta.reference,
                            ),
                            *id,
                            len_u32(usize_of(body_at) + e.value_hash_at),
                            len_u32(e.value.len()),
                        ));
                    }
                }
                if wanted.contains_key(&tx) {
                    found.insert(tx, rec.alh);
                }
                if let Some(p) = prefix {
                    for e in rec
                        .entries
                        .iter()
                        .filter(|e| e.key.starts_with(p) && !e.meta.not_indexed)
                    {
                        if e.meta.deleted {
                            collected.remove(e.key);
                        } else {
                            collected.insert(e.key.to_vec(), e.value.to_vec());
                        }
                    }
                }
                last_id = tx;
                last_alh = rec.alh;
                last_ts = rec.header.timestamp_us;
                last_epoch = rec.header.epoch;
                log_end = (path.clone(), offset + n as u64);
                progress(done + offset + n as u64, total);
                Ok(())
            },
        )?;
        let last_segment = i + 1 == paths.len();
        match end {
            ScanEnd::Clean => {}
            ScanEnd::Free { .. } if last_segment => {}
            ScanEnd::Torn { offset } if last_segment => torn_tail = Some((path.clone(), offset)),
            ScanEnd::Torn { offset } | ScanEnd::Free { offset } => {
                return Err(LedgerError::BadTx {
                    tx: last_id + 1,
                    path: path.clone(),
                    offset,
                    reason: TxFault::Frame(Corruption::FrameTruncated),
                });
            }
            ScanEnd::Corrupt { offset, reason } => {
                return Err(LedgerError::BadTx {
                    tx: last_id + 1,
                    path: path.clone(),
                    offset,
                    reason: TxFault::Frame(reason),
                });
            }
        }
        if last_segment && log_end.0.as_os_str().is_empty() {
            log_end = (path.clone(), SEGMENT_HEADER_BYTES);
        }
        done += bytes.len() as u64;
        progress(done, total);
    }

    // The log ends before txs the derived files or the checkpoint show were committed.
    let evidenced = evidenced_through(dir, last_id).max(cp_tx);
    if evidenced > last_id {
        if let Some(c) = &cp {
            let seg = dir.join("segments").join(segment::file_name(c.segment));
            let len = fs::len(&seg).unwrap_or(0);
            if len < c.segment_len {
                return Err(StorageError::corrupt(seg, len, Corruption::ShortFile).into());
            }
        }
        return Err(LedgerError::Lost {
            first: last_id + 1,
            last: evidenced,
            path: log_end.0,
            offset: log_end.1,
        });
    }
    if let Some(e) = derived_mismatch {
        return Err(e);
    }
    let mut report = CheckReport {
        segments: paths.len(),
        txs: last_id,
        last_tx: last_id,
        last_alh,
        torn_tail,
        index_runs: 0,
        index_records: 0,
        states_checked: 0,
    };
    if let Some(cp) = &cp {
        if cp.tx_id > 0 && found_alh(dir, &paths, &lock, cp.tx_id)? != cp.alh {
            return Err(LedgerError::Damaged {
                path: dir.join(super::checkpoint::FILE_NAME),
                offset: 0,
                reason: Damage::Checkpoint,
            });
        }
        let runs = cp
            .runs
            .iter()
            .map(|&id| Run::open(&dir.join("index").join(run::file_name(id)), id, &lock))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        for r in &runs {
            r.check()?;
        }
        super::map::check_stored(dir, cp.map_nodes, cp.tx_id, &lock)?;
        report.index_runs = runs.len();
        report.index_records = check_runs(dir, &runs, indexed)?;
    }
    for (&tx, &alh) in &wanted {
        match found.get(&tx) {
            Some(a) if *a == alh => {}
            other => {
                return Err(LedgerError::StateMismatch {
                    tx,
                    trusted: alh,
                    found: other.copied(),
                    last: last_id,
                })
            }
        }
        report.states_checked += 1;
    }
    Ok((report, collected))
}

/// The Alh of tx `tx` as its frame stores it (the walk has checked every frame already).
fn found_alh(dir: &Path, paths: &[(u32, PathBuf)], lock: &fs::DirLock, tx: TxId) -> Result<Digest> {
    let locations = RecordReader::<16>::open(&dir.join("tx.idx"))?;
    let (segment, offset, len) = super::decode_location(&locations.read(tx - 1)?);
    let path = paths
        .get((segment as usize).wrapping_sub(1))
        .map(|(_, p)| p.clone())
        .ok_or_else(|| {
            StorageError::corrupt(dir.join("tx.idx"), (tx - 1) * 20, Corruption::ShortFile)
        })?;
    let (reader, _) = SegmentReader::open_sealed(&path, lock)?;
    let payload = reader.read_frame(offset, len as usize)?;
    let (_, alh) = codec::decode_header(&payload).map_err(|r| LedgerError::BadTx {
        tx,
        path: path.clone(),
        offset,
        reason: TxFault::Decode(r),
    })?;
    Ok(alh)
}

/// The runs must hold exactly the log's entries up to the checkpoint: each record equal to
/// its entry (key, tx, flags, location, length), none missing, none extra. Returns the
/// records checked.
///
/// For txs a truncation rewrote (below `TRUNCATED`'s tx), the runs keep the locations the
/// values had: only key, tx and flags are compared.
fn check_runs(dir: &Path, runs: &[Run], mut log: Vec<IndexedEntry>) -> Result<u64> {
    let values_from = super::truncate::values_from(dir)?;
    let mut held: Vec<(IndexedEntry, PathBuf, u64)> = Vec::new();
    for r in runs {
        for i in 0..r.len() {
            let rec = r.record(i)?;
            let v = rec.version;
            held.push((
                (
                    rec.key.to_vec(),
                    v.tx,
                    v.flags(),
                    v.value.segment,
                    v.value.offset,
                    v.value.len,
                ),
                r.path().to_path_buf(),
                r.record_offset(i)?,
            ));
        }
    }
    let key_of = |e: &IndexedEntry| (e.0.clone(), e.1);
    log.sort_by_key(key_of);
    held.sort_by_key(|h| key_of(&h.0));
    let (mut li, mut hi) = (0, 0);
    while li < log.len() || hi < held.len() {
        match (log.get(li), held.get(hi)) {
            (Some(l), Some((h, path, offset))) if key_of(l) == key_of(h) => {
                let moved = l.1 < values_from;
                if (moved && l.2 != h.2) || (!moved && l != h) {
                    return Err(LedgerError::Damaged {
                        path: path.clone(),
                        offset: *offset,
                        reason: Damage::IndexRun,
                    });
                }
                li += 1;
                hi += 1;
            }
            (Some(l), Some((h, ..))) if key_of(l) < key_of(h) => {
                return Err(missing(dir, l));
            }
            (Some(l), None) => return Err(missing(dir, l)),
            (_, Some((_, path, offset))) => {
                return Err(LedgerError::Damaged {
                    path: path.clone(),
                    offset: *offset,
                    reason: Damage::IndexExtra,
                });
            }
            (None, None) => break,
        }
    }
    Ok(held.len() as u64)
}

fn missing(dir: &Path, e: &IndexedEntry) -> LedgerError {
    LedgerError::IndexMissing {
        path: dir.join("index"),
        tx: e.1,
        key: e.0.clone(),
    }
}
