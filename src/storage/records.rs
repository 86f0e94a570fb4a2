//! Files of fixed-size records, each `payload (N bytes) | crc32(u64 index || payload)`
//! (docs/format.md, "Record files"). Binding the index into the checksum catches a record
//! that is intact but in the wrong place.
//!
//! These files hold state derived from the segments (the history tree's nodes, the tx
//! locations). Appends are buffered by the writer and synced at checkpoints; recovery cuts
//! them back to the last checkpoint and rebuilds the rest from the segments.

use super::{Corruption, Result, StorageError};
use crate::fs;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn crc(index: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&index.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Appends records of `N` payload bytes. One writer.
#[derive(Debug)]
pub struct RecordWriter<const N: usize> {
    path: PathBuf,
    file: Arc<File>,
    /// Records in the file plus those buffered.
    count: u64,
    /// Records written to the file so far.
    written: u64,
    pending: Vec<u8>,
}

impl<const N: usize> RecordWriter<N> {
    pub const RECORD_BYTES: u64 = N as u64 + 4;

    /// Opens (creating if absent) the file to append after its first `keep` records, which
    /// must be there. Records after them are left until [`RecordWriter::cut`]: what they hold
    /// is evidence recovery may need before it overwrites them.
    pub fn open(path: &Path, keep: u64) -> Result<RecordWriter<N>> {
        let file = fs::open_rw(path, true)?;
        let len = file
            .metadata()
            .map_err(|e| StorageError::io(path, e))?
            .len();
        let want = keep * Self::RECORD_BYTES;
        if len < want {
            return Err(StorageError::corrupt(path, len, Corruption::ShortFile));
        }
        Ok(RecordWriter {
            path: path.to_path_buf(),
            file: Arc::new(file),
            count: keep,
            written: keep,
            pending: Vec::new(),
        })
    }

    pub fn push(&mut self, payload: &[u8; N]) {
        self.pending.extend_from_slice(payload);
        self.pending
            .extend_from_slice(&crc(self.count, payload).to_le_bytes());
        self.count += 1;
    }

    /// Writes the buffered records, then cuts off whatever the file holds after them.
    pub fn cut(&mut self) -> Result<()> {
        self.flush()?;
        let want = self.count * Self::RECORD_BYTES;
        let len = self
            .file
            .metadata()
            .map_err(|e| StorageError::io(&self.path, e))?
            .len();
        if len != want {
            fs::truncate(&self.file, &self.path, want)?;
        }
        Ok(())
    }

    /// Writes buffered records to the file (not synced).
    pub fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.file
            .write_all_at(&self.pending, self.written * Self::RECORD_BYTES)
            .map_err(|e| StorageError::io(&self.path, e))?;
        self.pending.clear();
        self.written = self.count;
        Ok(())
    }

    /// Syncs what [`RecordWriter::flush`] wrote, from any thread.
    pub fn sync_handle(&self) -> fs::SyncHandle {
        fs::SyncHandle::new(&self.path, self.file.clone())
    }

    pub fn reader(&self) -> RecordReader<N> {
        RecordReader {
            path: self.path.clone(),
            file: self.file.clone(),
        }
    }
}

/// Reads records by index; safe to use from any thread while the writer appends.
#[derive(Debug, Clone)]
pub struct RecordReader<const N: usize> {
    path: PathBuf,
    file: Arc<File>,
}

impl<const N: usize> RecordReader<N> {
    pub fn open(path: &Path) -> Result<RecordReader<N>> {
        Ok(RecordReader {
            path: path.to_path_buf(),
            file: Arc::new(fs::open_ro(path)?),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whole records in the file.
    pub fn len(&self) -> Result<u64> {
        let len = self
            .file
            .metadata()
            .map_err(|e| StorageError::io(&self.path, e))?
            .len();
        Ok(len / (N as u64 + 4))
    }

    /// Record `index`, checksum verified.
    pub fn read(&self, index: u64) -> Result<[u8; N]> {
        let offset = index * (N as u64 + 4);
        let mut buf = vec![0u8; N + 4];
        self.file.read_exact_at(&mut buf, offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                StorageError::corrupt(&self.path, offset, Corruption::ShortFile)
            } else {
                StorageError::io(&self.path, e)
            }
        })?;
        let mut payload = [0u8; N];
        payload.copy_from_slice(&buf[..N]);
        let stored = u32::from_le_bytes([buf[N], buf[N + 1], buf[N + 2], buf[N + 3]]);
        if crc(index, &payload) != stored {
            return Err(StorageError::corrupt(
                &self.path,
                offset,
                Corruption::RecordCrc,
            ));
        }
        Ok(payload)
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    #[test]
    fn write_read_flip_truncate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.dat");
        let mut w = RecordWriter::<8>::open(&path, 0).unwrap();
        for i in 0..10u64 {
            w.push(&i.to_le_bytes());
        }
        w.flush().unwrap();
        let r = w.reader();
        assert_eq!(r.len().unwrap(), 10);
        assert_eq!(r.read(7).unwrap(), 7u64.to_le_bytes());
        assert!(matches!(
            r.read(10),
            Err(StorageError::Corrupt {
                reason: Corruption::ShortFile,
                ..
            })
        ));
        // A flipped bit names the record's offset.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[3 * 12 + 2] ^= 4;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            r.read(3),
            Err(StorageError::Corrupt {
                offset: 36,
                reason: Corruption::RecordCrc,
                ..
            })
        ));
        // A record moved to another index fails too.
        bytes.copy_within(0..12, 12);
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            r.read(1),
            Err(StorageError::Corrupt {
                reason: Corruption::RecordCrc,
                ..
            })
        ));
        drop(w);
        // Opening to keep 5 leaves the rest until the cut.
        let mut w = RecordWriter::<8>::open(&path, 5).unwrap();
        assert_eq!(w.reader().len().unwrap(), 10);
        w.cut().unwrap();
        assert_eq!(w.reader().len().unwrap(), 5);
        drop(w);
        assert!(RecordWriter::<8>::open(&path, 6).is_err());
    }
}
