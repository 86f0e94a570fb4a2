//! An append-only array of fixed-size records kept in chunk files of a fixed record count
//! (`NNNNNNNNNN.chunk` in a directory of their own), for derived state that readers reach at
//! random and often (the key map's nodes). Each record is `payload (N bytes) | crc32(u64 index
//! || payload)` like a record file's (docs/format.md, "Record files"), `index` counting from
//! the first record of the first chunk.
//!
//! A full chunk is *sealed*: never written again, and memory-mapped (`storage::mmap`). The
//! chunk being filled is held in memory as well as written to its file, so no reader ever
//! maps a file that is still growing. Records reach the files unsynced, written by a thread of
//! the writer's own (the flusher), so the writer's thread does not pay the kernel's copy into
//! the page cache; the caller syncs them at its checkpoints ([`ChunkWriter::sync_handles`],
//! which first waits for the flusher), and a chunk is sealed only once the flusher has written
//! all of it. A write that fails is reported by the writer's next call.
//!
//! Opening keeps the first `keep` records and drops the rest. A chunk that must lose records
//! is replaced by a copy of what it keeps (a new file renamed over it), never truncated in
//! place: a map of the old file that this process may still hold stays valid (the mapping
//! contract's rule (2)).

use super::mmap::SealedMap;
use super::{usize_of, Corruption, Result, StorageError};
use crate::fs;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock, RwLockReadGuard};

fn crc(index: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&index.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// The file name of chunk `n` (from 1).
pub fn file_name(n: u64) -> String {
    format!("{n:010}.chunk")
}

struct Chunks {
    sealed: Vec<SealedMap>,
    /// The records of the chunk being filled.
    active: Vec<u8>,
    /// Records readers may read.
    count: u64,
}

/// The records, for readers on any thread.
pub struct ChunkStore<const N: usize> {
    dir: PathBuf,
    per_chunk: u64,
    chunks: RwLock<Chunks>,
}

/// A read view: every record published when it was taken, until it is dropped (the writer
/// publishes only once it is gone).
pub struct ChunkRead<'a, const N: usize> {
    store: &'a ChunkStore<N>,
    chunks: RwLockReadGuard<'a, Chunks>,
}

impl<const N: usize> ChunkStore<N> {
    pub const RECORD_BYTES: u64 = N as u64 + 4;

