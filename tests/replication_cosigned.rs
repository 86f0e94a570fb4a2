//! Cosigned acknowledgements: a replica whose server has a signing key signs every state it
//! acknowledges; the primary keeps each replica's newest cosignature (checked against its own
//! history) and serves them; `chainlog state --cosigned K --witness-key …` returns the newest
//! state K of the trusted witnesses vouch for, each checked to be of the client's trusted
//! history, and refuses when fewer than K cosigned.
#![allow(clippy::unwrap_used)]

mod common;

use common::{cli, Server, ADMIN_PASSWORD};
use std::time::{Duration, Instant};

use common::files::key_file as witness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gets_a_state_two_replicas_cosigned() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Server::start(&dir.path().join("p"), &[]);
    let port = primary.addr.rsplit(':').next().unwrap().to_string();
    let p = common::admin(&primary).await;
    for i in 0..10u32 {
        p.set(
            "defaultdb",
            vec![(format!("k{i}").into_bytes(), b"v".to_vec())],
        )
        .await
        .unwrap();
    }
    let st = dir.path().join("st.json");
    let mut keys = Vec::new();
    let mut replicas = Vec::new();
    for (i, seed) in [(1, 0x41u8), (2, 0x42)] {
        let (kf, public) = witness(dir.path(), &format!("w{i}"), seed);
        let r = Server::start(
            &dir.path().join(format!("r{i}")),
            &["--signing-key", kf.to_str().unwrap()],
        );
        let (code, out, err) = cli(
            &r.addr,
            &st,
            &[
                "database",
                "create",
                "rdb",
                "--replication-is-replica",
                "--replication-primary-host",
                "127.0.0.1",
                "--replication-primary-port",
                &port,
                "--replication-primary-username",
                "admin",
                "--replication-primary-password",
                ADMIN_PASSWORD,
            ],
        );
        assert_eq!(code, 0, "{out}{err}");
        keys.push(public);
        replicas.push(r);
    }
    // Both replicas cosign what they acknowledge: the primary serves both, at tx 10.
    let start = Instant::now();
    loop {
        let c = p.cosignatures("defaultdb").await.unwrap();
        if c.len() == 2 && c.iter().all(|s| s.tx_id == 10) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{c:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        p.replication_status("defaultdb")
            .await
            .unwrap()
            .cosignatures,
        2
    );
    let (code, out, err) = cli(
        &primary.addr,
        &st,
        &[
            "--json",
            "state",
            "--cosigned",
            "2",
            "--witness-key",
            &keys[0],
            "--witness-key",
            &keys[1],
        ],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["tx_id"].as_u64(), Some(10));
    assert_eq!(v["cosigned_by"].as_array().unwrap().len(), 2);
    let real = p.current_state("defaultdb").await.unwrap();
    assert_eq!(
        v["alh"].as_str().unwrap(),
        chainlog::integrity::hex::encode(&real.alh)
    );
    // A witness the client does not trust counts for nothing.
    let (_, stranger) = witness(dir.path(), "w3", 0x43);
    let (code, _, err) = cli(
        &primary.addr,
        &st,
        &[
            "state",
            "--cosigned",
            "2",
            "--witness-key",
            &keys[0],
            "--witness-key",
            &stranger,
        ],
    );
    assert!(
        code == 1 && err.contains("only 1 of the 2 witnesses"),
        "{err}"
    );
    drop(replicas);
}
