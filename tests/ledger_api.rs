//! The ledger's public API end to end on a real directory: commits, reads, deletes, history,
//! scans, limits, proofs verified with the integrity functions, and reopening (after a clean
//! close, across checkpoints, run merges and segment rolls).
#![allow(clippy::unwrap_used)]

use chainlog::integrity::{entry_digest, value_hash, EntryMeta, VerifyError};
use chainlog::ledger::Order;
use chainlog::ledger::{ChainBreak, Durability, Ledger, LedgerError, NewEntry, Options};

fn small() -> Options {
    Options {
        segment_bytes_max: 1 << 20,
        checkpoint_txs: 50,
        memtable_versions_max: 80,
        runs_max: 3,
        ..Options::default()
    }
}

#[test]
fn commit_read_delete_history_scan() {
    let dir = tempfile::tempdir().unwrap();
    let db = Ledger::open(dir.path(), Options::default()).unwrap();
    assert_eq!(db.state().tx_id, 0);
    let h1 = db
        .commit(vec![NewEntry::put("a", "1"), NewEntry::put("b", "2")])
        .unwrap();
    assert_eq!((h1.id, h1.entry_count, h1.history_size), (1, 2, 0));
    let h2 = db.commit(vec![NewEntry::put("a", "3")]).unwrap();
    assert_eq!(h2.id, 2);
    assert_eq!(h2.prev_alh, h1.alh());
    assert!(h2.timestamp_us >= h1.timestamp_us);
    assert_eq!(db.state().alh, h2.alh());

    assert_eq!(db.get(b"a").unwrap().unwrap().value, b"3");
    assert_eq!(db.get_at(b"a", 1).unwrap().unwrap().value, b"1");
    assert_eq!(db.get(b"zz").unwrap(), None);

    let h3 = db.delete(&[b"a"]).unwrap();
    assert_eq!(db.get(b"a").unwrap(), None);
    assert_eq!(db.get_at(b"a", 2).unwrap().unwrap().value, b"3");
    assert!(matches!(db.delete(&[b"a"]), Err(LedgerError::KeyNotFound)));
    let hist = db.history(b"a", 0, 10, Order::Asc).unwrap();
    assert_eq!(
        hist.iter().map(|v| (v.tx, v.deleted)).collect::<Vec<_>>(),
        vec![(1, false), (2, false), (h3.id, true)]
    );
    let newest = db.history(b"a", 1, 1, Order::Desc).unwrap();
    assert_eq!(newest[0].tx, 2);

    db.commit(vec![
        NewEntry::put("p/1", "x"),
        NewEntry::put("p/2", "y"),
        NewEntry::put("q", "z"),
    ])
    .unwrap();
    let keys =
        |v: Vec<chainlog::ledger::KeyValue>| v.into_iter().map(|kv| kv.key).collect::<Vec<_>>();
    assert_eq!(
        keys(db.scan(b"p/", None, 10, Order::Asc, u64::MAX).unwrap()),
        vec![b"p/1".to_vec(), b"p/2".to_vec()]
    );
    assert_eq!(
        keys(db.scan(b"", None, 2, Order::Desc, u64::MAX).unwrap()),
        vec![b"q".to_vec(), b"p/2".to_vec()]
    );
    assert_eq!(
        keys(db.scan(b"", Some(b"b"), 10, Order::Asc, u64::MAX).unwrap()),
        vec![b"p/1".to_vec(), b"p/2".to_vec(), b"q".to_vec()]
    );
    // "a" is deleted and so absent from scans, but present as of tx 2.
    assert_eq!(
        keys(db.scan(b"a", None, 10, Order::Asc, 2).unwrap()),
        vec![b"a".to_vec()]
    );

    let tx = db.tx(1).unwrap();
    assert_eq!(tx.header, h1);
    assert_eq!(tx.entries.len(), 2);
    assert_eq!(tx.entries[1].value, b"2");
    assert!(matches!(
        db.tx(99),
        Err(LedgerError::TxNotFound { id: 99, last: 4 })
    ));
    assert!(matches!(db.tx(0), Err(LedgerError::TxNotFound { .. })));
}

