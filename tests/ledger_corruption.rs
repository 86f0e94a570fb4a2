//! Damage to every kind of file is found and named (file and offset), never silently
//! repaired or skipped; a torn tail after the last checkpoint is cut and reported.
//!
//! Crash images are made for real: a database of 400 txs is closed and its checkpoint and
//! index runs are saved; 50 more txs are written; then the saved checkpoint and runs are put
//! back. That is exactly what the directory holds if the process died right after the
//! checkpoint at tx 400: the other files are append-only, so they only hold more.
#![allow(clippy::unwrap_used)]

use chainlog::ledger::Order;
use chainlog::ledger::{check, Ledger, LedgerError, NewEntry, Options, Recovery};
use chainlog::ledger::{ChainBreak, Corruption, Damage, StorageError, TxFault};
use std::path::{Path, PathBuf};

fn options() -> Options {
    Options {
        segment_bytes_max: 1 << 20,
        checkpoint_txs: 100,
        ..Options::default()
    }
}

/// 450 txs of two entries, in two sessions; returns a copy of the checkpoint and index runs
/// as they were after tx 400.
fn build(dir: &Path) -> tempfile::TempDir {
    let write = |from: u32, to: u32| {
        let db = Ledger::open(dir, options()).unwrap();
        for i in from..to {
            db.commit(vec![
                NewEntry::put(format!("k{i:05}"), vec![i as u8; 3000]),
                NewEntry::put("hot", i.to_le_bytes().to_vec()),
            ])
            .unwrap();
        }
        db.close().unwrap();
    };
    write(0, 400);
    let saved = tempfile::tempdir().unwrap();
    std::fs::copy(dir.join("checkpoint"), saved.path().join("checkpoint")).unwrap();
    copy_dir(&dir.join("index"), saved.path());
    write(400, 450);
    saved
}

/// Puts back the checkpoint and runs saved by [`build`].
/// Cuts tx.idx and history.nodes back to before tx `tx`, as a crash during tx `tx`'s write
/// leaves them (its derived records come only after its frame is synced).
fn unwritten_from(dir: &Path, tx: u64) {
    let keep = tx - 1;
    let locations = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("tx.idx"))
        .unwrap();
    locations.set_len(keep * 20).unwrap();
    // The history tree of `keep` leaves has 2·keep − popcount(keep) perfect subtrees.
    let nodes = 2 * keep - u64::from(keep.count_ones());
    let history = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("history.nodes"))
        .unwrap();
    history.set_len(nodes * 36).unwrap();
}

fn crash_image(dir: &Path, saved: &tempfile::TempDir) {
    std::fs::copy(saved.path().join("checkpoint"), dir.join("checkpoint")).unwrap();
    std::fs::remove_dir_all(dir.join("index")).unwrap();
    std::fs::create_dir(dir.join("index")).unwrap();
    for e in std::fs::read_dir(saved.path()).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "checkpoint" {
            std::fs::copy(e.path(), dir.join("index").join(e.file_name())).unwrap();
        }
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn flip(path: &Path, offset: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[offset as usize] ^= 0x20;
    std::fs::write(path, b).unwrap();
}

/// Offset of the frame of tx `id`, from the tx locations file (u32 segment, u32 len, u64 offset).
fn frame_of(dir: &Path, id: u64) -> (u32, u64, u32) {
    let b = std::fs::read(dir.join("tx.idx")).unwrap();
    let r = &b[(id as usize - 1) * 20..];
    (
        u32::from_le_bytes(r[..4].try_into().unwrap()),
        u64::from_le_bytes(r[8..16].try_into().unwrap()),
        u32::from_le_bytes(r[4..8].try_into().unwrap()),
    )
}

#[test]
fn a_flipped_bit_in_a_sealed_segment_is_named_by_reads_and_by_check() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let segs = segments(dir.path());
    assert!(segs.len() >= 2);
    let (seg, offset, _) = frame_of(dir.path(), 10);
    assert_eq!(seg, 1);
    flip(&segs[0], offset + 100);
    {
        let db = Ledger::open(dir.path(), options()).unwrap();
        let err = db.tx(10).unwrap_err();
        assert!(
            matches!(&err, LedgerError::Storage(StorageError::Corrupt { path, offset: o, reason: Corruption::FramePayloadCrc }) if *path == segs[0] && *o == offset),
            "{err}"
        );
        // Other txs still read; the server keeps serving.
        assert_eq!(db.tx(11).unwrap().header.id, 11);
    }
    let err = check(dir.path()).unwrap_err();
    assert!(
        matches!(&err, LedgerError::BadTx { tx: 10, path, offset: o, reason: TxFault::Frame(Corruption::FramePayloadCrc) } if *path == segs[0] && *o == offset),
        "{err}"
    );
}

