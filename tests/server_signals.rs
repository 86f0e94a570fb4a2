//! Signals an operator or a service manager sends: SIGHUP leaves chainlogd serving (it was
//! the default action, exit 129); SIGTERM ends a following `chainlog-replicator` cleanly
//! (exit 0, as Ctrl-C) instead of killing it (143), and its next run resumes.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, ADMIN_PASSWORD};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_leaves_the_server_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("d"), &[]);
    let c = common::admin(&server).await;
    server.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        server.wait_exit(Duration::from_millis(10)).is_none(),
        "chainlogd exited on SIGHUP"
    );
    c.set("defaultdb", vec![(b"after".to_vec(), b"hup".to_vec())])
        .await
        .unwrap();
    assert!(server.log().contains("SIGHUP"), "{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_a_following_replicator_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let source = Server::start(&dir.path().join("s"), &[]);
    let target = Server::start(&dir.path().join("t"), &[]);
    let s = common::admin(&source).await;
    s.set("defaultdb", vec![(b"k".to_vec(), b"v".to_vec())])
        .await
        .unwrap();
    let t = common::admin(&target).await;
    t.create_database(
        "copy",
        chainlog::wire::DatabaseSettings {
            replication: Some(chainlog::wire::ReplicationSettings {
                is_replica: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, ADMIN_PASSWORD).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_chainlog-replicator"))
        .args([
            "--source-addr",
            &source.addr,
            "--target-addr",
            &target.addr,
            "--target-db",
            "copy",
        ])
        .arg("--source-password-file")
        .arg(&pw)
        .arg("--target-password-file")
        .arg(&pw)
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while t.current_state("copy").await.unwrap().tx_id < 1 {
        assert!(start.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the replicator ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{status}");
}
