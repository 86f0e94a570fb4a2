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

/// One record of an index run, as docs/format.md section 8 lays it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    pub key: Vec<u8>,
    pub flags: u8,
    pub tx: u64,
    pub segment: u32,
    pub offset: u32,
    pub len: u32,
}

/// The records of the run file at `path` (checksums not checked).
pub fn read_run(path: &Path) -> Vec<RunRecord> {
    let b = std::fs::read(path).unwrap();
    let f = &b[b.len() - 40..];
    let count = u64::from_le_bytes(f[..8].try_into().unwrap()) as usize;
    let table = u64::from_le_bytes(f[8..16].try_into().unwrap()) as usize;
    (0..count)
        .map(|i| {
            let at = u64::from_le_bytes(b[table + 8 * i..table + 8 * i + 8].try_into().unwrap())
                as usize;
            let r = &b[at..];
            let key_len = u16::from_le_bytes([r[0], r[1]]) as usize;
            let u32_at = |o: usize| u32::from_le_bytes(r[o..o + 4].try_into().unwrap());
            RunRecord {
                key: r[23..23 + key_len].to_vec(),
                flags: r[2],
                tx: u64::from_le_bytes(r[3..11].try_into().unwrap()),
                segment: u32_at(11),
                offset: u32_at(15),
                len: u32_at(19),
            }
        })
        .collect()
}

/// Writes `records` as a valid run file at `path`, every checksum right (docs/format.md
/// section 8): what someone who edits a run and fixes its checksums produces.
pub fn write_run(path: &Path, records: &[RunRecord]) {
    let mut b = Vec::new();
    let mut header = [0u8; 32];
    header[..8].copy_from_slice(b"chainlog");
    header[8] = 2;
    header[9] = 1;
    let crc = crc32fast::hash(&header[..28]);
    header[28..].copy_from_slice(&crc.to_le_bytes());
    b.extend_from_slice(&header);
    let mut offsets = Vec::new();
    let (mut min, mut max) = (u64::MAX, 0);
    for (i, r) in records.iter().enumerate() {
        offsets.push(b.len() as u64);
        let start = b.len();
        b.extend_from_slice(&(r.key.len() as u16).to_le_bytes());
        b.push(r.flags);
        b.extend_from_slice(&r.tx.to_le_bytes());
        b.extend_from_slice(&r.segment.to_le_bytes());
        b.extend_from_slice(&r.offset.to_le_bytes());
        b.extend_from_slice(&r.len.to_le_bytes());
        b.extend_from_slice(&r.key);
        let mut h = crc32fast::Hasher::new();
        h.update(&(i as u64).to_le_bytes());
        h.update(&b[start..]);
        b.extend_from_slice(&h.finalize().to_le_bytes());
        min = min.min(r.tx);
        max = max.max(r.tx);
    }
    let table_at = b.len() as u64;
    let mut table_crc = crc32fast::Hasher::new();
    for o in &offsets {
        table_crc.update(&o.to_le_bytes());
        b.extend_from_slice(&o.to_le_bytes());
    }
    let mut footer = Vec::new();
    footer.extend_from_slice(&(records.len() as u64).to_le_bytes());
    footer.extend_from_slice(&table_at.to_le_bytes());
    footer.extend_from_slice(&min.to_le_bytes());
    footer.extend_from_slice(&max.to_le_bytes());
    footer.extend_from_slice(&table_crc.finalize().to_le_bytes());
    let crc = crc32fast::hash(&footer);
    footer.extend_from_slice(&crc.to_le_bytes());
    b.extend_from_slice(&footer);
    std::fs::write(path, b).unwrap();
}

/// The index run files a database's checkpoint names, oldest first (docs/format.md
/// section 7: the run ids after the 82 bytes of fixed fields).
pub fn checkpoint_runs(db_dir: &Path) -> Vec<u64> {
    let b = std::fs::read(db_dir.join("checkpoint")).unwrap();
    let p = &b[12..];
    let count = u32::from_le_bytes(p[78..82].try_into().unwrap()) as usize;
    (0..count)
        .map(|i| u64::from_le_bytes(p[82 + 8 * i..90 + 8 * i].try_into().unwrap()))
        .collect()
}

/// Rewrites the checkpoint to name `runs`, its frame's checksums fixed.
pub fn set_checkpoint_runs(db_dir: &Path, runs: &[u64]) {
    let path = db_dir.join("checkpoint");
    let b = std::fs::read(&path).unwrap();
    let mut p = b[12..12 + 78].to_vec();
    p.extend_from_slice(&(runs.len() as u32).to_le_bytes());
    for r in runs {
        p.extend_from_slice(&r.to_le_bytes());
    }
    let mut frame = vec![0u8; 12];
    frame[..4].copy_from_slice(&(p.len() as u32).to_le_bytes());
    frame.extend_from_slice(&p);
    fix_frame_crcs(&mut frame);
    std::fs::write(path, frame).unwrap();
}

pub fn run_path(db_dir: &Path, id: u64) -> PathBuf {
    db_dir.join("index").join(format!("run-{id:010}.idx"))
}

/// Writes an Ed25519 signing key made from `seed` to `dir/name` (64 hex characters, as
/// `--signing-key` reads it); returns its path and the public key in hex.
pub fn key_file(dir: &Path, name: &str, seed: u8) -> (PathBuf, String) {
    let p = dir.join(name);
    std::fs::write(&p, chainlog::integrity::hex::encode(&[seed; 32])).unwrap();
    let public = ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
        .verifying_key()
        .to_bytes();
    (p, chainlog::integrity::hex::encode(&public))
}