#[test]
fn limits_are_typed_errors_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let db = Ledger::open(dir.path(), Options::default()).unwrap();
    assert!(matches!(db.commit(vec![]), Err(LedgerError::EmptyTx)));
    assert!(matches!(
        db.commit(vec![NewEntry::put("", "v")]),
        Err(LedgerError::EmptyKey { index: 0 })
    ));
    let long = vec![b'k'; 1025];
    assert!(matches!(
        db.commit(vec![NewEntry::put(long, "v")]),
        Err(LedgerError::KeyTooLong {
            len: 1025,
            max: 1024,
            ..
        })
    ));
    db.commit(vec![NewEntry::put(vec![b'k'; 1024], "v")])
        .unwrap();
    let big = vec![0u8; chainlog::ledger::VALUE_BYTES_MAX + 1];
    assert!(matches!(
        db.commit(vec![NewEntry::put("k", big)]),
        Err(LedgerError::ValueTooLarge { .. })
    ));
    assert!(matches!(
        db.commit(vec![NewEntry::put("k", "1"), NewEntry::put("k", "2")]),
        Err(LedgerError::DuplicateKey { index: 1 })
    ));
    let many: Vec<_> = (0..1025)
        .map(|i| NewEntry::put(format!("k{i}"), "v"))
        .collect();
    assert!(matches!(
        db.commit(many),
        Err(LedgerError::TooManyEntries {
            count: 1025,
            max: 1024
        })
    ));
    let mut del = NewEntry::delete("k");
    del.value = b"x".to_vec();
    assert!(matches!(
        db.commit(vec![del]),
        Err(LedgerError::DeleteWithValue { index: 0 })
    ));
    assert_eq!(db.state().tx_id, 1);
    let full: Vec<_> = (0..1024)
        .map(|i| NewEntry::put(format!("k{i}"), "v"))
        .collect();
    assert_eq!(db.commit(full).unwrap().entry_count, 1024);
    assert!(matches!(
        Ledger::open(
            tempfile::tempdir().unwrap().path(),
            Options {
                checkpoint_txs: 0,
                ..Options::default()
            }
        ),
        Err(LedgerError::InvalidOption {
            name: "checkpoint_txs",
            ..
        })
    ));
}

#[test]
fn proofs_verify_against_trusted_states() {
    let dir = tempfile::tempdir().unwrap();
    let db = Ledger::open(dir.path(), small()).unwrap();
    for i in 0..200u32 {
        db.commit(vec![
            NewEntry::put(format!("k{i}"), format!("v{i}")),
            NewEntry::put(format!("o{i}"), "x"),
        ])
        .unwrap();
    }
    let trusted = db.state();
    for i in 0..30u32 {
        db.commit(vec![NewEntry::put(format!("n{i}"), "y")])
            .unwrap();
    }
    let now = db.state();
    // Entry in tx, tx in state.
    for id in [1u64, 2, 77, 128, 200] {
        let key = format!("k{}", id - 1);
        let (entry, proof) = db.entry_proof(id, key.as_bytes()).unwrap();
        let header = db.header(id).unwrap();
        let digest = entry_digest(&entry.key, entry.meta, &value_hash(&entry.value));
        proof.verify(&digest, &header).unwrap();
        let wrong = entry_digest(&entry.key, entry.meta, &value_hash(b"forged"));
        assert!(proof.verify(&wrong, &header).is_err());
        let txp = db.tx_proof(id, trusted.tx_id).unwrap();
        txp.verify(trusted.tx_id, &trusted.alh).unwrap();
        assert_eq!(txp.tx, header);
    }
    // The trusted state extends to the current one, and every older state to every newer.
    db.state_proof(trusted.tx_id, now.tx_id)
        .unwrap()
        .verify(trusted.tx_id, &trusted.alh, now.tx_id, &now.alh)
        .unwrap();
    for (old, new) in [
        (1u64, 1u64),
        (1, 2),
        (5, 64),
        (64, 65),
        (100, 230),
        (229, 230),
    ] {
        let p = db.state_proof(old, new).unwrap();
        let (oa, na) = (db.header(old).unwrap().alh(), db.header(new).unwrap().alh());
        p.verify(old, &oa, new, &na).unwrap();
        if old < new {
            assert!(matches!(
                p.verify(old, &na, new, &na),
                Err(VerifyError::AlhMismatch { .. })
            ));
        }
    }
    // A forged tx header does not verify.
    let mut txp = db.tx_proof(10, now.tx_id).unwrap();
    txp.tx.timestamp_us += 1;
    assert!(txp.verify(now.tx_id, &now.alh).is_err());
    assert!(matches!(
        db.tx_proof(5, now.tx_id + 1),
        Err(LedgerError::TxNotFound { .. })
    ));
    // History roots from the store match the headers.
    assert_eq!(
        db.history_root(199).unwrap(),
        db.header(200).unwrap().history_root
    );
}