#[test]
fn a_tampered_value_fails_its_hash_on_read() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let (_, offset, len) = frame_of(dir.path(), 3);
    let segs = segments(dir.path());
    // Rewrite a value byte and fix the frame checksums, as a careful attacker would.
    let mut b = std::fs::read(&segs[0]).unwrap();
    let frame = &mut b[offset as usize..(offset + u64::from(len)) as usize];
    let value_at = frame.len() - 10 - 4 - 32 - 3 - 7; // inside the first entry's value
    frame[value_at] ^= 1;
    let pcrc = crc32fast::hash(&frame[12..]);
    frame[4..8].copy_from_slice(&pcrc.to_le_bytes());
    let hcrc = crc32fast::hash(&frame[..8]);
    frame[8..12].copy_from_slice(&hcrc.to_le_bytes());
    std::fs::write(&segs[0], &b).unwrap();
    {
        let db = Ledger::open(dir.path(), options()).unwrap();
        let err = db.get(b"k00002").unwrap_err();
        assert!(
            matches!(
                &err,
                LedgerError::Damaged {
                    reason: Damage::ValueHash,
                    ..
                }
            ),
            "{err}"
        );
        assert!(matches!(db.tx(3), Err(LedgerError::BadTx { tx: 3, .. })));
    }
    assert!(matches!(
        check(dir.path()),
        Err(LedgerError::BadTx {
            tx: 3,
            reason: TxFault::Chain(ChainBreak::ValueHash),
            ..
        })
    ));
}

#[test]
fn damage_after_the_checkpoint_stops_the_open_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let saved = build(dir.path());
    crash_image(dir.path(), &saved);
    let (seg, offset, _) = frame_of(dir.path(), 420);
    let path = segments(dir.path())[seg as usize - 1].clone();
    flip(&path, offset + 40);
    let err = Ledger::open(dir.path(), options()).unwrap_err();
    assert!(
        matches!(&err, LedgerError::BadTx { tx: 420, path: p, offset: o, .. } if *p == path && *o == offset),
        "{err}"
    );
    // Refusing to open changed nothing: the same error again.
    let again = Ledger::open(dir.path(), options()).unwrap_err();
    assert_eq!(err.to_string(), again.to_string());
}

