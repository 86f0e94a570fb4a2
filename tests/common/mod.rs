//! Starts the real `chainlogd` binary on a free loopback port with its own data directory.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN_PASSWORD: &str = "admin-test-password";

pub struct Server {
    pub child: Child,
    pub addr: String,
    pub data_dir: PathBuf,
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Server::start_at(data_dir, "127.0.0.1:0", extra)
    }

    /// On a fixed address, for a server that must come back where its replicas look for it.
    pub fn start_at(data_dir: &Path, listen: &str, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chainlogd"))
            .args(["--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("CHAINLOG_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env_remove("CHAINLOG_LISTEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chainlogd");
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening addr=").nth(1) {
                    let _ = tx.send(
                        rest.split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                    );
                }
                sink.lock().unwrap().push_str(&line);
                sink.lock().unwrap().push('\n');
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("chainlogd did not start: {}", log.lock().unwrap()));
        Server {
            child,
            addr: format!("http://{addr}"),
            data_dir: data_dir.to_path_buf(),
            log,
        }
    }

    /// SIGTERM, then wait (bounded) for a clean exit; returns the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "chainlogd did not stop within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

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

/// Runs the `chainlog` CLI against `server`; returns (exit code, stdout, stderr).
pub fn cli(server_addr: &str, state_file: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_chainlog"))
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

pub async fn admin(server: &Server) -> chainlog::client::Client {
    let c = chainlog::client::Client::connect(&server.addr, None)
        .await
        .expect("connect");
    c.login("admin", ADMIN_PASSWORD).await.expect("login");
    c
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
