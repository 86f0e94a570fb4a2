//! The verified client (and so `chainlog state`, `vget`, `vtx`) never moves backwards and never
//! trusts a field it did not verify: a man in the middle rewrites the server's answers, and
//! every rewrite is a verification failure (exit 3), whatever part it touches.
#![allow(clippy::unwrap_used)]

mod common;

use chainlog::wire;
use common::mitm::{self, Mitm};
use common::{cli, Server};
use std::path::{Path, PathBuf};

/// The CLI against `addr` with `state` as its trusted-state file, off the async threads.
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

struct Setup {
    _dir: tempfile::TempDir,
    _server: common::launcher::Server,
    mitm: Mitm,
    state: PathBuf,
    /// The real states of txs 1..=5, as the server gave them.
    states: Vec<wire::State>,
}

/// A server with 5 txs written through the man in the middle (who passes them on), so the
/// client trusts tx 5; and the server's real states of txs 1..=5.
async fn setup(extra: &[&str]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), extra);
    let mitm = mitm::start(&server.addr).await;
    let state = dir.path().join("state.json");
    let admin = common::admin(&server).await;
    let mut states = Vec::new();
    for i in 0..5 {
        let (code, _, err) = run(&mitm.addr, &state, &["vset", &format!("k{i}"), "v"]).await;
        assert_eq!(code, 0, "{err}");
        states.push(admin.current_state("defaultdb").await.unwrap());
    }
    Setup {
        _dir: dir,
        _server: server,
        mitm,
        state,
        states,
    }
}