#[test]
fn a_torn_tail_after_the_checkpoint_is_cut_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let saved = build(dir.path());
    crash_image(dir.path(), &saved);
    let (seg, offset, len) = frame_of(dir.path(), 450);
    // A write of tx 450 that never completed: the writer puts a tx's records in tx.idx and
    // history.nodes only after its frame is synced, so they hold nothing of it.
    unwritten_from(dir.path(), 450);
    let path = segments(dir.path())[seg as usize - 1].clone();
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        offset + u64::from(len),
        "tx 450 is last"
    );
    // Every cut inside the last frame, and a zero-filled tail, is a torn tail.
    for cut in [1u64, 5, 12, 13, 200, u64::from(len) - 1] {
        let mut b = std::fs::read(&path).unwrap();
        b.truncate((offset + cut) as usize);
        let img = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), img.path());
        std::fs::write(
            img.path().join("segments").join(path.file_name().unwrap()),
            &b,
        )
        .unwrap();
        let db = Ledger::open(img.path(), options()).unwrap();
        let r = db.recovery().clone();
        assert_eq!(r.checkpoint_tx, 400);
        assert_eq!(r.replayed_txs, 49);
        let (p, at, n) = r.truncated.expect("the tail is reported");
        assert_eq!((p.file_name(), at, n), (path.file_name(), offset, cut));
        assert_eq!(db.state().tx_id, 449);
        // The chain goes on from 449.
        let h = db.commit(vec![NewEntry::put("new", "v")]).unwrap();
        assert_eq!((h.id, h.prev_alh), (450, db.header(449).unwrap().alh()));
        assert_eq!(db.get(b"hot").unwrap().unwrap().value, 448u32.to_le_bytes());
        db.close().unwrap();
        drop(db);
        check(img.path()).unwrap();
    }
    // A write cut short inside free space: part of the frame, then the zeros that were there.
    // (The frame ends with the value 449u32: two zero bytes, which a cut there would not
    // lose, so the last cut is before them.)
    let whole = std::fs::read(&path).unwrap();
    for written in [1u64, 12, 13, 200, u64::from(len) - 3] {
        let mut b = whole[..(offset + written) as usize].to_vec();
        b.resize(whole.len() + 4096, 0);
        let img = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), img.path());
        let seg_path = img.path().join("segments").join(path.file_name().unwrap());
        std::fs::write(&seg_path, &b).unwrap();
        let db = Ledger::open(img.path(), options()).unwrap();
        let (_, at, n) = db
            .recovery()
            .truncated
            .clone()
            .expect("the tail is reported");
        assert_eq!(
            (at, n),
            (offset, b.len() as u64 - offset),
            "written {written}"
        );
        assert_eq!(db.state().tx_id, 449);
        db.close().unwrap();
        drop(db);
        check(img.path()).unwrap();
    }
    // The same frame with one bit flipped, ending the file (as a closed database leaves it):
    // corruption, not a torn tail, and the open is refused.
    let img = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), img.path());
    let seg_path = img.path().join("segments").join(path.file_name().unwrap());
    flip(&seg_path, offset + u64::from(len) - 10);
    let err = Ledger::open(img.path(), options()).unwrap_err();
    assert!(
        matches!(&err, LedgerError::BadTx { tx: 450, offset: o, .. } if *o == offset),
        "{err}"
    );

    // Zeros after the last frame are free space (written ahead of the frames): nothing is
    // cut or reported, and the next commit goes where they start.
    let mut b = whole;
    b.truncate(offset as usize);
    b.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&path, &b).unwrap();
    let db = Ledger::open(dir.path(), options()).unwrap();
    assert_eq!(db.recovery().truncated, None);
    assert_eq!(db.state().tx_id, 449);
    let h = db.commit(vec![NewEntry::put("new", "v")]).unwrap();
    assert_eq!(h.id, 450);
    assert_eq!(frame_of(dir.path(), 450).1, offset);
    db.close().unwrap();
    drop(db);
    // Closing cuts the file back to its last frame.
    let (_, at, n) = frame_of(dir.path(), 450);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), at + u64::from(n));
    check(dir.path()).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn a_flipped_history_node_is_named_by_proofs_and_by_check() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let path = dir.path().join("history.nodes");
    // Node 0 is the leaf for tx 1; tx 2's audit path holds it.
    flip(&path, 3);
    {
        let db = Ledger::open(dir.path(), options()).unwrap();
        let err = db.tx_proof(2, 450).unwrap_err();
        assert!(
            matches!(&err, LedgerError::Storage(StorageError::Corrupt { path: p, offset: 0, reason: Corruption::RecordCrc }) if *p == path),
            "{err}"
        );
    }
    let err = check(dir.path()).unwrap_err();
    assert!(
        matches!(&err, LedgerError::Storage(StorageError::Corrupt { path: p, offset: 0, .. }) if *p == path),
        "{err}"
    );
}

#[test]
fn a_flipped_tx_location_is_named() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let path = dir.path().join("tx.idx");
    flip(&path, 5 * 20 + 9);
    {
        let db = Ledger::open(dir.path(), options()).unwrap();
        let err = db.tx(6).unwrap_err();
        assert!(
            matches!(&err, LedgerError::Storage(StorageError::Corrupt { path: p, offset: 100, .. }) if *p == path),
            "{err}"
        );
        assert_eq!(db.tx(7).unwrap().header.id, 7);
    }
    assert!(matches!(
        check(dir.path()),
        Err(LedgerError::Storage(StorageError::Corrupt {
            offset: 100,
            ..
        }))
    ));
}

