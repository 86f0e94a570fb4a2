//! No peer keeps chainlogd from stopping or from serving: SIGTERM exits within the drain
//! deadline (exit 0, every acknowledged write there after a restart) whatever is connected, a
//! bare TCP connection, a frozen replica, an open export stream, a synchronous commit waiting
//! for a replica that is gone; a second SIGTERM exits at once; a connection that never makes
//! a request is closed at the handshake deadline; and out of descriptors, the server backs off,
//! keeps serving a normal client and uses little CPU.
#![allow(clippy::unwrap_used)]

mod common;

use chainlog::client::Client;
use chainlog::wire;
use common::launcher::chainlogd_bin;
use common::{admin, Server};
use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// SIGTERM, then the time until it exited and its status.
fn term_and_time(server: &mut common::launcher::Server) -> (Duration, std::process::ExitStatus) {
    let start = Instant::now();
    server.signal("TERM");
    let status = server
        .wait_exit(Duration::from_secs(60))
        .expect("chainlogd did not exit within 60 s");
    (start.elapsed(), status)
}

async fn write(c: &Client, n: usize) {
    for i in 0..n {
        c.set(
            "defaultdb",
            vec![(format!("k{i}").into_bytes(), b"v".to_vec())],
        )
        .await
        .unwrap();
    }
}

fn addr_of(server: &common::launcher::Server) -> String {
    server.addr.trim_start_matches("http://").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_within_the_drain_deadline_whatever_is_connected() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("p");
    let mut primary = Server::start(&data, &["--shutdown-drain-ms", "1500"]);
    let c = admin(&primary).await;
    write(&c, 20).await;
    // A bare TCP connection that never sends a byte.
    let _bare = TcpStream::connect(addr_of(&primary)).unwrap();
    // A replica following it, then frozen.
    let replica = Server::start(&dir.path().join("r"), &[]);
    let port = addr_of(&primary).rsplit(':').next().unwrap().to_string();
    let rc = admin(&replica).await;
    let settings = wire::DatabaseSettings {
        replication: Some(wire::ReplicationSettings {
            is_replica: Some(true),
            primary_host: Some("127.0.0.1".into()),
            primary_port: Some(port.parse().unwrap()),
            primary_database: Some("defaultdb".into()),
            primary_username: Some("admin".into()),
            primary_password: Some(common::ADMIN_PASSWORD.into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    rc.create_database("rdb", settings).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while rc.current_state("rdb").await.unwrap().tx_id < 20 {
        assert!(Instant::now() < deadline, "the replica did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    replica.signal("STOP");
    // An export that follows forever, held open by this process.
    let mut export = c
        .replication()
        .export_tx(wire::ExportTxRequest {
            database: "defaultdb".into(),
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(export.message().await.unwrap().is_some());
    let (took, status) = term_and_time(&mut primary);
    replica.signal("CONT");
    assert!(status.success(), "{status}: {}", primary.log());
    assert!(took < Duration::from_secs(8), "took {took:?}");
    drop(primary);
    let primary = Server::start(&data, &[]);
    let c = admin(&primary).await;
    assert_eq!(c.current_state("defaultdb").await.unwrap().tx_id, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronous_commit_waiting_for_a_gone_replica_does_not_hold_the_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--shutdown-drain-ms", "30000"]);
    let c = admin(&server).await;
    let settings = wire::DatabaseSettings {
        replication: Some(wire::ReplicationSettings {
            sync_acks: Some(1),
            sync_timeout_ms: Some(60_000),
            ..Default::default()
        }),
        ..Default::default()
    };
    c.update_database("defaultdb", settings).await.unwrap();
    let pending = tokio::spawn({
        let c = c.clone();
        async move {
            c.set("defaultdb", vec![(b"k".to_vec(), b"v".to_vec())])
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (took, status) = term_and_time(&mut server);
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let e = pending.await.unwrap().unwrap_err();
    assert!(
        e.to_string()
            .contains("durable on the primary but not yet replicated"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--shutdown-drain-ms", "60000"]);
    let c = admin(&server).await;
    write(&c, 3).await;
    let _bare = TcpStream::connect(addr_of(&server)).unwrap();
    // Held open from the start of the drain: only the second signal ends it early.
    let mut export = c
        .replication()
        .export_tx(wire::ExportTxRequest {
            database: "defaultdb".into(),
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(export.message().await.unwrap().is_some());
    server.signal("TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(server.child.try_wait().unwrap().is_none(), "still draining");
    let (took, status) = term_and_time(&mut server);
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(status.code(), Some(130));
    drop(server);
    let server = Server::start(dir.path(), &[]);
    assert_eq!(
        admin(&server)
            .await
            .current_state("defaultdb")
            .await
            .unwrap()
            .tx_id,
        3
    );
}

#[test]
fn a_connection_that_never_makes_a_request_is_closed_at_the_handshake_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--handshake-timeout-ms", "500"]);
    let mut bare = TcpStream::connect(addr_of(&server)).unwrap();
    bare.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 64];
    // The server may write its HTTP/2 settings first; then it closes.
    loop {
        match bare.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        assert!(start.elapsed() < Duration::from_secs(9), "never closed");
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

/// User plus system CPU time of a process so far, from /proc (clock ticks of 10 ms).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_server_backs_off_and_keeps_serving() {
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("prlimit (util-linux) is needed for this test");
    }
    let dir = tempfile::tempdir().unwrap();
    let server = common::launcher::Server::launch_wrapped(
        &["prlimit", "--nofile=64:64", "--"],
        &chainlogd_bin(),
        dir.path(),
        "127.0.0.1:0",
        &["--handshake-timeout-ms", "300"],
    );
    let addr = addr_of(&server);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // An attacker keeps 120 connections open that never make a request.
    let attacker = std::thread::spawn({
        let (addr, stop) = (addr.clone(), stop.clone());
        move || {
            let mut held: Vec<TcpStream> = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                held.retain(|s| {
                    let _ = s.set_nonblocking(true);
                    let mut b = [0u8; 1];
                    !matches!((&*s).read(&mut b), Ok(0))
                });
                while held.len() < 120 {
                    match TcpStream::connect(&addr) {
                        Ok(s) => held.push(s),
                        Err(_) => break,
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks(server.pid());
    let start = Instant::now();
    // A normal client gets through (retrying while descriptors are short).
    let served = loop {
        let attempt = async {
            let c = Client::connect(&server.addr, None).await?;
            c.login("admin", common::ADMIN_PASSWORD).await?;
            c.set("defaultdb", vec![(b"ok".to_vec(), b"1".to_vec())])
                .await?;
            c.get("defaultdb", b"ok").await
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(Some(e))) => break e,
            _ if start.elapsed() > Duration::from_secs(30) => panic!("never served"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert_eq!(served.value, b"1");
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(server.pid()) - before;
    let wall_ticks = start.elapsed().as_millis() as u64 / 10;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    attacker.join().unwrap();
    assert!(
        used * 100 < wall_ticks * 40,
        "the server used {used} ticks of CPU in {wall_ticks} ticks of wall time"
    );
    assert!(
        server.log().contains("cannot accept connections"),
        "{}",
        server.log()
    );
}
