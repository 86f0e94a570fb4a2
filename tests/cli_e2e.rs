//! The `chainlog` CLI against the real `chainlogd`: a walkthrough with human and JSON output,
//! exit statuses, and tamper detection (a stored value edited while the server is down makes
//! the next `vget` fail with the verification status, and `verify` too); and how
//! `chainlog-replicator` reports bad usage and a source it cannot reach.
#![allow(clippy::unwrap_used)]

mod common;

use common::{cli, Server};

#[test]
fn walkthrough_and_exit_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let st = dir.path().join("state.json");
    let run = |args: &[&str]| cli(&server.addr, &st, args);

    let (code, out, err) = run(&["set", "greeting", "hello"]);
    assert_eq!((code, out.trim()), (0, "tx 1"), "{err}");
    let (code, out, _) = run(&["get", "greeting"]);
    assert_eq!((code, out.trim()), (0, "hello\t(tx 1)"));
    let (code, out, _) = run(&["--json", "get", "greeting"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["value"].as_str(), v["tx_id"].as_u64()),
        (Some("hello"), Some(1))
    );

    let (code, out, _) = run(&["vset", "k", "v1"]);
    assert_eq!((code, out.trim()), (0, "tx 2 (verified)"));
    let (code, out, _) = run(&["vget", "greeting"]);
    assert_eq!(code, 0);
    assert!(out.contains("hello") && out.contains("verified"), "{out}");
    let (code, out, _) = run(&["--json", "state"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["tx_id"].as_u64(), Some(2));
    assert_eq!(v["alh"].as_str().map(str::len), Some(64));
    let (code, out, _) = run(&["vtx", "1"]);
    assert_eq!((code, out.trim()), (0, "tx 1 with 1 entries (verified)"));

    let (code, _, _) = run(&["delete", "greeting"]);
    assert_eq!(code, 0);
    let (code, _, err) = run(&["get", "greeting"]);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "one-line error: {err}");
    let (code, out, _) = run(&["history", "greeting"]);
    assert_eq!((code, out.lines().count()), (0, 2));
    let (code, out, _) = run(&["tx", "2"]);
    assert!(code == 0 && out.contains("k\tv1"), "{out}");

    let (code, out, _) = run(&["database", "create", "app", "--buffered"]);
    assert!(
        code == 0 && out.starts_with("created database app"),
        "{out}"
    );
    let (code, out, _) = run(&["--json", "database", "list"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // app, defaultdb, and the system database.
    assert_eq!(v.as_array().map(Vec::len), Some(3));
    assert_eq!(v[0]["settings"]["durability"].as_str(), Some("buffered"));
    assert_eq!(v[2]["name"].as_str(), Some("systemdb"));
    let (code, _, _) = run(&["database", "update", "app", "--buffered", "false"]);
    assert_eq!(code, 0);
    let (code, _, _) = run(&["user", "create", "ann", "--new-password", "ann-password"]);
    assert_eq!(code, 0);
    let (code, out, _) = run(&["--db", "app", "user", "grant", "ann", "readwrite"]);
    assert!(code == 0 && out.contains("app:readwrite"), "{out}");
    let (code, out, _) = run(&[
        "--db",
        "app",
        "--user",
        "ann",
        "--password",
        "ann-password",
        "set",
        "x",
        "y",
    ]);
    assert_eq!((code, out.trim()), (0, "tx 1"));
    let (code, _, err) = run(&[
        "--user",
        "ann",
        "--password",
        "ann-password",
        "set",
        "x",
        "y",
    ]);
    assert!(code == 1 && err.contains("permission"), "{err}");
    let (code, _, err) = run(&["--password", "wrong", "get", "k"]);
    assert!(
        code == 1 && err.contains("invalid user or password"),
        "{err}"
    );
    let (code, _, _) = run(&["no-such-command"]);
    assert_eq!(code, 2);
    let (code, out, _) = run(&["--help"]);
    assert!(code == 0 && out.contains("3 verification failed"), "{out}");
    assert!(!std::fs::read_to_string(&st).unwrap().is_empty());
}

#[test]
fn a_value_edited_on_disk_fails_vget_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let st = dir.path().join("state.json");
    let server = Server::start(&data, &[]);
    let run = |server: &Server, args: &[&str]| cli(&server.addr, &st, args);
    assert_eq!(run(&server, &["vset", "balance", "value-100"]).0, 0);
    assert_eq!(run(&server, &["vset", "other", "x"]).0, 0);
    assert_eq!(run(&server, &["vget", "balance"]).0, 0);
    assert!(server.stop().success());
    let (code, out, err) = cli(
        "http://127.0.0.1:1",
        &st,
        &["verify", "--data-dir", data.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}{err}");

    // Edit the stored value while the server is down.
    let seg = data.join("db/defaultdb/segments/0000000001.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes
        .windows(9)
        .position(|w| w == b"value-100")
        .expect("value stored");
    bytes[at..at + 9].copy_from_slice(b"value-999");
    std::fs::write(&seg, &bytes).unwrap();

    let server = Server::start(&data, &[]);
    let (code, _, err) = run(&server, &["vget", "balance"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("VERIFICATION FAILED"), "{err}");
    assert!(server.stop().success());
    let (code, _, err) = cli(
        "http://127.0.0.1:1",
        &st,
        &["verify", "--data-dir", data.to_str().unwrap()],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("0000000001.seg"), "names the file: {err}");
}

#[test]
fn the_replicator_names_bad_usage_and_logs_plain_text_off_a_terminal() {
    let replicator = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_chainlog-replicator"))
            .args(["--once", "--retries", "0"])
            .args(["--source-addr", "http://127.0.0.1:1"])
            .args(["--target-addr", "http://127.0.0.1:1", "--target-db", "copy"])
            .args(extra)
            .env("CHAINLOG_SOURCE_PASSWORD", "unused")
            .env("CHAINLOG_TARGET_PASSWORD", "unused")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), err)
    };
    // A log filter that does not parse is a usage error, not silently replaced.
    let (code, err) = replicator(&["--log", "chainlog=loud"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--log"), "{err}");
    // Nothing listens on port 1: it fails after logging what it copies, with no colour
    // codes in a log that goes to a file or a pipe.
    let (code, err) = replicator(&["--log", "info"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("copying") && err.contains("cannot connect"),
        "{err}"
    );
    assert!(!err.contains('\x1b'), "escape codes in {err:?}");
}
