//! Failover without forks, by hand: a replica promoted while its primary is still up starts a
//! new epoch, and the old primary is fenced at once (the promoted database tells it), stays
//! fenced across a restart, refuses writes naming the new primary, and is unfenced only by
//! being re-pointed to follow the new one; a replica of the new epoch that contacts the old
//! primary fences it too; a client that trusts a state of the new epoch refuses the old
//! primary's answers (exit 3).
#![allow(clippy::unwrap_used)]

mod common;

use chainlog::client::{Client, ClientError};
use chainlog::wire;
use common::{cli, Server, ADMIN_PASSWORD};
use std::path::Path;
use std::time::{Duration, Instant};

fn host_port(s: &Server) -> (String, String) {
    let a = s.addr.trim_start_matches("http://");
    let (h, p) = a.split_once(':').unwrap();
    (h.to_string(), p.to_string())
}

/// `chainlog database create|update NAME` as a replica of `primary`'s database `db`.
fn follow(server: &Server, st: &Path, verb: &str, name: &str, primary: &Server, db: &str) {
    let (h, p) = host_port(primary);
    let (code, out, err) = cli(
        &server.addr,
        st,
        &[
            "database",
            verb,
            name,
            "--replication-is-replica",
            "--replication-primary-host",
            &h,
            "--replication-primary-port",
            &p,
            "--replication-primary-database",
            db,
            "--replication-primary-username",
            "admin",
            "--replication-primary-password",
            ADMIN_PASSWORD,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
}

async fn wait_for(what: &str, within: Duration, mut ok: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !ok().await {
        assert!(
            start.elapsed() < within,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn state(c: &Client, db: &str) -> (u64, Vec<u8>) {
    let s = c.current_state(db).await.unwrap();
    (s.tx_id, s.alh)
}

/// The status of a write refused by a fenced primary.
fn stale(e: ClientError) -> tonic::Status {
    match e {
        ClientError::Status(s) if wire::Reason::of(&s) == Some(wire::Reason::StalePrimary) => s,
        other => panic!("expected stale_primary, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_fences_the_old_primary_and_clients_refuse_it() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("state.json");
    let a_dir = dir.path().join("a");
    let a = Server::start(&a_dir, &[]);
    let b = Server::start(&dir.path().join("b"), &[]);
    let ca = common::admin(&a).await;
    let cb = common::admin(&b).await;
    for i in 0..20u32 {
        ca.set(
            "defaultdb",
            vec![(format!("k{i}").into_bytes(), b"v".to_vec())],
        )
        .await
        .unwrap();
    }
    follow(&b, &st, "create", "r", &a, "defaultdb");
    let head = state(&ca, "defaultdb").await;
    wait_for(
        "the replica catching up",
        Duration::from_secs(20),
        async || state(&cb, "r").await == head,
    )
    .await;

    // Promote r while a is up: a new epoch starts with its marker tx 21.
    let (code, out, err) = cli(
        &b.addr,
        &st,
        &["database", "update", "r", "--replication-is-replica=false"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let marker = cb.tx("r", 21).await.unwrap();
    assert_eq!(marker.header.unwrap().epoch, 2);
    // a hears of it from b and fences itself: writes are refused, naming b.
    wait_for(
        "the old primary fenced",
        Duration::from_secs(10),
        async || {
            ca.replication_status("defaultdb")
                .await
                .is_ok_and(|s| !s.fenced.is_empty())
        },
    )
    .await;
    let s = stale(
        ca.set("defaultdb", vec![(b"x".to_vec(), b"y".to_vec())])
            .await
            .unwrap_err(),
    );
    let b_addr = b.addr.trim_start_matches("http://").to_string();
    assert_eq!(
        wire::Reason::primary_of(&s).as_deref(),
        Some(b_addr.as_str())
    );
    assert_eq!(
        state(&ca, "defaultdb").await,
        head,
        "nothing written after the fork"
    );
    let (code, out, _) = cli(
        &a.addr,
        &st,
        &["--db", "defaultdb", "replication", "status"],
    );
    assert!(
        code == 0 && out.contains("FENCED") && out.contains("epoch 2"),
        "{out}"
    );
    // The new primary takes writes in epoch 2.
    let h = cb
        .set("r", vec![(b"after".to_vec(), b"promotion".to_vec())])
        .await
        .unwrap();
    assert_eq!((h.id, h.epoch), (22, 2));

    // A client that trusts a state of epoch 2 refuses the old primary's answers.
    let (code, _, err) = cli(&b.addr, &st, &["--db", "r", "vget", "after"]);
    assert_eq!(code, 0, "{err}");
    // The trusted state is keyed by server address: point the old primary's at the same one.
    let raw = std::fs::read_to_string(&st).unwrap();
    let b_slot = format!("{}/r", b.addr);
    let a_slot = format!("{}/defaultdb", a.addr);
    std::fs::write(&st, raw.replace(&b_slot, &a_slot)).unwrap();
    let (code, _, err) = cli(&a.addr, &st, &["--db", "defaultdb", "vget", "k1"]);
    assert_eq!(code, 3, "{err}");

    // The fence holds across a restart.
    assert!(a.stop().success());
    let a = Server::start(&a_dir, &[]);
    let ca = common::admin(&a).await;
    stale(
        ca.set("defaultdb", vec![(b"x".to_vec(), b"y".to_vec())])
            .await
            .unwrap_err(),
    );
    // Re-pointed to follow the new primary, the old one catches up in epoch 2.
    follow(
        &a,
        &dir.path().join("st2.json"),
        "update",
        "defaultdb",
        &b,
        "r",
    );
    let head = state(&cb, "r").await;
    wait_for(
        "the old primary following the new one",
        Duration::from_secs(20),
        async || state(&ca, "defaultdb").await == head,
    )
    .await;
    assert_eq!(
        ca.get("defaultdb", b"after").await.unwrap().unwrap().value,
        b"promotion"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_of_a_newer_epoch_fences_the_primary_it_contacts() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("state.json");
    let a = Server::start(&dir.path().join("a"), &[]);
    let b = Server::start(&dir.path().join("b"), &[]);
    let c = Server::start(&dir.path().join("c"), &[]);
    let ca = common::admin(&a).await;
    let cb = common::admin(&b).await;
    let cc = common::admin(&c).await;
    ca.set("defaultdb", vec![(b"k".to_vec(), b"v".to_vec())])
        .await
        .unwrap();
    // b follows a; promote it with a frozen, so that a never hears of it from b.
    follow(&b, &st, "create", "r", &a, "defaultdb");
    let head = state(&ca, "defaultdb").await;
    wait_for("b catching up", Duration::from_secs(20), async || {
        state(&cb, "r").await == head
    })
    .await;
    a.signal("STOP");
    let (code, out, err) = cli(
        &b.addr,
        &st,
        &["database", "update", "r", "--replication-is-replica=false"],
    );
    assert_eq!(code, 0, "{out}{err}");
    // c follows b (epoch 2), then is pointed at a: its hello carries epoch 2.
    follow(&c, &st, "create", "rc", &b, "r");
    let head = state(&cb, "r").await;
    wait_for("c catching up", Duration::from_secs(20), async || {
        state(&cc, "rc").await == head
    })
    .await;
    // Stop b, so that its own retries cannot fence a first when a resumes.
    drop(b);
    a.signal("CONT");
    follow(&c, &st, "update", "rc", &a, "defaultdb");
    wait_for(
        "a fenced by c's hello",
        Duration::from_secs(20),
        async || {
            ca.replication_status("defaultdb")
                .await
                .is_ok_and(|s| !s.fenced.is_empty())
        },
    )
    .await;
    stale(
        ca.set("defaultdb", vec![(b"x".to_vec(), b"y".to_vec())])
            .await
            .unwrap_err(),
    );
    // c refuses to follow a (stopped, its data kept), and says why.
    wait_for("c stopping", Duration::from_secs(20), async || {
        cc.replication_status("rc")
            .await
            .is_ok_and(|s| s.last_error.contains("stale_primary"))
    })
    .await;
    assert_eq!(state(&cc, "rc").await, head);
}

/// A former primary with txs its replica never got rejoins the promoted one: without
/// `--replication-allow-tx-discarding` it refuses, saying how many txs it would discard; with
/// it, those txs go to an evidence file (each as stored, with both sides' headers at the fork)
/// and it follows the new primary, whose states it then shares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_former_primary_rejoins_with_its_unreplicated_txs_kept_as_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("state.json");
    let a_dir = dir.path().join("a");
    let b_dir = dir.path().join("b");
    let a = Server::start(&a_dir, &[]);
    let b = Server::start(&b_dir, &[]);
    let ca = common::admin(&a).await;
    for i in 0..10u32 {
        ca.set(
            "defaultdb",
            vec![(format!("k{i}").into_bytes(), b"v".to_vec())],
        )
        .await
        .unwrap();
    }
    follow(&b, &st, "create", "r", &a, "defaultdb");
    let cb = common::admin(&b).await;
    let head = state(&ca, "defaultdb").await;
    wait_for("b catching up", Duration::from_secs(20), async || {
        state(&cb, "r").await == head
    })
    .await;
    // b stops; a takes 3 txs b never gets; a freezes; b comes back and is promoted.
    let b_addr = b.addr.trim_start_matches("http://").to_string();
    assert!(b.stop().success());
    for i in 0..3u32 {
        ca.set(
            "defaultdb",
            vec![(format!("lost{i}").into_bytes(), b"v".to_vec())],
        )
        .await
        .unwrap();
    }
    a.signal("STOP");
    let b = Server::start_at(&b_dir, &b_addr, &[]);
    let cb = common::admin(&b).await;
    let (code, out, err) = cli(
        &b.addr,
        &st,
        &["database", "update", "r", "--replication-is-replica=false"],
    );
    assert_eq!(code, 0, "{out}{err}");
    cb.set("r", vec![(b"new".to_vec(), b"primary".to_vec())])
        .await
        .unwrap();
    a.signal("CONT");
    assert_eq!(state(&ca, "defaultdb").await.0, 13);

    // Re-pointed without the permission to discard: it stops and says what it would lose.
    let st2 = dir.path().join("st2.json");
    follow(&a, &st2, "update", "defaultdb", &b, "r");
    wait_for("the rejoin refused", Duration::from_secs(20), async || {
        ca.replication_status("defaultdb").await.is_ok_and(|s| {
            s.last_error
                .contains("would discard this replica's 3 txs after tx 10")
        })
    })
    .await;
    assert_eq!(state(&ca, "defaultdb").await.0, 13, "nothing was cut");

    // With it: the 3 txs go to the evidence file, and a follows b.
    let (code, out, err) = cli(
        &a.addr,
        &st2,
        &[
            "database",
            "update",
            "defaultdb",
            "--replication-allow-tx-discarding",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let head = state(&cb, "r").await;
    wait_for("a following b", Duration::from_secs(20), async || {
        state(&ca, "defaultdb").await == head
    })
    .await;
    assert_eq!(
        ca.get("defaultdb", b"new").await.unwrap().unwrap().value,
        b"primary"
    );
    assert!(ca.get("defaultdb", b"lost0").await.unwrap().is_none());
    let db_dir = a_dir.join("db/defaultdb");
    let evidence = std::fs::read_dir(&db_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("rewound-")
        })
        .expect("the evidence file");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(evidence).unwrap()).unwrap();
    assert_eq!(v["fork_after_tx"].as_u64(), Some(10));
    let lost: Vec<u64> = v["discarded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tx_id"].as_u64().unwrap())
        .collect();
    assert_eq!(lost, [11, 12, 13]);
    // Each discarded tx is the record a stored, and the two sides' headers at the fork differ.
    for t in v["discarded"].as_array().unwrap() {
        let rec = chainlog::integrity::hex::decode(t["record_hex"].as_str().unwrap()).unwrap();
        let (h, alh) = chainlog::ledger::record_header(&rec).unwrap();
        assert_eq!(h.id, t["tx_id"].as_u64().unwrap());
        assert_eq!(h.alh(), alh);
        assert_eq!(h.epoch, 1);
    }
    let d = &v["divergence"];
    assert_eq!(d["fork_after_tx"].as_u64(), Some(10));
    assert_ne!(d["local"]["header"]["alh"], d["remote"]["header"]["alh"]);
    assert_eq!(d["remote"]["header"]["epoch"].as_u64(), Some(2));
}
