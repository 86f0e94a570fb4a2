//! Index files are not trusted: with every checksum recomputed, a run dropped from the
//! checkpoint, a record dropped from a run, a record pointed at another key's value, any edit
//! of any run record, and two tx records swapped in a segment are each caught by the offline
//! check; and no read ever returns another key's value (a read either returns the right value,
//! finds nothing, or fails with DATA_LOSS naming file and offset).
#![allow(clippy::unwrap_used)]

mod common;

use chainlog::ledger::{check, Damage, Durability, Ledger, LedgerError, NewEntry, Options, Order};
use common::files::{
    checkpoint_runs, frame_of, read_run, run_path, set_checkpoint_runs, write_run,
};
use proptest::prelude::*;
use std::path::Path;

const TXS: u64 = 120;
const KEYS: u64 = 9;

fn options() -> Options {
    Options {
        checkpoint_txs: 25,
        durability: Durability::Buffered,
        ..Options::default()
    }
}

/// One database built once, copied for each case.
fn base() -> &'static Path {
    static BASE: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    BASE.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        build(d.path());
        d
    })
    .path()
}

fn key(i: u64) -> Vec<u8> {
    format!("key-{:02}", i % KEYS).into_bytes()
}

/// Every value names its key and tx, so a value read under the wrong key or tx shows.
fn value(key: &[u8], tx: u64) -> Vec<u8> {
    let mut v = key.to_vec();
    v.extend_from_slice(format!("@{tx:05}").as_bytes());
    v
}

/// A database of TXS one-entry txs over KEYS keys, checkpointed every 25 txs, closed.
fn build(dir: &Path) {
    let db = Ledger::open(dir, options()).unwrap();
    for tx in 1..=TXS {
        let k = key(tx);
        db.commit(vec![NewEntry::put(k.clone(), value(&k, tx))])
            .unwrap();
    }
    db.close().unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&t).unwrap();
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), t).unwrap();
        }
    }
}

/// Opens `dir` and reads every key every way; panics if any read returns a value that is not
/// its key's at its tx. Returns how many reads failed (damage found on the read path).
fn no_read_lies(dir: &Path) -> usize {
    let Ok(db) = Ledger::open(dir, options()) else {
        return 1;
    };
    let mut failed = 0;
    let mut seen = |key: &[u8], v: Result<Option<(Vec<u8>, u64)>, LedgerError>| match v {
        Ok(Some((val, tx))) => assert_eq!(val, value(key, tx), "a read returned another value"),
        Ok(None) => {}
        Err(_) => failed += 1,
    };
    for i in 0..KEYS {
        let k = key(i);
        seen(&k, db.get(&k).map(|o| o.map(|kv| (kv.value, kv.tx))));
        seen(
            &k,
            db.get_at(&k, TXS / 2)
                .map(|o| o.map(|kv| (kv.value, kv.tx))),
        );
        match db.history(&k, 0, 1000, Order::Asc) {
            Ok(vs) => {
                for v in vs {
                    seen(&k, Ok(Some((v.value, v.tx))));
                }
            }
            Err(_) => seen(&k, Err(LedgerError::Closed)),
        }
    }
    match db.scan(b"key-", None, 1000, Order::Asc, u64::MAX) {
        Ok(kvs) => {
            for kv in kvs {
                seen(&kv.key.clone(), Ok(Some((kv.value, kv.tx))));
            }
        }
        Err(e) => seen(b"", Err(e)),
    }
    failed
}

#[test]
fn a_run_dropped_from_the_checkpoint_is_caught_by_the_check() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    check(dir.path()).unwrap();
    let runs = checkpoint_runs(dir.path());
    assert!(!runs.is_empty());
    set_checkpoint_runs(dir.path(), &runs[1..]);
    let err = check(dir.path()).unwrap_err();
    assert!(matches!(&err, LedgerError::IndexMissing { .. }), "{err}");
    no_read_lies(dir.path());
}

#[test]
fn a_record_dropped_from_a_run_is_caught_by_the_check() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let run = run_path(dir.path(), *checkpoint_runs(dir.path()).last().unwrap());
    let mut records = read_run(&run);
    records.remove(records.len() / 2);
    write_run(&run, &records);
    let err = check(dir.path()).unwrap_err();
    assert!(matches!(&err, LedgerError::IndexMissing { .. }), "{err}");
    no_read_lies(dir.path());
}

