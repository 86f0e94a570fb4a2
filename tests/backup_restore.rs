//! Backups with the real binaries: taken from a server under a steady write load (full, then
//! incremental), verified offline, restored into another server with the same identity and
//! states (a client's trusted state of the original verifies against the copy); and a
//! tampered, a cut or a wrongly signed backup refused with nothing created.
#![allow(clippy::unwrap_used)]

mod common;

use common::{cli, Server};
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::files::key_file;

/// Runs the CLI off the async runtime; asserts the exit code; returns stdout parsed as JSON
/// when it is JSON, with stderr for messages.
async fn run(addr: &str, state: &Path, args: &[&str], code: i32) -> (Value, String) {
    let (addr, state) = (addr.to_string(), state.to_path_buf());
    let args: Vec<String> = args.iter().map(ToString::to_string).collect();
    let (c, out, err) = tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&addr, &state, &a)
    })
    .await
    .unwrap();
    assert_eq!(c, code, "stdout {out} stderr {err}");
    (serde_json::from_str(out.trim()).unwrap_or(Value::Null), err)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_elsewhere_with_the_same_states() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = key_file(dir.path(), "signing.key", 0x41);
    let a = Server::start(&dir.path().join("a"), &["--signing-key", p(&key)]);
    let b = Server::start(&dir.path().join("b"), &[]);
    let state = dir.path().join("state.json");
    let ca = common::admin(&a).await;
    for i in 0..200u32 {
        ca.set("defaultdb", vec![(format!("k{i}").into(), vec![7u8; 100])])
            .await
            .unwrap();
    }
    // The client trusts a state of the original.
    let (trusted, _) = run(&a.addr, &state, &["--json", "state"], 0).await;
    assert!(trusted["tx_id"].as_u64().unwrap() >= 200);

    // A steady write load for the whole backup.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, c) = (stop.clone(), common::admin(&a).await);
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                c.set(
                    "defaultdb",
                    vec![(format!("load{n}").into(), b"v".to_vec())],
                )
                .await
                .unwrap();
                n += 1;
            }
            n
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let full = dir.path().join("full.clbk");
    let inc = dir.path().join("inc.clbk");
    let (f, _) = run(
        &a.addr,
        &state,
        &["--json", "backup", "--db", "defaultdb", "--out", p(&full)],
        0,
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (i, _) = run(
        &a.addr,
        &state,
        &[
            "--json",
            "backup",
            "--db",
            "defaultdb",
            "--out",
            p(&inc),
            "--since",
            p(&full),
        ],
        0,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let written = load.await.unwrap();
    assert!(written > 0, "the load ran during the backups");
    let (full_end, inc_end) = (f["tx_id"].as_u64().unwrap(), i["tx_id"].as_u64().unwrap());
    assert_eq!(f["from_tx_id"], 0);
    assert_eq!(i["from_tx_id"].as_u64(), Some(full_end));
    assert!(
        inc_end > full_end,
        "writes went on between the backups: {f} {i}"
    );
    assert_eq!(f["signed"], true, "the server signs states: {f}");
    assert_eq!(
        std::fs::metadata(&full).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Offline: both files, in order, verify, the end state signed by the server's key.
    let (v, _) = run(
        &a.addr,
        &state,
        &[
            "--json",
            "--server-key",
            &public,
            "verify",
            "--backup",
            p(&full),
            "--backup",
            p(&inc),
        ],
        0,
    )
    .await;
    assert_eq!(v["tx_id"].as_u64(), Some(inc_end));
    assert_eq!(v["signed"], true);
    assert_eq!(v["signed_by"], public.as_str());
    assert_eq!(v["key_pinned"], true);
    // An incremental backup alone is not a chain from tx 1.
    let (_, err) = run(&a.addr, &state, &["verify", "--backup", p(&inc)], 1).await;
    assert!(err.contains("incremental"), "{err}");

    // Restore into another server: same identity, same txs.
    let (r, _) = run(
        &b.addr,
        &state,
        &[
            "--json",
            "restore",
            "--db",
            "copy",
            "--from",
            p(&full),
            "--from",
            p(&inc),
        ],
        0,
    )
    .await;
    let a_state = ca.current_state("defaultdb").await.unwrap();
    assert_eq!(r["uuid"].as_str(), Some(a_state.uuid.as_str()));
    assert_eq!(r["tx_id"].as_u64(), Some(inc_end));
    assert_eq!(r["role"], "primary");
    let cb = common::admin(&b).await;
    for id in [1, 100, full_end, full_end + 1, inc_end] {
        let (x, y) = (
            ca.tx("defaultdb", id).await.unwrap(),
            cb.tx("copy", id).await.unwrap(),
        );
        assert_eq!(x.header, y.header, "tx {id}");
        assert_eq!(x.entries, y.entries, "tx {id}");
    }
    // Promoted: a new epoch, and writes are taken.
    let status = cb.replication_status("copy").await.unwrap();
    assert_eq!(status.epoch, 2);
    cb.set("copy", vec![(b"after".to_vec(), b"restore".to_vec())])
        .await
        .unwrap();

    // The client's trusted state of the original verifies against the copy: states are kept
    // per database identity, which the restored copy shares, so the copy at another address
    // under another name must extend the state trusted for the original. A forged trusted
    // state does not verify (the check can fail).
    let states: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let entry = states["databases"][&a_state.uuid].clone();
    assert!(entry.is_object(), "{states}");
    let copy_state = dir.path().join("copy-state.json");
    std::fs::copy(&state, &copy_state).unwrap();
    let (v, _) = run(
        &b.addr,
        &copy_state,
        &["--json", "--db", "copy", "state"],
        0,
    )
    .await;
    assert!(v["tx_id"].as_u64().unwrap() > inc_end, "{v}");
    let mut forged = states.clone();
    forged["databases"][&a_state.uuid]["alh"] = Value::String("11".repeat(32));
    std::fs::write(&copy_state, forged.to_string()).unwrap();
    run(&b.addr, &copy_state, &["--db", "copy", "state"], 3).await;

    // Staged: the full backup kept a replica, the incremental one restored onto it later.
    let (s, _) = run(
        &b.addr,
        &state,
        &[
            "--json",
            "restore",
            "--db",
            "staged",
            "--from",
            p(&full),
            "--replica",
        ],
        0,
    )
    .await;
    assert_eq!(s["tx_id"].as_u64(), Some(full_end));
    assert!(
        cb.set("staged", vec![(b"x".to_vec(), b"y".to_vec())])
            .await
            .is_err(),
        "a replica refuses writes"
    );
    let (s, _) = run(
        &b.addr,
        &state,
        &["--json", "restore", "--db", "staged", "--from", p(&inc)],
        0,
    )
    .await;
    assert_eq!(s["tx_id"].as_u64(), Some(inc_end));
    assert_eq!(s["verified"], false);
    // A new identity on request.
    let (n, _) = run(
        &b.addr,
        &state,
        &[
            "--json",
            "restore",
            "--db",
            "other",
            "--from",
            p(&full),
            "--new-identity",
        ],
        0,
    )
    .await;
    assert_ne!(n["uuid"].as_str(), Some(a_state.uuid.as_str()));
    assert_eq!(n["tx_id"].as_u64(), Some(full_end));
    // No scratch database is left behind.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".chainlog-verify") || n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

use std::os::unix::fs::PermissionsExt;

/// The byte ranges of the frames after a backup file's 32-byte header.
fn frames(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut at = 32;
    while at + 12 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        out.push(at..at + 12 + len);
        at += 12 + len;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_cut_or_wrongly_signed_backup_is_refused_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = key_file(dir.path(), "signing.key", 0x42);
    let (_, other_public) = key_file(dir.path(), "other.key", 0x43);
    let a = Server::start(&dir.path().join("a"), &["--signing-key", p(&key)]);
    let state = dir.path().join("state.json");
    let ca = common::admin(&a).await;
    for i in 0..50u32 {
        ca.set(
            "defaultdb",
            vec![(format!("k{i}").into(), format!("value {i}").into())],
        )
        .await
        .unwrap();
    }
    let full = dir.path().join("full.clbk");
    run(&a.addr, &state, &["backup", "--out", p(&full)], 0).await;
    let good = std::fs::read(&full).unwrap();
    let spans = frames(&good);
    assert_eq!(spans.len(), 52, "begin, 50 txs, end");

    // A value changed in tx 20, with the frame's checksums recomputed: only the hashes tell.
    let mut tampered = good.clone();
    let f = spans[20].clone();
    let last = f.end - 1;
    tampered[last] ^= 0x01;
    common::files::fix_frame_crcs(&mut tampered[f]);
    let bad = dir.path().join("tampered.clbk");
    std::fs::write(&bad, &tampered).unwrap();
    let (_, err) = run(&a.addr, &state, &["verify", "--backup", p(&bad)], 3).await;
    assert!(err.contains("tx 20"), "{err}");
    let (_, err) = run(
        &a.addr,
        &state,
        &["restore", "--db", "fromtampered", "--from", p(&bad)],
        3,
    )
    .await;
    assert!(err.contains("tx 20"), "{err}");

    // A copy cut before its end record.
    let cut = dir.path().join("cut.clbk");
    std::fs::write(&cut, &good[..spans[51].start]).unwrap();
    let (_, err) = run(&a.addr, &state, &["verify", "--backup", p(&cut)], 3).await;
    assert!(err.contains("incomplete"), "{err}");
    let (_, err) = run(
        &a.addr,
        &state,
        &["restore", "--db", "fromcut", "--from", p(&cut)],
        3,
    )
    .await;
    assert!(err.contains("incomplete"), "{err}");

    // Signed by the server, but not by the key the auditor expects.
    let (_, err) = run(
        &a.addr,
        &state,
        &[
            "--server-key",
            &other_public,
            "verify",
            "--backup",
            p(&full),
        ],
        3,
    )
    .await;
    assert!(err.contains("not the server key given"), "{err}");
    let (_, err) = run(
        &a.addr,
        &state,
        &[
            "--server-key",
            &other_public,
            "restore",
            "--db",
            "fromwrongkey",
            "--from",
            p(&full),
        ],
        3,
    )
    .await;
    assert!(err.contains("not the server key given"), "{err}");

    // Nothing was created from the refused files.
    let names: Vec<String> = ca
        .list_databases()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert!(!names.iter().any(|n| n.starts_with("from")), "{names:?}");
    // The good file still restores.
    run(
        &a.addr,
        &state,
        &["restore", "--db", "fromgood", "--from", p(&full)],
        0,
    )
    .await;
}
