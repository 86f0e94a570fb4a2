//! Every creation, rename, removal, sync and lock of a file or directory that chainlog makes
//! goes through here, so the durability rules live in one place:
//!
//! - a new file or directory is durable only once its parent directory is synced;
//! - a replaced file is written whole under a unique temporary name in the same directory,
//!   synced, renamed over the old one, and the directory synced ([`replace`]): after a crash
//!   the file holds the old content or the new, never a mix;
//! - one process holds a database directory at a time ([`DirLock`]).
//!
//! A leaf layer: it knows nothing of chainlog's formats. Errors carry the path and the
//! operation's `std::io::Error`.
// The SDK alone (feature `client`) or the engine alone use parts of it.
#![cfg_attr(not(feature = "server"), allow(dead_code))]

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A file operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is locked by another process")]
    Locked { path: PathBuf },
}

impl FsError {
    fn io(path: impl Into<PathBuf>, source: std::io::Error) -> FsError {
        FsError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = FsError> = std::result::Result<T, E>;

/// Permissions of the files chainlog creates: only its owner reads a database.
pub const FILE_MODE: u32 = 0o600;
/// Permissions of files that hold secrets (the same: every file is private).
pub const PRIVATE_MODE: u32 = 0o600;
/// Permissions of the directories chainlog creates.
pub const DIR_MODE: u32 = 0o700;

/// Temporary files end with this (and nothing else chainlog writes does).
pub const TEMP_SUFFIX: &str = ".tmp";

/// Creates `path` and its missing parents (mode [`DIR_MODE`]), durably.
pub fn create_dir_all(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
        .map_err(|e| FsError::io(path, e))?;
    sync_dir(parent_of(path))
}

pub fn sync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| FsError::io(path, e))
}

pub fn open_rw(path: &Path, create: bool) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .mode(FILE_MODE)
        .truncate(false)
        .open(path)
        .map_err(|e| FsError::io(path, e))
}

/// Creates `path`, which must not exist, writes `head` to it and syncs it and its directory.
pub fn create_new(path: &Path, head: &[u8]) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(|e| FsError::io(path, e))?;
    (&file)
        .write_all(head)
        .and_then(|()| file.sync_all())
        .map_err(|e| FsError::io(path, e))?;
    sync_dir(parent_of(path))?;
    Ok(file)
}

pub fn open_ro(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| FsError::io(path, e))
}

/// A name for a temporary sibling of `path`, unique in this machine for as long as this
/// process lives: two processes replacing one file never share a temporary file.
fn temp_name(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map_or_else(Default::default, |n| n.to_os_string());
    let mut tmp = name;
    tmp.push(format!(".{}.{n}{TEMP_SUFFIX}", std::process::id()));
    path.with_file_name(tmp)
}

/// Replaces `path` atomically with what `write` writes: a unique temporary file in the same
/// directory with permissions `mode`, written, flushed, synced, renamed over `path`, then the
/// directory synced. After a crash `path` holds the old content or the new, never a mix (a
/// temporary file may be left; [`remove_temps`] clears them).
pub fn replace_with(
    path: &Path,
    mode: u32,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = temp_name(path);
    let io = |e| FsError::io(&tmp, e);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let written = write(&mut w)
        .and_then(|()| w.into_inner().map_err(std::io::IntoInnerError::into_error))
        .and_then(|f| f.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(FsError::io(path, e));
    }
    sync_dir(parent_of(path))
}

/// A file written in steps (a backup, say) that appears at its path only once whole: it is
/// written under a unique temporary name, and [`Staged::commit`] syncs it, renames it over
/// `path` and syncs the directory. Dropped uncommitted, the temporary file is removed.
pub struct Staged {
    path: PathBuf,
    tmp: PathBuf,
    writer: Option<BufWriter<File>>,
}

