//! Truncation on a real directory: the values of old txs are dropped from whole sealed
//! segments, the space comes back, every proof still verifies against a state trusted
//! before, a dropped value reads as `ValueTruncated` (never as absent), the offline check
//! passes, and a truncation a crash interrupted is finished at the next open.
#![allow(clippy::unwrap_used)]

use chainlog::ledger::{self, Ledger, LedgerError, NewEntry, Options};

fn small() -> Options {
    Options {
        segment_bytes_max: 1 << 20,
        checkpoint_txs: 50,
        ..Options::default()
    }
}

/// 300 txs of one 10 KiB value each (about 3 MiB: three or four segments).
fn fill(db: &Ledger) {
    for i in 0..300u32 {
        let value = vec![u8::try_from(i % 251).unwrap(); 10 << 10];
        db.commit(vec![NewEntry::put(format!("k{i}"), value)])
            .unwrap();
    }
}

fn segments(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("segments")).unwrap().count()
}

#[test]
fn dropped_values_keep_every_proof_and_read_as_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let db = Ledger::open(dir.path(), small()).unwrap();
    fill(&db);
    db.commit(vec![NewEntry::put("gone", "x")]).unwrap();
    db.commit(vec![NewEntry::delete("gone")]).unwrap();
    let trusted = db.state();
    let old_header = db.header(5).unwrap();
    db.close().unwrap();
    drop(db);
    assert!(segments(dir.path()) >= 3);

    let t = ledger::truncate(dir.path(), 250).unwrap();
    assert!(t.values_from_tx > 1 && t.values_from_tx <= 250, "{t:?}");
    assert!(t.segments_rewritten >= 2, "{t:?}");
    assert!(
        t.bytes_after * 2 < t.bytes_before,
        "space reclaimed: {} -> {}",
        t.bytes_before,
        t.bytes_after
    );
    let again = ledger::truncate(dir.path(), 250).unwrap();
    assert_eq!(again.segments_rewritten, 0, "nothing more to drop");
    assert_eq!(again.values_from_tx, t.values_from_tx);

    let db = Ledger::open(dir.path(), small()).unwrap();
    assert_eq!(db.state(), trusted, "the same state");
    assert_eq!(db.values_from(), t.values_from_tx);
    // A dropped value is a typed error, not "not found".
    match db.get(b"k5") {
        Err(LedgerError::ValueTruncated { tx, values_from }) => {
            assert_eq!((tx, values_from), (6, t.values_from_tx));
        }
        other => panic!("{other:?}"),
    }
    let v = db.get(b"k299").unwrap().unwrap().value;
    assert!(
        v.len() == 10 << 10 && v.iter().all(|b| *b == 48),
        "k299's value kept"
    );
    assert_eq!(db.get(b"nothing").unwrap(), None);
    let h = db.history(b"k5", 0, 10, ledger::Order::Asc).unwrap();
    assert_eq!(h.len(), 1);
    assert!(h[0].value_truncated && h[0].value.is_empty());
    let found = db
        .scan(b"k1", None, 1000, ledger::Order::Asc, u64::MAX)
        .unwrap();
    assert!(found.iter().any(|kv| kv.value_truncated));
    assert!(found
        .iter()
        .any(|kv| !kv.value_truncated && kv.value.len() == 10 << 10));

    // The tx reads whole, its value replaced by its hash, and every proof verifies.
    let tx = db.tx(6).unwrap();
    assert_eq!(tx.header, db.header(6).unwrap());
    assert!(tx.entries[0].dropped && tx.entries[0].value.is_empty());
    let (entry, proof) = db.entry_proof(6, b"k5").unwrap();
    assert!(entry.dropped);
    proof.verify(&entry.digest(), &tx.header).unwrap();
    db.tx_proof(6, trusted.tx_id)
        .unwrap()
        .verify(trusted.tx_id, &trusted.alh)
        .unwrap();
    db.state_proof(5, trusted.tx_id)
        .unwrap()
        .verify(5, &old_header.alh(), trusted.tx_id, &trusted.alh)
        .unwrap();
    // Records shipped to a replica carry the dropped values, and a fresh database accepts
    // them (a replica of a truncated primary).
    let records = db.records(1, trusted.tx_id, usize::MAX).unwrap();
    let copy_dir = tempfile::tempdir().unwrap();
    let copy = Ledger::open(copy_dir.path(), small()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (applied, err) = rt.block_on(copy.apply_records(records));
    assert!(err.is_none(), "{err:?}");
    assert_eq!(applied.len() as u64, trusted.tx_id);
    assert_eq!(copy.state(), trusted);
    assert!(matches!(
        copy.get(b"k5"),
        Err(LedgerError::ValueTruncated { .. })
    ));
    assert_eq!(copy.get(b"k299").unwrap().unwrap().value.len(), 10 << 10);

    // Writes go on; the offline check passes on the truncated directory.
    db.commit(vec![NewEntry::put("after", "yes")]).unwrap();
    db.close().unwrap();
    drop(db);
    let report = ledger::check(dir.path()).unwrap();
    assert_eq!(report.txs, trusted.tx_id + 1);
}

#[test]
fn a_truncation_interrupted_by_a_crash_is_finished_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = Ledger::open(dir.path(), small()).unwrap();
    fill(&db);
    let state = db.state();
    db.close().unwrap();
    drop(db);
    let before: u64 = std::fs::read_dir(dir.path().join("segments"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    // What a truncation writes first, and all a crash right after it leaves (plus a half
    // written temporary segment).
    std::fs::write(dir.path().join("TRUNCATING"), "{\"segments_before\": 3}\n").unwrap();
    std::fs::write(
        dir.path().join("segments").join("0000000001.seg.999.0.tmp"),
        b"half",
    )
    .unwrap();
    let db = Ledger::open(dir.path(), small()).unwrap();
    assert_eq!(db.state(), state);
    assert!(db.values_from() > 1);
    assert!(!dir.path().join("TRUNCATING").exists());
    assert!(matches!(
        db.get(b"k0"),
        Err(LedgerError::ValueTruncated { .. })
    ));
    assert_eq!(db.get(b"k299").unwrap().unwrap().value.len(), 10 << 10);
    db.close().unwrap();
    drop(db);
    let after: u64 = std::fs::read_dir(dir.path().join("segments"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(after < before, "{before} -> {after}");
    ledger::check(dir.path()).unwrap();
}
