//! The history tree's stored nodes as readers reach them.

use super::lock_poisoned;
use crate::integrity::merkle::{self, NodeSource};
use crate::integrity::Digest;
use crate::storage::records::RecordReader;
use crate::storage::StorageError;
use std::sync::RwLock;

/// The history tree's nodes as the readers reach them. Nodes at `CACHED_LEVEL_MIN` and above
/// (one per 16 txs or fewer) are kept in memory once read: every proof passes through the
/// upper levels, and a stored node never changes.
pub(crate) struct HistoryNodes {
    pub(crate) file: RecordReader<32>,
    cache: RwLock<std::collections::HashMap<u64, Digest>>,
}

const CACHED_LEVEL_MIN: u32 = 4;
/// At most this many cached nodes (about 48 MiB); the cache is emptied when full.
const CACHED_NODES_MAX: usize = 1 << 20;

impl HistoryNodes {
    pub(crate) fn new(file: RecordReader<32>) -> HistoryNodes {
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
