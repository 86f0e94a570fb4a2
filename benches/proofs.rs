//! Proofs at 1,000,000 txs (and 1,000,000 distinct keys): build (read nodes from disk, hash)
//! and verify an inclusion proof of a random tx, a consistency proof between two random
//! states, and the key map's proofs that a random key's value is the latest and that a key
//! is absent (their sizes are printed once).
//!
//! `cargo bench --bench proofs` (the first run builds the database, once)
#![allow(clippy::unwrap_used)]

mod common;
#[path = "../tests/common/rng.rs"]
mod rng;

use chainlog::integrity::merkle::{leaf_hash, verify_consistency, verify_inclusion};
use chainlog::ledger::{Ledger, Options};
use criterion::{criterion_group, criterion_main, Criterion};
use rng::Rng;
use std::hint::black_box;

const TXS: u64 = 1_000_000;

fn proofs(c: &mut Criterion) {
    let db = Ledger::open(common::database_of(TXS), Options::default()).unwrap();
    assert_eq!(db.state().tx_id, TXS);
    let size = TXS - 1;
    let root = db.history_root(size).unwrap();
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    let mut rand = move || rng.next_u64();
    let mut g = c.benchmark_group("proofs_at_1m_txs");
    g.bench_function("inclusion_build", |b| {
        b.iter(|| db.inclusion_path(black_box(rand() % size), size).unwrap())
    });
    g.bench_function("consistency_build", |b| {
        b.iter(|| {
            db.consistency_path(black_box(1 + rand() % (size - 1)), size)
                .unwrap()
        })
    });

    let leaf = 123_457u64;
    let leaf_alh = db.header(leaf + 1).unwrap().alh();
    let path = db.inclusion_path(leaf, size).unwrap();
    g.bench_function("inclusion_verify", |b| {
        b.iter(|| {
            verify_inclusion(leaf, size, &leaf_hash(&leaf_alh.0), black_box(&path), &root).unwrap()
        })
    });
    let old = 654_321u64;
    let old_root = db.history_root(old).unwrap();
    let cons = db.consistency_path(old, size).unwrap();
    g.bench_function("consistency_verify", |b| {
        b.iter(|| verify_consistency(old, size, &old_root, &root, black_box(&cons)).unwrap())
    });
    let map_root = db.last_header().unwrap().map_root;
    let (mut hashes, mut n) = (0usize, 0usize);
    for i in 0..1000u64 {
        let (_, p) = db.latest_proof(&common::key(i * 997), TXS).unwrap();
        hashes += p.siblings.len();
        n += 1;
    }
    eprintln!(
        "key map proof at 1m keys: {:.1} sibling hashes on average, {:.0} bytes with the leaf",
        hashes as f64 / n as f64,
        (hashes as f64 / n as f64) * 32.0 + 73.0
    );
    g.bench_function("latest_build", |b| {
        b.iter(|| {
            db.latest_proof(black_box(&common::key(rand() % TXS)), TXS)
                .unwrap()
        })
    });
    g.bench_function("absent_build", |b| {
        b.iter(|| {
            db.latest_proof(black_box(&(rand() | 1 << 63).to_be_bytes()), TXS)
                .unwrap()
        })
    });
    let key = common::key(424_242);
    let (_, latest) = db.latest_proof(&key, TXS).unwrap();
    g.bench_function("latest_verify", |b| {
        b.iter(|| latest.verify(&map_root, black_box(&key)).unwrap())
    });
    let absent_key = [0xffu8; 16];
    let (_, absent) = db.latest_proof(&absent_key, TXS).unwrap();
    g.bench_function("absent_verify", |b| {
        b.iter(|| absent.verify(&map_root, black_box(&absent_key)).unwrap())
    });
    g.bench_function("state_proof_build_and_verify", |b| {
        let new = db.state();
        b.iter(|| {
            let old = 1 + rand() % (TXS - 1);
            let p = db.state_proof(old, new.tx_id).unwrap();
            p.verify(old, &p.old.alh(), new.tx_id, &new.alh).unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, proofs);
criterion_main!(benches);