    /// Opens the store in `dir` (created if absent) keeping its first `keep` records, which
    /// must be there, and returns it with its one writer. `lock` holds the database directory
    /// that `dir` is in (the mapping contract's rule (3)).
    pub fn open(
        dir: &Path,
        per_chunk: u64,
        keep: u64,
        lock: &fs::DirLock,
    ) -> Result<(Arc<ChunkStore<N>>, ChunkWriter<N>)> {
        assert!(per_chunk > 0, "chunks hold at least one record");
        fs::create_dir_all(dir)?;
        let chunk_bytes = per_chunk * Self::RECORD_BYTES;
        let full = keep / per_chunk;
        let rest = keep % per_chunk;
        let mut sealed = Vec::new();
        for n in 1..=full {
            let path = dir.join(file_name(n));
            let file = fs::open_ro(&path)?;
            let len = file
                .metadata()
                .map_err(|e| StorageError::io(&path, e))?
                .len();
            if len != chunk_bytes {
                return Err(StorageError::corrupt(&path, len, Corruption::ShortFile));
            }
            sealed.push(SealedMap::sealed(&file, &path, lock)?);
        }
        // The chunk being filled: its kept records, read into memory.
        let active_path = dir.join(file_name(full + 1));
        let want = rest * Self::RECORD_BYTES;
        let mut active = Vec::with_capacity(usize_of(chunk_bytes));
        if rest > 0 {
            let file = fs::open_ro(&active_path)?;
            let len = file
                .metadata()
                .map_err(|e| StorageError::io(&active_path, e))?
                .len();
            if len < want {
                return Err(StorageError::corrupt(
                    &active_path,
                    len,
                    Corruption::ShortFile,
                ));
            }
            active.resize(usize_of(want), 0);
            file.read_exact_at(&mut active, 0)
                .map_err(|e| StorageError::io(&active_path, e))?;
            if len != want {
                fs::replace(&active_path, &active, fs::FILE_MODE)?;
            }
        } else {
            fs::remove(&active_path)?;
        }
        // Chunks after it hold only records that are not kept.
        for p in fs::list(dir, "chunk")? {
            let n = p
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok());
            if n.is_none_or(|n| n > full + 1) {
                fs::remove(&p)?;
            }
        }
        let file = Arc::new(fs::open_rw(&active_path, true)?);
        fs::sync_dir(dir)?;
        let store = Arc::new(ChunkStore {
            dir: dir.to_path_buf(),
            per_chunk,
            chunks: RwLock::new(Chunks {
                sealed,
                active,
                count: keep,
            }),
        });
        let writer = ChunkWriter {
            store: store.clone(),
            active_path: active_path.clone(),
            file: file.clone(),
            unsynced: vec![fs::SyncHandle::new(&active_path, file)],
            pending: Vec::new(),
            count: keep,
            published: keep,
            flusher: Flusher::spawn(dir)?,
        };
        Ok((store, writer))
    }

    /// Opens the first `count` records of the store in `dir` for reading only, changing
    /// nothing (the offline check).
    pub fn open_read(
        dir: &Path,
        per_chunk: u64,
        count: u64,
        lock: &fs::DirLock,
    ) -> Result<ChunkStore<N>> {
        let chunk_bytes = per_chunk * Self::RECORD_BYTES;
        let mut sealed = Vec::new();
        for n in 1..=count / per_chunk {
            let path = dir.join(file_name(n));
            let file = fs::open_ro(&path)?;
            let len = file
                .metadata()
                .map_err(|e| StorageError::io(&path, e))?
                .len();
            if len != chunk_bytes {
                return Err(StorageError::corrupt(&path, len, Corruption::ShortFile));
            }
            sealed.push(SealedMap::sealed(&file, &path, lock)?);
        }
        let rest = count % per_chunk;
        let mut active = vec![0u8; usize_of(rest * Self::RECORD_BYTES)];
        if rest > 0 {
            let path = dir.join(file_name(count / per_chunk + 1));
            let file = fs::open_ro(&path)?;
            file.read_exact_at(&mut active, 0).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    StorageError::corrupt(&path, 0, Corruption::ShortFile)
                } else {
                    StorageError::io(&path, e)
                }
            })?;
        }
        Ok(ChunkStore {
            dir: dir.to_path_buf(),
            per_chunk,
            chunks: RwLock::new(Chunks {
                sealed,
                active,
                count,
            }),
        })
    }

    /// A read view of every published record.
    pub fn read(&self) -> ChunkRead<'_, N> {
        ChunkRead {
            store: self,
            chunks: self
                .chunks
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl<const N: usize> ChunkRead<'_, N> {
    /// Records readers may read.
    #[cfg(test)]
    fn len(&self) -> u64 {
        self.chunks.count
    }

    /// Record `index`, checksum verified.
    pub fn get(&self, index: u64) -> Result<[u8; N]> {
        let per = self.store.per_chunk;
        let (chunk, slot) = (index / per, index % per);
        let rb = usize_of(ChunkStore::<N>::RECORD_BYTES);
        let at = usize_of(slot) * rb;
        let path = || self.store.dir.join(file_name(chunk + 1));
        if index >= self.chunks.count {
            return Err(StorageError::corrupt(
                path(),
                at as u64,
                Corruption::ShortFile,
            ));
        }
        let bytes = match self.chunks.sealed.get(usize_of(chunk)) {
            Some(map) => &map.bytes()[at..at + rb],
            None => &self.chunks.active[at..at + rb],
        };
        let mut payload = [0u8; N];
        payload.copy_from_slice(&bytes[..N]);
        let stored = u32::from_le_bytes([bytes[N], bytes[N + 1], bytes[N + 2], bytes[N + 3]]);
        if crc(index, &payload) != stored {
            return Err(StorageError::corrupt(
                path(),
                at as u64,
                Corruption::RecordCrc,
            ));
        }
        Ok(payload)
    }
}

/// The one writer: pushes records, then publishes them to the files and the readers.
pub struct ChunkWriter<const N: usize> {
    store: Arc<ChunkStore<N>>,
    active_path: PathBuf,
    file: Arc<File>,
    /// Files written since the last [`ChunkWriter::sync_handles`].
    unsynced: Vec<fs::SyncHandle>,
    /// Records pushed and not yet published.
    pending: Vec<u8>,
    /// Records published plus pending.
    count: u64,
    published: u64,
    flusher: Flusher,
}

/// Published records on their way to a chunk file.
struct Write {
    file: Arc<File>,
    path: PathBuf,
    bytes: Vec<u8>,
    at: u64,
}