impl Staged {
    /// Starts `path` with permissions `mode`.
    pub fn create(path: &Path, mode: u32) -> Result<Staged> {
        let tmp = temp_name(path);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| FsError::io(&tmp, e))?;
        Ok(Staged {
            path: path.to_path_buf(),
            tmp,
            writer: Some(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// Appends `bytes`.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let w = self
            .writer
            .as_mut()
            .ok_or_else(|| FsError::io(&self.tmp, std::io::Error::other("already committed")))?;
        w.write_all(bytes).map_err(|e| FsError::io(&self.tmp, e))
    }

    /// Makes the file durable at its path.
    pub fn commit(mut self) -> Result<()> {
        let Some(w) = self.writer.take() else {
            return Ok(());
        };
        w.into_inner()
            .map_err(std::io::IntoInnerError::into_error)
            .and_then(|f| f.sync_all())
            .map_err(|e| FsError::io(&self.tmp, e))?;
        if let Err(e) = std::fs::rename(&self.tmp, &self.path) {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(FsError::io(&self.path, e));
        }
        sync_dir(parent_of(&self.path))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// [`replace_with`] for bytes in memory.
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    replace_with(path, mode, |w| w.write_all(bytes))
}

/// Removes the temporary files a crash left in `dir` (names ending in [`TEMP_SUFFIX`]).
pub fn remove_temps(dir: &Path) -> Result<()> {
    for p in list(dir, "tmp")? {
        remove(&p)?;
    }
    Ok(())
}

/// The file's content, or `None` if it does not exist.
pub fn read(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FsError::io(path, e)),
    }
}

/// The file's length in bytes.
pub fn len(path: &Path) -> Result<u64> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| FsError::io(path, e))
}

/// Removes a file; one already gone is not an error.
pub fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FsError::io(path, e)),
    }
}

/// Removes a directory and everything in it; one already gone is not an error.
pub fn remove_dir_all(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FsError::io(path, e)),
    }
}

/// Renames `from` to `to` (same file system) and syncs the directory of `to`.
pub fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| FsError::io(from, e))?;
    sync_dir(parent_of(to))
}

/// Entries of `dir` (files and directories), sorted.
pub fn entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| FsError::io(dir, e))? {
        out.push(e.map_err(|e| FsError::io(dir, e))?.path());
    }
    out.sort();
    Ok(out)
}

/// File names in `dir` with the given extension, sorted.
pub fn list(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    Ok(entries(dir)?
        .into_iter()
        .filter(|p| p.extension().and_then(|x| x.to_str()) == Some(ext))
        .collect())
}

pub fn truncate(file: &File, path: &Path, len: u64) -> Result<()> {
    file.set_len(len)
        .and_then(|()| file.sync_all())
        .map_err(|e| FsError::io(path, e))
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// An exclusive advisory lock on a file (created if absent, mode 0600), waited for and held
/// for as long as this value lives: for read-modify-write cycles of a file that several
/// processes share (the CLI's trusted-state file).
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    pub fn exclusive(path: &Path) -> Result<FileLock> {
        let file = open_rw(path, true)?;
        file.lock().map_err(|e| FsError::io(path, e))?;
        Ok(FileLock { _file: file })
    }
}

/// An exclusive advisory lock on a directory, held for as long as this value lives. Keeps two
/// processes from opening one database.
#[derive(Debug)]
pub struct DirLock {
    dir: PathBuf,
    _file: File,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join("LOCK");
        let file = open_rw(&path, true)?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock {
                dir: dir.to_path_buf(),
                _file: file,
            }),
            Err(std::fs::TryLockError::WouldBlock) => Err(FsError::Locked { path }),
            Err(std::fs::TryLockError::Error(e)) => Err(FsError::io(path, e)),
        }
    }

    /// The directory this lock holds.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A handle that can fsync a file from another thread than the one writing it.
#[derive(Debug, Clone)]
pub struct SyncHandle {
    path: PathBuf,
    file: std::sync::Arc<File>,
}

impl SyncHandle {
    pub fn new(path: &Path, file: std::sync::Arc<File>) -> SyncHandle {
        SyncHandle {
            path: path.to_path_buf(),
            file,
        }
    }

    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| FsError::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_is_whole_unique_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        replace(&path, b"one", 0o600).unwrap();
        replace(&path, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_ne!(temp_name(&path), temp_name(&path));
        assert_eq!(entries(dir.path()).unwrap(), vec![path.clone()]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A failed write leaves the old content and no temporary file.
        let failed = replace_with(&path, 0o600, |_| Err(std::io::Error::other("disk full")));
        assert!(matches!(failed, Err(FsError::Io { .. })));
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(entries(dir.path()).unwrap(), vec![path.clone()]);
        // A temporary file a crash left behind is cleared.
        std::fs::write(temp_name(&path), b"half").unwrap();
        remove_temps(dir.path()).unwrap();
        assert_eq!(entries(dir.path()).unwrap(), vec![path]);
    }
}
