//! The checkpoint file: what the derived files (history nodes, tx locations, index runs)
//! durably cover. Replaced atomically; one frame (docs/format.md, "Checkpoint").
//!
//! ```text
//! u16 version | u64 tx_id | [32] alh | u64 epoch | u32 segment | u64 segment_len |
//! u64 map_nodes | u64 next_run_id | u32 run_count | u64 run_id * run_count
//! ```

use super::{lock_poisoned, Result, Shared};
use crate::fs;
use crate::index::{self, run::Run, Memtable};
use crate::integrity::{Digest, TxId, ALH_GENESIS};
use crate::storage::frame::{self, FrameError};
use crate::storage::segment::SEGMENT_HEADER_BYTES;
use crate::storage::{Corruption, StorageError};
use std::path::Path;
use std::sync::Arc;

/// How many runs of about one size are merged into one.
const MERGE_FAN_IN: usize = 4;

pub const FILE_NAME: &str = "checkpoint";
const VERSION: u16 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// Every tx up to this one is in the derived files, synced.
    pub tx_id: TxId,
    pub alh: Digest,
    /// The epoch of tx `tx_id` (1 for none).
    pub epoch: u64,
    /// The log resumes in this segment at this offset.
    pub segment: u32,
    pub segment_len: u64,
    /// Key map nodes stored through tx `tx_id`.
    pub map_nodes: u64,
    pub next_run_id: u64,
    /// Index runs in use, oldest first.
    pub runs: Vec<u64>,
}

impl Checkpoint {
    pub fn empty() -> Checkpoint {
        Checkpoint {
            tx_id: 0,
            alh: ALH_GENESIS,
            epoch: 1,
            segment: 1,
            segment_len: SEGMENT_HEADER_BYTES,
            map_nodes: 0,
            next_run_id: 1,
            runs: Vec::new(),
        }
    }

    pub fn write(&self, dir: &Path) -> Result<(), StorageError> {
        let mut out = Vec::new();
        frame::encode_with(&mut out, |p| {
            p.extend_from_slice(&VERSION.to_le_bytes());
            p.extend_from_slice(&self.tx_id.to_le_bytes());
            p.extend_from_slice(&self.alh.0);
            p.extend_from_slice(&self.epoch.to_le_bytes());
            p.extend_from_slice(&self.segment.to_le_bytes());
            p.extend_from_slice(&self.segment_len.to_le_bytes());
            p.extend_from_slice(&self.map_nodes.to_le_bytes());
            p.extend_from_slice(&self.next_run_id.to_le_bytes());
            p.extend_from_slice(&crate::storage::len_u32(self.runs.len()).to_le_bytes());
            for r in &self.runs {
                p.extend_from_slice(&r.to_le_bytes());
            }
        });
        Ok(fs::replace(&dir.join(FILE_NAME), &out, fs::FILE_MODE)?)
    }

    /// `None` if the database has never taken a checkpoint.
    pub fn read(dir: &Path) -> Result<Option<Checkpoint>, StorageError> {
        let path = dir.join(FILE_NAME);
        let Some(bytes) = fs::read(&path)? else {
            return Ok(None);
        };
        let bad = |r| StorageError::corrupt(&path, 0, r);
        let payload = match frame::decode(&bytes) {
            Ok((p, n)) if n == bytes.len() => p,
            Ok(_) => return Err(bad(Corruption::Decode("bytes after the checkpoint frame"))),
            Err(FrameError::Corrupt(r)) => return Err(bad(r)),
            Err(FrameError::Incomplete { .. }) => return Err(bad(Corruption::FrameTruncated)),
        };
        let short = || bad(Corruption::Decode("checkpoint too short"));
        let take = |at: usize, n: usize| payload.get(at..at + n).ok_or_else(short);
        let u64_at = |at: usize| -> Result<u64, StorageError> {
            Ok(u64::from_le_bytes(
                take(at, 8)?.try_into().map_err(|_| short())?,
            ))
        };
        let version = u16::from_le_bytes(take(0, 2)?.try_into().map_err(|_| short())?);
        if version != VERSION {
            return Err(StorageError::Version {
                path,
                found: u64::from(version),
                supported: u64::from(VERSION),
            });
        }
        let tx_id = u64_at(2)?;
        let alh = Digest::from_slice(take(10, 32)?).ok_or_else(short)?;
        let epoch = u64_at(42)?;
        let segment = u32::from_le_bytes(take(50, 4)?.try_into().map_err(|_| short())?);
        let segment_len = u64_at(54)?;
        let map_nodes = u64_at(62)?;
        let next_run_id = u64_at(70)?;
        let count = u32::from_le_bytes(take(78, 4)?.try_into().map_err(|_| short())?) as usize;
        if payload.len() != 82 + 8 * count {
            return Err(bad(Corruption::Decode("checkpoint run list length")));
        }
        let runs = (0..count)
            .map(|i| u64_at(82 + 8 * i))
            .collect::<Result<_, _>>()?;
        Ok(Some(Checkpoint {
            tx_id,
            alh,
            epoch,
            segment,
            segment_len,
            map_nodes,
            next_run_id,
            runs,
        }))
    }
}

