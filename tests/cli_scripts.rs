//! The CLI for scripts: `--json` errors are one object on stdout with the gRPC code, the
//! reason and the message; shell completions; timestamps as RFC 3339 for people.
#![allow(clippy::unwrap_used)]

mod common;

use common::{cli, Server};

#[test]
fn json_errors_completions_and_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let state = dir.path().join("state.json");

    let (code, out, err) = cli(
        &server.addr,
        &state,
        &["--json", "--db", "nosuch", "get", "k"],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.is_empty(), "nothing on stderr with --json: {err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["error"]["code"], "not_found", "{v}");
    assert_eq!(v["error"]["reason"], "database_not_found", "{v}");
    assert_eq!(v["error"]["exit"], 1);
    assert!(v["error"]["message"].as_str().unwrap().contains("nosuch"));
    // For people: the message, then the code and reason.
    let (code, _, err) = cli(&server.addr, &state, &["--db", "nosuch", "get", "k"]);
    assert_eq!(code, 1);
    assert!(err.contains("not_found [database_not_found]"), "{err}");
    // A client-side error as JSON too.
    let (code, out, _) = cli("http://127.0.0.1:1", &state, &["--json", "get", "k"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["error"]["code"], "error", "{v}");

    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = cli(&server.addr, &state, &["completions", shell]);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("chainlog") && out.contains("backup"),
            "{shell}"
        );
    }

    let (code, out, err) = cli(&server.addr, &state, &["set", "k", "v"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = cli(&server.addr, &state, &["tx", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    let year = out.split(" at ").nth(1).unwrap_or_default();
    assert!(
        year.starts_with("20") && year.contains('T') && year.contains("Z,"),
        "{out}"
    );
    let (code, out, _) = cli(&server.addr, &state, &["--json", "tx", "1"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["header"]["tx_id"], 1, "{v}");
    assert!(v["header"]["timestamp"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn binary_keys_and_values_and_a_signing_key_from_keygen() {
    let dir = tempfile::tempdir().unwrap();
    // chainlogd keygen writes a private key file and prints the public key.
    let key = dir.path().join("signing.key");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chainlogd"))
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(public.len(), 64);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_chainlogd"))
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        !again.status.success(),
        "an existing key is never overwritten"
    );

    let server = Server::start(
        &dir.path().join("data"),
        &["--signing-key", key.to_str().unwrap()],
    );
    let state = dir.path().join("state.json");
    // Bytes that are not UTF-8, in and out.
    let (code, out, err) = cli(
        &server.addr,
        &state,
        &["--key-hex", "--value-hex", "set", "00ff", "c3280a"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = cli(
        &server.addr,
        &state,
        &["--json", "--key-hex", "get", "00ff"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["key_hex"], "00ff", "{v}");
    assert_eq!(v["value_hex"], "c3280a", "{v}");
    let (code, _, err) = cli(&server.addr, &state, &["--key-hex", "get", "0g"]);
    assert_eq!(code, 1);
    assert!(err.contains("not hex"), "{err}");
    // A value from a file, as it is.
    let file = dir.path().join("blob");
    let blob: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    std::fs::write(&file, &blob).unwrap();
    let (code, out, err) = cli(
        &server.addr,
        &state,
        &["set", "blob", "--value-file", file.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}{err}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let got = rt.block_on(async {
        common::admin(&server)
            .await
            .get("defaultdb", b"blob")
            .await
            .unwrap()
            .unwrap()
            .value
    });
    assert_eq!(got, blob);
    // The state shows the key the server signs with; pinned, states must carry it.
    let (code, out, err) = cli(&server.addr, &state, &["state"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&public), "{out}");
    let (code, out, err) = cli(
        &server.addr,
        &state,
        &["--server-key", &public, "vget", "blob"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let wrong = "11".repeat(32);
    let (code, _, _) = cli(
        &server.addr,
        &state,
        &["--server-key", &wrong, "vget", "blob"],
    );
    assert_ne!(code, 0, "a state signed by another key is refused");
}
