//! Load program for chainlogd over loopback: Set throughput and latency with N concurrent
//! clients (16-byte key, 100-byte value, one entry per tx, durable), and Get vs VerifiableGet
//! latency.
//!
//! ```text
//! cargo run --release --example server_load -- [--addr URL] [--password P] [--secs S] set CLIENTS...
//! cargo run --release --example server_load -- [--addr URL] [--password P] [--secs S] get
//! cargo run --release --example server_load -- [--addr URL] [--password P] [--secs S] getall
//! ```
//! `getall`: 100 keys read and verified with one VerifiableGetAll against 100 VerifiableGets,
//! both through `VerifiedClient` (every proof checked), in alternating rounds.
//! Without --addr it starts `chainlogd` itself (target/release/chainlogd, so build it first
//! with `cargo build --release --bin chainlogd`) on a temporary data directory, through the
//! tests' launcher (tests/common/launcher.rs).
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/launcher.rs"]
mod launcher;

use chainlog::client::Client;
use chainlog::wire;
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn key(c: usize, i: u64) -> Vec<u8> {
    let mut k = format!("c{c:03}-").into_bytes();
    k.extend_from_slice(&i.to_be_bytes());
    k.resize(16, b'.');
    k
}

async fn set_load(addr: &str, password: &str, clients: usize, secs: u64) {
    let mut tasks = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    for c in 0..clients {
        let (addr, password) = (addr.to_string(), password.to_string());
        tasks.push(tokio::spawn(async move {
            let client = Client::connect(&addr, None).await.expect("connect");
            client.login("admin", &password).await.expect("login");
            let mut lat = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                client
                    .set("defaultdb", vec![(key(c, i), vec![7u8; 100])])
                    .await
                    .expect("set");
                lat.push(t.elapsed());
                i += 1;
            }
            lat
        }));
    }
    let start = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort();
    println!(
        "set clients={clients}: {:.0} tx/s, p50 {:.2} ms, p99 {:.2} ms ({} txs in {secs:.1} s)",
        all.len() as f64 / secs,
        percentile(&all, 0.5).as_secs_f64() * 1e3,
        percentile(&all, 0.99).as_secs_f64() * 1e3,
        all.len()
    );
}

async fn get_load(addr: &str, password: &str, secs: u64) {
    let client = Client::connect(addr, None).await.expect("connect");
    client.login("admin", password).await.expect("login");
    for i in 0..1000u64 {
        client
            .set("defaultdb", vec![(key(999, i), vec![7u8; 100])])
            .await
            .expect("set");
    }
    let state = client.current_state("defaultdb").await.expect("state");
    for verified in [false, true] {
        let mut lat = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut i = 0u64;
        while Instant::now() < deadline {
            let k = key(999, i % 1000);
            let t = Instant::now();
            if verified {
                // The server builds the entry, tx and state proofs; the client checks them as
                // VerifiedClient does (measured separately in benches/proofs.rs).
                let mut d = client.data();
                d.verifiable_get(wire::VerifiableGetRequest {
                    database: "defaultdb".into(),
                    key: k,
                    at_tx: 0,
                    trusted_tx_id: state.tx_id / 2,
                    known_epoch: 0,
                })
                .await
                .expect("verifiable get");
            } else {
                client.get("defaultdb", &k).await.expect("get");
            }
            lat.push(t.elapsed());
            i += 1;
        }
        lat.sort();
        println!(
            "{}: p50 {:.3} ms, p99 {:.3} ms ({} reads)",
            if verified { "verifiable_get" } else { "get" },
            percentile(&lat, 0.5).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3,
            lat.len()
        );
    }
}

async fn getall_load(addr: &str, password: &str, secs: u64) {
    let client = Client::connect(addr, None).await.expect("connect");
    client.login("admin", password).await.expect("login");
    for i in 0..1000u64 {
        client
            .set("defaultdb", vec![(key(998, i), vec![7u8; 100])])
            .await
            .expect("set");
    }
    let dir = std::env::temp_dir().join(format!("server-load-{}", std::process::id()));
    let verified = chainlog::client::VerifiedClient::new(client, dir.join("state.json"), None)
        .expect("state file");
    let keys: Vec<Vec<u8>> = (0..100u64).map(|i| key(998, i * 7)).collect();
    let (mut one, mut many) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        let t = Instant::now();
        let r = verified.get_all("defaultdb", &keys).await.expect("get_all");
        assert_eq!(r.len(), 100);
        one.push(t.elapsed());
        let t = Instant::now();
        for k in &keys {
            verified.get("defaultdb", k, 0).await.expect("get");
        }
        many.push(t.elapsed());
    }
    let _ = std::fs::remove_dir_all(&dir);
    for (name, lat) in [
        ("1 VerifiableGetAll of 100 keys", &mut one),
        ("100 VerifiableGets", &mut many),
    ] {
        lat.sort();
        println!(
            "{name}: p50 {:.2} ms, p99 {:.2} ms ({} rounds)",
            percentile(lat, 0.5).as_secs_f64() * 1e3,
            percentile(lat, 0.99).as_secs_f64() * 1e3,
            lat.len()
        );
    }
}

#[tokio::main]
async fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut take = |flag: &str| -> Option<String> {
        let i = args.iter().position(|a| a == flag)?;
        args.remove(i);
        (i < args.len()).then(|| args.remove(i))
    };
    let addr = take("--addr");
    let password = take("--password").unwrap_or_else(|| launcher::ADMIN_PASSWORD.into());
    let secs: u64 = take("--secs").and_then(|s| s.parse().ok()).unwrap_or(10);
    let _server;
    let _dir;
    let addr = match addr {
        Some(a) => a,
        None => {
            let dir = tempfile::tempdir().expect("temp dir");
            let server = launcher::Server::start(dir.path(), &["--log", "warn"]);
            let addr = server.addr.clone();
            (_server, _dir) = (server, dir);
            addr
        }
    };
    match args.first().map(String::as_str) {
        Some("set") => {
            for n in &args[1..] {
                set_load(&addr, &password, n.parse().expect("client count"), secs).await;
            }
        }
        Some("get") => get_load(&addr, &password, secs).await,
        Some("getall") => getall_load(&addr, &password, secs).await,
        _ => eprintln!(
            "usage: server_load [--addr URL] [--password P] [--secs S] set CLIENTS... | get | getall"
        ),
    }
}
