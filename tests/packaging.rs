//! The packaging files work as shipped: the systemd unit passes `systemd-analyze verify` and
//! its command line starts a server; the Dockerfile is multi-stage, runs as a non-root user
//! with a data volume, and its entrypoint's flags start a server.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Starts chainlogd with `args` (its own binary for the first) and waits until it is ready;
/// returns what it printed if it is not within 30 s.
fn starts(args: &[String], dir: &Path) {
    let ready = dir.join("ready");
    let mut child = Command::new(env!("CARGO_BIN_EXE_chainlogd"))
        .args(&args[1..])
        .arg("--ready-file")
        .arg(&ready)
        .env("CHAINLOG_ADMIN_PASSWORD", common::ADMIN_PASSWORD)
        .env_remove("CHAINLOG_LISTEN")
        .env_remove("CHAINLOG_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ready.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "chainlogd {args:?} exited ({status}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(start.elapsed() < Duration::from_secs(30), "not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// `args` with the paths and addresses of a production install moved under `dir` and to free
/// ports.
fn localized(args: Vec<String>, dir: &Path) -> Vec<String> {
    args.into_iter()
        .map(|a| match a.as_str() {
            "/var/lib/chainlog" => dir.join("data").display().to_string(),
            "/etc/chainlog/chainlogd.toml" => root()
                .join("packaging/chainlogd.toml")
                .display()
                .to_string(),
            a if a.starts_with("0.0.0.0:") || a.starts_with("127.0.0.1:") => {
                format!("127.0.0.1:{}", common::free_port())
            }
            _ => a,
        })
        .collect()
}

#[test]
fn the_systemd_unit_verifies_and_its_command_starts_a_server() {
    let unit = std::fs::read_to_string(root().join("packaging/chainlogd.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let args: Vec<String> = exec.split_whitespace().map(String::from).collect();
    assert_eq!(args[0], "/usr/local/bin/chainlogd");
    for needed in [
        "User=chainlog",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectoryMode=0700",
        "UMask=0077",
    ] {
        assert!(unit.lines().any(|l| l == needed), "the unit sets {needed}");
    }
    let dir = tempfile::tempdir().unwrap();
    // systemd-analyze checks the unit's syntax, its directives and that the binary exists
    // and is executable: point it at the one just built.
    let analyze = Path::new("/usr/bin/systemd-analyze");
    assert!(
        analyze.exists() || std::env::var_os("CHAINLOG_SKIP_SYSTEMD").is_some(),
        "systemd-analyze is needed (Debian's systemd package; .ci/run installs it), or set \
         CHAINLOG_SKIP_SYSTEMD=1 to skip this half"
    );
    if analyze.exists() {
        let copy = dir.path().join("chainlogd.service");
        std::fs::write(
            &copy,
            unit.replace("/usr/local/bin/chainlogd", env!("CARGO_BIN_EXE_chainlogd")),
        )
        .unwrap();
        let out = Command::new(analyze)
            .arg("verify")
            .arg(&copy)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "systemd-analyze verify: {err}");
        assert!(
            !err.contains("chainlogd.service"),
            "systemd-analyze has remarks about the unit: {err}"
        );
    }
    starts(&localized(args, dir.path()), dir.path());
}

#[test]
fn the_dockerfile_is_multi_stage_non_root_with_a_volume_and_its_entrypoint_starts_a_server() {
    let file = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let lines: Vec<&str> = file.lines().filter(|l| !l.starts_with('#')).collect();
    let froms = lines.iter().filter(|l| l.starts_with("FROM ")).count();
    assert_eq!(froms, 2, "a build stage and a runtime stage");
    let user = lines
        .iter()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "{user}"
    );
    assert!(lines
        .iter()
        .any(|l| l.starts_with("VOLUME ") && l.contains("/var/lib/chainlog")));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("cargo build --release --locked")),
        "the image builds the locked release"
    );
    let entry = lines
        .iter()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))
        .expect("an ENTRYPOINT");
    let args: Vec<String> = serde_json::from_str(entry).unwrap();
    assert_eq!(args[0], "/usr/local/bin/chainlogd");
    let dir = tempfile::tempdir().unwrap();
    starts(&localized(args, dir.path()), dir.path());
}
