//! Automatic failover on etcd (from the system's packages, started here on loopback): three
//! servers elect a primary through a lease-backed key; under a steady write load with one
//! synchronous replica, the primary is killed (SIGKILL) or frozen (SIGSTOP), twenty rounds in
//! a row. Each round: another server takes writes within a few seconds (the figures are
//! printed), no acknowledged write is lost, and the old primary, restarted or resumed, refuses
//! writes and comes back as a replica of the new one.
#![allow(clippy::unwrap_used)]

mod common;

use chainlog::client::{Client, ClientError};
use chainlog::wire;
use common::{free_port, Server, ADMIN_PASSWORD};
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Etcd(Child);

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// etcd on two free loopback ports; its client URL.
fn start_etcd(dir: &std::path::Path) -> (Etcd, String) {
    let (client, peer) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new("etcd")
        .args(["--name", "t", "--data-dir"])
        .arg(dir.join("etcd"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args(["--initial-cluster", &format!("t={peer_url}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd from the system's packages (Debian: etcd-server); .ci/run installs it");
    let etcd = Etcd(child);
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", client)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "etcd did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (etcd, url)
}

struct Node {
    dir: std::path::PathBuf,
    listen: String,
    server: Option<Server>,
}

fn flags(etcd: &str, pw: &std::path::Path) -> Vec<String> {
    vec![
        "--ha-etcd-endpoints".into(),
        etcd.into(),
        "--ha-replication-password-file".into(),
        pw.to_str().unwrap().into(),
        "--ha-sync-acks".into(),
        "1".into(),
        "--ha-lease-ttl-secs".into(),
        "2".into(),
    ]
}

impl Node {
    fn start(&mut self, f: &[String]) {
        let f: Vec<&str> = f.iter().map(String::as_str).collect();
        self.server = Some(Server::start_at(&self.dir, &self.listen, &f));
    }
    fn addr(&self) -> String {
        format!("http://{}", self.listen)
    }
}

async fn client(addr: &str) -> Option<Client> {
    let c = Client::connect(addr, None).await.ok()?;
    tokio::time::timeout(Duration::from_secs(2), c.login("admin", ADMIN_PASSWORD))
        .await
        .ok()?
        .ok()?;
    Some(c)
}

/// Which node leads now (primary and taking writes), if any answers so.
async fn primary_of(nodes: &[String]) -> Option<usize> {
    for (i, a) in nodes.iter().enumerate() {
        let Some(c) = client(a).await else { continue };
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_secs(1), c.replication_status("defaultdb")).await
        {
            if s.role() == wire::Role::Primary && s.fenced.is_empty() && !s.replicas.is_empty() {
                return Some(i);
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_failovers_under_load_lose_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, etcd) = start_etcd(dir.path());
    let pw = dir.path().join("pw");
    std::fs::write(&pw, ADMIN_PASSWORD).unwrap();
    let f = flags(&etcd, &pw);
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| Node {
            dir: dir.path().join(format!("s{i}")),
            listen: format!("127.0.0.1:{}", free_port()),
            server: None,
        })
        .collect();
    for n in &mut nodes {
        n.start(&f);
    }
    let addrs: Vec<String> = nodes.iter().map(Node::addr).collect();

    // The writer: always writes to the primary it last found, follows referrals, and keeps
    // every acknowledged key with the server that took it and when.
    let acked: Arc<Mutex<BTreeMap<String, (usize, Instant)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (acked, stop, addrs) = (acked.clone(), stop.clone(), addrs.clone());
        tokio::spawn(async move {
            let mut target = 0usize;
            let mut conn: Option<Client> = None;
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if conn.is_none() {
                    conn = client(&addrs[target]).await;
                    if conn.is_none() {
                        target = (target + 1) % addrs.len();
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                }
                let key = format!("w{n}");
                // A write to a frozen server never answers: give up on it after a second.
                let res = tokio::time::timeout(
                    Duration::from_secs(1),
                    conn.as_ref()
                        .unwrap()
                        .set("defaultdb", vec![(key.clone().into_bytes(), b"v".to_vec())]),
                )
                .await;
                match res {
                    Ok(Ok(_)) => {
                        acked.lock().unwrap().insert(key, (target, Instant::now()));
                        n += 1;
                    }
                    Ok(Err(ClientError::Status(s))) => {
                        n += 1; // the key may or may not be written: never reused
                        let referred = wire::Reason::primary_of(&s)
                            .and_then(|p| p.split('/').next().map(|a| format!("http://{a}")))
                            .and_then(|a| addrs.iter().position(|x| *x == a));
                        target = referred.unwrap_or((target + 1) % addrs.len());
                        conn = None;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    _ => {
                        n += 1;
                        target = (target + 1) % addrs.len();
                        conn = None;
                    }
                }
            }
        })
    };

    let start = Instant::now();
    let mut leader = loop {
        if let Some(l) = primary_of(&addrs).await {
            break l;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no primary elected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut failovers = Vec::new();
    for round in 0..20 {
        // Let the load run on this primary for a moment.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let freeze = round % 2 == 1;
        let old = leader;
        let killed_at = Instant::now();
        {
            let s = nodes[old].server.as_mut().unwrap();
            if freeze {
                s.signal("STOP");
            } else {
                s.signal("KILL");
                s.wait_exit(Duration::from_secs(10)).unwrap();
            }
        }
        // Another server takes writes: the first write acknowledged by another node.
        let took = loop {
            let first = acked
                .lock()
                .unwrap()
                .values()
                .filter(|(n, t)| *n != old && *t > killed_at)
                .map(|(n, t)| (*t, *n))
                .min();
            if let Some((t, n)) = first {
                break (n, t.duration_since(killed_at));
            }
            assert!(
                killed_at.elapsed() < Duration::from_secs(30),
                "round {round}: no other server took writes"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        leader = took.0;
        failovers.push(took.1);
        // The old primary comes back (restarted, or resumed) and refuses writes.
        if freeze {
            nodes[old].server.as_ref().unwrap().signal("CONT");
        } else {
            nodes[old].server = None;
            nodes[old].start(&f);
        }
        let back = client(&addrs[old]).await;
        if let Some(c) = back {
            let e = c
                .set(
                    "defaultdb",
                    vec![(format!("stale{round}").into_bytes(), b"v".to_vec())],
                )
                .await;
            assert!(e.is_err(), "round {round}: the old primary took a write");
        }
        // ... and follows the new primary.
        let t = Instant::now();
        loop {
            if let Some(c) = client(&addrs[old]).await {
                if let Ok(s) = c.replication_status("defaultdb").await {
                    if s.role() == wire::Role::Replica
                        && s.primary.starts_with(&nodes[leader].listen)
                        && s.state() == wire::ReplicaState::Streaming
                    {
                        break;
                    }
                }
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "round {round}: the old primary does not follow the new one"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();

    // No acknowledged write is lost: every one is on the final primary (and on the others).
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 100, "the load wrote {} keys", acked.len());
    for a in &addrs {
        let c = client(a).await.unwrap();
        let start = Instant::now();
        for key in acked.keys() {
            loop {
                match c.get("defaultdb", key.as_bytes()).await {
                    Ok(Some(_)) => break,
                    other => assert!(
                        start.elapsed() < Duration::from_secs(30),
                        "{a}: acknowledged {key} missing: {other:?}"
                    ),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // Status says what the coordinator sees: one leads, the others follow it.
    let leads = nodes[leader].listen.clone();
    for (i, a) in addrs.iter().enumerate() {
        let s = client(a)
            .await
            .unwrap()
            .replication_status("defaultdb")
            .await
            .unwrap();
        let want = if i == leader {
            "this server leads".to_string()
        } else {
            format!("{leads} leads")
        };
        assert!(s.coordinator.contains(&want), "{a}: {}", s.coordinator);
    }
    failovers.sort();
    eprintln!(
        "failover (kill or freeze to the first write another server acknowledged), 20 rounds: min {:?}, median {:?}, max {:?}; {} writes acknowledged",
        failovers[0],
        failovers[10],
        failovers[19],
        acked.len()
    );
    assert!(failovers[19] < Duration::from_secs(15), "{failovers:?}");
}
