//! Deactivating, deleting and demoting users with the real binaries: the user's tokens stop
//! working at once, the streams they opened end, a deactivated user cannot log in until it
//! is activated again, and nobody can lock themselves out.
#![allow(clippy::unwrap_used)]

mod common;

use chainlog::client::{Client, ClientError};
use chainlog::wire;
use common::{cli, Server};
use std::time::Duration;

fn code(r: Result<impl Sized, ClientError>) -> Option<tonic::Code> {
    match r {
        Ok(_) => None,
        Err(ClientError::Status(s)) => Some(s.code()),
        Err(e) => panic!("{e}"),
    }
}

async fn login(server: &Server, user: &str, password: &str) -> Result<Client, ClientError> {
    let c = Client::connect(&server.addr, None).await?;
    c.login(user, password).await?;
    Ok(c)
}

/// Opens a following export as `c` and returns a task that ends when the stream does.
async fn stream_of(c: &Client) -> tokio::task::JoinHandle<()> {
    let mut s = c
        .replication()
        .export_tx(wire::ExportTxRequest {
            database: "defaultdb".into(),
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    tokio::spawn(async move { while let Ok(Some(_)) = s.message().await {} })
}

async fn ends(task: tokio::task::JoinHandle<()>, what: &str) {
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap_or_else(|_| panic!("{what}: the stream went on"))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deactivated_deleted_and_demoted_users_lose_their_sessions_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let state = dir.path().join("state.json");
    let admin = common::admin(&server).await;
    admin
        .create_user("ann", "ann-password", false)
        .await
        .unwrap();
    admin
        .grant("ann", "defaultdb", wire::Permission::Admin)
        .await
        .unwrap();
    admin
        .create_user("bob", "bob-password", true)
        .await
        .unwrap();
    let set = |c: &Client| {
        let c = c.clone();
        async move {
            c.set("defaultdb", vec![(b"k".to_vec(), b"v".to_vec())])
                .await
        }
    };

    // Deactivated: the token and the stream stop, the password no longer logs in.
    let ann = login(&server, "ann", "ann-password").await.unwrap();
    set(&ann).await.unwrap();
    let stream = stream_of(&ann).await;
    let (c, out, err) = cli(&server.addr, &state, &["user", "deactivate", "ann"]);
    assert_eq!(c, 0, "{out}{err}");
    assert_eq!(code(set(&ann).await), Some(tonic::Code::Unauthenticated));
    ends(stream, "deactivated").await;
    match login(&server, "ann", "ann-password").await {
        Err(ClientError::Status(s)) => {
            assert_eq!(s.code(), tonic::Code::Unauthenticated);
            assert!(s.message().contains("deactivated"), "{}", s.message());
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    let (_, out, _) = cli(&server.addr, &state, &["user", "list"]);
    assert!(out.contains("ann (deactivated)"), "{out}");
    // Activated again: the same password and grants work.
    let (c, out, err) = cli(&server.addr, &state, &["user", "activate", "ann"]);
    assert_eq!(c, 0, "{out}{err}");
    let ann = login(&server, "ann", "ann-password").await.unwrap();
    set(&ann).await.unwrap();

    // Deleted: the same, and the name is free.
    let stream = stream_of(&ann).await;
    let (c, out, err) = cli(&server.addr, &state, &["user", "delete", "ann"]);
    assert_eq!(c, 0, "{out}{err}");
    assert_eq!(code(set(&ann).await), Some(tonic::Code::Unauthenticated));
    ends(stream, "deleted").await;
    assert!(login(&server, "ann", "ann-password").await.is_err());

    // Demoted: superuser calls are refused at once; promoted again, they work.
    let bob = login(&server, "bob", "bob-password").await.unwrap();
    assert!(bob.list_users().await.is_ok());
    let (c, out, err) = cli(&server.addr, &state, &["user", "demote", "bob"]);
    assert_eq!(c, 0, "{out}{err}");
    assert_eq!(
        code(bob.list_users().await),
        Some(tonic::Code::PermissionDenied)
    );
    let (c, out, err) = cli(&server.addr, &state, &["--json", "user", "promote", "bob"]);
    assert_eq!(c, 0, "{out}{err}");
    assert!(out.contains("\"superuser\":true"), "{out}");
    assert!(bob.list_users().await.is_ok());

    // Nobody locks themselves out.
    for action in ["deactivate", "delete", "demote"] {
        let (c, _, err) = cli(&server.addr, &state, &["user", action, "admin"]);
        assert_eq!(c, 1, "{action}: {err}");
        assert!(err.contains("themselves"), "{action}: {err}");
    }
    assert!(admin.list_users().await.is_ok());
    // The log says who did what.
    let log = server.log();
    for line in [
        "user deactivated",
        "user activated",
        "user deleted",
        "superuser changed",
    ] {
        assert!(log.contains(line), "{line}: {log}");
    }
}
