//! The only `unsafe` code in chainlog: read-only memory maps of sealed files (sealed
//! segments, index run files and full chunks of the key map's nodes).
//!
//! # Safety contract
//!
//! `memmap2::Mmap::map` is unsafe because the mapped bytes may change, or vanish (SIGBUS), if
//! the file is modified or truncated while mapped. chainlog maps a file only when all of these
//! hold:
//!
//! 1. the file is *sealed*: its writer has finished with it (a segment the ledger moved on
//!    from, fsynced; an index run, written whole under a temporary name and renamed; a chunk
//!    of records that is full, `storage::chunks`);
//! 2. no code in this process writes to or truncates a sealed file (recovery truncates only the
//!    last, active segment, which is never mapped; runs are only ever deleted, once unused; a
//!    chunk that must be cut is replaced by a copy renamed over it, which leaves the mapped
//!    file as it was);
//! 3. the database directory is held under an exclusive [`DirLock`], so no other chainlog
//!    process writes to it.
//!
//! The API closes the contract as far as types can: the unsafe constructor is private, and
//! the one way in, [`SealedMap::sealed`], takes the directory's lock as evidence of (3) and
//! refuses a file outside that directory. (1) and (2) are the storage engine's own rules, kept
//! by its only callers (`storage::segment`, `storage::chunks`, `index::run`), which are not
//! public.
//!
//! Tampering with a sealed file by hand while the database is open breaks (3) and is not
//! supported. The safe twin of a map is `FileExt::read_exact_at` on the same file, used for the
//! active segment.
#![allow(unsafe_code)]

use super::{Result, StorageError};
use crate::fs::DirLock;
use std::fs::File;
use std::path::Path;

/// A read-only map of a sealed file.
pub(crate) struct SealedMap {
    map: memmap2::Mmap,
}

impl SealedMap {
    /// Maps `file` (at `path`, inside the directory `lock` holds) read-only. The file must be
    /// sealed and never written again by this process (contract (1) and (2) above).
    pub(crate) fn sealed(file: &File, path: &Path, lock: &DirLock) -> Result<SealedMap> {
        if !path.starts_with(lock.dir()) {
            return Err(StorageError::io(
                path,
                std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "mapped outside the locked database directory",
                ),
            ));
        }
        // SAFETY: (3) holds by `lock`, checked to cover `path`; (1) and (2) are the caller's,
        // as this function's documentation says.
        unsafe { SealedMap::new(file, path) }
    }

    /// Maps `file` read-only.
    ///
    /// # Safety
    ///
    /// For as long as the map lives, nothing may write to or truncate the file: it must be
    /// sealed (contract (1)), this process must never write it again (2), and no other
    /// process may write it (3).
    unsafe fn new(file: &File, path: &Path) -> Result<SealedMap> {
        // SAFETY: the caller keeps the contract above.
        let map = unsafe { memmap2::Mmap::map(file) }.map_err(|e| StorageError::io(path, e))?;
        Ok(SealedMap { map })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map
    }
}
