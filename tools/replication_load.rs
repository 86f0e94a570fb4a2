//! Replication figures over loopback, with real `chainlogd` processes (release builds):
//!
//! ```text
//! cargo build --release --bin chainlogd && cargo run --release --example replication_load -- catchup TXS
//!     a primary holding TXS one-entry txs (written beforehand with the ledger library),
//!     a fresh replica created with the CLI's flags: time until it holds them all, verified
//! cargo run --release --example replication_load -- lag SECS RATE [IDLE_SECS]
//!     a primary taking RATE one-entry txs/s from 8 clients, one replica: the lag of each
//!     write (commit on the primary until readable on the replica), p50/p99; then the first
//!     write after IDLE_SECS (default 60) idle
//! cargo run --release --example replication_load -- overhead SECS CLIENTS
//!     Set throughput from CLIENTS clients for SECS seconds on a primary with no replica, with
//!     one async replica, and with one sync replica (sync acks 1), each on fresh servers
//! ```
#![allow(clippy::unwrap_used)]

use chainlog::client::Client;
use chainlog::ledger::{Durability, Ledger, NewEntry, Options};
use chainlog::wire;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../tests/common/launcher.rs"]
mod launcher;

use launcher::{free_port as port, Server, ADMIN_PASSWORD as PASSWORD};

/// Starts a release `chainlogd` on `port` and logs in to it.
async fn start(dir: &Path, port: u16) -> (Server, Client) {
    let server = Server::start_at(dir, &format!("127.0.0.1:{port}"), &["--log", "warn"]);
    let c = Client::connect(&server.addr, None).await.expect("connect");
    c.login("admin", PASSWORD).await.expect("login");
    (server, c)
}

/// CPU time (user + system) a process has used so far, in microseconds, from /proc.
fn cpu_us(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    ticks * 1_000_000 / clock_ticks()
}

fn clock_ticks() -> u64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output();
    out.ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// Sets from `clients` clients for `secs` seconds; returns txs per second.
async fn set_throughput(c: &Client, clients: u64, secs: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|t| {
            let c = c.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let mut key = *b"over-...........";
                    key[5..13].copy_from_slice(&(t << 40 | n).to_be_bytes());
                    c.set("defaultdb", vec![(key.to_vec(), vec![7u8; 100])])
                        .await
                        .expect("set");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("client");
    }
    total as f64 / start.elapsed().as_secs_f64()
}