#[test]
fn a_flipped_index_run_is_named() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let run = std::fs::read_dir(dir.path().join("index"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    // The first record starts after the 32-byte header; byte 40 is inside it.
    flip(&run, 40);
    {
        let db = Ledger::open(dir.path(), options()).unwrap();
        let err = db
            .scan(b"", None, 10_000, Order::Asc, u64::MAX)
            .unwrap_err();
        assert!(
            matches!(&err, LedgerError::Storage(StorageError::Corrupt { path: p, offset: 32, reason: Corruption::RecordCrc }) if *p == run),
            "{err}"
        );
    }
    let err = check(dir.path()).unwrap_err();
    assert!(
        matches!(&err, LedgerError::Storage(StorageError::Corrupt { path: p, .. }) if *p == run),
        "{err}"
    );
}

#[test]
fn a_flipped_checkpoint_is_named() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let path = dir.path().join("checkpoint");
    flip(&path, 20);
    let err = Ledger::open(dir.path(), options()).unwrap_err();
    assert!(
        matches!(&err, LedgerError::Storage(StorageError::Corrupt { path: p, offset: 0, .. }) if *p == path),
        "{err}"
    );
    assert!(check(dir.path()).is_err());
}

#[test]
fn a_missing_or_cut_segment_is_named() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let segs = segments(dir.path());
    // Cut the first (sealed) segment in the middle: reads past the cut and check fail.
    let len = std::fs::metadata(&segs[0]).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segs[0])
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let err = check(dir.path()).unwrap_err();
    assert!(
        matches!(&err, LedgerError::BadTx { path, reason: TxFault::Frame(Corruption::FrameTruncated), .. } if *path == segs[0]),
        "{err}"
    );
    std::fs::remove_file(&segs[0]).unwrap();
    let err = Ledger::open(dir.path(), options()).unwrap_err();
    assert!(
        matches!(&err, LedgerError::Storage(StorageError::Corrupt { path, .. }) if *path == segs[0]),
        "{err}"
    );
}

#[test]
fn a_damaged_last_frame_of_a_committed_tx_is_refused_unless_the_loss_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let saved = build(dir.path());
    crash_image(dir.path(), &saved);
    // tx 450 was committed: its records are in tx.idx and history.nodes. Its frame damaged,
    // with zeros after it as free space leaves them, looks like a write cut short.
    let (seg, offset, len) = frame_of(dir.path(), 450);
    let path = segments(dir.path())[seg as usize - 1].clone();
    let mut b = std::fs::read(&path).unwrap();
    b[(offset + u64::from(len)) as usize - 30] ^= 0x04;
    b.resize(b.len() + 4096, 0);
    std::fs::write(&path, &b).unwrap();
    let before = std::fs::read(dir.path().join("tx.idx")).unwrap();
    let err = Ledger::open(dir.path(), options()).unwrap_err();
    assert!(
        matches!(&err, LedgerError::Lost { first: 450, last: 450, path: p, offset: o } if *p == path && *o == offset),
        "{err}"
    );
    // Nothing was cut: neither the log nor the evidence.
    assert_eq!(std::fs::read(&path).unwrap(), b);
    assert_eq!(std::fs::read(dir.path().join("tx.idx")).unwrap(), before);
    let err = check(dir.path()).unwrap_err();
    assert!(
        matches!(&err, LedgerError::Lost { first: 450, .. }),
        "{err}"
    );
    // Accepted: cut, and reported as a loss.
    let accept = Options {
        recovery: Recovery::AcceptLoss,
        ..options()
    };
    let db = Ledger::open(dir.path(), accept).unwrap();
    assert_eq!(db.recovery().lost, Some((450, 450)));
    assert_eq!(db.state().tx_id, 449);
    db.close().unwrap();
    drop(db);
    check(dir.path()).unwrap();
}