#[test]
fn a_record_pointed_at_another_keys_value_is_data_loss_on_read_and_caught_by_the_check() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let run = run_path(dir.path(), *checkpoint_runs(dir.path()).last().unwrap());
    let mut records = read_run(&run);
    let (a, b) = (
        0,
        records
            .iter()
            .position(|r| r.key != records[0].key)
            .unwrap(),
    );
    let victim = records[a].key.clone();
    let (seg, off, len) = (records[b].segment, records[b].offset, records[b].len);
    // The newest version of the first key now points at another key's value.
    let newest = records.iter().rposition(|r| r.key == victim).unwrap();
    records[newest].segment = seg;
    records[newest].offset = off;
    records[newest].len = len;
    write_run(&run, &records);
    {
        let db = Ledger::open(dir.path(), options()).unwrap();
        let err = db
            .history(&victim, 0, 1000, Order::Asc)
            .expect_err("another key's value under this key is damage");
        assert!(
            matches!(&err, LedgerError::Damaged { reason: Damage::IndexEntry, path, .. } if path.ends_with("0000000001.seg")),
            "{err}"
        );
    }
    let err = check(dir.path()).unwrap_err();
    assert!(
        matches!(&err, LedgerError::Damaged { reason: Damage::IndexRun, path, .. } if *path == run),
        "{err}"
    );
    no_read_lies(dir.path());
}

#[test]
fn two_swapped_tx_records_are_data_loss_on_read_and_a_broken_chain_for_the_check() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    // txs 50 and 51 are the same size: swap their frames in place.
    let (seg, a, la) = frame_of(dir.path(), 50);
    let (_, b, lb) = frame_of(dir.path(), 51);
    assert_eq!(la, lb);
    let mut bytes = std::fs::read(&seg).unwrap();
    let (a, b, n) = (a as usize, b as usize, la as usize);
    let first = bytes[a..a + n].to_vec();
    bytes.copy_within(b..b + n, a);
    bytes[b..b + n].copy_from_slice(&first);
    std::fs::write(&seg, &bytes).unwrap();
    {
        let db = Ledger::open(dir.path(), options()).unwrap();
        let k = key(50);
        let err = db.get_at(&k, 50).unwrap_err();
        assert!(
            matches!(&err, LedgerError::BadTx { tx: 50, .. }),
            "a swapped record is named: {err}"
        );
    }
    let err = check(dir.path()).unwrap_err();
    assert!(matches!(&err, LedgerError::BadTx { tx: 50, .. }), "{err}");
    no_read_lies(dir.path());
}

/// One field of a run record, changed.
#[derive(Debug, Clone)]
enum Edit {
    KeyByte(usize, u8),
    Flags(u8),
    Tx(u64),
    Segment(u32),
    Offset(i64),
    Len(i64),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Edit::KeyByte(i, x)),
        (1u8..=255).prop_map(Edit::Flags),
        (1u64..=TXS).prop_map(Edit::Tx),
        (2u32..5).prop_map(Edit::Segment),
        (-300i64..300)
            .prop_filter("a change", |d| *d != 0)
            .prop_map(Edit::Offset),
        (-20i64..20)
            .prop_filter("a change", |d| *d != 0)
            .prop_map(Edit::Len),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]
    /// Any change to any record of any run, checksums fixed: the check fails, and no read
    /// returns another key's value.
    #[test]
    fn any_edited_run_record_is_caught_and_no_read_lies(run_pick in any::<usize>(), rec_pick in any::<usize>(), e in edit()) {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(base(), dir.path());
        let runs = checkpoint_runs(dir.path());
        let run = run_path(dir.path(), runs[run_pick % runs.len()]);
        let mut records = read_run(&run);
        let i = rec_pick % records.len();
        let before = records[i].clone();
        let r = &mut records[i];
        match e {
            Edit::KeyByte(at, x) => { let n = r.key.len(); r.key[at % n] ^= x; }
            Edit::Flags(x) => r.flags ^= x,
            Edit::Tx(t) => r.tx = t,
            Edit::Segment(s) => r.segment = s,
            Edit::Offset(d) => r.offset = (i64::from(r.offset) + d).max(0) as u32,
            Edit::Len(d) => r.len = (i64::from(r.len) + d).max(0) as u32,
        }
        prop_assume!(records[i] != before);
        write_run(&run, &records);
        prop_assert!(check(dir.path()).is_err(), "the check passed an edited run");
        no_read_lies(dir.path());
    }
}
