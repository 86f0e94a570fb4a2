//! Truncation: dropping the values of old txs to reclaim space, keeping everything the
//! proofs need (headers, Alhs, keys, flags and value hashes), so every state, inclusion and
//! consistency proof still verifies (docs/format.md, "Dropped values and truncation").
//!
//! It works on whole sealed segments, on a closed database: each segment whose txs are all
//! before the asked tx (and before the last checkpoint's segment) is rewritten with its
//! values dropped, and the tx locations of its txs are rewritten to match. The steps are
//! idempotent and announced in `TRUNCATING` first, so a crash part way is finished at the
//! next open; `TRUNCATED` then says from which tx on values are kept.

use super::checkpoint::Checkpoint;
use super::{codec, encode_location, LedgerError, Result, TxFault};
use crate::fs;
use crate::integrity::TxId;
use crate::storage::frame;
use crate::storage::records::RecordWriter;
use crate::storage::segment::{self, SegmentHeader, SEGMENT_HEADER_BYTES};
use crate::storage::{Corruption, StorageError};
use std::path::{Path, PathBuf};

/// Announces a truncation in progress: `{"segments_before": N}` (segments numbered below N
/// are being rewritten).
pub const INTENT_FILE: &str = "TRUNCATING";
/// `{"values_from_tx": T}`: the values of txs below T were dropped.
pub const DONE_FILE: &str = "TRUNCATED";

/// What a truncation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Truncation {
    /// Values of txs below this one are dropped (1: none).
    pub values_from_tx: TxId,
    /// Segments rewritten by this call.
    pub segments_rewritten: u32,
    /// Bytes of the segments before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// The tx from which on values are kept, as `TRUNCATED` records it (1 without the file).
pub fn values_from(dir: &Path) -> Result<TxId> {
    let path = dir.join(DONE_FILE);
    match fs::read(&path)? {
        None => Ok(1),
        Some(b) => parse_field(&path, &b, "values_from_tx"),
    }
}

