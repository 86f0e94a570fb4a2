//! Load program for chainlogd over loopback: Set throughput and latency with N concurrent
//! clients (16-byte key, 100-byte value, one entry per tx, durable), and Get vs VerifiableGet
//! latency.
//!
//! ```text
//! cargo run --release --example server_load -- [--addr URL] [--password P] [--secs S] set CLIENTS...
//! cargo run --release --example server_load -- [--addr URL] [--password P] [--secs S] get
//! cargo run --release --example server_load -- [--addr URL] [--password P] [--secs S] getall
//! ```
//! cargo run --release --example server_load -- [--addr URL] [--password P] [--secs S] writestream STREAMS...
//! cargo run --release --example server_load -- [--addr URL] [--password P] stream [MIB] [ROUNDS]
//! ```
//! `stream`: a value of MIB MiB (default 256) written with StreamSet and VerifiableStreamSet
//! and read with StreamGet and VerifiableStreamGet, ROUNDS times (default 3): time and MB/s
//! of each, the client's peak RSS and, when this program started the server, the server's
//! peak RSS (VmHWM) after each kind of call. The value is generated as it is sent and
//! discarded as it is read, so the client holds only chunks.
//!
//! ```text
//! `writestream`: STREAMS WriteStreams, each sending one-entry txs (16-byte key, 100-byte
//! value, durable) as fast as its window (1024 in flight) allows; every answer is awaited and
//! counted, and the txs the database committed are checked against the count.
//!
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