#[test]
fn reopen_keeps_everything_across_checkpoints_merges_and_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let value = vec![7u8; 3000];
    let (mut state, mut last) = {
        let db = Ledger::open(dir.path(), small()).unwrap();
        for i in 0..1000u32 {
            db.commit(vec![
                NewEntry::put(format!("key{:04}", i % 300), value.clone()),
                NewEntry::put(format!("u{i}"), i.to_le_bytes().to_vec()),
            ])
            .unwrap();
        }
        db.delete(&[b"key0007"]).unwrap();
        (db.state(), db.last_header().unwrap())
    };
    let segs = std::fs::read_dir(dir.path().join("segments"))
        .unwrap()
        .count();
    assert!(segs >= 3, "expected segment rolls, got {segs} segments");
    let runs = std::fs::read_dir(dir.path().join("index")).unwrap().count();
    assert!((1..=4).contains(&runs), "runs: {runs}");
    for durability in [Durability::Synced, Durability::Buffered] {
        let db = Ledger::open(
            dir.path(),
            Options {
                durability,
                ..small()
            },
        )
        .unwrap();
        assert_eq!(db.state(), state);
        assert_eq!(db.last_header(), Some(last));
        assert_eq!(
            db.recovery().replayed_txs,
            0,
            "a clean close leaves nothing to replay"
        );
        assert_eq!(db.recovery().truncated, None);
        assert_eq!(
            db.get(b"u999").unwrap().unwrap().value,
            999u32.to_le_bytes()
        );
        assert_eq!(db.get(b"key0007").unwrap(), None);
        assert_eq!(db.history(b"key0008", 0, 100, Order::Asc).unwrap().len(), 4);
        assert_eq!(
            db.scan(b"key", None, 1000, Order::Asc, u64::MAX)
                .unwrap()
                .len(),
            299
        );
        let old = if durability == Durability::Synced {
            1001
        } else {
            1002
        };
        assert_eq!(db.tx(500).unwrap().entries[1].value, 499u32.to_le_bytes());
        // And it goes on committing from where it was.
        let h = db.commit(vec![NewEntry::put("after", "reopen")]).unwrap();
        assert_eq!(h.prev_alh, db.header(h.id - 1).unwrap().alh());
        db.state_proof(old, h.id)
            .unwrap()
            .verify(old, &db.header(old).unwrap().alh(), h.id, &h.alh())
            .unwrap();
        db.state_proof(state.tx_id, h.id)
            .unwrap()
            .verify(state.tx_id, &state.alh, h.id, &h.alh())
            .unwrap();
        let report = chainlog::ledger::check(dir.path());
        assert!(matches!(
            report,
            Err(LedgerError::Storage(
                chainlog::ledger::StorageError::Locked { .. }
            ))
        ));
        db.close().unwrap();
        assert!(matches!(
            db.commit(vec![NewEntry::put("x", "y")]),
            Err(LedgerError::Closed)
        ));
        let report = chainlog::ledger::check(dir.path()).unwrap();
        assert_eq!(report.last_tx, db.state().tx_id);
        assert_eq!(report.torn_tail, None);
        // The next round reopens what this one left.
        state = db.state();
        last = db.last_header().unwrap();
    }
}

