//! Load program for the ledger core: figures that a criterion bench cannot give.
//!
//! ```text
//! cargo run --release --example ledger_load -- fsync-rate [DIR]
//!     the machine's rate of write + fdatasync, single thread, 3 s each: 4 KiB and 200-byte
//!     appends to a growing file, and 200-byte writes into a preallocated, zeroed file
//! cargo run --release --example ledger_load -- distinct-keys N [DIR]
//!     commits N one-entry txs with distinct 16-byte keys and 100-byte values from 64 threads,
//!     durable; prints throughput and the process's peak and current RSS, then reopens and
//!     prints reopen time and RSS after reopen
//! cargo run --release --example ledger_load -- ingest TXS [DIR]
//!     commits TXS txs of 1000 entries (16-byte keys, 100-byte values) from one thread, durable
//! cargo run --release --example ledger_load -- ingest-pipelined TXS [DEPTH] [DIR]
//!     the same txs from one thread through `Ledger::enqueue`, up to DEPTH (default 4) queued:
//!     tx N+1 is built and prepared (hashed, encoded) while the writer writes, syncs and
//!     indexes tx N
//! ```
#![allow(clippy::unwrap_used)]

use chainlog::ledger::{Ledger, NewEntry, Options};
use std::io::{Seek, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn dir_arg(arg: Option<String>) -> (std::path::PathBuf, Option<tempfile::TempDir>) {
    match arg {
        Some(d) => (d.into(), None),
        None => {
            let t = tempfile::tempdir().expect("temp dir");
            (t.path().to_path_buf(), Some(t))
        }
    }
}

fn fsync_rate(dir: Option<String>) {
    let (dir, _keep) = dir_arg(dir);
    let path = dir.join("fsync-probe");
    // 200-byte writes, about one small tx record: appended to a growing file (as segments
    // are written now), then overwriting a file zeroed and synced beforehand (preallocated).
    for (name, record, preallocate) in [
        ("4 KiB append", 4096usize, false),
        ("200-byte append", 200, false),
        ("200-byte write into a preallocated file", 200, true),
    ] {
        let mut f = std::fs::File::create(&path).expect("create probe file");
        if preallocate {
            f.write_all(&vec![0u8; 64 << 20]).expect("zero");
            f.sync_all().expect("fsync");
            f.seek(std::io::SeekFrom::Start(0)).expect("seek");
        }
        let block = vec![7u8; record];
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_secs(3) && (n + 1) * (record as u64) < 64 << 20 {
            f.write_all(&block).expect("write");
            f.sync_data().expect("fdatasync");
            n += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "fsync-rate, {name}: {:.0} writes+fdatasync/s ({:.1} us each)",
            n as f64 / secs,
            secs * 1e6 / n as f64
        );
        let _ = std::fs::remove_file(&path);
    }
}

fn distinct_keys(n: u64, dir: Option<String>) {
    let (dir, _keep) = dir_arg(dir);
    let db = Arc::new(Ledger::open(&dir, Options::default()).expect("open"));
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..64)
        .map(|_| {
            let (db, next) = (db.clone(), next.clone());
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let mut key = [0u8; 16];
                key[..8].copy_from_slice(b"loadkey-");
                key[8..].copy_from_slice(&i.to_be_bytes());
                db.commit(vec![NewEntry::put(key, [3u8; 100])])
                    .expect("commit");
            })
        })
        .collect();
    for t in threads {
        t.join().expect("committer");
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "distinct-keys: {n} txs in {secs:.2} s = {:.0} tx/s (64 committers, durable)",
        n as f64 / secs
    );
    println!(
        "rss while writing: peak {} MiB, now {} MiB",
        rss_kib("VmHWM:") / 1024,
        rss_kib("VmRSS:") / 1024
    );
    db.close().expect("close");
    drop(db);
    let start = Instant::now();
    let db = Ledger::open(&dir, Options::default()).expect("reopen");
    let reopen = start.elapsed();
    assert_eq!(db.state().tx_id, n);
    println!(
        "reopen: {:.1} ms; rss after reopen {} MiB",
        reopen.as_secs_f64() * 1e3,
        rss_kib("VmRSS:") / 1024
    );
}

/// Tx `t` of the ingest modes: 1000 puts of distinct 16-byte keys and 100-byte values, the
/// same for both modes so that their figures compare.
fn ingest_tx(t: u64) -> Vec<NewEntry> {
    (t * 1000..(t + 1) * 1000)
        .map(|i| {
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(b"ingest--");
            key[8..].copy_from_slice(&i.to_be_bytes());
            NewEntry::put(key, [5u8; 100])
        })
        .collect()
}

fn ingest(txs: u64, dir: Option<String>) {
    let (dir, _keep) = dir_arg(dir);
    let db = Ledger::open(&dir, Options::default()).expect("open");
    let start = Instant::now();
    let mut prepare = Duration::ZERO;
    for t in 0..txs {
        let p = Instant::now();
        let entries = ingest_tx(t);
        prepare += p.elapsed();
        db.commit(entries).expect("commit");
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "ingest: {txs} txs of 1000 entries in {secs:.2} s = {:.0} entries/s (building inputs took {:.2} s)",
        txs as f64 * 1000.0 / secs,
        prepare.as_secs_f64()
    );
}

fn ingest_pipelined(txs: u64, depth: usize, dir: Option<String>) {
    let (dir, _keep) = dir_arg(dir);
    let db = Ledger::open(&dir, Options::default()).expect("open");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let start = Instant::now();
    let mut queued = std::collections::VecDeque::new();
    for t in 0..txs {
        let entries = ingest_tx(t);
        queued.push_back(db.enqueue(entries).expect("enqueue"));
        if queued.len() >= depth {
            rt.block_on(queued.pop_front().unwrap().wait())
                .expect("commit");
        }
    }
    for c in queued {
        rt.block_on(c.wait()).expect("commit");
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "ingest-pipelined (depth {depth}): {txs} txs of 1000 entries in {secs:.2} s = {:.0} entries/s",
        txs as f64 * 1000.0 / secs
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("fsync-rate") => fsync_rate(args.next()),
        Some("distinct-keys") => {
            let n = args
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(1_000_000);
            distinct_keys(n, args.next());
        }
        Some("ingest-pipelined") => {
            let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
            let depth: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(4);
            ingest_pipelined(n, depth.max(1), args.next());
        }
        Some("ingest") => {
            let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
            ingest(n, args.next());
        }
        _ => {
            eprintln!("usage: ledger_load fsync-rate [DIR] | distinct-keys N [DIR]");
            std::process::exit(2);
        }
    }
}