fn assert_tampered((code, out, err): (i32, String, String), what: &str) {
    assert_eq!(code, 3, "{what}: exit {code}, out {out:?}, err {err:?}");
    // With --json the failure is an object on stdout.
    assert!(
        err.contains("VERIFICATION FAILED") || out.contains("\"code\":\"verification_failed\""),
        "{what}: {out} {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_refuses_a_rollback_to_an_older_state_or_to_nothing() {
    let s = setup(&[]).await;
    let (code, out, err) = run(&s.mitm.addr, &s.state, &["--json", "state"]).await;
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["tx_id"].as_u64(), Some(5));
    // Back to the empty database.
    mitm::set(&s.mitm.hooks.current_state, |st| {
        st.tx_id = 0;
        st.alh = vec![0; 32];
    });
    let r = run(&s.mitm.addr, &s.state, &["state"]).await;
    assert!(r.2.contains("rollback") || r.2.contains("older"), "{}", r.2);
    assert_tampered(r, "tx 0 after tx 5");
    // Back to a real, older state (tx 3).
    let older = s.states[2].clone();
    mitm::set(&s.mitm.hooks.current_state, move |st| *st = older.clone());
    assert_tampered(
        run(&s.mitm.addr, &s.state, &["state"]).await,
        "tx 3 after tx 5",
    );
    // The trusted state did not move.
    mitm::clear(&s.mitm.hooks.current_state);
    let (code, out, _) = run(&s.mitm.addr, &s.state, &["--json", "state"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("\"tx_id\":5"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_checks_every_field_of_current_state() {
    let s = setup(&[]).await;
    type Rewrite = Box<dyn FnMut(&mut wire::State) + Send>;
    let cases: Vec<(&str, Rewrite)> = vec![
        ("wrong Alh", Box::new(|st| st.alh[0] ^= 1)),
        (
            "wrong identity",
            Box::new(|st| st.uuid = "00000000-0000-4000-8000-000000000000".into()),
        ),
        (
            "another database's state",
            Box::new(|st| st.database = "other".into()),
        ),
        ("a malformed Alh", Box::new(|st| st.alh.truncate(31))),
    ];
    for (what, f) in cases {
        *s.mitm.hooks.current_state.lock().unwrap() = Some(f);
        assert_tampered(run(&s.mitm.addr, &s.state, &["state"]).await, what);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_server_key_unsigned_or_badly_signed_states_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("signing.key");
    std::fs::write(&key, chainlog::integrity::hex::encode(&[7u8; 32])).unwrap();
    let public = chainlog::integrity::hex::encode(
        &ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
            .verifying_key()
            .to_bytes(),
    );
    let s = setup(&["--signing-key", key.to_str().unwrap()]).await;
    let with_key = |args: &[&str]| {
        let mut v = vec!["--server-key", public.as_str()];
        v.extend_from_slice(args);
        v.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let args = with_key(&["state"]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, err) = run(&s.mitm.addr, &s.state, &a).await;
    assert_eq!(code, 0, "{err}");
    mitm::set(&s.mitm.hooks.current_state, |st| st.signature.clear());
    assert_tampered(run(&s.mitm.addr, &s.state, &a).await, "no signature");
    mitm::set(&s.mitm.hooks.current_state, |st| st.signature[10] ^= 1);
    assert_tampered(run(&s.mitm.addr, &s.state, &a).await, "a bad signature");
    mitm::set(&s.mitm.hooks.current_state, |st| st.timestamp_ms += 1);
    assert_tampered(
        run(&s.mitm.addr, &s.state, &a).await,
        "a signature of another message",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_answer_missing_a_proof_part_is_tampering() {
    let s = setup(&[]).await;
    // A newer state needs its extension from the trusted one.
    let admin = chainlog::client::Client::connect(&s._server.addr, None)
        .await
        .unwrap();
    admin.login("admin", common::ADMIN_PASSWORD).await.unwrap();
    admin
        .set("defaultdb", vec![(b"later".to_vec(), b"v".to_vec())])
        .await
        .unwrap();
    let hooks = &s.mitm.hooks;
    mitm::set(&hooks.verifiable_entry, |e| {
        e.tx.as_mut().unwrap().extension = None;
    });
    assert_tampered(
        run(&s.mitm.addr, &s.state, &["vget", "k1"]).await,
        "no extension",
    );
    mitm::set(&hooks.verifiable_entry, |e| {
        e.tx.as_mut().unwrap().state = None
    });
    assert_tampered(
        run(&s.mitm.addr, &s.state, &["vget", "k1"]).await,
        "no state",
    );
    mitm::set(&hooks.verifiable_entry, |e| e.entry = None);
    assert_tampered(
        run(&s.mitm.addr, &s.state, &["vget", "k1"]).await,
        "no entry",
    );
    mitm::set(&hooks.verifiable_entry, |e| e.entry_path.push(vec![1; 31]));
    assert_tampered(
        run(&s.mitm.addr, &s.state, &["vget", "k1"]).await,
        "a malformed path",
    );
    mitm::clear(&hooks.verifiable_entry);
    mitm::set(&hooks.verifiable_tx, |t| t.state_header = None);
    assert_tampered(
        run(&s.mitm.addr, &s.state, &["vtx", "2"]).await,
        "no state header",
    );
    mitm::clear(&hooks.verifiable_tx);
    let (code, _, err) = run(&s.mitm.addr, &s.state, &["vget", "k1"]).await;
    assert_eq!(code, 0, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vtx_prints_only_verified_fields() {
    let s = setup(&[]).await;
    mitm::set(&s.mitm.hooks.verifiable_tx, |t| {
        for e in &mut t.tx.as_mut().unwrap().entries {
            e.tx = 999;
        }
    });
    assert_tampered(
        run(&s.mitm.addr, &s.state, &["--json", "vtx", "2"]).await,
        "entries labelled with another tx",
    );
    mitm::clear(&s.mitm.hooks.verifiable_tx);
    let (code, out, err) = run(&s.mitm.addr, &s.state, &["--json", "vtx", "2"]).await;
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["tx_id"].as_u64(), Some(2));
    assert_eq!(v["entries"][0]["tx_id"].as_u64(), Some(2));
    assert_eq!(v["entries"][0]["key"].as_str(), Some("k1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_keys_and_values_are_never_mangled_in_output() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let admin = common::admin(&server).await;
    let (key, value) = (b"bin\xff\x00".to_vec(), vec![0xfe, 0x80, 0x00, 0x41]);
    admin
        .set("defaultdb", vec![(key.clone(), value.clone())])
        .await
        .unwrap();
    let state = dir.path().join("state.json");
    let (code, out, err) = run(&server.addr, &state, &["--json", "vtx", "1"]).await;
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let e = &v["entries"][0];
    assert_eq!(e["key_hex"].as_str(), Some("62696eff00"));
    assert_eq!(e["value_hex"].as_str(), Some("fe800041"));
    assert!(e.get("key").is_none() && e.get("value").is_none(), "{e}");
    let (code, out, _) = run(&server.addr, &state, &["tx", "1"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("hex:62696eff00\thex:fe800041"), "{out}");
}