#[test]
fn concurrent_committers_get_consecutive_ids() {
    let dir = tempfile::tempdir().unwrap();
    let db = std::sync::Arc::new(Ledger::open(dir.path(), Options::default()).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| {
                        db.commit(vec![NewEntry::put(format!("t{t}/{i}"), "v")])
                            .unwrap()
                            .id
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut ids: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, (1..=400).collect::<Vec<_>>());
    for t in 0..8 {
        assert_eq!(
            db.scan(format!("t{t}/").as_bytes(), None, 100, Order::Asc, u64::MAX)
                .unwrap()
                .len(),
            50
        );
    }
    assert_eq!(db.tx(400).unwrap().entries[0].meta, EntryMeta::default());
}

#[test]
fn a_second_open_of_one_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _db = Ledger::open(dir.path(), Options::default()).unwrap();
    assert!(matches!(
        Ledger::open(dir.path(), Options::default()),
        Err(LedgerError::Storage(
            chainlog::ledger::StorageError::Locked { .. }
        ))
    ));
}

#[test]
fn a_replica_applies_byte_identical_txs_and_refuses_others() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = Ledger::open(a.path(), small()).unwrap();
    let replica = Ledger::open(b.path(), small()).unwrap();
    for i in 0..300u32 {
        let mut e = vec![NewEntry::put(format!("k{}", i % 40), format!("v{i}"))];
        if i % 7 == 0 {
            e.push(NewEntry::delete(format!("gone{i}")));
        }
        primary.commit(e).unwrap();
    }
    for id in 1..=300 {
        let tx = primary.tx(id).unwrap();
        let entries = tx
            .entries
            .iter()
            .map(|e| NewEntry {
                key: e.key.clone(),
                value: e.value.clone(),
                meta: e.meta,
            })
            .collect();
        assert_eq!(
            replica.apply(tx.header, tx.alh, entries).unwrap(),
            tx.header
        );
    }
    assert_eq!(replica.state(), primary.state());
    assert_eq!(replica.get(b"k3").unwrap(), primary.get(b"k3").unwrap());
    // A proof from the replica verifies against the primary's state.
    let s = primary.state();
    replica
        .tx_proof(17, s.tx_id)
        .unwrap()
        .verify(s.tx_id, &s.alh)
        .unwrap();

    // Out of order, tampered entries, or a forked history: refused, nothing written.
    let tx = primary.tx(5).unwrap();
    let entries = |t: &chainlog::ledger::Tx| {
        t.entries
            .iter()
            .map(|e| NewEntry {
                key: e.key.clone(),
                value: e.value.clone(),
                meta: e.meta,
            })
            .collect::<Vec<_>>()
    };
    assert!(matches!(
        replica.apply(tx.header, tx.alh, entries(&tx)),
        Err(LedgerError::NotNext { tx: 5, .. })
    ));
    primary.commit(vec![NewEntry::put("next", "1")]).unwrap();
    let next = primary.tx(301).unwrap();
    let mut forged = entries(&next);
    forged[0].value = b"2".to_vec();
    assert!(matches!(
        replica.apply(next.header, next.alh, forged),
        Err(LedgerError::NotNext {
            reason: ChainBreak::EntriesRoot,
            ..
        })
    ));
    replica
        .commit(vec![NewEntry::put("local", "write")])
        .unwrap();
    assert!(matches!(
        replica.apply(next.header, next.alh, entries(&next)),
        Err(LedgerError::NotNext { .. })
    ));
    assert_eq!(replica.state().tx_id, 301);
    assert_ne!(replica.state().alh, primary.state().alh);
}

