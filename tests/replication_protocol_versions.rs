//! The replication protocol's version in hello and welcome: a replica one minor version apart
//! (or one that predates versions: 1.0) follows; another major version is refused with both
//! versions named, `incompatible_protocol`.
#![allow(clippy::unwrap_used)]

mod common;

use chainlog::wire;
use common::Server;

async fn hello(
    client: &chainlog::client::Client,
    major: u32,
    minor: u32,
) -> Result<wire::Welcome, tonic::Status> {
    let h = wire::FollowHello {
        database: "defaultdb".into(),
        replica: format!("v{major}.{minor}"),
        protocol_major: major,
        protocol_minor: minor,
        ..Default::default()
    };
    let first = wire::FollowRequest {
        msg: Some(wire::follow_request::Msg::Hello(h)),
    };
    // The stream stays open (an ack channel) until the welcome arrives.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(first).await.unwrap();
    let mut s = client
        .replication()
        .follow(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    match s.message().await?.and_then(|m| m.msg) {
        Some(wire::follow_response::Msg::Welcome(w)) => Ok(w),
        other => panic!("expected a welcome, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minor_versions_apart_follow_and_major_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("p"), &[]);
    let c = common::admin(&server).await;
    c.set("defaultdb", vec![(b"k".to_vec(), b"v".to_vec())])
        .await
        .unwrap();
    for (major, minor) in [(1, 0), (1, 1), (1, 7), (0, 0)] {
        let w = hello(&c, major, minor).await.unwrap();
        assert_eq!(
            (w.protocol_major, w.protocol_minor),
            (wire::PROTOCOL_MAJOR, wire::PROTOCOL_MINOR)
        );
        assert_eq!((w.head_tx_id, w.epoch), (1, 1));
    }
    let e = hello(&c, 2, 0).await.unwrap_err();
    assert_eq!(
        wire::Reason::of(&e),
        Some(wire::Reason::IncompatibleProtocol)
    );
    assert!(
        e.message().contains("2.0") && e.message().contains("1.1"),
        "{}",
        e.message()
    );
}
