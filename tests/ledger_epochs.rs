//! Epochs in the chain: a database starts in epoch 1; `start_epoch` commits the marker tx
//! that starts a newer one, and every tx after it carries it; the epoch never goes down (a
//! replicated tx from an older epoch after a newer one is refused as another history); the
//! reserved marker key cannot be written by clients; the epoch survives a reopen.
#![allow(clippy::unwrap_used)]

use chainlog::ledger::{ChainBreak, Ledger, LedgerError, NewEntry, Options};

fn put(db: &Ledger, k: &str) -> chainlog::integrity::TxHeader {
    db.commit(vec![NewEntry::put(k, "v")]).unwrap()
}

#[test]
fn a_new_epoch_is_recorded_in_the_chain_and_never_goes_down() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = Ledger::open(a.path(), Options::default()).unwrap();
    assert_eq!(primary.epoch(), 1);
    assert_eq!(put(&primary, "k1").epoch, 1);
    let marker = primary.start_epoch(2).unwrap();
    assert_eq!((marker.id, marker.epoch), (2, 2));
    let tx = primary.tx(2).unwrap();
    assert_eq!(tx.entries[0].key, b"\0chainlog/epoch");
    assert_eq!(tx.entries[0].value, b"2");
    assert_eq!(put(&primary, "k2").epoch, 2);
    assert!(matches!(
        primary.start_epoch(2),
        Err(LedgerError::EpochOrder {
            asked: 2,
            current: 2
        })
    ));
    // Clients cannot write the reserved keys.
    assert!(matches!(
        primary.commit(vec![
            NewEntry::put("ok", "v"),
            NewEntry::put("\0chainlog/epoch", "9")
        ]),
        Err(LedgerError::ReservedKey { index: 1 })
    ));
    // A replica copies the epochs; a tx of an older epoch after them is another history.
    let replica = Ledger::open(b.path(), Options::default()).unwrap();
    for id in 1..=3 {
        let t = primary.tx(id).unwrap();
        let entries = t
            .entries
            .iter()
            .map(|e| NewEntry::put(e.key.clone(), e.value.clone()))
            .collect();
        replica.apply(t.header, t.alh, entries).unwrap();
    }
    assert_eq!(replica.epoch(), 2);
    let t4 = put(&primary, "k3");
    let mut old = t4;
    old.epoch = 1;
    let err = replica
        .apply(old, old.alh(), vec![NewEntry::put("k3", "v")])
        .unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::NotNext {
                tx: 4,
                reason: ChainBreak::Epoch
            }
        ),
        "{err}"
    );
    // The epoch survives a reopen (the checkpoint keeps it) and a crash-free replay.
    primary.close().unwrap();
    drop(primary);
    let primary = Ledger::open(a.path(), Options::default()).unwrap();
    assert_eq!(primary.epoch(), 2);
    assert_eq!(put(&primary, "k4").epoch, 2);
    primary.close().unwrap();
    chainlog::ledger::check(a.path()).unwrap();
}
