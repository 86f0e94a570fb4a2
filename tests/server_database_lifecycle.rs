//! Unloading, loading and deleting databases with the real binaries: an unloaded database
//! answers `database_unavailable` until it is loaded again, with its data intact; a delete is
//! refused while a replica follows unless forced, removes the files and the grants, and
//! survives a restart; systemdb and defaultdb cannot be deleted.
#![allow(clippy::unwrap_used)]

mod common;

use chainlog::client::ClientError;
use chainlog::wire::{self, Reason};
use common::{cli, Server, ADMIN_PASSWORD};
use std::time::{Duration, Instant};

fn reason<T>(r: Result<T, ClientError>) -> Option<Reason> {
    match r {
        Err(ClientError::Status(s)) => Reason::of(&s),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unload_load_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let adir = dir.path().join("a");
    let a = Server::start_at(&adir, &format!("127.0.0.1:{port}"), &[]);
    let st = dir.path().join("state.json");
    let run = |args: &[&str]| cli(&a.addr, &st, args);
    let c = common::admin(&a).await;
    let (code, out, err) = run(&["database", "create", "app"]);
    assert_eq!(code, 0, "{out}{err}");
    c.set("app", vec![(b"k".to_vec(), b"v".to_vec())])
        .await
        .unwrap();
    let old_uuid = c.current_state("app").await.unwrap().uuid;
    c.create_user("ann", "ann-password", false).await.unwrap();
    c.grant("ann", "app", wire::Permission::Read).await.unwrap();

    // Unloaded: unavailable, listed as such; loaded: the same data.
    let (code, out, err) = run(&["database", "unload", "app"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        reason(c.get("app", b"k").await),
        Some(Reason::DatabaseUnavailable)
    );
    let (_, out, _) = run(&["database", "list"]);
    assert!(out.contains("app") && out.contains("unloaded"), "{out}");
    let (code, out, err) = run(&["database", "load", "app"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(c.get("app", b"k").await.unwrap().unwrap().value, b"v");

    // A replica follows it: the delete is refused unless forced.
    let b = Server::start(&dir.path().join("b"), &[]);
    let port_s = port.to_string();
    let (code, out, err) = cli(
        &b.addr,
        &st,
        &[
            "database",
            "create",
            "mirror",
            "--replication-is-replica",
            "--replication-primary-host",
            "127.0.0.1",
            "--replication-primary-port",
            &port_s,
            "--replication-primary-database",
            "app",
            "--replication-primary-username",
            "admin",
            "--replication-primary-password",
            ADMIN_PASSWORD,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let start = Instant::now();
    while c
        .replication_status("app")
        .await
        .unwrap()
        .replicas
        .is_empty()
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the replica never connected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, _, err) = run(&["database", "delete", "app"]);
    assert_eq!(code, 1);
    assert!(err.contains("replica"), "{err}");
    let (code, out, err) = run(&["database", "delete", "app", "--force"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        reason(c.get("app", b"k").await),
        Some(Reason::DatabaseNotFound)
    );
    assert!(!adir.join("db").join("app").exists(), "its files are gone");
    let (code, _, err) = run(&["database", "delete", "defaultdb"]);
    assert_eq!(code, 1);
    assert!(err.contains("default database"), "{err}");
    let (code, _, _) = run(&["database", "delete", "systemdb"]);
    assert_eq!(code, 1);

    // A database created again under the name is a new one, with no grants.
    let (code, out, err) = run(&["database", "create", "app"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_ne!(c.current_state("app").await.unwrap().uuid, old_uuid);
    let ann = chainlog::client::Client::connect(&a.addr, None)
        .await
        .unwrap();
    ann.login("ann", "ann-password").await.unwrap();
    assert!(
        ann.get("app", b"k").await.is_err(),
        "the old grant does not carry over"
    );

    // Across a restart: an unloaded database is loaded again; nothing is left in db/.
    let (code, _, _) = run(&["database", "unload", "app"]);
    assert_eq!(code, 0);
    drop(b);
    let mut a = a;
    a.signal("TERM");
    a.wait_exit(Duration::from_secs(30)).unwrap();
    let a = Server::start_at(&adir, &format!("127.0.0.1:{port}"), &[]);
    let c = common::admin(&a).await;
    assert_eq!(c.current_state("app").await.unwrap().tx_id, 0);
    let left: Vec<_> = std::fs::read_dir(adir.join("db"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
