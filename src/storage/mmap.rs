//! The only `unsafe` code in chainlog: read-only memory maps of sealed files (sealed
//! segments and index run files).
//!
//! # Safety contract
//!
//! `memmap2::Mmap::map` is unsafe because the mapped bytes may change, or vanish (SIGBUS), if
//! the file is modified or truncated while mapped. chainlog maps a file only when all of these
//! hold, and every caller of [`SealedMap::new`] relies on them:
//!
//! 1. the file is *sealed*: its writer has finished with it and it is fsynced (a segment the
//!    ledger moved on from; an index run, written whole under a temporary name and renamed);
//! 2. no code in this process writes to or truncates a sealed file (recovery truncates only the
//!    last, active segment, which is never mapped; runs are only ever deleted, once unused);
//! 3. the database directory is held under an exclusive [`super::fs::DirLock`], so no other
//!    chainlog process writes to it.
//!
//! Tampering with a sealed file by hand while the database is open breaks (3) and is not
//! supported. The safe twin of a map is `FileExt::read_exact_at` on the same file, used for the
//! active segment.

use super::{Result, StorageError};
use std::fs::File;
use std::path::Path;

pub struct SealedMap {
    map: memmap2::Mmap,
}

impl SealedMap {
    /// Maps `file` (at `path`) read-only. The caller keeps the contract above.
    pub fn new(file: &File, path: &Path) -> Result<SealedMap> {
        // SAFETY: the file is sealed, fsynced and under the directory lock (module docs).
        let map = unsafe { memmap2::Mmap::map(file) }.map_err(|e| StorageError::io(path, e))?;
        Ok(SealedMap { map })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.map
    }
}