#[test]
fn records_cross_segments_apply_byte_identical_and_are_checked() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = Ledger::open(a.path(), small()).unwrap();
    let replica = Ledger::open(b.path(), small()).unwrap();
    // About 4 MiB of values over 1 MiB segments: runs of frames end at segment boundaries.
    for i in 0..400u32 {
        let value = vec![i as u8; 1 + (i as usize * 97) % 20_000];
        let mut e = vec![NewEntry::put(format!("k{}", i % 50), value)];
        if i % 9 == 0 {
            e.push(NewEntry::delete(format!("gone{i}")));
        }
        primary.commit(e).unwrap();
    }
    let segments = |dir: &std::path::Path| std::fs::read_dir(dir.join("segments")).unwrap().count();
    assert!(segments(a.path()) >= 4);

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut next = 1;
    for bytes_max in [1usize, 30_000, 200_000, 1 << 20, 64 << 20].iter().cycle() {
        if next > 400 {
            break;
        }
        let records = primary.records(next, 400, *bytes_max).unwrap();
        assert!(!records.is_empty());
        // No more once the budget is reached: all but the last fit below it.
        let before_last: usize = records[..records.len() - 1].iter().map(|r| r.len()).sum();
        assert!(before_last < *bytes_max, "{bytes_max}: {before_last}");
        for (i, r) in records.iter().enumerate() {
            let (h, alh) = chainlog::ledger::record_header(r).unwrap();
            assert_eq!(h.id, next + i as u64);
            assert_eq!(alh, h.alh());
        }
        let (applied, error) = rt.block_on(replica.apply_records(records.clone()));
        assert!(error.is_none(), "{error:?}");
        assert_eq!(applied.len(), records.len());
        next += records.len() as u64;
    }
    assert_eq!(replica.state(), primary.state());
    assert_eq!(replica.get(b"k7").unwrap(), primary.get(b"k7").unwrap());
    // The replica stores the same bytes, segment for segment.
    let files = |dir: &std::path::Path| {
        let mut f: Vec<_> = std::fs::read_dir(dir.join("segments"))
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                (
                    p.file_name().unwrap().to_owned(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect();
        f.sort();
        f
    };
    assert!(files(a.path()) == files(b.path()), "segments differ");

    // Refused: a tx already held (not the next), a cut record (malformed), a changed value.
    let again = primary.records(400, 400, 0).unwrap();
    let (_, e) = rt.block_on(replica.apply_records(again));
    assert!(
        matches!(e, Some(LedgerError::NotNext { tx: 400, .. })),
        "{e:?}"
    );
    let h = primary
        .commit(vec![NewEntry::put("last", "value")])
        .unwrap();
    let record = primary.records(h.id, h.id, 0).unwrap().remove(0);
    let cut = record.slice(..record.len() - 1);
    let (_, e) = rt.block_on(replica.apply_records(vec![cut]));
    assert!(matches!(e, Some(LedgerError::BadRecord { .. })), "{e:?}");
    let mut changed = record.to_vec();
    *changed.last_mut().unwrap() ^= 1;
    let (_, e) = rt.block_on(replica.apply_records(vec![changed.into()]));
    assert!(
        matches!(
            e,
            Some(LedgerError::NotNext {
                reason: ChainBreak::ValueHash,
                ..
            })
        ),
        "{e:?}"
    );
    assert_eq!(replica.state().tx_id, 400);
    let (applied, e) = rt.block_on(replica.apply_records(vec![record]));
    assert!(e.is_none() && applied.len() == 1);
    assert_eq!(replica.state(), primary.state());

    // A frame damaged on disk is named, not shipped.
    primary.close().unwrap();
    drop(primary);
    let first = a.path().join("segments/0000000001.seg");
    let mut bytes = std::fs::read(&first).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&first, bytes).unwrap();
    let primary = Ledger::open(a.path(), small()).unwrap();
    let e = primary.records(1, 401, 64 << 20).unwrap_err();
    assert!(matches!(e, LedgerError::BadTx { .. }), "{e:?}");
}

