//! Durable commits: 1-entry txs (16-byte key, 100-byte value) from 1, 8 and 64 concurrent
//! committers (group commit), and batched ingest of 1000-entry txs.
//!
//! `cargo bench --bench commit`
#![allow(clippy::unwrap_used)]

mod common;

use chainlog::ledger::{Ledger, NewEntry, Options};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn commits(c: &mut Criterion) {
    let mut g = c.benchmark_group("durable_commit_1_entry");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    for committers in [1u64, 8, 64] {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Ledger::open(dir.path(), Options::default()).unwrap());
        let next = Arc::new(AtomicU64::new(0));
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(
            BenchmarkId::from_parameter(committers),
            &committers,
            |b, &committers| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    let per = iters.div_ceil(committers);
                    let handles: Vec<_> = (0..committers)
                        .map(|_| {
                            let (db, next) = (db.clone(), next.clone());
                            std::thread::spawn(move || {
                                for _ in 0..per {
                                    let i = next.fetch_add(1, Ordering::Relaxed);
                                    db.commit(vec![NewEntry::put(common::key(i), [1u8; 100])])
                                        .unwrap();
                                }
                            })
                        })
                        .collect();
                    for h in handles {
                        h.join().unwrap();
                    }
                    // Report the time per tx actually committed.
                    start
                        .elapsed()
                        .mul_f64(iters as f64 / (per * committers) as f64)
                })
            },
        );
    }
    g.finish();

    let mut g = c.benchmark_group("durable_ingest_1000_entries_per_tx");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(1));
    for committers in [1u64, 2] {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Ledger::open(dir.path(), Options::default()).unwrap());
        let next = Arc::new(AtomicU64::new(0));
        g.throughput(Throughput::Elements(1000));
        g.bench_with_input(
            BenchmarkId::from_parameter(committers),
            &committers,
            |b, &committers| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    let per = iters.div_ceil(committers);
                    let handles: Vec<_> = (0..committers)
                        .map(|_| {
                            let (db, next) = (db.clone(), next.clone());
                            std::thread::spawn(move || {
                                for _ in 0..per {
                                    let base = next.fetch_add(1000, Ordering::Relaxed);
                                    let entries = (base..base + 1000)
                                        .map(|i| NewEntry::put(common::key(i), [1u8; 100]))
                                        .collect();
                                    db.commit(entries).unwrap();
                                }
                            })
                        })
                        .collect();
                    for h in handles {
                        h.join().unwrap();
                    }
                    start
                        .elapsed()
                        .mul_f64(iters as f64 / (per * committers) as f64)
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, commits);
criterion_main!(benches);
