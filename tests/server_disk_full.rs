//! A full disk fails writes, not the server: reads go on, and once space is freed the next
//! write reopens the database (recovery runs) and succeeds, with every acknowledged write
//! there; SIGTERM while writes are failing exits non-zero, since closing failed. Runs on a
//! small tmpfs, so it needs the right to mount one (it says so and stops if it has not).
#![allow(clippy::unwrap_used)]

mod common;

use chainlog::client::Client;
use common::{admin, Server};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of `mib` MiB mounted at a fresh directory, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, mib: u32) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes 64 KiB values until one fails; returns the keys acknowledged.
async fn fill(c: &Client, tag: &str) -> Vec<String> {
    let mut acked = Vec::new();
    for i in 0..10_000 {
        let k = format!("{tag}{i:05}");
        match c
            .set(
                "defaultdb",
                vec![(k.clone().into_bytes(), vec![i as u8; 64 << 10])],
            )
            .await
        {
            Ok(_) => acked.push(k),
            Err(_) => return acked,
        }
    }
    panic!("the disk never filled");
}

async fn all_there(c: &Client, keys: &[String]) {
    for (i, k) in keys.iter().enumerate() {
        let v = c.get("defaultdb", k.as_bytes()).await.unwrap();
        let v = v.unwrap_or_else(|| panic!("acknowledged {k} is missing"));
        assert_eq!(v.value.len(), 64 << 10);
        let n = k[1..].parse::<usize>().unwrap_or(i);
        assert_eq!(v.value[0], n as u8);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_resume_once_space_is_freed_and_nothing_acknowledged_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&dir.path().join("mnt"), 24) else {
        eprintln!(
            "SKIPPED: cannot mount a tmpfs here (needs root); the full-disk test did not run"
        );
        return;
    };
    let data = fs.0.join("data");
    let server = Server::start(&data, &[]);
    let c = admin(&server).await;
    let filler = fs.0.join("filler");
    std::fs::write(&filler, vec![0u8; 12 << 20]).unwrap();
    let acked = fill(&c, "a").await;
    assert!(!acked.is_empty());
    // Reads are still served while writes fail.
    all_there(&c, &acked[..acked.len().min(20)]).await;
    assert!(c
        .set("defaultdb", vec![(b"x".to_vec(), vec![1; 64 << 10])])
        .await
        .is_err());
    std::fs::remove_file(&filler).unwrap();
    // The next write finds space: the database is reopened and the write goes through.
    tokio::time::sleep(chainlog::server::catalog::RECOVER_INTERVAL).await;
    let h = c
        .set("defaultdb", vec![(b"after".to_vec(), b"space".to_vec())])
        .await
        .unwrap();
    // (A write refused as the disk filled may still have reached the log whole: its outcome
    // was unknown, not acknowledged.)
    assert!(h.id as usize > acked.len(), "tx {}", h.id);
    all_there(&c, &acked).await;
    assert!(
        server.log().contains("reopening the database"),
        "{}",
        server.log()
    );
    assert!(server.stop().success());
    let server = Server::start(&data, &[]);
    let c = admin(&server).await;
    all_there(&c, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_writes_fail_exits_non_zero_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&dir.path().join("mnt"), 24) else {
        eprintln!(
            "SKIPPED: cannot mount a tmpfs here (needs root); the full-disk test did not run"
        );
        return;
    };
    let data = fs.0.join("data");
    let server = Server::start(&data, &[]);
    let c = admin(&server).await;
    let filler = fs.0.join("filler");
    std::fs::write(&filler, vec![0u8; 12 << 20]).unwrap();
    let acked = fill(&c, "b").await;
    let status = server.stop();
    assert!(!status.success(), "closing failed, yet it exited {status}");
    std::fs::remove_file(&filler).unwrap();
    let server = Server::start(&data, &[]);
    let c = admin(&server).await;
    all_there(&c, &acked).await;
}
