//! Reopen of a database of 1,000,000 txs after a clean close.
//!
//! `cargo bench --bench reopen` (the first run builds the database, once)
#![allow(clippy::unwrap_used)]

mod common;

use chainlog::ledger::{Ledger, Options};
use criterion::{criterion_group, criterion_main, Criterion};
use std::time::{Duration, Instant};

fn reopen(c: &mut Criterion) {
    let dir = common::database_of(1_000_000);
    let mut g = c.benchmark_group("reopen");
    g.sample_size(20).measurement_time(Duration::from_secs(10));
    g.bench_function("1m_txs", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let db = Ledger::open(&dir, Options::default()).unwrap();
                assert_eq!(db.state().tx_id, 1_000_000);
                total += start.elapsed();
                drop(db);
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, reopen);
criterion_main!(benches);
