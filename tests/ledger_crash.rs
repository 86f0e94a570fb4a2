//! Kill -9 mid-write, then reopen: every acknowledged tx is there, byte for byte, the key map
//! (rebuilt by replay) has exactly the root the log's last header commits to, and the whole
//! chain verifies. A child process (this test binary, re-run in child mode) commits from four
//! threads in a loop and prints each acknowledged tx; the parent kills it with SIGKILL at a
//! random moment, 25 rounds on one directory, reopening and checking after each.
#![allow(clippy::unwrap_used)]

#[path = "common/rng.rs"]
mod rng;

use chainlog::integrity::map::Latest;
use chainlog::ledger::{check, Ledger, NewEntry, Options};
use rng::Rng;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "CHAINLOG_CRASH_CHILD_DIR";

fn options() -> Options {
    // Small limits so that kills land around checkpoints, run merges and segment rolls too.
    Options {
        segment_bytes_max: 1 << 20,
        checkpoint_txs: 300,
        memtable_versions_max: 500,
        runs_max: 2,
        ..Options::default()
    }
}

/// The child: runs only when the parent sets the environment variable.
#[test]
#[ignore = "run by crash_rounds as a child process"]
fn crash_child() {
    let dir = std::env::var(CHILD_ENV).expect("child mode needs its directory");
    let db = std::sync::Arc::new(Ledger::open(&dir, options()).unwrap());
    let out = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
    println!("READY {}", db.state().tx_id);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (db, out) = (db.clone(), out.clone());
            std::thread::spawn(move || {
                for seq in 0u64.. {
                    let key = format!("t{t}-{}-{seq}", std::process::id());
                    let value = vec![(seq % 251) as u8; 50 + (seq % 700) as usize];
                    let h = db
                        .commit(vec![
                            NewEntry::put(key.clone(), value),
                            NewEntry::put(format!("last{t}"), key.clone()),
                        ])
                        .unwrap();
                    use std::io::Write;
                    let mut o = out.lock().unwrap();
                    writeln!(o, "ACK {} {} {}", h.id, h.alh(), key).unwrap();
                    o.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn crash_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::from_env("crash_rounds");
    let mut acked: Vec<(u64, String, String)> = Vec::new();
    let mut truncations = 0;
    for round in 0..25 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait until it is writing, then let it run a random while.
        let started = Instant::now();
        let mut round_acks = 0;
        let kill_after = Duration::from_millis(20 + rng.next_u64() % 250);
        let mut writing_since = None;
        loop {
            match rx.recv_timeout(Duration::from_millis(5)) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("ACK ") {
                        let mut p = rest.split(' ');
                        let id: u64 = p.next().unwrap().parse().unwrap();
                        acked.push((
                            id,
                            p.next().unwrap().to_string(),
                            p.next().unwrap().to_string(),
                        ));
                        round_acks += 1;
                        writing_since.get_or_insert_with(Instant::now);
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => break,
            }
            if writing_since.is_some_and(|t| t.elapsed() >= kill_after)
                || started.elapsed() > Duration::from_secs(30)
            {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Acks printed before the kill are still in the pipe: take them too.
        reader.join().unwrap();
        while let Ok(line) = rx.try_recv() {
            if let Some(rest) = line.strip_prefix("ACK ") {
                let mut p = rest.split(' ');
                let id: u64 = p.next().unwrap().parse().unwrap();
                acked.push((
                    id,
                    p.next().unwrap().to_string(),
                    p.next().unwrap().to_string(),
                ));
                round_acks += 1;
            }
        }
        assert!(
            round_acks > 0,
            "round {round}: the child acknowledged nothing"
        );

        let db = Ledger::open(dir.path(), options()).unwrap();
        if db.recovery().truncated.is_some() {
            truncations += 1;
        }
        let last = db.state().tx_id;
        let map_root = db.last_header().unwrap().map_root;
        for (id, alh, key) in &acked {
            let (latest, proof) = db.latest_proof(key.as_bytes(), last).unwrap();
            assert_eq!(
                proof.verify(&map_root, key.as_bytes()),
                Ok(latest),
                "round {round}: the key map's proof leads to the root tx {last} commits to"
            );
            assert!(
                matches!(latest, Latest::Version(l) if l.tx_id == *id && !l.deleted),
                "round {round}: the key map shows {key} written by tx {id}: {latest:?}"
            );
            assert!(
                *id <= last,
                "round {round}: acknowledged tx {id} lost (last is {last})"
            );
            let tx = db.tx(*id).unwrap();
            assert_eq!(tx.alh.to_hex(), *alh, "round {round}: tx {id} changed");
            assert_eq!(tx.entries[0].key, key.as_bytes());
            assert!(
                db.get(key.as_bytes()).unwrap().is_some(),
                "round {round}: key {key} of tx {id} unreadable"
            );
        }
        db.close().unwrap();
        drop(db);
        let report = check(dir.path()).unwrap();
        assert_eq!(report.last_tx, last);
        assert_eq!(
            report.torn_tail, None,
            "recovery cut the tail, so none is left"
        );
        // Only the newest acks need to be checked again next round.
        acked.sort();
        let keep = acked.len().saturating_sub(200);
        acked.drain(..keep);
    }
    eprintln!("torn tails cut: {truncations} of 25 rounds");
}