#[derive(Default)]
struct Flushed {
    submitted: u64,
    done: u64,
    /// The first write that failed (sticky: the files are behind from then on).
    failed: Option<(PathBuf, std::io::ErrorKind, String)>,
    /// Buffers written out, for the writer to fill again.
    spare: Vec<Vec<u8>>,
    /// The thread has ended (its queue closed, or it panicked): nothing more will be done.
    gone: bool,
}

/// Marks the flusher gone when its thread ends, however it ends, so that no wait outlives it.
struct Gone(Arc<(Mutex<Flushed>, Condvar)>);

impl Drop for Gone {
    fn drop(&mut self) {
        let (lock, signal) = &*self.0;
        lock.lock().unwrap_or_else(PoisonError::into_inner).gone = true;
        signal.notify_all();
    }
}

/// Writes to fall this far behind before the writer waits.
const FLUSH_QUEUE: usize = 4;
const SPARE_BUFFERS: usize = FLUSH_QUEUE + 1;

/// The thread that writes published records to their files, in the order given.
struct Flusher {
    /// The chunk directory, to name in an error when the thread is gone.
    dir: PathBuf,
    jobs: Option<SyncSender<Write>>,
    state: Arc<(Mutex<Flushed>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    fn spawn(dir: &Path) -> Result<Flusher> {
        let (jobs, rx) = sync_channel::<Write>(FLUSH_QUEUE);
        let state = Arc::new((Mutex::new(Flushed::default()), Condvar::new()));
        let shared = state.clone();
        let thread = std::thread::Builder::new()
            .name("chainlog-flush".into())
            .spawn(move || {
                let _gone = Gone(shared.clone());
                for mut w in rx {
                    let r = w.file.write_all_at(&w.bytes, w.at);
                    let (lock, signal) = &*shared;
                    let mut f = lock.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Err(e) = r {
                        f.failed
                            .get_or_insert_with(|| (w.path, e.kind(), e.to_string()));
                    }
                    f.done += 1;
                    if f.spare.len() < SPARE_BUFFERS {
                        w.bytes.clear();
                        f.spare.push(w.bytes);
                    }
                    drop(f);
                    signal.notify_all();
                }
            })
            .map_err(|e| StorageError::io(dir, e))?;
        Ok(Flusher {
            dir: dir.to_path_buf(),
            jobs: Some(jobs),
            state,
            thread: Some(thread),
        })
    }

    fn failure(f: &Flushed) -> Result<()> {
        match &f.failed {
            Some((path, kind, msg)) => Err(StorageError::io(
                path,
                std::io::Error::new(*kind, msg.clone()),
            )),
            None => Ok(()),
        }
    }

    /// Records that the thread is gone with writes undone (a failure from then on).
    fn lost(f: &mut Flushed, path: &Path) {
        f.failed.get_or_insert_with(|| {
            (
                path.to_path_buf(),
                std::io::ErrorKind::Other,
                "the chunk flusher thread ended with records unwritten".into(),
            )
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Flushed> {
        self.state.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An empty buffer, one written out if there is one.
    fn spare(&self) -> Vec<u8> {
        self.lock().spare.pop().unwrap_or_default()
    }

    fn submit(&self, w: Write) -> Result<()> {
        {
            let mut f = self.lock();
            Self::failure(&f)?;
            f.submitted += 1;
        }
        let path = w.path.clone();
        let sent = self.jobs.as_ref().map(|j| j.send(w));
        if !matches!(sent, Some(Ok(()))) {
            let mut f = self.lock();
            f.submitted -= 1;
            Self::lost(&mut f, &path);
            return Self::failure(&f);
        }
        Ok(())
    }

    /// Waits until every write submitted is done; the first that failed, if one did.
    fn wait(&self) -> Result<()> {
        let mut f = self.lock();
        while f.done < f.submitted && !f.gone {
            f = self.state.1.wait(f).unwrap_or_else(PoisonError::into_inner);
        }
        if f.done < f.submitted {
            Self::lost(&mut f, &self.dir);
        }
        Self::failure(&f)
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has written what is queued.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl<const N: usize> ChunkWriter<N> {
    /// Appends a record (visible to readers once published); returns its index.
    pub fn push(&mut self, payload: &[u8; N]) -> u64 {
        let index = self.count;
        self.pending.extend_from_slice(payload);
        self.pending
            .extend_from_slice(&crc(index, payload).to_le_bytes());
        self.count += 1;
        index
    }

    /// Records published plus pending.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// A record pushed and not yet published, if `index` is one.
    pub fn pending(&self, index: u64) -> Option<[u8; N]> {
        let i = index.checked_sub(self.published)?;
        let rb = usize_of(ChunkStore::<N>::RECORD_BYTES);
        let at = usize_of(i) * rb;
        let b = self.pending.get(at..at + N)?;
        let mut payload = [0u8; N];
        payload.copy_from_slice(b);
        Some(payload)
    }

    /// Drops the pending records from `len` on (`len` at least what is published).
    pub fn rollback(&mut self, len: u64) {
        let len = len.max(self.published);
        if len < self.count {
            let keep = usize_of((len - self.published) * ChunkStore::<N>::RECORD_BYTES);
            self.pending.truncate(keep);
            self.count = len;
        }
    }

    pub fn store(&self) -> &Arc<ChunkStore<N>> {
        &self.store
    }

    /// Makes the pending records readable and hands them to the flusher for their chunk
    /// files; a chunk that fills up is sealed (once the flusher has written it) and mapped,
    /// and the next one created. `lock` holds the database directory.
    pub fn publish(&mut self, lock: &fs::DirLock) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let rb = ChunkStore::<N>::RECORD_BYTES;
        let per = self.store.per_chunk;
        let total = self.pending.len();
        let mut from = 0usize;
        let mut at = self.published;
        while from < total {
            let slot = at % per;
            let room = usize_of((per - slot) * rb);
            let len = (total - from).min(room);
            let records = len as u64 / rb;
            {
                let mut chunks = self
                    .store
                    .chunks
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                chunks
                    .active
                    .extend_from_slice(&self.pending[from..from + len]);
                chunks.count = at + records;
            }
            let bytes = if len == total {
                std::mem::replace(&mut self.pending, self.flusher.spare())
            } else {
                self.pending[from..from + len].to_vec()
            };
            self.flusher.submit(Write {
                file: self.file.clone(),
                path: self.active_path.clone(),
                bytes,
                at: slot * rb,
            })?;
            from += len;
            at += records;
            if at.is_multiple_of(per) {
                // Full: never written again once the flusher is done with it, so it may be
                // mapped.
                self.flusher.wait()?;
                let map = SealedMap::sealed(&self.file, &self.active_path, lock)?;
                {
                    let mut chunks = self
                        .store
                        .chunks
                        .write()
                        .unwrap_or_else(PoisonError::into_inner);
                    chunks.sealed.push(map);
                    // Its copy in memory is now the map's to serve; the buffer, its pages
                    // already faulted in, takes the next chunk's records.
                    chunks.active.clear();
                }
                self.active_path = self.store.dir.join(file_name(at / per + 1));
                self.file = Arc::new(fs::open_rw(&self.active_path, true)?);
                fs::sync_dir(&self.store.dir)?;
                self.unsynced
                    .push(fs::SyncHandle::new(&self.active_path, self.file.clone()));
            }
        }
        self.pending.clear();
        self.published = at;
        Ok(())
    }

    /// Handles that sync every file written since the last call (the chunk being filled is
    /// always among them), once the flusher has written every record published; the first
    /// write of its that failed, if one did.
    pub fn sync_handles(&mut self) -> Result<Vec<fs::SyncHandle>> {
        self.flusher.wait()?;
        let mut out = std::mem::take(&mut self.unsynced);
        self.unsynced
            .push(fs::SyncHandle::new(&self.active_path, self.file.clone()));
        if out.is_empty() {
            out.extend(self.unsynced.iter().cloned());
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    fn rec(i: u64) -> [u8; 8] {
        (i * 3 + 1).to_le_bytes()
    }

    #[test]
    fn records_span_chunks_reopen_and_cut() {
        let dir = tempfile::tempdir().unwrap();
        let lock = fs::DirLock::acquire(dir.path()).unwrap();
        let cdir = dir.path().join("nodes");
        let (store, mut w) = ChunkStore::<8>::open(&cdir, 4, 0, &lock).unwrap();
        for i in 0..10 {
            assert_eq!(w.push(&rec(i)), i);
        }
        assert_eq!(store.read().len(), 0);
        assert_eq!(w.pending(3), Some(rec(3)));
        w.rollback(9);
        assert_eq!(w.len(), 9);
        w.publish(&lock).unwrap();
        {
            let r = store.read();
            assert_eq!(r.len(), 9);
            for i in 0..9 {
                assert_eq!(r.get(i).unwrap(), rec(i));
            }
            assert!(matches!(
                r.get(9),
                Err(StorageError::Corrupt {
                    reason: Corruption::ShortFile,
                    ..
                })
            ));
        }
        assert_eq!(fs::list(&cdir, "chunk").unwrap().len(), 3);
        for i in 9..13 {
            w.push(&rec(i));
        }
        w.publish(&lock).unwrap();
        drop((store, w));
        // Reopen keeping 6 records: chunk 2 is cut by a copy, chunks 3 and 4 are removed.
        let (store, mut w) = ChunkStore::<8>::open(&cdir, 4, 6, &lock).unwrap();
        assert_eq!(store.read().len(), 6);
        assert_eq!(store.read().get(5).unwrap(), rec(5));
        assert_eq!(fs::list(&cdir, "chunk").unwrap().len(), 2);
        assert_eq!(w.push(&rec(6)), 6);
        w.publish(&lock).unwrap();
        assert_eq!(store.read().get(6).unwrap(), rec(6));
        drop((store, w));
        // Keeping more than there is fails, naming the file.
        assert!(matches!(
            ChunkStore::<8>::open(&cdir, 4, 9, &lock),
            Err(StorageError::Corrupt {
                reason: Corruption::ShortFile,
                ..
            })
        ));
    }

    #[test]
    fn a_write_the_flusher_fails_is_reported_by_the_next_call() {
        let dir = tempfile::tempdir().unwrap();
        let lock = fs::DirLock::acquire(dir.path()).unwrap();
        let cdir = dir.path().join("nodes");
        let (store, mut w) = ChunkStore::<8>::open(&cdir, 4, 0, &lock).unwrap();
        w.push(&rec(0));
        w.publish(&lock).unwrap();
        assert!(w.sync_handles().is_ok());
        // The chunk file swapped for a device every write to fails with ENOSPC.
        w.file = Arc::new(
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap(),
        );
        w.push(&rec(1));
        // Published: readers have it at once; the failed write comes back later.
        w.publish(&lock).unwrap();
        assert_eq!(store.read().get(1).unwrap(), rec(1));
        let err = |r: Result<()>| match r {
            Err(StorageError::Io { source, .. }) => source.kind(),
            other => panic!("expected the flusher's error, got {other:?}"),
        };
        assert_eq!(
            err(w.sync_handles().map(drop)),
            std::io::ErrorKind::StorageFull
        );
        // Sticky: the file is behind from then on, so nothing more is taken.
        w.push(&rec(2));
        assert_eq!(err(w.publish(&lock)), std::io::ErrorKind::StorageFull);
    }

    #[test]
    fn a_flusher_thread_gone_fails_the_writer_instead_of_hanging_it() {
        let dir = tempfile::tempdir().unwrap();
        let lock = fs::DirLock::acquire(dir.path()).unwrap();
        let cdir = dir.path().join("nodes");
        let (_store, mut w) = ChunkStore::<8>::open(&cdir, 4, 0, &lock).unwrap();
        // The queue closed under the writer: the thread ends.
        w.flusher.jobs = None;
        w.flusher.thread.take().unwrap().join().unwrap();
        w.push(&rec(0));
        assert!(matches!(w.publish(&lock), Err(StorageError::Io { .. })));
        assert!(matches!(w.sync_handles(), Err(StorageError::Io { .. })));
    }

    #[test]
    fn a_flipped_bit_or_a_moved_record_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let lock = fs::DirLock::acquire(dir.path()).unwrap();
        let cdir = dir.path().join("nodes");
        let (store, mut w) = ChunkStore::<8>::open(&cdir, 4, 0, &lock).unwrap();
        for i in 0..6 {
            w.push(&rec(i));
        }
        w.publish(&lock).unwrap();
        drop((store, w));
        let p = cdir.join(file_name(2));
        let mut b = std::fs::read(&p).unwrap();
        b[12 + 3] ^= 1;
        std::fs::write(&p, &b).unwrap();
        let (store, _w) = ChunkStore::<8>::open(&cdir, 4, 6, &lock).unwrap();
        let r = store.read();
        assert!(r.get(4).is_ok());
        assert!(matches!(
            r.get(5),
            Err(StorageError::Corrupt { offset: 12, reason: Corruption::RecordCrc, ref path }) if *path == p
        ));
        drop(r);
        drop(store);
        // A sealed chunk's record copied to another slot fails its check too.
        let p1 = cdir.join(file_name(1));
        let mut b = std::fs::read(&p1).unwrap();
        b.copy_within(0..12, 12);
        std::fs::write(&p1, &b).unwrap();
        let (store, _w) = ChunkStore::<8>::open(&cdir, 4, 4, &lock).unwrap();
        assert!(store.read().get(1).is_err());
        assert!(store.read().get(0).is_ok());
    }
}
