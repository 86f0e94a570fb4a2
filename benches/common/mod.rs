//! Shared bench setup: databases built once and kept under target/bench-data.

use chainlog::ledger::{Durability, Ledger, NewEntry, Options};
use std::path::PathBuf;
use std::sync::Arc;

/// A database of `txs` one-entry txs (16-byte key, 100-byte value), built once and reused.
/// Built with buffered commits from 8 threads, then closed (checkpointed and synced).
#[allow(dead_code)]
pub fn database_of(txs: u64) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("bench-db-{txs}"));
    let done = dir.join("BUILT");
    if done.exists() {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let db = Arc::new(
        Ledger::open(
            &dir,
            Options {
                durability: Durability::Buffered,
                ..Options::default()
            },
        )
        .unwrap(),
    );
    let threads = 8u64;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                for i in (t..txs).step_by(threads as usize) {
                    db.commit(vec![NewEntry::put(key(i), [7u8; 100])]).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    db.close().unwrap();
    std::fs::write(done, b"").unwrap();
    dir
}

/// A 16-byte key.
pub fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(b"benchkey");
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}
