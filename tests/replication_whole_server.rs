//! A whole server as a replica, and the commands of immudb's replication guide
//! (../shared/seeds) typed as written, with `chainlog`/`chainlogd` for `immuadmin`/`immudb`:
//! the server-level replica follows its primary's system database and every database, one
//! created after it started included; users created on the primary log in to the replica
//! and read; a revoked grant stops working there; writes to the replica are refused naming
//! the primary (the referral); `replication status` lists every database; kill -9 of either
//! server mid-stream and a restart converge; and immuadmin's per-database command converges.
#![allow(clippy::unwrap_used)]

mod common;

use chainlog::client::Client;
use chainlog::wire;
use common::Server;
use std::path::Path;
use std::time::{Duration, Instant};

/// immudb's default superuser, as the guide uses it.
const IMMUDB: &str = "immudb";

/// The CLI logged in as immudb/immudb (the guide's `immuadmin login immudb`).
fn cli(addr: &str, state: &Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chainlog"))
        .args(["--addr", addr, "--user", IMMUDB])
        .arg("--state-file")
        .arg(state)
        .args(args)
        .env("CHAINLOG_PASSWORD", IMMUDB)
        .env_remove("CHAINLOG_DB")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn login(addr: &str, user: &str, password: &str) -> Client {
    let c = Client::connect(addr, None).await.unwrap();
    c.login(user, password).await.unwrap();
    c
}

/// Waits (bounded) until `db` on `replica` has `primary`'s state.
async fn converge(primary: &Client, replica: &Client, db: &str, within: Duration) {
    let start = Instant::now();
    loop {
        let p = primary.current_state(db).await.unwrap();
        if let Ok(r) = replica.current_state(db).await {
            if r.tx_id == p.tx_id && r.alh == p.alh && r.uuid == p.uuid {
                return;
            }
        }
        assert!(
            start.elapsed() < within,
            "{db} did not converge: primary {:?}, replica {:?}",
            p.tx_id,
            replica.current_state(db).await.map(|s| s.tx_id)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn primary_env() -> [(&'static str, &'static str); 2] {
    [
        ("CHAINLOG_ADMIN_USER", IMMUDB),
        ("CHAINLOG_ADMIN_PASSWORD", IMMUDB),
    ]
}

/// immudb's default port: the guide's commands name no port, so the primary listens there.
const PRIMARY: &str = "127.0.0.1:3322";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_commands_make_replicas_that_converge() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("state.json");
    let primary = Server::start_env(&dir.path().join("p"), PRIMARY, &[], &primary_env());
    let p = login(&primary.addr, IMMUDB, IMMUDB).await;
    p.set("defaultdb", vec![(b"k".to_vec(), b"v".to_vec())])
        .await
        .unwrap();

    // $ ./immuadmin database create --replication-enabled=true --replication-follower-username=immudb
    //     --replication-follower-password=immudb --replication-master-database=defaultdb replicadb
    let other = Server::start_env(&dir.path().join("o"), "127.0.0.1:0", &[], &primary_env());
    let (code, out, err) = cli(
        &other.addr,
        &st,
        &[
            "database",
            "create",
            "--replication-enabled=true",
            "--replication-follower-username=immudb",
            "--replication-follower-password=immudb",
            "--replication-master-database=defaultdb",
            "replicadb",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let o = login(&other.addr, IMMUDB, IMMUDB).await;
    for i in 0..20u32 {
        p.set(
            "defaultdb",
            vec![(format!("k{i}").into_bytes(), b"v".to_vec())],
        )
        .await
        .unwrap();
    }
    let want = p.current_state("defaultdb").await.unwrap();
    let start = Instant::now();
    loop {
        let r = o.current_state("replicadb").await.unwrap();
        if r.tx_id == want.tx_id && r.alh == want.alh {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "replicadb at {}",
            r.tx_id
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The flags immudb has and chainlog keeps its guarantees against.
    let (code, _, err) = cli(
        &other.addr,
        &st,
        &[
            "database",
            "update",
            "replicadb",
            "--replication-skip-integrity-check=true",
        ],
    );
    assert!(
        code == 1 && err.contains("--replication-skip-integrity-check"),
        "{err}"
    );
    let (code, _, err) = cli(
        &other.addr,
        &st,
        &[
            "database",
            "update",
            "replicadb",
            "--replication-wait-for-indexing=false",
        ],
    );
    assert!(
        code == 1 && err.contains("--replication-wait-for-indexing"),
        "{err}"
    );
    let (code, out, err) = cli(
        &other.addr,
        &st,
        &[
            "--json",
            "database",
            "update",
            "replicadb",
            "--replication-commit-concurrency=10",
            "--replication-skip-integrity-check=false",
            "--replication-wait-for-indexing=true",
            "--replication-allow-tx-discarding=false",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"is_replica\":true"), "{out}");

    // $ ./immudb --replication-enabled=true --replication-follower-password=immudb
    //     --replication-follower-username=immudb --replication-master-address=127.0.0.1
    let replica = Server::start_env(
        &dir.path().join("r"),
        "127.0.0.1:0",
        &[
            "--replication-enabled=true",
            "--replication-follower-password=immudb",
            "--replication-follower-username=immudb",
            "--replication-master-address=127.0.0.1",
        ],
        &[],
    );
    // The replica's users are the primary's: immudb logs in there once systemdb arrived.
    let start = Instant::now();
    let r = loop {
        let c = Client::connect(&replica.addr, None).await.unwrap();
        if c.login(IMMUDB, IMMUDB).await.is_ok() {
            break c;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{}",
            replica.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    converge(&p, &r, "systemdb", Duration::from_secs(20)).await;
    converge(&p, &r, "defaultdb", Duration::from_secs(20)).await;
    drop(other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_server_follows_users_and_every_database() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("state.json");
    let pdir = dir.path().join("p");
    let primary = Server::start(&pdir, &[]);
    let paddr = primary.addr.trim_start_matches("http://").to_string();
    let (phost, pport) = paddr.split_once(':').unwrap();
    let admin_pw = common::ADMIN_PASSWORD;
    let p = common::admin(&primary).await;
    for db in ["db1", "db2"] {
        p.create_database(db, wire::DatabaseSettings::default())
            .await
            .unwrap();
        for i in 0..10u32 {
            p.set(db, vec![(format!("k{i}").into_bytes(), b"v".to_vec())])
                .await
                .unwrap();
        }
    }
    p.create_user("ann", "ann-password", false).await.unwrap();
    p.grant("ann", "db1", wire::Permission::Readwrite)
        .await
        .unwrap();
    let rdir = dir.path().join("r");
    let replica_flags = [
        "--replication-is-replica",
        "--replication-primary-host",
        phost,
        "--replication-primary-port",
        pport,
        "--replication-primary-username",
        "admin",
        "--replication-primary-password",
        admin_pw,
    ];
    let mut replica = Server::start(&rdir, &replica_flags);
    let r = loop {
        let c = Client::connect(&replica.addr, None).await.unwrap();
        if c.login("admin", admin_pw).await.is_ok() {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for db in ["systemdb", "defaultdb", "db1", "db2"] {
        converge(&p, &r, db, Duration::from_secs(20)).await;
    }
    // A database created after the replica started is taken up and followed.
    p.create_database("db3", wire::DatabaseSettings::default())
        .await
        .unwrap();
    p.set("db3", vec![(b"late".to_vec(), b"yes".to_vec())])
        .await
        .unwrap();
    converge(&p, &r, "db3", Duration::from_secs(20)).await;
    assert_eq!(r.get("db3", b"late").await.unwrap().unwrap().value, b"yes");

    // A user created on the primary logs in to the replica and reads.
    let ann = login(&replica.addr, "ann", "ann-password").await;
    assert_eq!(ann.get("db1", b"k3").await.unwrap().unwrap().value, b"v");
    // Writes to the replica are refused, naming the primary (the referral).
    let e = ann
        .set("db1", vec![(b"x".to_vec(), b"y".to_vec())])
        .await
        .unwrap_err();
    let chainlog::client::ClientError::Status(s) = e else {
        panic!("{e}")
    };
    assert_eq!(wire::Reason::of(&s), Some(wire::Reason::ReadOnlyReplica));
    assert_eq!(
        wire::Reason::primary_of(&s).as_deref(),
        Some(format!("{paddr}/db1").as_str())
    );
    assert!(s.message().contains(&paddr), "{}", s.message());
    // So are changes of users and databases.
    let e = r
        .create_user("bob", "bob-password", false)
        .await
        .unwrap_err();
    let chainlog::client::ClientError::Status(s) = e else {
        panic!("{e}")
    };
    assert_eq!(
        wire::Reason::primary_of(&s).as_deref(),
        Some(paddr.as_str())
    );
    assert!(r
        .create_database("db9", wire::DatabaseSettings::default())
        .await
        .is_err());

    // A grant revoked on the primary stops working on the replica within a second.
    p.revoke("ann", "db1").await.unwrap();
    let start = Instant::now();
    loop {
        match ann.get("db1", b"k3").await {
            Err(chainlog::client::ClientError::Status(s))
                if s.code() == tonic::Code::PermissionDenied =>
            {
                break
            }
            other => assert!(
                start.elapsed() < Duration::from_secs(1),
                "still allowed after a second: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // `replication status` without --db lists every database.
    let (code, out, err) = common::cli(&replica.addr, &st, &["--json", "replication", "status"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["database"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["db1", "db2", "db3", "defaultdb", "systemdb"]);
    assert!(v
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["role"] == "replica" && s["primary"].as_str().unwrap().starts_with(&paddr)));

    // kill -9 of the replica under writes on the primary, then a restart: it converges.
    let writer = {
        let p = p.clone();
        tokio::spawn(async move {
            for i in 0..200u32 {
                let db = ["db1", "db2", "db3"][i as usize % 3];
                p.set(db, vec![(format!("w{i}").into_bytes(), b"v".to_vec())])
                    .await
                    .unwrap();
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    replica.signal("KILL");
    replica.wait_exit(Duration::from_secs(10)).unwrap();
    writer.await.unwrap();
    drop(replica);
    let replica = Server::start(&rdir, &replica_flags);
    let r = login(&replica.addr, "admin", admin_pw).await;
    for db in ["systemdb", "defaultdb", "db1", "db2", "db3"] {
        converge(&p, &r, db, Duration::from_secs(20)).await;
    }
    // kill -9 of the primary, then a restart where it was: the replica converges again.
    let mut primary = primary;
    primary.signal("KILL");
    primary.wait_exit(Duration::from_secs(10)).unwrap();
    drop(primary);
    let primary = Server::start_at(&pdir, &paddr, &[]);
    let p = common::admin(&primary).await;
    p.set("db2", vec![(b"after".to_vec(), b"restart".to_vec())])
        .await
        .unwrap();
    for db in ["systemdb", "db1", "db2", "db3"] {
        converge(&p, &r, db, Duration::from_secs(30)).await;
    }
    assert!(!replica.log().contains(admin_pw));
}
