//! The key map end to end on a real directory: for random workloads with deletes, the map's
//! proof at every state says exactly what a naive model rebuilt from the log says (latest
//! version or absent), across checkpoints and reopens; a replica refuses a tx whose map root
//! lies; a map node edited on disk with its checksum recomputed is never served as a proof;
//! and a directory of format version 1 is refused with both versions named.
#![allow(clippy::unwrap_used)]

#[path = "common/rng.rs"]
mod rng;

use chainlog::integrity::map::{key_hash, Latest};
use chainlog::integrity::{entry_digest, value_hash, EntryMeta, TxId};
use chainlog::ledger::{
    check, codec, ChainBreak, Damage, Ledger, LedgerError, NewEntry, Options, StorageError,
};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

fn small() -> Options {
    Options {
        segment_bytes_max: 1 << 20,
        checkpoint_txs: 7,
        memtable_versions_max: 20,
        runs_max: 2,
        ..Options::default()
    }
}

/// The model: key -> (tx, deleted, entry digest) of its latest version, as of each tx.
type Model = BTreeMap<Vec<u8>, (TxId, bool, chainlog::integrity::Digest)>;

fn model_check(db: &Ledger, models: &[Model]) -> Result<(), TestCaseError> {
    for (at, model) in models.iter().enumerate() {
        let at = at as TxId;
        let root = if at == 0 {
            chainlog::integrity::map::MAP_EMPTY
        } else {
            db.header(at).unwrap().map_root
        };
        for k in 0..40u8 {
            let key = format!("key-{k}").into_bytes();
            let (latest, proof) = db.latest_proof(&key, at).unwrap();
            prop_assert_eq!(proof.verify(&root, &key), Ok(latest));
            match model.get(&key) {
                Some(&(tx, deleted, digest)) => {
                    prop_assert!(
                        matches!(latest, Latest::Version(l) if l.tx_id == tx && l.deleted == deleted
                            && l.entry_digest == digest && l.key_hash == key_hash(&key)),
                        "key-{} at tx {}: {:?}",
                        k,
                        at,
                        latest
                    );
                }
                None => prop_assert_eq!(latest, Latest::Absent),
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u8),
    Delete(u8),
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Random txs of puts and deletes: at every state, each key's proof verifies against
    /// that state's map root and shows the model's latest version or its absence; the same
    /// after a reopen; and the offline check recomputes every root.
    #[test]
    fn proofs_at_every_state_match_a_model_rebuilt_from_the_log(
        txs in proptest::collection::vec(
            proptest::collection::vec(prop_oneof![
                3 => (0u8..40, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
                1 => (0u8..40).prop_map(Op::Delete),
            ], 1..6),
            1..40),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = Ledger::open(dir.path(), small()).unwrap();
        let mut models = vec![Model::new()];
        for ops in &txs {
            let mut entries: BTreeMap<Vec<u8>, NewEntry> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Put(k, v) => {
                        let key = format!("key-{k}").into_bytes();
                        entries.insert(key.clone(), NewEntry::put(key, vec![*v; 3]));
                    }
                    Op::Delete(k) => {
                        let key = format!("key-{k}").into_bytes();
                        entries.insert(key.clone(), NewEntry::delete(key));
                    }
                }
            }
            let entries: Vec<NewEntry> = entries.into_values().collect();
            let h = db.commit(entries.clone()).unwrap();
            let mut m = models.last().unwrap().clone();
            for e in &entries {
                let d = entry_digest(&e.key, e.meta, &value_hash(&e.value));
                m.insert(e.key.clone(), (h.id, e.meta.deleted, d));
            }
            models.push(m);
        }
        model_check(&db, &models)?;
        db.close().unwrap();
        drop(db);
        check(dir.path()).unwrap();
        let db = Ledger::open(dir.path(), small()).unwrap();
        model_check(&db, &models)?;
    }
}

/// A tx copied from a primary whose header carries a wrong map root, its Alh recomputed to
/// match, is refused as another history, and nothing of it is written.
#[test]
fn a_replicated_tx_with_a_lying_map_root_is_refused() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = Ledger::open(a.path(), Options::default()).unwrap();
    let replica = Ledger::open(b.path(), Options::default()).unwrap();
    primary.commit(vec![NewEntry::put("k", "1")]).unwrap();
    let h2 = primary.commit(vec![NewEntry::put("j", "2")]).unwrap();
    let tx1 = primary.tx(1).unwrap();
    let put = |t: &chainlog::ledger::Tx| {
        t.entries
            .iter()
            .map(|e| NewEntry::put(e.key.clone(), e.value.clone()))
            .collect::<Vec<_>>()
    };
    replica.apply(tx1.header, tx1.alh, put(&tx1)).unwrap();
    let tx2 = primary.tx(2).unwrap();
    let mut lie = h2;
    lie.map_root = tx1.header.map_root; // "tx 2 changed no key"
    let err = replica.apply(lie, lie.alh(), put(&tx2)).unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::NotNext {
                tx: 2,
                reason: ChainBreak::MapRoot
            }
        ),
        "{err}"
    );
    assert_eq!(replica.state().tx_id, 1);
    // The true tx still applies, and the replica's map proves what the primary's does.
    replica.apply(tx2.header, tx2.alh, put(&tx2)).unwrap();
    assert_eq!(replica.state(), primary.state());
    let (latest, _) = replica.latest_proof(b"j", 2).unwrap();
    assert!(matches!(latest, Latest::Version(l) if l.tx_id == 2));
}

