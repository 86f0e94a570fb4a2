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
