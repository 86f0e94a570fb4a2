//! Index run files: immutable, sorted `(key, tx)` records with an offsets table, written once
//! and then memory-mapped (docs/format.md, "Index runs").
//!
//! Layout: a 32-byte header, the records, a table of `u64` record offsets, a 40-byte footer.
//! Each record carries a crc32 over its bytes and its ordinal, checked on every read.

use super::{ValueRef, Version};
use crate::fs;
use crate::storage::mmap::SealedMap;
use crate::storage::segment::MAGIC;
use crate::storage::{Corruption, Result, StorageError};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const KIND_RUN: u8 = 2;
pub const RUN_FORMAT_VERSION: u8 = 1;
const HEADER_BYTES: u64 = 32;
const FOOTER_BYTES: u64 = 40;
const FOOTER_LEN: usize = 40;
/// key_len u16, flags u8, tx u64, segment u32, offset u32, len u32.
const FIXED_BYTES: usize = 23;

pub fn file_name(id: u64) -> String {
    format!("run-{id:010}.idx")
}

fn record_crc(ordinal: u64, bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&ordinal.to_le_bytes());
    h.update(bytes);
    h.finalize()
}

fn header_bytes() -> [u8; HEADER_BYTES as usize] {
    let mut b = [0u8; HEADER_BYTES as usize];
    b[..8].copy_from_slice(MAGIC);
    b[8] = KIND_RUN;
    b[9] = RUN_FORMAT_VERSION;
    let crc = crc32fast::hash(&b[..28]);
    b[28..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// [`write`] for records that own their keys.
pub fn write_owned(
    path: &Path,
    records: impl Iterator<Item = Result<(Vec<u8>, Version)>>,
) -> Result<()> {
    write_with(path, records)
}

/// Writes `records` (sorted by key, then tx; no duplicates) as a run at `path`, durably.
pub fn write<'a>(
    path: &Path,
    records: impl Iterator<Item = Result<(&'a [u8], Version)>>,
) -> Result<()> {
    write_with(path, records)
}

fn write_with<K: AsRef<[u8]>>(
    path: &Path,
    records: impl Iterator<Item = Result<(K, Version)>>,
) -> Result<()> {
    // A record that fails to read (a merge's input) aborts the write; it is the error given.
    let mut failed: Option<StorageError> = None;
    let written = fs::replace_with(path, fs::FILE_MODE, |w| {
        w.write_all(&header_bytes())?;
        let mut offsets: Vec<u64> = Vec::new();
        let mut at = HEADER_BYTES;
        let (mut min_tx, mut max_tx) = (u64::MAX, 0u64);
        let mut rec = Vec::with_capacity(64);
        for r in records {
            let (key, v) = match r {
                Ok(r) => r,
                Err(e) => {
                    failed = Some(e);
                    return Err(std::io::Error::other("a merged run failed to read"));
                }
            };
            let key = key.as_ref();
            rec.clear();
            // Keys are at most KEY_BYTES_MAX (1024) bytes: checked at commit.
            rec.extend_from_slice(&u16::try_from(key.len()).unwrap_or(u16::MAX).to_le_bytes());
            rec.push(v.flags());
            rec.extend_from_slice(&v.tx.to_le_bytes());
            rec.extend_from_slice(&v.value.segment.to_le_bytes());
            rec.extend_from_slice(&v.value.offset.to_le_bytes());
            rec.extend_from_slice(&v.value.len.to_le_bytes());
            rec.extend_from_slice(key);
            let crc = record_crc(offsets.len() as u64, &rec);
            rec.extend_from_slice(&crc.to_le_bytes());
            w.write_all(&rec)?;
            offsets.push(at);
            at += rec.len() as u64;
            min_tx = min_tx.min(v.tx);
            max_tx = max_tx.max(v.tx);
        }
        let offsets_pos = at;
        let mut table_crc = crc32fast::Hasher::new();
        for o in &offsets {
            let b = o.to_le_bytes();
            table_crc.update(&b);
            w.write_all(&b)?;
        }
        let mut footer = Vec::with_capacity(FOOTER_LEN);
        footer.extend_from_slice(&(offsets.len() as u64).to_le_bytes());
        footer.extend_from_slice(&offsets_pos.to_le_bytes());
        footer.extend_from_slice(&min_tx.to_le_bytes());
        footer.extend_from_slice(&max_tx.to_le_bytes());
        footer.extend_from_slice(&table_crc.finalize().to_le_bytes());
        let crc = crc32fast::hash(&footer);
        footer.extend_from_slice(&crc.to_le_bytes());
        w.write_all(&footer)
    });
    match (written, failed) {
        (_, Some(e)) => Err(e),
        (r, None) => Ok(r?),
    }
}

/// One record of a run, borrowed from its map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunRecord<'a> {
    pub key: &'a [u8],
    pub version: Version,
}

/// An open, memory-mapped run.
pub struct Run {
    path: PathBuf,
    id: u64,
    map: SealedMap,
    count: u64,
    offsets_pos: u64,
    table_crc: u32,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("path", &self.path)
            .field("count", &self.count)
            .finish()
    }
}

