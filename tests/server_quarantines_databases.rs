//! A database the server cannot serve is quarantined: its directory removed, swapped for
//! another database's, or damaged where recovery reads it. The server starts, serves the
//! other databases, lists that one as unavailable with the reason, never recreates it empty
//! under its identity, and `database reopen` brings it back once it is fixed.
#![allow(clippy::unwrap_used)]

mod common;

use chainlog::client::{Client, ClientError};
use chainlog::wire::{self, Reason};
use common::files::{flip, frame_of};
use common::{admin, Server};
use std::path::Path;

async fn write(c: &Client, db: &str, n: usize) {
    for i in 0..n {
        c.set(db, vec![(format!("k{i}").into_bytes(), vec![7; 100])])
            .await
            .unwrap();
    }
}

fn reason(e: ClientError) -> Option<Reason> {
    match e {
        ClientError::Status(s) => Reason::of(&s),
        _ => None,
    }
}

async fn unavailable(c: &Client, db: &str) -> String {
    let e = c.get(db, b"k0").await.unwrap_err();
    let msg = e.to_string();
    assert_eq!(reason(e), Some(Reason::DatabaseUnavailable), "{msg}");
    let listed = c.list_databases().await.unwrap();
    let info = listed.iter().find(|i| i.name == db).unwrap();
    assert!(!info.unavailable.is_empty(), "{info:?}");
    info.unavailable.clone()
}

/// A server with `defaultdb` and `app`, 20 txs each, stopped cleanly.
async fn two_databases(data: &Path) {
    let server = Server::start(data, &[]);
    let c = admin(&server).await;
    c.create_database("app", wire::DatabaseSettings::default())
        .await
        .unwrap();
    write(&c, "defaultdb", 20).await;
    write(&c, "app", 20).await;
    assert!(server.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_directory_is_unavailable_and_never_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    two_databases(&data).await;
    std::fs::remove_dir_all(data.join("db/defaultdb")).unwrap();
    let server = Server::start(&data, &[]);
    let c = admin(&server).await;
    let why = unavailable(&c, "defaultdb").await;
    assert!(why.contains("missing"), "{why}");
    assert!(!data.join("db/defaultdb").exists(), "recreated");
    // Writes are refused too, and the other database serves.
    assert_eq!(
        reason(
            c.set("defaultdb", vec![(b"x".to_vec(), b"y".to_vec())])
                .await
                .unwrap_err()
        ),
        Some(Reason::DatabaseUnavailable)
    );
    assert!(c.get("app", b"k19").await.unwrap().is_some());
    assert!(
        server.log().contains("database unavailable"),
        "{}",
        server.log()
    );
    // Still so after another restart: the catalog keeps it, nothing appears in its place.
    drop(server);
    let server = Server::start(&data, &[]);
    let c = admin(&server).await;
    unavailable(&c, "defaultdb").await;
    assert!(!data.join("db/defaultdb").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_swapped_between_databases_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    two_databases(&data).await;
    let db = data.join("db");
    std::fs::rename(db.join("app"), db.join("tmp")).unwrap();
    std::fs::rename(db.join("defaultdb"), db.join("app")).unwrap();
    std::fs::rename(db.join("tmp"), db.join("defaultdb")).unwrap();
    let server = Server::start(&data, &[]);
    let c = admin(&server).await;
    for name in ["defaultdb", "app"] {
        let why = unavailable(&c, name).await;
        assert!(why.contains("holds database"), "{why}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_in_one_database_does_not_stop_the_others_and_reopen_brings_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let c = admin(&server).await;
    c.create_database("app", wire::DatabaseSettings::default())
        .await
        .unwrap();
    write(&c, "defaultdb", 30).await;
    write(&c, "app", 5).await;
    // A crash: the txs since the last checkpoint are what the next start replays.
    server.signal("KILL");
    drop(server);
    let db_dir = data.join("db/defaultdb");
    let (seg, offset, len) = frame_of(&db_dir, 10);
    let saved = std::fs::read(&seg).unwrap();
    flip(&seg, offset + u64::from(len) / 2);
    let server = Server::start(&data, &[]);
    let c = admin(&server).await;
    let why = unavailable(&c, "defaultdb").await;
    assert!(
        why.contains("0000000001.seg") && why.contains(&offset.to_string()),
        "{why}"
    );
    assert_eq!(
        c.get("app", b"k4").await.unwrap().unwrap().value,
        vec![7; 100]
    );
    // Restored from a good copy, it comes back without a restart.
    std::fs::write(&seg, &saved).unwrap();
    let info = c.reopen_database("defaultdb", false).await.unwrap();
    assert_eq!(info.state.unwrap().tx_id, 30);
    assert!(c.get("defaultdb", b"k29").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_last_tx_damaged_after_a_crash_is_refused_until_its_loss_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let c = admin(&server).await;
    write(&c, "defaultdb", 12).await;
    server.signal("KILL");
    drop(server);
    // The last frame damaged, with the free space (zeros) after it: it looks like a write cut
    // short, but tx.idx and history.nodes hold tx 12, so it was committed.
    let db_dir = data.join("db/defaultdb");
    let (seg, offset, len) = frame_of(&db_dir, 12);
    flip(&seg, offset + u64::from(len) - 20);
    let server = Server::start(&data, &[]);
    let c = admin(&server).await;
    let why = unavailable(&c, "defaultdb").await;
    assert!(why.contains("txs 12..=12 were committed"), "{why}");
    assert!(
        !server.log().contains("cut a torn tail"),
        "{}",
        server.log()
    );
    // Reopening does not cut it either, unless the loss is accepted (by a superuser).
    assert_eq!(
        reason(c.reopen_database("defaultdb", false).await.unwrap_err()),
        Some(Reason::DatabaseUnavailable)
    );
    c.create_user("dbadmin", "dbadmin-password", false)
        .await
        .unwrap();
    c.grant("dbadmin", "defaultdb", wire::Permission::Admin)
        .await
        .unwrap();
    let owner = Client::connect(&server.addr, None).await.unwrap();
    owner.login("dbadmin", "dbadmin-password").await.unwrap();
    let e = owner.reopen_database("defaultdb", true).await.unwrap_err();
    assert!(
        matches!(&e, ClientError::Status(s) if s.code() == tonic::Code::PermissionDenied),
        "{e}"
    );
    let info = c
        .reopen_database("defaultdb", true)
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", server.log()));
    assert_eq!(info.state.unwrap().tx_id, 11);
    assert!(
        server.log().contains("the log no longer holds them"),
        "{}",
        server.log()
    );
    assert!(c.get("defaultdb", b"k10").await.unwrap().is_some());
}