async fn writestream_load(addr: &str, password: &str, streams: usize, secs: u64) {
    let admin = Client::connect(addr, None).await.expect("connect");
    admin.login("admin", password).await.expect("login");
    let before = admin.current_state("defaultdb").await.expect("state").tx_id;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..streams {
        let (addr, password) = (addr.to_string(), password.to_string());
        tasks.push(tokio::spawn(async move {
            let client = Client::connect(&addr, None).await.expect("connect");
            client.login("admin", &password).await.expect("login");
            let mut ws = client.write_stream("defaultdb").await.expect("open");
            let mut in_flight = std::collections::VecDeque::new();
            let mut done = 0u64;
            let mut i = 0u64;
            while Instant::now() < deadline {
                let p = ws
                    .send(vec![chainlog::client::Put::new(key(c, i), vec![b'v'; 100])])
                    .await
                    .expect("send");
                in_flight.push_back(p);
                i += 1;
                if in_flight.len() >= 1024 {
                    in_flight
                        .pop_front()
                        .unwrap()
                        .header()
                        .await
                        .expect("write");
                    done += 1;
                }
            }
            drop(ws);
            for p in in_flight {
                p.header().await.expect("write");
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = admin.current_state("defaultdb").await.expect("state").tx_id;
    assert_eq!(
        after - before,
        total,
        "answered writes against committed txs"
    );
    println!(
        "writestream {streams}: {total} txs in {elapsed:.2} s = {:.0} tx/s",
        total as f64 / elapsed
    );
}

/// Peak and current resident memory of a process, in MiB, from /proc.
fn rss_mib(pid: Option<u32>) -> (u64, u64) {
    let path = pid.map_or("/proc/self/status".to_string(), |p| {
        format!("/proc/{p}/status")
    });
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// The anonymous (heap) resident memory of a process in MiB, from /proc: unlike VmHWM it
/// leaves out file pages, such as the server's memory-mapped segments, which the kernel can
/// drop at will.
fn anon_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("RssAnon:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// Samples `anon_mib(pid)` every 5 ms until the returned flag is set; the join gives the
/// highest seen.
fn sample_anon(
    pid: u32,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<u64>,
) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let h = std::thread::spawn(move || {
        let mut max = 0;
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            max = max.max(anon_mib(pid));
            std::thread::sleep(Duration::from_millis(5));
        }
        max.max(anon_mib(pid))
    });
    (stop, h)
}

/// Pseudo-random bytes, generated as they are read.
struct Generated {
    state: u64,
    left: u64,
}

impl std::io::Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX))
            & !7;
        let n = if n == 0 {
            buf.len().min(self.left as usize)
        } else {
            n
        };
        for chunk in buf[..n].chunks_mut(8) {
            self.state = self
                .state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let b = self.state.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

async fn stream_load(addr: &str, password: &str, mib: u64, rounds: usize, server_pid: Option<u32>) {
    let client = Client::connect(addr, None).await.expect("connect");
    client.login("admin", password).await.expect("login");
    let dir = tempfile::tempdir().expect("temp dir");
    let verified =
        chainlog::client::VerifiedClient::new(client.clone(), dir.path().join("state.json"), None)
            .expect("verified client");
    let len = mib << 20;
    let meta = chainlog::integrity::EntryMeta::default();
    let sampler = || server_pid.map(sample_anon);
    let report = |what: &str,
                  t: Duration,
                  s: Option<(
        std::sync::Arc<std::sync::atomic::AtomicBool>,
        std::thread::JoinHandle<u64>,
    )>| {
        let (chwm, _) = rss_mib(None);
        let server = match (server_pid, s) {
            (Some(p), Some((stop, h))) => {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                let peak_anon = h.join().unwrap_or(0);
                let (hwm, _) = rss_mib(Some(p));
                format!("server: peak heap (RssAnon) during the call {peak_anon} MiB, VmHWM {hwm} MiB (mapped segments included)")
            }
            _ => "server not ours".to_string(),
        };
        println!(
            "{what:<22} {mib} MiB in {:>6.2} s = {:>6.1} MB/s   client peak RSS {chwm} MiB   {server}",
            t.as_secs_f64(),
            len as f64 / 1e6 / t.as_secs_f64()
        );
    };
    if let Some(p) = server_pid {
        let (hwm, rss) = rss_mib(Some(p));
        println!("server at start: peak RSS {hwm} MiB, now {rss} MiB");
    }
    for round in 0..rounds {
        let gen = || Generated {
            state: round as u64 + 1,
            left: len,
        };
        let s = sampler();
        let t = Instant::now();
        client
            .stream_set("defaultdb", b"big", meta, gen(), len)
            .await
            .expect("StreamSet");
        report("StreamSet", t.elapsed(), s);
        let s = sampler();
        let t = Instant::now();
        verified
            .stream_set("defaultdb", b"big-v", meta, gen(), len)
            .await
            .expect("VerifiableStreamSet");
        report("VerifiableStreamSet", t.elapsed(), s);
        let s = sampler();
        let t = Instant::now();
        client
            .stream_get("defaultdb", b"big", 0, &mut std::io::sink())
            .await
            .expect("StreamGet")
            .expect("present");
        report("StreamGet", t.elapsed(), s);
        let s = sampler();
        let t = Instant::now();
        let r = verified
            .stream_get("defaultdb", b"big-v", 0, &mut std::io::sink())
            .await
            .expect("VerifiableStreamGet");
        assert!(matches!(r, chainlog::client::VerifiedRead::Value(_)));
        report("VerifiableStreamGet", t.elapsed(), s);
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
    let mut server_pid = None;
    let _server;
    let _dir;
    let addr = match addr {
        Some(a) => a,
        None => {
            let dir = tempfile::tempdir().expect("temp dir");
            let server = launcher::Server::start(dir.path(), &["--log", "warn"]);
            let addr = server.addr.clone();
            server_pid = Some(server.pid());
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
        Some("writestream") => {
            for n in &args[1..] {
                writestream_load(&addr, &password, n.parse().expect("stream count"), secs).await;
            }
        }
        Some("stream") => {
            let mib = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(256);
            let rounds = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
            stream_load(&addr, &password, mib, rounds, server_pid).await;
        }
        _ => eprintln!(
            "usage: server_load [--addr URL] [--password P] [--secs S] set CLIENTS... | get | getall | writestream STREAMS... | stream [MIB] [ROUNDS]"
        ),
    }
}
