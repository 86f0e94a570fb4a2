//! The log as an operator reads it: `--log-format json` gives one JSON object per line,
//! `RUST_LOG` is honoured when `--log` is not given, each admin action is one info line
//! naming who did what to which database, requests are debug events, and no password, token
//! or key ever appears.
#![allow(clippy::unwrap_used)]

mod common;

use common::{cli, Server, ADMIN_PASSWORD};
use std::time::{Duration, Instant};

const USER_PASSWORD: &str = "ann-secret-Zq81";
const NEW_PASSWORD: &str = "ann-newer-secret-Kp27";
const PRIMARY_PASSWORD: &str = "primary-secret-Vw55";

fn events(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The events whose message is `message`.
fn with_message<'a>(events: &'a [serde_json::Value], message: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["message"] == message).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_admin_actions_and_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_env(
        &dir.path().join("d"),
        "127.0.0.1:0",
        &["--log-format", "json"],
        &[("RUST_LOG", "info,chainlog=debug"), ("CHAINLOG_LOG", "")],
    );
    let c = common::admin(&server).await;
    c.create_user("ann", USER_PASSWORD, false).await.unwrap();
    c.grant("ann", "defaultdb", chainlog::wire::Permission::Readwrite)
        .await
        .unwrap();
    let ann = chainlog::client::Client::connect(&server.addr, None)
        .await
        .unwrap();
    let token = ann.login("ann", USER_PASSWORD).await.unwrap().token;
    ann.set("defaultdb", vec![(b"k".to_vec(), b"v".to_vec())])
        .await
        .unwrap();
    ann.change_password("ann", USER_PASSWORD, NEW_PASSWORD)
        .await
        .unwrap();
    assert!(ann.login("ann", "wrong-password").await.is_err());
    let (code, out, err) = cli(
        &server.addr,
        &dir.path().join("st.json"),
        &[
            "database",
            "create",
            "mirror",
            "--replication-is-replica",
            "--replication-primary-host",
            "127.0.0.1",
            "--replication-primary-port",
            "1",
            "--replication-primary-username",
            "admin",
            "--replication-primary-password",
            PRIMARY_PASSWORD,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    c.revoke("ann", "defaultdb").await.unwrap();

    // The last admin action is logged once it returned; give the writer a moment.
    let start = Instant::now();
    let log = loop {
        let log = server.log();
        if log.contains("permission revoked") {
            break log;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ev = events(&log);

    for secret in [
        ADMIN_PASSWORD,
        USER_PASSWORD,
        NEW_PASSWORD,
        PRIMARY_PASSWORD,
        token.as_str(),
    ] {
        assert!(!log.contains(secret), "a secret in the log: {secret}");
    }

    let created = with_message(&ev, "user created");
    assert_eq!(created.len(), 1, "{log}");
    assert_eq!(created[0]["user"], "ann");
    assert_eq!(created[0]["by"], "admin");
    assert_eq!(created[0]["level"], "INFO");
    let granted = with_message(&ev, "permission granted");
    assert_eq!(granted[0]["database"], "defaultdb");
    assert_eq!(granted[0]["by"], "admin");
    let changed = with_message(&ev, "password changed; the user's sessions ended");
    assert_eq!(changed[0]["user"], "ann");
    assert_eq!(changed[0]["by"], "ann");
    let refused = with_message(&ev, "login refused");
    assert_eq!(refused.len(), 1, "{log}");
    assert_eq!(refused[0]["user"], "ann");
    let db = with_message(&ev, "database created");
    assert_eq!(db[0]["database"], "mirror");
    assert_eq!(db[0]["by"], "admin");
    assert!(
        db[0]["settings"]
            .as_str()
            .unwrap()
            .contains("replica of admin@127.0.0.1:1"),
        "{}",
        db[0]
    );
    assert_eq!(with_message(&ev, "permission revoked")[0]["user"], "ann");

    // RUST_LOG reached the filter: requests are debug events, with method and status.
    let requests = with_message(&ev, "request");
    assert!(
        requests
            .iter()
            .any(|e| e["method"] == "/chainlog.v1.Data/Set"
                && e["code"] == "OK"
                && e["level"] == "DEBUG"),
        "{log}"
    );
}

#[test]
fn a_bad_filter_or_format_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_chainlogd"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("d"))
            .args(args)
            .env_remove("CHAINLOG_LOG")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&[], &[("RUST_LOG", "info,[bad")]);
    assert_ne!(code, Some(0));
    assert!(err.contains("RUST_LOG"), "{err}");
    let (code, err) = run(&["--log", "info,[bad"], &[]);
    assert_ne!(code, Some(0));
    assert!(err.contains("--log"), "{err}");
    let (code, err) = run(&["--log-format", "xml"], &[]);
    assert_ne!(code, Some(0));
    assert!(err.contains("xml") && err.contains("json"), "{err}");
}