impl Run {
    /// Opens a run and checks its header and footer (not its records: they are checked as
    /// they are read, so opening does not grow with the run).
    /// `lock` holds the database directory (the mapping's safety contract, `storage::mmap`).
    pub fn open(path: &Path, id: u64, lock: &fs::DirLock) -> Result<Run> {
        let file = fs::open_ro(path)?;
        let map = SealedMap::sealed(&file, path, lock)?;
        let b = map.bytes();
        let bad = |offset: u64, r| StorageError::corrupt(path, offset, r);
        if (b.len() as u64) < HEADER_BYTES + FOOTER_BYTES {
            return Err(bad(0, Corruption::ShortFile));
        }
        if b[..HEADER_BYTES as usize] != header_bytes() {
            return Err(bad(0, Corruption::FileHeader));
        }
        let fpos = b.len() - FOOTER_BYTES as usize;
        let f = &b[fpos..];
        let word = |i: usize| u64::from_le_bytes(f[i..i + 8].try_into().unwrap_or([0; 8]));
        let crc = u32::from_le_bytes([f[36], f[37], f[38], f[39]]);
        if crc32fast::hash(&f[..36]) != crc {
            return Err(bad(fpos as u64, Corruption::RecordCrc));
        }
        let (count, offsets_pos) = (word(0), word(8));
        let table_crc = u32::from_le_bytes([f[32], f[33], f[34], f[35]]);
        if offsets_pos.checked_add(count.saturating_mul(8)) != Some(fpos as u64) {
            return Err(bad(fpos as u64, Corruption::Decode("run footer sizes")));
        }
        Ok(Run {
            path: path.to_path_buf(),
            id,
            map,
            count,
            offsets_pos,
            table_crc,
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        self.count
    }

    /// The file offset of record `i` (`i < len()`), from the offsets table.
    pub fn record_offset(&self, i: u64) -> Result<u64> {
        let b = self.map.bytes();
        let slot = (self.offsets_pos + 8 * i) as usize;
        b.get(slot..slot + 8)
            .and_then(|s| s.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| StorageError::corrupt(&self.path, slot as u64, Corruption::ShortFile))
    }

    /// Record `i` (`i < len()`), checksum verified.
    pub fn record(&self, i: u64) -> Result<RunRecord<'_>> {
        let b = self.map.bytes();
        let slot = (self.offsets_pos + 8 * i) as usize;
        let at = u64::from_le_bytes(b[slot..slot + 8].try_into().unwrap_or([0; 8]));
        let bad = |r| StorageError::corrupt(&self.path, at, r);
        let start = at as usize;
        if at < HEADER_BYTES || start + FIXED_BYTES > self.offsets_pos as usize {
            return Err(StorageError::corrupt(
                &self.path,
                slot as u64,
                Corruption::Decode("record offset"),
            ));
        }
        let fixed = &b[start..start + FIXED_BYTES];
        let key_len = u16::from_le_bytes([fixed[0], fixed[1]]) as usize;
        let end = start + FIXED_BYTES + key_len;
        if end + 4 > self.offsets_pos as usize {
            return Err(bad(Corruption::Decode("record length")));
        }
        let stored = u32::from_le_bytes(b[end..end + 4].try_into().unwrap_or([0; 4]));
        if record_crc(i, &b[start..end]) != stored {
            return Err(bad(Corruption::RecordCrc));
        }
        if fixed[2] & !Version::FLAGS_KNOWN != 0 {
            return Err(bad(Corruption::Decode("unknown record flags")));
        }
        let u32_at = |o: usize| u32::from_le_bytes(fixed[o..o + 4].try_into().unwrap_or([0; 4]));
        Ok(RunRecord {
            key: &b[start + FIXED_BYTES..end],
            version: Version {
                tx: u64::from_le_bytes(fixed[3..11].try_into().unwrap_or([0; 8])),
                deleted: fixed[2] & Version::FLAG_DELETED != 0,
                expiring: fixed[2] & Version::FLAG_EXPIRING != 0,
                reference: fixed[2] & Version::FLAG_REFERENCE != 0,
                value: ValueRef {
                    segment: u32_at(11),
                    offset: u32_at(15),
                    len: u32_at(19),
                },
            },
        })
    }

    /// First position whose record is `>= (key, tx)`; `len()` if none.
    pub fn lower_bound(&self, key: &[u8], tx: u64) -> Result<u64> {
        let (mut lo, mut hi) = (0u64, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let r = self.record(mid)?;
            if (r.key, r.version.tx) < (key, tx) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// Checks every record and the offsets table (the offline check).
    pub fn check(&self) -> Result<()> {
        let b = self.map.bytes();
        let table = &b[self.offsets_pos as usize..(self.offsets_pos + 8 * self.count) as usize];
        if crc32fast::hash(table) != self.table_crc {
            return Err(StorageError::corrupt(
                &self.path,
                self.offsets_pos,
                Corruption::RecordCrc,
            ));
        }
        let mut prev: Option<(Vec<u8>, u64)> = None;
        for i in 0..self.count {
            let r = self.record(i)?;
            let cur = (r.key.to_vec(), r.version.tx);
            if prev.as_ref().is_some_and(|p| *p >= cur) {
                let slot = self.offsets_pos + 8 * i;
                return Err(StorageError::corrupt(
                    &self.path,
                    slot,
                    Corruption::Decode("records out of order"),
                ));
            }
            prev = Some(cur);
        }
        Ok(())
    }
}
