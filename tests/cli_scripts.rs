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
