//! The CLI's trusted-state file under concurrent commands: 60 `vset`s at once against one
//! file all succeed, the file keeps the newest state any of them verified (never one older),
//! and `state forget` resets a database's trusted state on purpose, as the tamper error says.
#![allow(clippy::unwrap_used)]

mod common;

use common::{cli, Server};
use std::path::PathBuf;

#[test]
fn parallel_verified_writes_share_one_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let state: PathBuf = dir.path().join("state.json");
    let (code, out, err) = cli(&server.addr, &state, &["vset", "first", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    let children: Vec<_> = (0..60)
        .map(|i| {
            std::process::Command::new(env!("CARGO_BIN_EXE_chainlog"))
                .args(["--addr", &server.addr, "--state-file"])
                .arg(&state)
                .args(["vset", &format!("k{i}"), &format!("v{i}")])
                .env("CHAINLOG_PASSWORD", common::ADMIN_PASSWORD)
                .env_remove("CHAINLOG_USER")
                .env_remove("CHAINLOG_DB")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut failed = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        if !out.status.success() {
            failed.push(String::from_utf8_lossy(&out.stderr).into_owned());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of 60 failed: {failed:?}",
        failed.len()
    );
    // The file holds the newest state: tx 61 (the first vset, then 60).
    let states: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let uuid = states["names"][format!("{}/defaultdb", server.addr)]
        .as_str()
        .unwrap()
        .to_string();
    let entry = &states["databases"][&uuid];
    assert_eq!(entry["tx_id"], 61, "{states}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let (code, out, err) = cli(&server.addr, &state, &["state"]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn state_forget_resets_a_trusted_state_that_no_longer_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let state: PathBuf = dir.path().join("state.json");
    let (code, out, err) = cli(&server.addr, &state, &["vset", "a", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    // A trusted state the server cannot extend (as after restoring an older copy).
    let mut states: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let slot = format!("{}/defaultdb", server.addr);
    let uuid = states["names"][&slot].as_str().unwrap().to_string();
    states["databases"][&uuid]["tx_id"] = serde_json::json!(99);
    std::fs::write(&state, states.to_string()).unwrap();
    let (code, _, err) = cli(&server.addr, &state, &["state"]);
    assert_eq!(code, 3);
    assert!(
        err.contains("chainlog state forget"),
        "the error says how to reset: {err}"
    );
    assert!(err.contains("tx 99"), "the error shows the states: {err}");
    assert!(!err.contains("Some("), "no debug text: {err}");
    let (code, out, err) = cli(&server.addr, &state, &["state", "forget"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = cli(&server.addr, &state, &["state"]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn one_trusted_state_per_database_whatever_the_address_spelling() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let state: PathBuf = dir.path().join("state.json");
    let (code, out, err) = cli(&server.addr, &state, &["vset", "a", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    // The same server as `localhost`: the state trusted through 127.0.0.1 applies.
    let other = server.addr.replace("127.0.0.1", "localhost");
    let mut states: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let uuid = states["names"][format!("{}/defaultdb", server.addr)]
        .as_str()
        .unwrap()
        .to_string();
    // A trusted state the server cannot extend must be caught under the other spelling too
    // (without identities it would be trusted on first use there: a rollback unseen).
    states["databases"][&uuid]["tx_id"] = serde_json::json!(99);
    std::fs::write(&state, states.to_string()).unwrap();
    let (code, _, err) = cli(&other, &state, &["state"]);
    assert_eq!(code, 3, "{err}");
    // A state file from before identities (keyed by address) is read and moved.
    let legacy = serde_json::json!({"databases": {format!("{}/defaultdb", server.addr): {
        "uuid": uuid, "tx_id": 1, "alh": states["databases"][&uuid]["alh"], "epoch": 1}}});
    std::fs::write(&state, legacy.to_string()).unwrap();
    let (code, out, err) = cli(&other, &state, &["vget", "a"]);
    assert_eq!(code, 0, "{out}{err}");
    // (A read in the trusted state writes nothing; a newer state is saved in the new form.)
    let (code, out, err) = cli(&other, &state, &["vset", "b", "2"]);
    assert_eq!(code, 0, "{out}{err}");
    let after: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert!(after["databases"][&uuid].is_object(), "{after}");
    assert_eq!(after["names"][format!("{other}/defaultdb")], uuid.as_str());
}