async fn overhead(secs: u64, clients: u64) {
    let mut base = 0.0;
    for mode in ["none", "async", "sync"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let pport = port();
        let (_p, p) = start(&dir.path().join("p"), pport).await;
        let replica = if mode == "none" {
            None
        } else {
            let (proc, r) = start(&dir.path().join("r"), port()).await;
            create_replica(&r, pport).await;
            Some((proc, r))
        };
        if mode == "sync" {
            let settings = wire::DatabaseSettings {
                replication: Some(wire::ReplicationSettings {
                    sync_acks: Some(1),
                    ..Default::default()
                }),
                ..Default::default()
            };
            p.databases()
                .update_database(wire::UpdateDatabaseRequest {
                    name: "defaultdb".into(),
                    settings: Some(settings),
                })
                .await
                .expect("sync acks");
        }
        // Let the replica connect (a sync commit would wait for it otherwise).
        p.set("defaultdb", vec![(b"warm".to_vec(), b"up".to_vec())])
            .await
            .expect("set");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rate = set_throughput(&p, clients, secs).await;
        if mode == "none" {
            base = rate;
        }
        if let Some((_, r)) = &replica {
            let head = p.current_state("defaultdb").await.expect("state").tx_id;
            while r.current_state("rdb").await.expect("state").tx_id < head {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        println!(
            "overhead: {mode} replica, {clients} clients: {rate:.0} tx/s ({:.0}% of no replica)",
            rate / base * 100.0
        );
    }
}

async fn create_replica(replica: &Client, primary_port: u16) {
    let settings = wire::DatabaseSettings {
        replication: Some(wire::ReplicationSettings {
            is_replica: Some(true),
            primary_host: Some("127.0.0.1".into()),
            primary_port: Some(u32::from(primary_port)),
            primary_database: Some("defaultdb".into()),
            primary_username: Some("admin".into()),
            primary_password: Some(PASSWORD.into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    replica
        .databases()
        .create_database(wire::CreateDatabaseRequest {
            name: "rdb".into(),
            settings: Some(settings),
        })
        .await
        .expect("create replica");
}

async fn catchup(txs: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (pdir, rdir) = (dir.path().join("p"), dir.path().join("r"));
    let pport = port();
    // First start creates the layout; then the log is filled offline, fast.
    drop(start(&pdir, pport).await);
    {
        let db = Arc::new(
            Ledger::open(
                pdir.join("db/defaultdb"),
                Options {
                    durability: Durability::Buffered,
                    ..Options::default()
                },
            )
            .expect("open"),
        );
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let db = db.clone();
                std::thread::spawn(move || {
                    for i in (t..txs).step_by(8) {
                        let mut key = *b"catchup-........";
                        key[8..].copy_from_slice(&i.to_be_bytes());
                        db.commit(vec![NewEntry::put(key, [1u8; 100])])
                            .expect("commit");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("writer");
        }
        db.close().expect("close");
    }
    let (pserver, p) = start(&pdir, pport).await;
    let (rserver, r) = start(&rdir, port()).await;
    let head = p.current_state("defaultdb").await.expect("state");
    let (p0, r0) = (cpu_us(pserver.pid()), cpu_us(rserver.pid()));
    let t = Instant::now();
    create_replica(&r, pport).await;
    loop {
        let s = r.current_state("rdb").await.expect("state");
        if s.tx_id == head.tx_id {
            assert_eq!(s.alh, head.alh, "same state");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    let per_tx = |before: u64, pid: u32| (cpu_us(pid) - before) as f64 / head.tx_id as f64;
    println!(
        "catchup: {} txs in {secs:.2} s = {:.0} tx/s (verified and applied); CPU per tx: replica {:.2} us, primary {:.2} us",
        head.tx_id,
        head.tx_id as f64 / secs,
        per_tx(r0, rserver.pid()),
        per_tx(p0, pserver.pid()),
    );
}

async fn lag(secs: u64, rate: u64, idle: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let pport = port();
    let (_p, p) = start(&dir.path().join("p"), pport).await;
    let (_r, r) = start(&dir.path().join("r"), port()).await;
    create_replica(&r, pport).await;
    p.set("defaultdb", vec![(b"warm".to_vec(), b"up".to_vec())])
        .await
        .expect("set");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Writers at a fixed total rate; a prober measures commit -> visible on the replica.
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut writers = Vec::new();
    for c in 0..8u64 {
        let p = p.clone();
        writers.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(8.0 / rate as f64));
            let mut i = 0u64;
            while Instant::now() < deadline {
                tick.tick().await;
                p.set(
                    "defaultdb",
                    vec![(format!("w{c}-{i}").into_bytes(), vec![7u8; 100])],
                )
                .await
                .expect("set");
                i += 1;
            }
        }));
    }
    let mut lags = Vec::new();
    let mut i = 0u64;
    while Instant::now() < deadline {
        let h = p
            .set(
                "defaultdb",
                vec![(format!("probe-{i}").into_bytes(), b"p".to_vec())],
            )
            .await
            .expect("set");
        let t = Instant::now();
        let got = r
            .get_with(wire::GetRequest {
                database: "rdb".into(),
                key: format!("probe-{i}").into_bytes(),
                since_tx: h.id,
                wait_ms: 10_000,
                ..Default::default()
            })
            .await
            .expect("get");
        assert!(got.is_some());
        lags.push(t.elapsed());
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for w in writers {
        w.await.expect("writer");
    }
    lags.sort();
    let pct = |q: f64| lags[((lags.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!(
        "lag at {rate} tx/s: p50 {:.2} ms, p99 {:.2} ms ({} probes)",
        pct(0.5),
        pct(0.99),
        lags.len()
    );
    tokio::time::sleep(Duration::from_secs(idle)).await;
    let h = p
        .set("defaultdb", vec![(b"after-idle".to_vec(), b"x".to_vec())])
        .await
        .expect("set");
    let t = Instant::now();
    r.get_with(wire::GetRequest {
        database: "rdb".into(),
        key: b"after-idle".to_vec(),
        since_tx: h.id,
        wait_ms: 10_000,
        ..Default::default()
    })
    .await
    .expect("get");
    println!(
        "first write after {idle} s idle reached the replica in {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    match args.first().map(String::as_str) {
        Some("catchup") => catchup(num(1, 1_000_000)).await,
        Some("lag") => lag(num(1, 10), num(2, 4000), num(3, 60)).await,
        Some("overhead") => overhead(num(1, 10), num(2, 8)).await,
        _ => {
            eprintln!("usage: replication_load catchup TXS | lag SECS RATE [IDLE_SECS] | overhead SECS CLIENTS")
        }
    }
}