/// Rewrites tx `id`'s frame in place with the value of its first entry changed (same length)
/// and every hash and checksum recomputed: a record that checks out on its own.
fn rewrite_consistently(dir: &Path, id: u64) {
    use chainlog::integrity::{entry_digest, tx::entries_root, value_hash};
    use chainlog::ledger::codec;
    let (seg, offset, len) = frame_of(dir, id);
    let path = segments(dir)[seg as usize - 1].clone();
    let mut bytes = std::fs::read(&path).unwrap();
    let frame = &mut bytes[offset as usize..(offset + u64::from(len)) as usize];
    let rec = codec::decode(&frame[12..]).unwrap();
    let mut entries: Vec<NewEntry> = rec
        .entries
        .iter()
        .map(|e| NewEntry {
            key: e.key.to_vec(),
            value: e.value.to_vec(),
            meta: e.meta,
        })
        .collect();
    entries[0].value[0] ^= 0xff;
    let digests: Vec<_> = entries
        .iter()
        .map(|e| entry_digest(&e.key, e.meta, &value_hash(&e.value)))
        .collect();
    let header = chainlog::integrity::TxHeader {
        entries_root: entries_root(&digests),
        ..rec.header
    };
    let payload = codec::encode_record(&header, &header.alh(), &entries);
    assert_eq!(payload.len(), frame.len() - 12);
    frame[12..].copy_from_slice(&payload);
    let pcrc = crc32fast::hash(&frame[12..]);
    frame[4..8].copy_from_slice(&pcrc.to_le_bytes());
    let hcrc = crc32fast::hash(&frame[..8]);
    frame[8..12].copy_from_slice(&hcrc.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
}

/// A tx rewritten with its entries root and Alh recomputed still carries the key map root of
/// the entries it had: the check recomputes the map and blames that tx's record, not
/// history.nodes (and, were the map root forged too, the next tx's link would break).
#[test]
fn a_tx_rewritten_with_a_valid_alh_is_blamed_where_the_chain_breaks() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    rewrite_consistently(dir.path(), 23);
    let (seg, offset_23, _) = frame_of(dir.path(), 23);
    let err = check(dir.path()).unwrap_err();
    assert!(
        matches!(&err, LedgerError::BadTx { tx: 23, reason: TxFault::Chain(ChainBreak::MapRoot), path, offset }
            if *path == segments(dir.path())[seg as usize - 1] && *offset == offset_23),
        "the log is blamed, not history.nodes: {err}"
    );
}

#[test]
fn a_segment_cut_short_of_the_checkpoint_is_named() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let segs = segments(dir.path());
    let last = segs.last().unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(last).unwrap();
    f.set_len(len - 1000).unwrap();
    drop(f);
    let err = check(dir.path()).unwrap_err();
    assert!(
        matches!(&err, LedgerError::Storage(StorageError::Corrupt { path, reason: Corruption::ShortFile, .. }) if path == last),
        "{err}"
    );
    let err = Ledger::open(dir.path(), options()).unwrap_err();
    assert!(
        matches!(&err, LedgerError::Storage(StorageError::Corrupt { path, reason: Corruption::ShortFile, .. }) if path == last),
        "{err}"
    );
}

#[test]
fn a_history_node_edited_with_its_checksum_is_never_served_as_a_proof() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    // Node 0 (tx 1's leaf) rewritten, its record checksum recomputed: crc32(u64 0 || node).
    let path = dir.path().join("history.nodes");
    let mut b = std::fs::read(&path).unwrap();
    b[5] ^= 1;
    let mut h = crc32fast::Hasher::new();
    h.update(&0u64.to_le_bytes());
    h.update(&b[..32]);
    b[32..36].copy_from_slice(&h.finalize().to_le_bytes());
    std::fs::write(&path, &b).unwrap();
    {
        let db = Ledger::open(dir.path(), options()).unwrap();
        let err = db.tx_proof(2, 450).unwrap_err();
        assert!(
            matches!(&err, LedgerError::Damaged { reason: Damage::HistoryNode, path: p, .. } if *p == path),
            "{err}"
        );
        let err = db.state_proof(2, 450).unwrap_err();
        assert!(
            matches!(
                &err,
                LedgerError::Damaged {
                    reason: Damage::HistoryNode,
                    ..
                }
            ),
            "{err}"
        );
        // Proofs that do not pass through it are still served.
        db.tx_proof(449, 450).unwrap();
    }
    let err = check(dir.path()).unwrap_err();
    assert!(
        matches!(&err, LedgerError::Damaged { reason: Damage::HistoryNode, path: p, offset: 0 } if *p == path),
        "{err}"
    );
}

#[test]
fn a_proof_between_states_in_the_wrong_order_is_an_invalid_request() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let db = Ledger::open(dir.path(), options()).unwrap();
    assert!(matches!(
        db.state_proof(5, 3),
        Err(LedgerError::StateOrder { old: 5, new: 3 })
    ));
    assert!(matches!(
        db.state_proof(0, 3),
        Err(LedgerError::StateOrder { old: 0, new: 3 })
    ));
    assert!(matches!(
        db.state_proof(3, 9999),
        Err(LedgerError::TxNotFound { id: 9999, .. })
    ));
}