/// Edits node records under `map/` (checksums recomputed) so that every leaf of `key` says it
/// was written by tx `tx`.
fn forge_leaves(db_dir: &Path, key: &[u8], tx: TxId) -> usize {
    let kh = key_hash(key);
    let mut edited = 0;
    for entry in std::fs::read_dir(db_dir.join("map")).unwrap() {
        let path = entry.unwrap().path();
        let chunk: u64 = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        let mut b = std::fs::read(&path).unwrap();
        for (slot, rec) in b.chunks_exact_mut(85).enumerate() {
            if rec[0] == 2 && rec[1..33] == kh.0 {
                rec[33..41].copy_from_slice(&tx.to_le_bytes());
                let index = (chunk - 1) * (1 << 18) + slot as u64;
                let mut h = crc32fast::Hasher::new();
                h.update(&index.to_le_bytes());
                h.update(&rec[..81]);
                let crc = h.finalize();
                rec[81..].copy_from_slice(&crc.to_le_bytes());
                edited += 1;
            }
        }
        std::fs::write(&path, &b).unwrap();
    }
    edited
}

#[test]
fn a_map_node_edited_with_its_checksum_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let db = Ledger::open(dir.path(), Options::default()).unwrap();
    for i in 0..20u32 {
        db.commit(vec![NewEntry::put(format!("k{i}"), "v")])
            .unwrap();
    }
    db.commit(vec![NewEntry::put("k3", "newer")]).unwrap();
    db.close().unwrap();
    drop(db);
    assert!(forge_leaves(dir.path(), b"k3", 4) > 0);
    // The database opens (nodes are derived data), but the edited node never becomes a proof,
    // a read through the index disagrees with the map, and the offline check names the map.
    let db = Ledger::open(dir.path(), Options::default()).unwrap();
    let err = db.latest_proof(b"k3", 21).unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::Damaged {
                reason: Damage::MapNode,
                ..
            }
        ),
        "{err}"
    );
    let err = db.get(b"k3").unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::Damaged {
                reason: Damage::IndexEntry,
                ..
            }
        ),
        "{err}"
    );
    db.close().unwrap();
    drop(db);
    // The offline check walks the stored map and names the edited node's file.
    let err = check(dir.path()).unwrap_err();
    assert!(
        matches!(&err, LedgerError::Damaged { reason: Damage::MapNode, path, .. } if path.starts_with(dir.path().join("map"))),
        "{err}"
    );
}

fn fix_header_crc(b: &mut [u8]) {
    let crc = crc32fast::hash(&b[..28]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn a_version_1_directory_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let db = Ledger::open(dir.path(), Options::default()).unwrap();
    db.commit(vec![NewEntry::put("k", "v")]).unwrap();
    db.close().unwrap();
    drop(db);
    let seg = dir.path().join("segments").join("0000000001.seg");
    let mut b = std::fs::read(&seg).unwrap();
    b[9] = 1;
    fix_header_crc(&mut b);
    std::fs::write(&seg, &b).unwrap();
    let err = Ledger::open(dir.path(), Options::default()).unwrap_err();
    assert!(
        matches!(&err, LedgerError::Storage(StorageError::Version { found: 1, supported: 2, path }) if *path == seg),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("version 1") && text.contains("version 2"),
        "{text}"
    );
    assert!(check(dir.path()).is_err());
    // A version 1 checkpoint is named the same way.
    b[9] = 2;
    fix_header_crc(&mut b);
    std::fs::write(&seg, &b).unwrap();
    let cp = dir.path().join("checkpoint");
    let mut c = std::fs::read(&cp).unwrap();
    c[12] = 1;
    let pcrc = crc32fast::hash(&c[12..]);
    c[4..8].copy_from_slice(&pcrc.to_le_bytes());
    let hcrc = crc32fast::hash(&c[..8]);
    c[8..12].copy_from_slice(&hcrc.to_le_bytes());
    std::fs::write(&cp, &c).unwrap();
    let err = Ledger::open(dir.path(), Options::default()).unwrap_err();
    assert!(
        matches!(&err, LedgerError::Storage(StorageError::Version { found: 1, supported: 2, path }) if *path == cp),
        "{err}"
    );
}

/// A record's header holds the epoch and the map root between the history root and the Alh
/// (198 bytes).
#[test]
fn the_record_header_carries_the_map_root() {
    let dir = tempfile::tempdir().unwrap();
    let db = Ledger::open(dir.path(), Options::default()).unwrap();
    let h = db.commit(vec![NewEntry::put("k", "v")]).unwrap();
    let rec = db.records(1, 1, usize::MAX).unwrap();
    assert_eq!(codec::HEADER_BYTES, 198);
    assert_eq!(&rec[0][126..134], &1u64.to_le_bytes(), "epoch 1");
    assert_eq!(&rec[0][134..166], &h.map_root.0);
    let leaf = chainlog::integrity::map::MapLeaf {
        key_hash: key_hash(b"k"),
        tx_id: 1,
        deleted: false,
        entry_digest: entry_digest(b"k", EntryMeta::default(), &value_hash(b"v")),
    };
    assert_eq!(h.map_root, leaf.hash(), "one key: the root is its leaf");
}
