//! Verified reads prove the latest version and absence (the key map): through a man in the
//! middle that answers an older version of a key, hides a key, or resurrects a deleted one,
//! `chainlog vget` exits with the verification-failure status (3) every time; passed through
//! untouched, a missing or deleted key is "not found (proven)" (exit 1), and a value read as
//! of a past tx is that tx's latest.
#![allow(clippy::unwrap_used)]

mod common;

use chainlog::wire;
use common::mitm::{self, Mitm};
use common::{cli, Server};
use std::path::{Path, PathBuf};

async fn run(addr: &str, state: &Path, args: &[&str]) -> (i32, String, String) {
    let (addr, state) = (addr.to_string(), state.to_path_buf());
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&addr, &state, &args)
    })
    .await
    .unwrap()
}

fn assert_tampered((code, out, err): (i32, String, String), what: &str) {
    assert_eq!(code, 3, "{what}: exit {code}, out {out:?}, err {err:?}");
    assert!(err.contains("VERIFICATION FAILED"), "{what}: {err}");
}

struct Setup {
    _dir: tempfile::TempDir,
    _server: Server,
    mitm: Mitm,
    state: PathBuf,
    admin: chainlog::client::Client,
}

/// Tx 1: k=old, d=alive. Tx 2: k=new. Tx 3: delete d. Tx 4: other=x. The client trusts tx 4.
async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mitm = mitm::start(&server.addr).await;
    let state = dir.path().join("state.json");
    let admin = common::admin(&server).await;
    admin
        .set(
            "defaultdb",
            vec![
                (b"k".to_vec(), b"old".to_vec()),
                (b"d".to_vec(), b"alive".to_vec()),
            ],
        )
        .await
        .unwrap();
    admin
        .set("defaultdb", vec![(b"k".to_vec(), b"new".to_vec())])
        .await
        .unwrap();
    admin
        .delete("defaultdb", vec![b"d".to_vec()])
        .await
        .unwrap();
    admin
        .set("defaultdb", vec![(b"other".to_vec(), b"x".to_vec())])
        .await
        .unwrap();
    let (code, _, err) = run(&mitm.addr, &state, &["state"]).await;
    assert_eq!(code, 0, "{err}");
    Setup {
        _dir: dir,
        _server: server,
        mitm,
        state,
        admin,
    }
}

