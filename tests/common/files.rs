//! Reading and editing a database's files the way a careful attacker or a failing disk
//! would: locate a tx's frame, flip a bit, rewrite a frame with its checksums fixed.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// The segment file, offset and length of tx `id`'s frame, from the database's tx.idx
/// (u32 segment, u32 length, u64 offset per 20-byte record).
pub fn frame_of(db_dir: &Path, id: u64) -> (PathBuf, u64, u32) {
    let b = std::fs::read(db_dir.join("tx.idx")).unwrap();
    let r = &b[(id as usize - 1) * 20..];
    let segment = u32::from_le_bytes(r[..4].try_into().unwrap());
    (
        db_dir.join("segments").join(format!("{segment:010}.seg")),
        u64::from_le_bytes(r[8..16].try_into().unwrap()),
        u32::from_le_bytes(r[4..8].try_into().unwrap()),
    )
}

/// Flips one bit of the byte at `offset`.
pub fn flip(path: &Path, offset: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[offset as usize] ^= 0x20;
    std::fs::write(path, b).unwrap();
}

/// Recomputes a frame's two checksums in place (`frame` is the whole frame: 12-byte header,
/// then the payload), so an edited payload passes every checksum.
pub fn fix_frame_crcs(frame: &mut [u8]) {
    let pcrc = crc32fast::hash(&frame[12..]);
    frame[4..8].copy_from_slice(&pcrc.to_le_bytes());
    let hcrc = crc32fast::hash(&frame[..8]);
    frame[8..12].copy_from_slice(&hcrc.to_le_bytes());
}
