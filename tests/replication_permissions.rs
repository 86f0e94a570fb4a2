//! Only callers with the replication permission follow a database, and their
//! acknowledgements count only for what was sent to them; revoking the permission, changing
//! the password or logging out ends every stream of that user (or token) within a second.
#![allow(clippy::unwrap_used)]

mod common;

use chainlog::client::Client;
use chainlog::wire::{self, follow_request, follow_response};
use common::{admin, Server, ADMIN_PASSWORD};
use std::time::{Duration, Instant};
use tonic::Code;

async fn user(admin: &Client, addr: &str, name: &str, perm: wire::Permission) -> Client {
    admin
        .create_user(name, &format!("{name}-password"), false)
        .await
        .unwrap();
    admin.grant(name, "defaultdb", perm).await.unwrap();
    let c = Client::connect(addr, None).await.unwrap();
    c.login(name, &format!("{name}-password")).await.unwrap();
    c
}

/// Opens Follow as `c` from an empty replica's position; the sender of its requests.
async fn follow(
    c: &Client,
) -> Result<
    (
        tokio::sync::mpsc::Sender<wire::FollowRequest>,
        tonic::Streaming<wire::FollowResponse>,
    ),
    tonic::Status,
> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(wire::FollowRequest {
        msg: Some(follow_request::Msg::Hello(wire::FollowHello {
            database: "defaultdb".into(),
            replica: "test".into(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let s = c
        .replication()
        .follow(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((tx, s))
}

/// Reads the stream until it ends; its ending status (Ok for a clean end).
async fn end_of(
    s: &mut tonic::Streaming<wire::FollowResponse>,
    within: Duration,
) -> Result<(), tonic::Status> {
    tokio::time::timeout(within, async {
        loop {
            match s.message().await {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("the stream did not end in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_is_not_enough_to_follow_and_a_forged_ack_counts_for_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let admin = admin(&server).await;
    let reader = user(&admin, &server.addr, "reader", wire::Permission::Read).await;
    let e = follow(&reader).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    let e = reader
        .replication()
        .export_tx(wire::ExportTxRequest {
            database: "defaultdb".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    // A follower with the permission acknowledges far more than it was sent.
    admin
        .update_database(
            "defaultdb",
            wire::DatabaseSettings {
                replication: Some(wire::ReplicationSettings {
                    sync_acks: Some(1),
                    sync_timeout_ms: Some(500),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let follower = user(
        &admin,
        &server.addr,
        "follower",
        wire::Permission::Replication,
    )
    .await;
    let (acks, mut stream) = follow(&follower).await.unwrap();
    assert!(matches!(
        stream.message().await.unwrap().unwrap().msg,
        Some(follow_response::Msg::Welcome(_))
    ));
    acks.send(wire::FollowRequest {
        msg: Some(follow_request::Msg::AckTxId(u64::MAX)),
    })
    .await
    .unwrap();
    let end = end_of(&mut stream, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(end.code(), Code::InvalidArgument, "{end}");
    let start = Instant::now();
    let e = admin
        .set("defaultdb", vec![(b"k".to_vec(), b"v".to_vec())])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not yet replicated"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_changing_the_password_or_logging_out_ends_open_streams_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let admin = admin(&server).await;
    let f = user(
        &admin,
        &server.addr,
        "follower",
        wire::Permission::Replication,
    )
    .await;
    let export = |c: Client| async move {
        c.replication()
            .export_tx(wire::ExportTxRequest {
                database: "defaultdb".into(),
                follow: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    };
    // Revoke: both a follow and an export stream end.
    let (_acks, mut follow_stream) = follow(&f).await.unwrap();
    let mut export_stream = export(f.clone()).await;
    admin.revoke("follower", "defaultdb").await.unwrap();
    let start = Instant::now();
    let e = end_of(&mut follow_stream, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    let e = end_of(&mut export_stream, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    // A password change ends the user's sessions, and their streams.
    admin
        .grant("follower", "defaultdb", wire::Permission::Replication)
        .await
        .unwrap();
    let f = Client::connect(&server.addr, None).await.unwrap();
    f.login("follower", "follower-password").await.unwrap();
    let mut s = export(f.clone()).await;
    admin
        .change_password("follower", "", "another-password")
        .await
        .unwrap();
    let e = end_of(&mut s, Duration::from_secs(5)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    // Logging out ends the streams opened with that token.
    let a2 = Client::connect(&server.addr, None).await.unwrap();
    a2.login("admin", ADMIN_PASSWORD).await.unwrap();
    let mut s = export(a2.clone()).await;
    a2.logout().await.unwrap();
    let e = end_of(&mut s, Duration::from_secs(5)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_permission_is_revoked_stops_receiving_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Server::start(&dir.path().join("p"), &[]);
    let p = admin(&primary).await;
    let _ = user(
        &p,
        &primary.addr,
        "replicator",
        wire::Permission::Replication,
    )
    .await;
    let replica = Server::start(&dir.path().join("r"), &[]);
    let r = admin(&replica).await;
    let port: u32 = primary.addr.rsplit(':').next().unwrap().parse().unwrap();
    r.create_database(
        "rdb",
        wire::DatabaseSettings {
            replication: Some(wire::ReplicationSettings {
                is_replica: Some(true),
                primary_host: Some("127.0.0.1".into()),
                primary_port: Some(port),
                primary_database: Some("defaultdb".into()),
                primary_username: Some("replicator".into()),
                primary_password: Some("replicator-password".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    for i in 0..10 {
        p.set(
            "defaultdb",
            vec![(format!("a{i}").into_bytes(), b"v".to_vec())],
        )
        .await
        .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while r.current_state("rdb").await.unwrap().tx_id < 10 {
        assert!(Instant::now() < deadline, "no convergence");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    p.revoke("replicator", "defaultdb").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..50 {
        p.set(
            "defaultdb",
            vec![(format!("b{i}").into_bytes(), b"v".to_vec())],
        )
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(r.current_state("rdb").await.unwrap().tx_id, 10);
    let s = r.replication_status("rdb").await.unwrap();
    assert!(s.last_error.contains("replication"), "{s:?}");
}