/// The server's real verified answer for `key` as of `at_tx`, asked directly.
async fn real(s: &Setup, key: &[u8], at_tx: u64) -> wire::VerifiableEntry {
    s.admin
        .data()
        .verifiable_get(wire::VerifiableGetRequest {
            database: "defaultdb".into(),
            key: key.to_vec(),
            at_tx,
            trusted_tx_id: 4,
            known_epoch: 0,
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untouched_answers_prove_values_deletes_and_absence() {
    let s = setup().await;
    let (code, out, err) = run(&s.mitm.addr, &s.state, &["vget", "k"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("new\t(tx 2"), "{out}");
    let (code, out, err) = run(&s.mitm.addr, &s.state, &["vget", "k", "--at-tx", "1"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("old\t(tx 1"), "{out}");
    let (code, out, _) = run(&s.mitm.addr, &s.state, &["vget", "d"]).await;
    assert_eq!(code, 1);
    assert!(out.contains("not found (proven): deleted by tx 3"), "{out}");
    let (code, out, _) = run(&s.mitm.addr, &s.state, &["--json", "vget", "never"]).await;
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["found"], false);
    assert_eq!(v["verified"], true);
    assert_eq!(v["at_tx_id"].as_u64(), Some(4));
    let (code, out, _) = run(&s.mitm.addr, &s.state, &["vget", "other", "--at-tx", "3"]).await;
    assert_eq!(code, 1);
    assert!(out.contains("never written as of tx 3"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_version_replayed_is_caught() {
    let s = setup().await;
    // The whole answer as of tx 1, where k was "old": it is not as of the tx asked.
    let old = real(&s, b"k", 1).await;
    let whole = old.clone();
    mitm::set(&s.mitm.hooks.verifiable_entry, move |ve| {
        *ve = whole.clone()
    });
    assert_tampered(
        run(&s.mitm.addr, &s.state, &["vget", "k"]).await,
        "the answer as of tx 1",
    );
    // The old entry and its proofs under the current `at`: the map shows another version.
    let parts = old.clone();
    mitm::set(&s.mitm.hooks.verifiable_entry, move |ve| {
        ve.entry = parts.entry.clone();
        ve.entry_index = parts.entry_index;
        ve.entry_path = parts.entry_path.clone();
        ve.tx = parts.tx.clone();
    });
    assert_tampered(
        run(&s.mitm.addr, &s.state, &["vget", "k"]).await,
        "the old entry with the current map proof",
    );
    // ... and with the old map proof too: it does not lead to tx 4's map root.
    let parts = old;
    mitm::set(&s.mitm.hooks.verifiable_entry, move |ve| {
        ve.entry = parts.entry.clone();
        ve.entry_index = parts.entry_index;
        ve.entry_path = parts.entry_path.clone();
        ve.tx = parts.tx.clone();
        ve.latest = parts.latest.clone();
    });
    let r = run(&s.mitm.addr, &s.state, &["vget", "k"]).await;
    assert_tampered(r, "the old entry with the old map proof");
    mitm::clear(&s.mitm.hooks.verifiable_entry);
    assert_eq!(run(&s.mitm.addr, &s.state, &["vget", "k"]).await.0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_key_is_caught() {
    let s = setup().await;
    // A bare "not found".
    mitm::set(&s.mitm.hooks.verifiable_entry_status, |st| {
        *st = Some(wire::Reason::KeyNotFound.status("key not found").clone())
    });
    assert_tampered(
        run(&s.mitm.addr, &s.state, &["vget", "k"]).await,
        "NOT_FOUND without a proof",
    );
    mitm::clear(&s.mitm.hooks.verifiable_entry_status);
    // The entry dropped, the proof kept: the map shows a version.
    mitm::set(&s.mitm.hooks.verifiable_entry, |ve| ve.entry = None);
    assert_tampered(
        run(&s.mitm.addr, &s.state, &["vget", "k"]).await,
        "the entry dropped",
    );
    // Another key's proof of absence, presented for k.
    let never = real(&s, b"never", 0).await;
    mitm::set(&s.mitm.hooks.verifiable_entry, move |ve| {
        *ve = never.clone()
    });
    assert_tampered(
        run(&s.mitm.addr, &s.state, &["vget", "k"]).await,
        "another key's absence",
    );
    // The proof's leaf removed, as if the path ended in an empty subtree.
    mitm::set(&s.mitm.hooks.verifiable_entry, |ve| {
        ve.entry = None;
        if let Some(p) = ve.latest.as_mut() {
            p.leaf = None;
        }
    });
    assert_tampered(
        run(&s.mitm.addr, &s.state, &["vget", "k"]).await,
        "the leaf removed",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_resurrected_after_a_delete_is_caught() {
    let s = setup().await;
    // d as it was at tx 2 ("alive"), served as the latest.
    let alive = real(&s, b"d", 2).await;
    assert!(alive.entry.as_ref().is_some_and(|e| !e.deleted));
    let whole = alive.clone();
    mitm::set(&s.mitm.hooks.verifiable_entry, move |ve| {
        *ve = whole.clone()
    });
    assert_tampered(
        run(&s.mitm.addr, &s.state, &["vget", "d"]).await,
        "the answer as of tx 2",
    );
    let parts = alive;
    mitm::set(&s.mitm.hooks.verifiable_entry, move |ve| {
        ve.entry = parts.entry.clone();
        ve.entry_index = parts.entry_index;
        ve.entry_path = parts.entry_path.clone();
        ve.tx = parts.tx.clone();
    });
    assert_tampered(
        run(&s.mitm.addr, &s.state, &["vget", "d"]).await,
        "the live entry under the current map proof",
    );
    // The delete's own entry relabelled as a value.
    mitm::set(&s.mitm.hooks.verifiable_entry, |ve| {
        if let Some(e) = ve.entry.as_mut() {
            e.deleted = false;
        }
    });
    assert_tampered(
        run(&s.mitm.addr, &s.state, &["vget", "d"]).await,
        "the delete shown as a value",
    );
}
