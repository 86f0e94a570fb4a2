//! Replication between real `chainlogd` processes on loopback: a replica created with the CLI
//! flags converges on its primary (10,000 txs), survives kill -9 of itself and of the primary,
//! refuses writes, serves proofs that verify against the primary's state, keeps its password
//! secret, stops as `diverged` when the primary's history was rewritten, cascades through a
//! chain, and holds back synchronous commits until acknowledged.
#![allow(clippy::unwrap_used)]

mod common;

use chainlog::client::Client;
use chainlog::wire;
use common::{admin, cli, free_port, Server, ADMIN_PASSWORD};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const REPLICA_PASSWORD: &str = "replicator-secret-9f2";

async fn state(c: &Client, db: &str) -> (u64, Vec<u8>, String) {
    let s = c.current_state(db).await.unwrap();
    (s.tx_id, s.alh, s.uuid)
}

async fn status(c: &Client, db: &str) -> wire::ReplicationStatusResponse {
    c.replication()
        .replication_status(wire::ReplicationStatusRequest {
            database: db.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Waits until `replica/db` has the same (tx id, Alh) as `primary/pdb`.
async fn converge(primary: &Client, pdb: &str, replica: &Client, db: &str, within: Duration) {
    let start = Instant::now();
    loop {
        let (p, r) = (state(primary, pdb).await, state(replica, db).await);
        if p.0 == r.0 && p.1 == r.1 {
            return;
        }
        let s = status(replica, db).await;
        assert!(
            start.elapsed() < within,
            "no convergence: primary at {}, replica at {} ({s:?})",
            p.0,
            r.0
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn write(c: &Client, db: &str, n: u64, tag: &str) {
    let mut tasks = Vec::new();
    for t in 0..16 {
        let (c, db, tag) = (c.clone(), db.to_string(), tag.to_string());
        tasks.push(tokio::spawn(async move {
            for i in (t..n).step_by(16) {
                c.set(
                    &db,
                    vec![(format!("{tag}-{i}").into_bytes(), vec![b'v'; 100])],
                )
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Creates replica database `name` on `replica` following `primary_port/pdb`, with the CLI.
fn create_replica(
    replica: &Server,
    dir: &Path,
    name: &str,
    primary_port: u16,
    pdb: &str,
    extra: &[&str],
) {
    let pw = dir.join("replication-password");
    std::fs::write(&pw, format!("{REPLICA_PASSWORD}\n")).unwrap();
    let port = primary_port.to_string();
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
        pdb,
        "--replication-primary-username",
        "replicator",
        "--replication-primary-password-file",
        pw.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = cli(&replica.addr, &dir.join("cli-state.json"), &args);
    assert_eq!(code, 0, "{out}{err}");
}

/// The user a replicator logs in as: the replication permission on the source database.
async fn replicator_user(primary: &Client, dbs: &[&str]) {
    primary
        .users()
        .create_user(wire::CreateUserRequest {
            name: "replicator".into(),
            password: REPLICA_PASSWORD.into(),
            superuser: false,
        })
        .await
        .unwrap();
    for db in dbs {
        primary
            .users()
            .grant(wire::GrantRequest {
                user: "replicator".into(),
                database: (*db).into(),
                permission: wire::Permission::Replication as i32,
            })
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_converges_resumes_after_kill_9_and_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let pport = free_port();
    let paddr = format!("127.0.0.1:{pport}");
    let mut primary = Server::start_at(&dir.path().join("p"), &paddr, &[]);
    let mut replica = Server::start(&dir.path().join("r"), &[]);
    let p = admin(&primary).await;
    replicator_user(&p, &["defaultdb"]).await;
    create_replica(&replica, dir.path(), "rdb", pport, "defaultdb", &[]);
    let mut r = admin(&replica).await;

    write(&p, "defaultdb", 10_000, "a").await;
    converge(&p, "defaultdb", &r, "rdb", Duration::from_secs(120)).await;
    let (ptx, palh, puuid) = state(&p, "defaultdb").await;
    assert_eq!(ptx, 10_000);
    // The replica took the primary's identity, and its proofs verify against the primary's state.
    assert_eq!(state(&r, "rdb").await.2, puuid);
    let vt = r
        .data()
        .verifiable_tx_by_id(wire::VerifiableTxByIdRequest {
            database: "rdb".into(),
            id: 1234,
            trusted_tx_id: 0,
            known_epoch: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let proof = chainlog::integrity::TxProof {
        tx: vt
            .tx
            .as_ref()
            .unwrap()
            .header
            .as_ref()
            .unwrap()
            .try_into()
            .unwrap(),
        state: vt.state_header.as_ref().unwrap().try_into().unwrap(),
        path: chainlog::wire::digests("p", &vt.tx_inclusion).unwrap(),
    };
    proof
        .verify(ptx, &chainlog::wire::digest("alh", &palh).unwrap())
        .unwrap();
    // Reads work, writes are refused.
    assert_eq!(
        r.get("rdb", b"a-77").await.unwrap().unwrap().value,
        vec![b'v'; 100]
    );
    let e = r
        .set("rdb", vec![(b"x".to_vec(), b"y".to_vec())])
        .await
        .unwrap_err();
    assert!(
        matches!(&e, chainlog::client::ClientError::Status(s) if s.code() == tonic::Code::FailedPrecondition && s.message().contains("replica")),
        "{e}"
    );
    let s = status(&r, "rdb").await;
    assert_eq!(
        (s.role(), s.state(), s.lag_txs),
        (wire::Role::Replica, wire::ReplicaState::Streaming, 0),
        "{s:?}"
    );
    let ps = status(&p, "defaultdb").await;
    assert_eq!(ps.replicas.len(), 1);
    assert_eq!(ps.replicas[0].acked_tx_id, 10_000);

    // kill -9 of the replica mid-stream, then restart: no gap, no duplicate.
    let writer = {
        let p = p.clone();
        tokio::spawn(async move { write(&p, "defaultdb", 2000, "b").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    replica.child.kill().unwrap();
    replica.child.wait().unwrap();
    let rdir = replica.data_dir.clone();
    drop(replica);
    writer.await.unwrap();
    replica = Server::start(&rdir, &[]);
    r = admin(&replica).await;
    converge(&p, "defaultdb", &r, "rdb", Duration::from_secs(60)).await;

    // kill -9 of the primary mid-stream, then restart on the same address.
    let writer = {
        let p = p.clone();
        tokio::spawn(async move {
            for i in 0..100_000u32 {
                if p.set(
                    "defaultdb",
                    vec![(format!("c-{i}").into_bytes(), b"v".to_vec())],
                )
                .await
                .is_err()
                {
                    break;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    primary.child.kill().unwrap();
    primary.child.wait().unwrap();
    writer.await.unwrap();
    let pdir = primary.data_dir.clone();
    drop(primary);
    primary = Server::start_at(&pdir, &paddr, &[]);
    let p = admin(&primary).await;
    write(&p, "defaultdb", 300, "d").await;
    converge(&p, "defaultdb", &r, "rdb", Duration::from_secs(60)).await;

    // The replication password is nowhere to be read.
    let (code, out, _) = cli(
        &replica.addr,
        &dir.path().join("s.json"),
        &["--json", "database", "list"],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("\"primary_password_set\":true") && !out.contains(REPLICA_PASSWORD),
        "{out}"
    );
    assert!(!replica.log().contains(REPLICA_PASSWORD));
    let (_, out, _) = cli(
        &replica.addr,
        &dir.path().join("s.json"),
        &["--db", "rdb", "replication", "status"],
    );
    assert!(
        out.contains("streaming") && !out.contains(REPLICA_PASSWORD),
        "{out}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(rdir.join("secrets.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    drop(primary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_primary_is_refused_as_diverged() {
    let dir = tempfile::tempdir().unwrap();
    let pport = free_port();
    let paddr = format!("127.0.0.1:{pport}");
    let primary = Server::start_at(&dir.path().join("p"), &paddr, &[]);
    let replica = Server::start(&dir.path().join("r"), &[]);
    let p = admin(&primary).await;
    replicator_user(&p, &["defaultdb"]).await;
    create_replica(&replica, dir.path(), "rdb", pport, "defaultdb", &[]);
    let r = admin(&replica).await;
    write(&p, "defaultdb", 50, "a").await;
    converge(&p, "defaultdb", &r, "rdb", Duration::from_secs(30)).await;
    let (rtx, ralh, _) = state(&r, "rdb").await;
    // The replica is down meanwhile, so that it next meets the primary at the same length
    // but a different history (met earlier, it would be refused as replica_ahead instead).
    let rdir = replica.data_dir.clone();
    assert!(replica.stop().success());

    // While the primary is down, its history is rewritten: the last 30 txs are cut (and the
    // derived files removed, so it rebuilds them), then it takes other writes.
    let pdir = primary.data_dir.clone();
    assert!(primary.stop().success());
    let db = pdir.join("db/defaultdb");
    let idx = std::fs::read(db.join("tx.idx")).unwrap();
    let rec = &idx[20 * 20..20 * 20 + 20];
    let cut = u64::from_le_bytes(rec[8..16].try_into().unwrap());
    let seg = db.join("segments/0000000001.seg");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(cut)
        .unwrap();
    for f in ["checkpoint", "history.nodes", "tx.idx"] {
        std::fs::remove_file(db.join(f)).unwrap();
    }
    std::fs::remove_dir_all(db.join("index")).unwrap();
    let primary = Server::start_at(&pdir, &paddr, &[]);
    let p = admin(&primary).await;
    assert_eq!(state(&p, "defaultdb").await.0, 20);
    write(&p, "defaultdb", 60, "other").await;
    let replica = Server::start(&rdir, &[]);
    let r = admin(&replica).await;

    let start = Instant::now();
    let s = loop {
        let s = status(&r, "rdb").await;
        if s.state() == wire::ReplicaState::Diverged {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never diverged: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(s.last_error.contains("diverged"), "{s:?}");
    // Both headers where the histories part (tx 21), and the primary's head as it is now.
    let (local, remote) = (
        s.diverged_local.clone().unwrap(),
        s.diverged_remote.clone().unwrap(),
    );
    assert_eq!((local.id, remote.id), (21, 21), "{s:?}");
    assert_eq!(local.prev_alh, remote.prev_alh);
    assert_ne!(local.entries_root, remote.entries_root);
    assert_eq!(s.primary_head_tx_id, 80, "{s:?}");
    assert_eq!(s.lag_txs, 80 - rtx);
    check_divergence_evidence(&rdir.join("db/rdb").join("divergence.json"), 20, rtx, 80);
    // It stopped, kept its data as it was, and says so in metrics-visible status.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(state(&r, "rdb").await.0, rtx);
    assert_eq!(state(&r, "rdb").await.1, ralh);
    assert!(
        replica.log().contains("replication stopped"),
        "{}",
        replica.log()
    );

    // `database refresh` wipes the replica and copies the primary's history again.
    let cli_state = dir.path().join("s.json");
    let (code, out, err) = cli(&replica.addr, &cli_state, &["database", "refresh", "rdb"]);
    assert_eq!(code, 0, "{out}{err}");
    let kept: Vec<_> = std::fs::read_dir(rdir.join("db/rdb"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("divergence-"))
        .collect();
    assert_eq!(kept.len(), 1, "the evidence outlives the refresh");
    converge(&p, "defaultdb", &r, "rdb", Duration::from_secs(60)).await;
    assert_eq!(state(&r, "rdb").await.0, 80);
    assert_eq!(
        status(&r, "rdb").await.state(),
        wire::ReplicaState::Streaming
    );
    // A primary is never wiped.
    let (code, _, err) = cli(
        &primary.addr,
        &cli_state,
        &["database", "refresh", "defaultdb"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("not a replica"), "{err}");
    assert_eq!(state(&p, "defaultdb").await.0, 80);
    // The refreshed replica survives a restart with its new data, and nothing old is left.
    assert!(replica.stop().success());
    let replica = Server::start(&rdir, &[]);
    let r = admin(&replica).await;
    converge(&p, "defaultdb", &r, "rdb", Duration::from_secs(30)).await;
    let left: Vec<_> = std::fs::read_dir(rdir.join("db"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.iter().all(|n| !n.starts_with('.')), "{left:?}");
}

/// Runs `chainlog-replicator` from `source/sdb` into `target/tdb`.
fn replicator(
    source: &str,
    sdb: &str,
    target: &str,
    tdb: &str,
    dir: &Path,
    once: bool,
) -> std::process::Command {
    let pw = dir.join("admin-password");
    std::fs::write(&pw, ADMIN_PASSWORD).unwrap();
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_chainlog-replicator"));
    c.args([
        "--source-addr",
        source,
        "--source-db",
        sdb,
        "--target-addr",
        target,
    ])
    .args(["--target-db", tdb, "--source-password-file"])
    .arg(&pw)
    .arg("--target-password-file")
    .arg(&pw);
    if once {
        c.arg("--once");
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_external_replicator_copies_resumes_and_refuses_mixing() {
    let dir = tempfile::tempdir().unwrap();
    let source = Server::start(&dir.path().join("s"), &[]);
    let target = Server::start(&dir.path().join("t"), &[]);
    let s = admin(&source).await;
    let t = admin(&target).await;
    let cli_state = dir.path().join("cli.json");
    let (code, out, err) = cli(
        &target.addr,
        &cli_state,
        &["database", "create", "copy", "--replication-is-replica"],
    );
    let copy = |sdb: &str, once: bool| {
        replicator(&source.addr, sdb, &target.addr, "copy", dir.path(), once)
    };
    assert_eq!(code, 0, "{out}{err}");
    write(&s, "defaultdb", 2000, "a").await;

    // One pass up to the source's head.
    let out = copy("defaultdb", true).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2000");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("copy complete") && !log.contains(ADMIN_PASSWORD),
        "{log}"
    );
    let (stx, salh, suuid) = state(&s, "defaultdb").await;
    assert_eq!(state(&t, "copy").await, (stx, salh, suuid.clone()));
    // The copy is read-only, and a second pass changes nothing.
    assert!(t
        .set("copy", vec![(b"x".to_vec(), b"y".to_vec())])
        .await
        .is_err());
    let out = copy("defaultdb", true).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(state(&t, "copy").await.0, 2000);

    // Continuous, killed with -9 mid-stream and started again: no gap, no duplicate.
    let mut running = copy("defaultdb", false)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let writer = {
        let s = s.clone();
        tokio::spawn(async move { write(&s, "defaultdb", 3000, "b").await })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    running.kill().unwrap();
    running.wait().unwrap();
    let mut running = copy("defaultdb", false)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    writer.await.unwrap();
    converge(&s, "defaultdb", &t, "copy", Duration::from_secs(60)).await;
    // It keeps following: a later write arrives too.
    write(&s, "defaultdb", 10, "c").await;
    converge(&s, "defaultdb", &t, "copy", Duration::from_secs(30)).await;
    running.kill().unwrap();
    running.wait().unwrap();
    assert_eq!(state(&t, "copy").await.0, 5010);

    // Another database into the copy: refused as diverged (exit 3), the copy untouched.
    s.set("defaultdb", vec![(b"more".to_vec(), b"1".to_vec())])
        .await
        .unwrap();
    let (code, out, err) = cli(&source.addr, &cli_state, &["database", "create", "other"]);
    assert_eq!(code, 0, "{out}{err}");
    write(&s, "other", 10, "o").await;
    let out = copy("other", true).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(state(&t, "copy").await.0, 5010);

    // A target that is not a replica is refused at once, even when following.
    let start = Instant::now();
    let out = replicator(
        &source.addr,
        "defaultdb",
        &target.addr,
        "defaultdb",
        dir.path(),
        false,
    )
    .output()
    .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("not a replica"), "{log}");
    assert!(start.elapsed() < Duration::from_secs(10));

    // ReplicateTx takes txs only into a replica with no primary host.
    let e = push(&t, "defaultdb", &suuid, exported(&s, 1).await).await;
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("not a replica"), "{e:?}");
    // A tampered tx is refused before it is applied: a value changed (its last byte) ...
    let sent = exported(&s, 5011).await;
    let mut forged = sent.record.to_vec();
    *forged.last_mut().unwrap() ^= 1;
    let e = push(&t, "copy", "", record(forged)).await;
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("stored hash"), "{e:?}");
    // ... or the header (its timestamp, bytes 10..18 of the record) ...
    let mut forged = sent.record.to_vec();
    forged[12] ^= 1;
    let e = push(&t, "copy", "", record(forged)).await;
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("Alh"), "{e:?}");
    // ... and a record cut short is malformed.
    let cut = sent.record.slice(..sent.record.len() - 1).to_vec();
    let e = push(&t, "copy", "", record(cut)).await;
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert_eq!(state(&t, "copy").await.0, 5010);
    // A gap is the caller's mistake, not a divergence.
    let h = s
        .set("defaultdb", vec![(b"gap".to_vec(), b"1".to_vec())])
        .await
        .unwrap();
    let e = push(&t, "copy", "", exported(&s, h.id).await).await;
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("from tx 5011"), "{e:?}");
}

/// Tx `id` of `c`'s defaultdb as ExportTx sends it: its stored record.
async fn exported(c: &Client, id: u64) -> wire::ReplicatedTx {
    let alh = match id {
        1 => Vec::new(),
        _ => {
            let prev = c.tx("defaultdb", id - 1).await.unwrap();
            let h: chainlog::integrity::TxHeader =
                prev.header.as_ref().unwrap().try_into().unwrap();
            h.alh().0.to_vec()
        }
    };
    let mut stream = c
        .replication()
        .export_tx(wire::ExportTxRequest {
            database: "defaultdb".into(),
            tx_id: id - 1,
            alh,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(msg) = stream.message().await.unwrap() {
        if let Some(wire::follow_response::Msg::Batch(b)) = msg.msg {
            let tx = b.txs.into_iter().next().unwrap();
            let (h, _) = chainlog::ledger::record_header(&tx.record).unwrap();
            assert_eq!(h.id, id);
            return tx;
        }
    }
    panic!("tx {id} was not exported");
}

fn record(bytes: Vec<u8>) -> wire::ReplicatedTx {
    wire::ReplicatedTx {
        record: bytes.into(),
    }
}

/// Pushes one tx into `database` on `c` with ReplicateTx; returns the refusal.
async fn push(
    c: &Client,
    database: &str,
    source_uuid: &str,
    tx: wire::ReplicatedTx,
) -> tonic::Status {
    let first = wire::ReplicateTxRequest {
        database: database.into(),
        source_uuid: source_uuid.into(),
        txs: vec![tx],
    };
    c.replication()
        .replicate_tx(tokio_stream::iter(vec![first]))
        .await
        .unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_three_replicas_and_synchronous_acks() {
    let dir = tempfile::tempdir().unwrap();
    let pport = free_port();
    let primary = Server::start_at(&dir.path().join("p"), &format!("127.0.0.1:{pport}"), &[]);
    let rport = free_port();
    let replica = Server::start_at(&dir.path().join("r"), &format!("127.0.0.1:{rport}"), &[]);
    let p = admin(&primary).await;
    replicator_user(&p, &["defaultdb"]).await;
    let r = admin(&replica).await;
    // r1 follows the primary; r2 follows r1 and r3 follows r2, both through this server.
    create_replica(&replica, dir.path(), "r1", pport, "defaultdb", &[]);
    create_replica(&replica, dir.path(), "r2", rport, "r1", &[]);
    create_replica(&replica, dir.path(), "r3", rport, "r2", &[]);
    replicator_user(&r, &["r1", "r2"]).await;
    write(&p, "defaultdb", 500, "a").await;
    for db in ["r1", "r2", "r3"] {
        converge(&p, "defaultdb", &r, db, Duration::from_secs(60)).await;
    }

    // Synchronous: commits wait for one replica's acknowledgement...
    let (code, out, err) = cli(
        &primary.addr,
        &dir.path().join("s.json"),
        &[
            "database",
            "update",
            "defaultdb",
            "--replication-sync-acks",
            "1",
            "--replication-sync-timeout-ms",
            "1500",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let h = p
        .set("defaultdb", vec![(b"sync".to_vec(), b"1".to_vec())])
        .await
        .unwrap();
    assert!(r.get("r1", b"sync").await.unwrap().is_some() || state(&r, "r1").await.0 >= h.id);
    // ...and fail cleanly within the bound when no replica is there.
    assert!(replica.stop().success());
    let start = Instant::now();
    let e = p
        .set("defaultdb", vec![(b"sync".to_vec(), b"2".to_vec())])
        .await
        .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(
        matches!(&e, chainlog::client::ClientError::Status(s) if s.code() == tonic::Code::Unavailable && s.message().contains("durable on the primary but not yet replicated")),
        "{e}"
    );
    // The tx is durable on the primary all the same.
    assert_eq!(
        p.get("defaultdb", b"sync").await.unwrap().unwrap().value,
        b"2"
    );
    let _ = ADMIN_PASSWORD;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_makes_a_replica_writable_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pport = free_port();
    let primary = Server::start_at(&dir.path().join("p"), &format!("127.0.0.1:{pport}"), &[]);
    let replica = Server::start(&dir.path().join("r"), &[]);
    let p = admin(&primary).await;
    replicator_user(&p, &["defaultdb"]).await;
    create_replica(&replica, dir.path(), "rdb", pport, "defaultdb", &[]);
    let r = admin(&replica).await;
    write(&p, "defaultdb", 40, "a").await;
    converge(&p, "defaultdb", &r, "rdb", Duration::from_secs(30)).await;
    assert!(r
        .set("rdb", vec![(b"x".to_vec(), b"y".to_vec())])
        .await
        .is_err());
    let (code, out, err) = cli(
        &replica.addr,
        &dir.path().join("s.json"),
        &[
            "database",
            "update",
            "rdb",
            "--replication-is-replica=false",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let h = r
        .set("rdb", vec![(b"x".to_vec(), b"y".to_vec())])
        .await
        .unwrap();
    assert_eq!(
        (h.id, h.epoch),
        (42, 2),
        "the promoted database goes on from the replicated history, after its epoch marker (tx 41)"
    );
    assert_eq!(status(&r, "rdb").await.role(), wire::Role::Primary);
    // The old primary is told, and takes no more writes (docs/replication.md, "Epochs").
    let start = std::time::Instant::now();
    loop {
        match p
            .set("defaultdb", vec![(b"late".to_vec(), b"v".to_vec())])
            .await
        {
            Err(chainlog::client::ClientError::Status(s))
                if wire::Reason::of(&s) == Some(wire::Reason::StalePrimary) =>
            {
                break
            }
            other => assert!(
                start.elapsed() < Duration::from_secs(10),
                "the old primary still takes writes: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(r.get("rdb", b"late").await.unwrap().is_none());
}

/// Checks `divergence.json` as a third party would, from the file alone: both sides' headers
/// of the first tx after the fork chain from the shared Alh, differ, and are proven (by their
/// StateProofs) to be in the two states the file names.
fn check_divergence_evidence(path: &Path, fork_after: u64, local_head: u64, remote_head: u64) {
    use chainlog::integrity::{Digest, StateProof, TxHeader};
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(v["format"], "chainlog-divergence-v1");
    assert_eq!(v["fork_after_tx"].as_u64(), Some(fork_after));
    let d = |x: &serde_json::Value| Digest::from_hex(x.as_str().unwrap()).unwrap();
    let header = |h: &serde_json::Value| TxHeader {
        version: h["version"].as_u64().unwrap() as u16,
        id: h["id"].as_u64().unwrap(),
        timestamp_us: h["timestamp_us"].as_u64().unwrap(),
        prev_alh: d(&h["prev_alh"]),
        entry_count: h["entry_count"].as_u64().unwrap() as u32,
        entries_root: d(&h["entries_root"]),
        history_size: h["history_size"].as_u64().unwrap(),
        history_root: d(&h["history_root"]),
        epoch: h["epoch"].as_u64().unwrap(),
        map_root: d(&h["map_root"]),
    };
    let shared = d(&v["shared_alh"]);
    let mut alhs = Vec::new();
    for (side, head) in [("local", local_head), ("remote", remote_head)] {
        let s = &v[side];
        let h = header(&s["header"]);
        assert_eq!(h.id, fork_after + 1, "{side}");
        assert_eq!(h.prev_alh, shared, "{side} chains from the shared Alh");
        let p = &s["proof"];
        let proof = StateProof {
            old: header(&p["old"]),
            new: header(&p["new"]),
            inclusion: p["inclusion"].as_array().unwrap().iter().map(d).collect(),
            consistency: p["consistency"].as_array().unwrap().iter().map(d).collect(),
        };
        assert_eq!(proof.old, h);
        let state_alh = d(&s["state"]["alh"]);
        assert_eq!(s["state"]["tx_id"].as_u64(), Some(head));
        proof
            .verify(h.id, &h.alh(), head, &state_alh)
            .unwrap_or_else(|e| panic!("{side}'s proof: {e}"));
        alhs.push(h.alh());
    }
    assert_ne!(
        alhs[0], alhs[1],
        "the two histories differ at the first tx after the fork"
    );
    assert_eq!(v["remote_state"]["tx_id"].as_u64(), Some(remote_head));
}

/// A TCP proxy on loopback that forwards to `target` and, while `cutting`, closes every open
/// connection at random moments (every 50 to 400 ms).
async fn cutting_proxy(target: String, cutting: Arc<AtomicBool>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (kill, _) = tokio::sync::broadcast::channel::<()>(16);
    let killer = kill.clone();
    tokio::spawn(async move {
        let mut rng = common::rng::Rng::from_env("cutting_proxy");
        loop {
            tokio::time::sleep(Duration::from_millis(50 + rng.below(350))).await;
            if cutting.load(Ordering::Relaxed) {
                let _ = killer.send(());
            }
        }
    });
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            let mut cut = kill.subscribe();
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = cut.recv() => {}
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_at_random_still_converge() {
    let dir = tempfile::tempdir().unwrap();
    let pport = free_port();
    let primary = Server::start_at(&dir.path().join("p"), &format!("127.0.0.1:{pport}"), &[]);
    let replica = Server::start(&dir.path().join("r"), &[]);
    let cutting = Arc::new(AtomicBool::new(true));
    let proxy = cutting_proxy(format!("127.0.0.1:{pport}"), cutting.clone()).await;
    let p = admin(&primary).await;
    replicator_user(&p, &["defaultdb"]).await;
    create_replica(&replica, dir.path(), "rdb", proxy, "defaultdb", &[]);
    let r = admin(&replica).await;
    for round in 0..6 {
        write(&p, "defaultdb", 500, &format!("r{round}")).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cutting.store(false, Ordering::Relaxed);
    converge(&p, "defaultdb", &r, "rdb", Duration::from_secs(60)).await;
    assert_eq!(state(&r, "rdb").await.0, 3000);
    // Every tx arrived once and in order: the replica's chain checks out end to end. The
    // last cut may have come just before the cutting stopped: the replicator reconnects (its
    // backoff) and then streams.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let s = loop {
        let s = status(&r, "rdb").await;
        if s.state() == wire::ReplicaState::Streaming || std::time::Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (s.state(), s.lag_txs),
        (wire::ReplicaState::Streaming, 0),
        "{s:?}"
    );
}
