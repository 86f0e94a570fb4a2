//! Starts a real `chainlogd` on a loopback port with its own data directory, and knows its
//! address from `--ready-file` (written once it listens). Shared by tests/ and tools/ (which
//! include this file by path and pass the release binary).
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The admin password every launched server starts with.
pub const ADMIN_PASSWORD: &str = "admin-test-password";

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `chainlogd`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub data_dir: PathBuf,
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

/// The `chainlogd` to start: the one this test build made, or (from tools/, which Cargo
/// gives no such variable) the release build.
pub fn chainlogd_bin() -> PathBuf {
    option_env!("CARGO_BIN_EXE_chainlogd")
        .map_or_else(|| PathBuf::from("target/release/chainlogd"), PathBuf::from)
}

impl Server {
    /// Starts [`chainlogd_bin`] on a free loopback port.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Server::launch(&chainlogd_bin(), data_dir, "127.0.0.1:0", extra)
    }

    /// On a fixed address, for a server that must come back where its replicas look for it.
    pub fn start_at(data_dir: &Path, listen: &str, extra: &[&str]) -> Server {
        Server::launch(&chainlogd_bin(), data_dir, listen, extra)
    }

    /// Starts `bin` with `--listen listen --data-dir data_dir` and `extra`, its log (stderr)
    /// kept for [`Server::log`]; waits until it listens.
    pub fn launch(bin: &Path, data_dir: &Path, listen: &str, extra: &[&str]) -> Server {
        Server::launch_wrapped(&[], bin, data_dir, listen, extra)
    }

    /// [`Server::launch`] through a wrapper command (`prlimit --nofile=64:64 --`, say).
    pub fn launch_wrapped(
        wrapper: &[&str],
        bin: &Path,
        data_dir: &Path,
        listen: &str,
        extra: &[&str],
    ) -> Server {
        Server::launch_env(wrapper, bin, data_dir, listen, extra, &[])
    }

    /// [`Server::start_at`] with environment variables set (after the launcher's own, so
    /// `CHAINLOG_ADMIN_PASSWORD` can be replaced).
    pub fn start_env(
        data_dir: &Path,
        listen: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        Server::launch_env(&[], &chainlogd_bin(), data_dir, listen, extra, env)
    }

    /// The most general launch: a wrapper, the binary, its address, flags and variables.
    pub fn launch_env(
        wrapper: &[&str],
        bin: &Path,
        data_dir: &Path,
        listen: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let ready = data_dir.with_extension("ready");
        let _ = std::fs::remove_file(&ready);
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = cmd
            .args(["--listen", listen, "--data-dir"])
            .arg(data_dir)
            .arg("--ready-file")
            .arg(&ready)
            .args(extra)
            .env("CHAINLOG_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env_remove("CHAINLOG_LISTEN")
            .env_remove("CHAINLOG_CONFIG")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let start = Instant::now();
        let addr = loop {
            if let Ok(a) = std::fs::read_to_string(&ready) {
                break a.trim().to_string();
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("chainlogd exited ({status}): {}", log.lock().unwrap());
            }
            assert!(
                start.elapsed() < START_TIMEOUT,
                "chainlogd did not start: {}",
                log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        Server {
            child,
            addr: format!("http://{addr}"),
            data_dir: data_dir.to_path_buf(),
            log,
        }
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`TERM`, `KILL`, `STOP`, `CONT`, …) to the server.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// SIGTERM, then wait (bounded) for it to exit; returns the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(30))
            .expect("chainlogd did not stop within 30 s")
    }

    /// Waits at most `within` for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if start.elapsed() >= within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
