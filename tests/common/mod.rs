//! What the end-to-end tests share: the `chainlogd` launcher, the CLI runner, a logged-in
//! SDK client, and the seeded RNG.
#![allow(dead_code, unused_imports, clippy::unwrap_used)]

pub mod files;
pub mod launcher;
pub mod mitm;
pub mod rng;

pub use launcher::{free_port, Server, ADMIN_PASSWORD};

use std::path::Path;

/// Runs the `chainlog` CLI against `server`; returns (exit code, stdout, stderr).
pub fn cli(server_addr: &str, state_file: &Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chainlog"))
        .args(["--addr", server_addr])
        .arg("--state-file")
        .arg(state_file)
        .args(args)
        .env("CHAINLOG_PASSWORD", ADMIN_PASSWORD)
        .env_remove("CHAINLOG_USER")
        .env_remove("CHAINLOG_DB")
        .output()
        .expect("run chainlog");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A client logged in to `server` as admin.
pub async fn admin(server: &Server) -> chainlog::client::Client {
    let c = chainlog::client::Client::connect(&server.addr, None)
        .await
        .expect("connect");
    c.login("admin", ADMIN_PASSWORD).await.expect("login");
    c
}

/// [`cli`] from an async test, on a blocking thread.
pub async fn cli_async(
    server_addr: &str,
    state_file: &Path,
    args: &[&str],
) -> (i32, String, String) {
    let (addr, state) = (server_addr.to_string(), state_file.to_path_buf());
    let args: Vec<String> = args.iter().map(ToString::to_string).collect();
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&addr, &state, &a)
    })
    .await
    .unwrap()
}

/// One line of JSON output, parsed (the test fails naming the text when it is not JSON).
pub fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// Creates, through the CLI on `server_addr`, the database `name` as a replica of
/// `defaultdb` on the server listening on 127.0.0.1:`primary_port`, then waits until it
/// holds `primary_tx` txs (at most two minutes).
pub async fn replica_of_defaultdb(
    server_addr: &str,
    state_file: &Path,
    name: &str,
    primary_port: u16,
    primary_tx: u64,
) {
    let port = primary_port.to_string();
    let (code, out, err) = cli_async(
        server_addr,
        state_file,
        &[
            "database",
            "create",
            name,
            "--replication-is-replica",
            "--replication-primary-host",
            "127.0.0.1",
            "--replication-primary-port",
            &port,
            "--replication-primary-database",
            "defaultdb",
            "--replication-primary-username",
            "admin",
            "--replication-primary-password",
            ADMIN_PASSWORD,
        ],
    )
    .await;
    assert_eq!(code, 0, "create the replica: {out}{err}");
    let c = chainlog::client::Client::connect(server_addr, None)
        .await
        .unwrap();
    c.login("admin", ADMIN_PASSWORD).await.unwrap();
    let start = std::time::Instant::now();
    while c.current_state(name).await.map_or(0, |s| s.tx_id) < primary_tx {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "the replica stalled"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
