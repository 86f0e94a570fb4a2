//! Truncation and retention with the real binaries: `chainlog database truncate` reclaims
//! space while every proof still verifies (a client's trusted state, a verified tx, a proven
//! latest version whose value is gone); a dropped value answers `value_truncated`, never "not
//! found"; a replica that followed before keeps its values and goes on following, one created
//! after catches up through the dropped values, a digest-only replica stores none; the
//! background retention drops values by itself; and all of it holds across a restart and
//! the offline check.
#![allow(clippy::unwrap_used)]

mod common;

use chainlog::client::{Client, ClientError};
use chainlog::wire::{self, Reason};
use common::{cli, Server, ADMIN_PASSWORD};
use std::path::Path;
use std::time::{Duration, Instant};

async fn fill(c: &Client, db: &str, n: u32) {
    for i in 0..n {
        c.set(db, vec![(format!("k{i}").into(), vec![b'v'; 10 << 10])])
            .await
            .unwrap();
    }
}

async fn run(addr: &str, state: &Path, args: &[&str]) -> (i32, String, String) {
    let (addr, state) = (addr.to_string(), state.to_path_buf());
    let args: Vec<String> = args.iter().map(ToString::to_string).collect();
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&addr, &state, &a)
    })
    .await
    .unwrap()
}

fn truncated(r: Result<Option<wire::Entry>, ClientError>) -> bool {
    matches!(r, Err(ClientError::Status(s)) if Reason::of(&s) == Some(Reason::ValueTruncated))
}

async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !f().await {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create_replica(b: &Server, state: &Path, name: &str, port: u16, extra: &[&str]) {
    let port = port.to_string();
    let mut args = vec![
        "database",
        "create",
        name,
        "--replication-is-replica",
        "--replication-primary-host",
        "127.0.0.1",
        "--replication-primary-port",
        &port,
        "--replication-primary-database",
        "t",
        "--replication-primary-username",
        "admin",
        "--replication-primary-password",
        ADMIN_PASSWORD,
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = run(&b.addr, state, &args).await;
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncation_keeps_proofs_replicas_follow_and_retention_runs_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let adir = dir.path().join("a");
    let a = Server::start_at(&adir, &format!("127.0.0.1:{port}"), &[]);
    let b = Server::start(&dir.path().join("b"), &[]);
    let state = dir.path().join("state.json");
    let (ca, cb) = (common::admin(&a).await, common::admin(&b).await);
    let (code, out, err) = run(
        &a.addr,
        &state,
        &["database", "create", "t", "--segment-bytes-max", "1048576"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    create_replica(&b, &state, "early", port, &[]).await;
    fill(&ca, "t", 300).await;
    let head = ca.current_state("t").await.unwrap().tx_id;
    until("the early replica catches up", async || {
        cb.current_state("early")
            .await
            .is_ok_and(|s| s.tx_id == head)
    })
    .await;
    // The client trusts a state from before the truncation.
    let (code, out, err) = run(&a.addr, &state, &["--db", "t", "state"]).await;
    assert_eq!(code, 0, "{out}{err}");

    let (code, out, err) = run(
        &a.addr,
        &state,
        &["--json", "database", "truncate", "t", "--before-tx", "250"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let t: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let values_from = t["values_from_tx"].as_u64().unwrap();
    assert!(values_from > 1 && values_from <= 250, "{t}");
    assert!(
        t["bytes_after"].as_u64().unwrap() * 2 < t["bytes_before"].as_u64().unwrap(),
        "space reclaimed: {t}"
    );

    // A dropped value is a typed error, everywhere.
    assert!(truncated(ca.get("t", b"k5").await));
    let (code, _, err) = run(&a.addr, &state, &["--db", "t", "get", "k5"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("value truncated"), "{err}");
    let (code, out, _) = run(&a.addr, &state, &["--db", "t", "history", "k5"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("(value truncated)"), "{out}");
    // Proven: the latest version is tx 6's, its value gone; the tx verifies; the state the
    // client trusted is extended by the current one.
    let (code, out, err) = run(&a.addr, &state, &["--db", "t", "vget", "k5"]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("value truncated (proven)"), "{out}");
    let (code, out, err) = run(&a.addr, &state, &["--db", "t", "--json", "vtx", "6"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"value_truncated\":true"), "{out}");
    let (code, out, err) = run(&a.addr, &state, &["--db", "t", "state"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        ca.get("t", b"k299").await.unwrap().unwrap().value.len(),
        10 << 10
    );

    // Writes go on; the replica that followed before keeps its values and follows on.
    ca.set("t", vec![(b"after".to_vec(), b"truncation".to_vec())])
        .await
        .unwrap();
    let head = head + 1;
    until("the early replica follows", async || {
        cb.current_state("early")
            .await
            .is_ok_and(|s| s.tx_id == head)
    })
    .await;
    assert_eq!(
        cb.get("early", b"k5").await.unwrap().unwrap().value.len(),
        10 << 10,
        "a replica keeps more than its primary"
    );
    // A replica created now copies the dropped values as they are; a digest-only one
    // keeps no value at all; both verify every tx.
    create_replica(&b, &state, "late", port, &[]).await;
    create_replica(&b, &state, "audit", port, &["--replication-digest-only"]).await;
    until("the new replicas catch up", async || {
        cb.current_state("late")
            .await
            .is_ok_and(|s| s.tx_id == head)
            && cb
                .current_state("audit")
                .await
                .is_ok_and(|s| s.tx_id == head)
    })
    .await;
    assert!(truncated(cb.get("late", b"k5").await));
    assert_eq!(
        cb.get("late", b"k299").await.unwrap().unwrap().value.len(),
        10 << 10
    );
    assert!(truncated(cb.get("audit", b"k299").await));
    assert!(truncated(cb.get("audit", b"after").await));
    let bstate = dir.path().join("bstate.json");
    let (code, out, err) = run(&b.addr, &bstate, &["--db", "audit", "vtx", "300"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        ca.current_state("t").await.unwrap().alh,
        cb.current_state("audit").await.unwrap().alh
    );

    // Retention by count, in the background.
    let (code, out, err) = run(
        &a.addr,
        &state,
        &[
            "database",
            "create",
            "r",
            "--segment-bytes-max",
            "1048576",
            "--retention-txs",
            "50",
            "--truncation-frequency",
            "1s",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    fill(&ca, "r", 300).await;
    until("the retention drops old values", async || {
        truncated(ca.get("r", b"k0").await)
    })
    .await;
    assert_eq!(
        ca.get("r", b"k299").await.unwrap().unwrap().value.len(),
        10 << 10
    );
    assert!(a.log().contains("retention: values dropped"), "{}", a.log());

    // Across a restart, and in the offline check.
    let mut a = a;
    a.signal("TERM");
    a.wait_exit(Duration::from_secs(30)).unwrap();
    let (code, out, err) = run(
        &a.addr,
        &state,
        &["verify", "--data-dir", adir.to_str().unwrap()],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let a = Server::start_at(&adir, &format!("127.0.0.1:{port}"), &[]);
    let ca = common::admin(&a).await;
    assert!(truncated(ca.get("t", b"k5").await));
    assert_eq!(
        ca.get("t", b"after").await.unwrap().unwrap().value,
        b"truncation"
    );
}