/// The index runs in use and the next run number: owned by whoever runs the checkpoint.
pub(crate) struct Runs {
    pub next_id: u64,
    pub runs: Vec<Arc<Run>>,
}

/// One checkpoint's work, taken on its own thread so that commits go on meanwhile.
pub(crate) struct Job {
    pub(crate) shared: Arc<Shared>,
    pub(crate) memtable: Arc<Memtable>,
    pub(crate) checkpoint: Checkpoint,
    pub(crate) syncs: Vec<fs::SyncHandle>,
}

impl Job {
    pub(crate) fn run(self, state: &mut Runs) -> Result<()> {
        for s in &self.syncs {
            s.sync()?;
        }
        let index_dir = self.shared.dir.join("index");
        let new_run = |state: &mut Runs| {
            let id = state.next_id;
            state.next_id += 1;
            (id, index_dir.join(index::run::file_name(id)))
        };
        if self.memtable.versions() > 0 {
            let (id, path) = new_run(state);
            self.memtable.write(&path)?;
            state
                .runs
                .push(Arc::new(self.shared.locked(|l| Run::open(&path, id, l))?));
        }
        // Size-tiered, fan-in 4: once the newest runs include 4 of about the same size
        // (each under twice the newest), they are merged into one; so each version is
        // rewritten about log4(n / memtable size) times. More than `runs_max` runs are merged
        // whole, a cap that the tiers normally stay under.
        loop {
            let n = state.runs.len();
            let newest = state.runs.last().map_or(0, |r| r.len());
            let similar = state
                .runs
                .iter()
                .rev()
                .take_while(|r| r.len() < 2 * newest.max(1))
                .count();
            let from = if n > self.shared.options.runs_max {
                0
            } else if similar >= MERGE_FAN_IN {
                n - similar
            } else {
                break;
            };
            let (id, path) = new_run(state);
            index::merge_runs(&state.runs[from..], &path)?;
            state.runs.truncate(from);
            state
                .runs
                .push(Arc::new(self.shared.locked(|l| Run::open(&path, id, l))?));
        }
        let mut checkpoint = self.checkpoint;
        checkpoint.next_run_id = state.next_id;
        checkpoint.runs = state.runs.iter().map(|r| r.id()).collect();
        checkpoint.write(&self.shared.dir)?;
        lock_poisoned(self.shared.index.write()).install(state.runs.clone(), &self.memtable);
        // Runs merged away (including any written by this checkpoint) are deleted; a map
        // still held by a reader stays valid until dropped. Only this job writes runs.
        let keep: Vec<std::ffi::OsString> = state
            .runs
            .iter()
            .filter_map(|r| r.path().file_name().map(Into::into))
            .collect();
        for p in fs::list(&index_dir, "idx")? {
            if !p.file_name().is_some_and(|n| keep.iter().any(|k| k == n)) {
                fs::remove(&p)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_flip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Checkpoint::read(dir.path()).unwrap(), None);
        let c = Checkpoint {
            tx_id: 5,
            alh: Digest([9; 32]),
            epoch: 3,
            segment: 2,
            segment_len: 999,
            map_nodes: 12,
            next_run_id: 4,
            runs: vec![1, 3],
        };
        c.write(dir.path()).unwrap();
        assert_eq!(Checkpoint::read(dir.path()).unwrap(), Some(c));
        let path = dir.path().join(FILE_NAME);
        let mut b = std::fs::read(&path).unwrap();
        b[20] ^= 1;
        std::fs::write(&path, &b).unwrap();
        assert!(matches!(
            Checkpoint::read(dir.path()),
            Err(StorageError::Corrupt { offset: 0, .. })
        ));
    }
}