fn parse_field(path: &Path, bytes: &[u8], field: &str) -> Result<u64> {
    let text = String::from_utf8_lossy(bytes);
    let pat = format!("\"{field}\":");
    text.find(&pat)
        .map(|i| &text[i + pat.len()..])
        .and_then(|rest| {
            let digits: String = rest
                .trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .ok_or_else(|| StorageError::corrupt(path, 0, Corruption::FileHeader).into())
}

fn segments(dir: &Path) -> Result<Vec<(u32, PathBuf)>> {
    let mut out: Vec<(u32, PathBuf)> = fs::list(&dir.join("segments"), "seg")?
        .into_iter()
        .filter_map(|p| segment::id_of(&p).map(|id| (id, p)))
        .collect();
    out.sort();
    Ok(out)
}

fn base_of(path: &Path) -> Result<u64> {
    use std::io::Read;
    let mut head = [0u8; 32];
    fs::open_ro(path)?
        .read_exact(&mut head)
        .map_err(|e| StorageError::io(path, e))?;
    let h = SegmentHeader::decode(&head).map_err(|c| StorageError::corrupt(path, 0, c))?;
    Ok(h.base)
}

/// Whether [`truncate`] with `before_tx` would drop anything in `dir` (open or not): a sealed
/// segment with values kept whose txs are all before `before_tx`.
pub fn would_drop(dir: &Path, before_tx: TxId) -> Result<bool> {
    let kept_from = values_from(dir)?;
    let segs = segments(dir)?;
    for pair in segs.windows(2) {
        let (base, next_base) = (base_of(&pair[0].1)?, base_of(&pair[1].1)?);
        if next_base <= before_tx && base >= kept_from {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Drops the values of the txs before `before_tx` that lie in whole sealed segments, in the
/// closed database `dir` (its lock is taken here). Returns what it did; the tx from which
/// values are kept may be below `before_tx` (the rest of a segment is kept whole).
pub fn truncate(dir: &Path, before_tx: TxId) -> Result<Truncation> {
    let lock = fs::DirLock::acquire(dir)?;
    finish(dir, &lock)?;
    let cp = Checkpoint::read(dir)?.unwrap_or_else(Checkpoint::empty);
    let segs = segments(dir)?;
    // Segment i is rewritten when the next one starts at or before `before_tx` (all its txs
    // are older) and it is before the checkpoint's segment (where the log resumes).
    let mut upto = 0u32;
    for pair in segs.windows(2) {
        let next_base = base_of(&pair[1].1)?;
        if next_base <= before_tx && pair[1].0 <= cp.segment {
            upto = pair[1].0;
        }
    }
    let bytes_before = segment_bytes(&segs)?;
    let done = values_from(dir)?;
    let mut t = Truncation {
        values_from_tx: done,
        bytes_before,
        bytes_after: bytes_before,
        ..Truncation::default()
    };
    let kept_from = match segs.iter().find(|(id, _)| *id == upto) {
        Some((_, p)) => base_of(p)?,
        None => 1,
    };
    if kept_from <= done {
        return Ok(t); // nothing more to drop
    }
    fs::replace(
        &dir.join(INTENT_FILE),
        format!("{{\"segments_before\": {upto}}}\n").as_bytes(),
        fs::FILE_MODE,
    )?;
    t.segments_rewritten = run(dir, upto)?;
    t.values_from_tx = values_from(dir)?;
    t.bytes_after = segment_bytes(&segments(dir)?)?;
    drop(lock);
    Ok(t)
}

fn segment_bytes(segs: &[(u32, PathBuf)]) -> Result<u64> {
    segs.iter().map(|(_, p)| Ok(fs::len(p)?)).sum()
}

/// Completes a truncation a crash interrupted (at open, with the lock held).
pub(crate) fn finish(dir: &Path, _lock: &fs::DirLock) -> Result<()> {
    let path = dir.join(INTENT_FILE);
    let Some(b) = fs::read(&path)? else {
        return Ok(());
    };
    let upto = u32::try_from(parse_field(&path, &b, "segments_before")?).unwrap_or(u32::MAX);
    tracing::warn!(dir = %dir.display(), segments_before = upto, "finishing an interrupted truncation");
    run(dir, upto)?;
    Ok(())
}

/// The idempotent steps: rewrite every segment below `upto` with values dropped, rewrite the
/// tx locations of their txs, record the new start of the kept values, remove the intent.
fn run(dir: &Path, upto: u32) -> Result<u32> {
    let seg_dir = dir.join("segments");
    fs::remove_temps(&seg_dir)?;
    let mut locations: Vec<(TxId, [u8; 16])> = Vec::new();
    let mut rewritten = 0u32;
    let mut values_from = 1;
    for (id, path) in segments(dir)? {
        if id >= upto {
            values_from = base_of(&path)?;
            break;
        }
        if rewrite_segment(&path, id, &mut locations)? {
            rewritten += 1;
        }
    }
    if !locations.is_empty() {
        let first = locations[0].0;
        // Rewritten in place: the records of these txs, from the first on.
        let mut w = RecordWriter::<16>::open(&dir.join("tx.idx"), first - 1)?;
        for (_, loc) in &locations {
            w.push(loc);
        }
        w.flush()?;
        w.sync_handle().sync()?;
    }
    fs::replace(
        &dir.join(DONE_FILE),
        format!("{{\"values_from_tx\": {values_from}}}\n").as_bytes(),
        fs::FILE_MODE,
    )?;
    fs::remove(&dir.join(INTENT_FILE))?;
    fs::sync_dir(dir)?;
    Ok(rewritten)
}

/// Rewrites one sealed segment with its values dropped (if any are left); appends the new
/// location of each of its txs to `locations`. Returns whether the file changed.
fn rewrite_segment(path: &Path, id: u32, locations: &mut Vec<(TxId, [u8; 16])>) -> Result<bool> {
    let bytes = std::fs::read(path).map_err(|e| StorageError::io(path, e))?;
    let header = SegmentHeader::decode(&bytes).map_err(|c| StorageError::corrupt(path, 0, c))?;
    let mut out = Vec::with_capacity(bytes.len() / 4);
    out.extend_from_slice(&header.encode());
    let mut changed = false;
    let mut tx = header.base;
    let start = usize::try_from(SEGMENT_HEADER_BYTES).unwrap_or(usize::MAX);
    let end = segment::scan(
        &bytes[start..],
        SEGMENT_HEADER_BYTES,
        |offset, _, payload| {
            let bad = |reason| LedgerError::BadTx {
                tx,
                path: path.to_path_buf(),
                offset,
                reason,
            };
            let (h, _) = codec::decode_header(payload).map_err(|r| bad(TxFault::Decode(r)))?;
            if h.id != tx {
                return Err(bad(TxFault::Chain(super::ChainBreak::Id)));
            }
            let new = codec::drop_values(payload).map_err(|r| bad(TxFault::Decode(r)))?;
            changed |= new.is_some();
            let at = out.len() as u64;
            frame::encode_with(&mut out, |o| {
                o.extend_from_slice(new.as_deref().unwrap_or(payload))
            });
            let len = u32::try_from(out.len() as u64 - at).unwrap_or(u32::MAX);
            locations.push((tx, encode_location(id, at, len)));
            tx += 1;
            Ok::<(), LedgerError>(())
        },
    )?;
    if !matches!(end, segment::ScanEnd::Clean | segment::ScanEnd::Free { .. }) {
        return Err(StorageError::corrupt(path, 0, Corruption::FrameTruncated).into());
    }
    if changed {
        fs::replace(path, &out, fs::FILE_MODE)?;
    }
    Ok(changed)
}
