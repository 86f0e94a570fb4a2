//! The offline check: walks a database directory and verifies every frame checksum, chain
//! link, entries root and value hash, recomputes the history tree and compares it with the
//! stored one, and checks the tx locations, the index runs and the checkpoint. Stops at the
//! first problem, naming the tx (when there is one), the file and the offset.

use super::chain::{check_record, Link};
use super::checkpoint::Checkpoint;
use super::recovery::list_segments;
use super::{codec, decode_location, encode_location, Damage, LedgerError, Result, TxFault};
use crate::fs;
use crate::index::run::{self, Run};
use crate::integrity::merkle::{leaf_hash, Frontier};
use crate::integrity::{value_hash, Digest, TxId, ALH_GENESIS};
use crate::storage::records::RecordReader;
use crate::storage::segment::{self, ScanEnd, SegmentHeader, SegmentReader, SEGMENT_HEADER_BYTES};
use crate::storage::{len_u32, usize_of, Corruption, StorageError};
use std::path::{Path, PathBuf};

/// What a successful check saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    pub segments: usize,
    pub txs: u64,
    /// The last tx and its Alh (the database's state).
    pub last_tx: TxId,
    pub last_alh: Digest,
    /// An unfinished write at the end of the last segment, which the next open will cut.
    pub torn_tail: Option<(PathBuf, u64)>,
    pub index_runs: usize,
}

/// [`check_with_progress`] without progress.
pub fn check(dir: &Path) -> Result<CheckReport> {
    check_with_progress(dir, |_, _| {})
}

/// Checks the database in `dir`; calls `progress(bytes_done, bytes_total)` as it reads the
/// segments. Takes the database's lock: fails with `Locked` while a server has it open.
pub fn check_with_progress(dir: &Path, mut progress: impl FnMut(u64, u64)) -> Result<CheckReport> {
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
    let history = RecordReader::<32>::open(&history_path).ok();
    let locations = RecordReader::<16>::open(&locations_path).ok();
    let (stored_nodes, stored_locations) = (
        history.as_ref().map_or(Ok(0), RecordReader::len)?,
        locations.as_ref().map_or(Ok(0), RecordReader::len)?,
    );

    let mut frontier = Frontier::new();
    let mut nodes = Vec::new();
    let mut node_pos = 0u64;
    let (mut last_id, mut last_alh, mut last_ts) = (0u64, ALH_GENESIS, 0u64);
    let mut torn_tail = None;
    let mut done = 0u64;
    let mut alhs_at_checkpoint = None;
    let cp = Checkpoint::read(dir)?;
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
                    history_root: frontier.root(),
                };
                check_record(&rec, &link).map_err(|b| bad(TxFault::Chain(b)))?;
                if tx <= stored_locations {
                    if let Some(l) = &locations {
                        if l.read(tx - 1)? != encode_location(*id, offset, len_u32(n)) {
                            return Err(LedgerError::Damaged {
                                path: locations_path.clone(),
                                offset: (tx - 1) * 20,
                                reason: Damage::TxLocation,
                            });
                        }
                    }
                }
                nodes.clear();
                frontier.append(leaf_hash(&rec.alh.0), &mut nodes);
                for n in &nodes {
                    if node_pos < stored_nodes {
                        if let Some(h) = &history {
                            if h.read(node_pos)? != n.0 {
                                return Err(LedgerError::Damaged {
                                    path: history_path.clone(),
                                    offset: node_pos * 36,
                                    reason: Damage::HistoryNode,
                                });
                            }
                        }
                    }
                    node_pos += 1;
                }
                if cp.as_ref().is_some_and(|c| c.tx_id == tx) {
                    alhs_at_checkpoint = Some(rec.alh);
                }
                last_id = tx;
                last_alh = rec.alh;
                last_ts = rec.header.timestamp_us;
                progress(done + offset + n as u64, total);
                Ok(())
            },
        )?;
        match end {
            ScanEnd::Clean => {}
            ScanEnd::Free { .. } if i + 1 == paths.len() => {}
            ScanEnd::Torn { offset } if i + 1 == paths.len() => {
                torn_tail = Some((path.clone(), offset))
            }
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
        done += bytes.len() as u64;
        progress(done, total);
    }

    let mut index_runs = 0;
    if let Some(cp) = &cp {
        let cp_path = dir.join(super::checkpoint::FILE_NAME);
        if cp.tx_id > last_id || (cp.tx_id > 0 && alhs_at_checkpoint != Some(cp.alh)) {
            return Err(LedgerError::Damaged {
                path: cp_path,
                offset: 0,
                reason: Damage::Checkpoint,
            });
        }
        for &id in &cp.runs {
            let r = Run::open(&dir.join("index").join(run::file_name(id)), id, &lock)?;
            r.check()?;
            check_run_values(&r, &paths, &lock)?;
            index_runs += 1;
        }
    }
    if let (Some(l), true) = (&locations, last_id > 0 && stored_locations >= last_id) {
        // Spot-check the last location decodes to a real frame (the loop compared them all).
        let (seg, _, _) = decode_location(&l.read(last_id - 1)?);
        if seg as usize > paths.len() {
            return Err(StorageError::corrupt(
                &locations_path,
                (last_id - 1) * 20,
                Corruption::Decode("segment"),
            )
            .into());
        }
    }
    Ok(CheckReport {
        segments: paths.len(),
        txs: last_id,
        last_tx: last_id,
        last_alh,
        torn_tail,
        index_runs,
    })
}

/// Every value a run points at must be there and match its stored hash.
fn check_run_values(r: &Run, paths: &[(u32, PathBuf)], lock: &fs::DirLock) -> Result<()> {
    let mut readers: Vec<Option<SegmentReader>> = vec![None; paths.len()];
    for i in 0..r.len() {
        let v = r.record(i)?.version;
        let slot = (v.value.segment as usize)
            .checked_sub(1)
            .filter(|&s| s < paths.len())
            .ok_or_else(|| {
                StorageError::corrupt(
                    r.path(),
                    0,
                    Corruption::Decode("run points at a missing segment"),
                )
            })?;
        if readers[slot].is_none() {
            readers[slot] = Some(SegmentReader::open_sealed(&paths[slot].1, lock)?.0);
        }
        let Some(seg) = &readers[slot] else { continue };
        let bytes = seg.read(u64::from(v.value.offset), 32 + v.value.len as usize)?;
        if value_hash(&bytes[32..]).0 != bytes[..32] {
            return Err(LedgerError::Damaged {
                path: seg.path().to_path_buf(),
                offset: u64::from(v.value.offset),
                reason: Damage::ValueHash,
            });
        }
    }
    Ok(())
}