/// Batches are verified before the writer stores the ones queued ahead of them: records of a
/// fork queued right behind the original's are refused when the writer gets to them (not the
/// next id), a fork's later records for their previous Alh, and the history the replica
/// stores is the one the offline check recomputes.
#[test]
fn forks_queued_behind_the_original_are_refused_and_history_stays_exact() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let primary = Ledger::open(dirs[0].path(), small()).unwrap();
    let fork = Ledger::open(dirs[1].path(), small()).unwrap();
    let replica = Ledger::open(dirs[2].path(), small()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let put = |l: &Ledger, i: u32, tag: &str| {
        l.commit(vec![NewEntry::put(
            format!("k{}", i % 30),
            format!("{tag}{i}"),
        )])
        .unwrap()
    };
    for i in 0..200 {
        put(&primary, i, "p");
    }
    // The fork shares txs 1..=100, then writes its own.
    let shared = primary.records(1, 100, 64 << 20).unwrap();
    let (applied, e) = rt.block_on(fork.apply_records(shared));
    assert!(e.is_none() && applied.len() == 100, "{e:?}");
    for i in 100..210 {
        put(&fork, i, "f");
    }

    // Txs 1..=100 in batches of varied sizes (in place and on a blocking thread).
    let mut next = 1;
    for n in [1u64, 5, 16, 17, 40, 21].iter().cycle() {
        if next > 100 {
            break;
        }
        let records = primary
            .records(next, (next + n - 1).min(100), 64 << 20)
            .unwrap();
        let (applied, e) = rt.block_on(replica.apply_records(records));
        assert!(e.is_none(), "{e:?}");
        next += applied.len() as u64;
    }
    assert_eq!(replica.state().tx_id, 100);
    assert_eq!(replica.state().alh, primary.tx(100).unwrap().alh);

    // The original's 101..=200 and, queued right behind, the fork's 101..=200.
    let (ours, theirs) = rt.block_on(async {
        let ours = replica
            .apply_records_queued(primary.records(101, 200, 64 << 20).unwrap())
            .await;
        let theirs = replica
            .apply_records_queued(fork.records(101, 200, 64 << 20).unwrap())
            .await;
        (ours.wait().await, theirs.wait().await)
    });
    assert!(ours.1.is_none() && ours.0.len() == 100, "{:?}", ours.1);
    assert!(theirs.0.is_empty());
    assert!(
        matches!(theirs.1, Some(LedgerError::NotNext { tx: 101, .. })),
        "{:?}",
        theirs.1
    );
    assert_eq!(replica.state(), primary.state());

    // The fork's next txs follow on from the fork's 200, not from what the replica stored.
    let (applied, e) =
        rt.block_on(replica.apply_records(fork.records(201, 210, 64 << 20).unwrap()));
    assert!(applied.is_empty());
    assert!(
        matches!(
            &e,
            Some(LedgerError::NotNext {
                tx: 201,
                reason: ChainBreak::PrevAlh
            })
        ),
        "{e:?}"
    );

    // The original's next txs apply, and proofs from the replica verify against the primary.
    for i in 200..230 {
        put(&primary, i, "p");
    }
    let (applied, e) =
        rt.block_on(replica.apply_records(primary.records(201, 230, 64 << 20).unwrap()));
    assert!(e.is_none() && applied.len() == 30, "{e:?}");
    let s = primary.state();
    assert_eq!(replica.state(), s);
    for tx in [1, 100, 101, 150, 200, 229] {
        replica
            .tx_proof(tx, s.tx_id)
            .unwrap()
            .verify(s.tx_id, &s.alh)
            .unwrap();
    }
    replica.close().unwrap();
    drop(replica);
    let report = chainlog::ledger::check(dirs[2].path()).unwrap();
    assert_eq!(report.last_tx, 230);
}
