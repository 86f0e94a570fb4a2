//! Signed checkpoints on the follow stream: a primary with a signing key signs the state at
//! the end of every batch and at every heartbeat; a replica pins the key on first contact (or
//! is given it), verifies every checkpoint and matches it with its own history, and shows
//! the last one verified. A primary that signs with another key (a forged checkpoint, or
//! another server in its place) is refused: the replica stops, its data kept.
#![allow(clippy::unwrap_used)]

mod common;

use common::{cli, Server, ADMIN_PASSWORD};
use std::time::{Duration, Instant};

use common::files::key_file;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_pins_the_primarys_key_and_refuses_checkpoints_signed_with_another() {
    let dir = tempfile::tempdir().unwrap();
    let (key1, public1) = key_file(dir.path(), "k1", 0x31);
    let (key2, _) = key_file(dir.path(), "k2", 0x32);
    let pdir = dir.path().join("p");
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let primary = Server::start_at(&pdir, &listen, &["--signing-key", key1.to_str().unwrap()]);
    let replica = Server::start(&dir.path().join("r"), &[]);
    let p = common::admin(&primary).await;
    let r = common::admin(&replica).await;
    for i in 0..20u32 {
        p.set(
            "defaultdb",
            vec![(format!("k{i}").into_bytes(), b"v".to_vec())],
        )
        .await
        .unwrap();
    }
    let st = dir.path().join("st.json");
    let port_s = port.to_string();
    let (code, out, err) = cli(
        &replica.addr,
        &st,
        &[
            "database",
            "create",
            "rdb",
            "--replication-is-replica",
            "--replication-primary-host",
            "127.0.0.1",
            "--replication-primary-port",
            &port_s,
            "--replication-primary-username",
            "admin",
            "--replication-primary-password",
            ADMIN_PASSWORD,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let start = Instant::now();
    loop {
        let s = r.replication_status("rdb").await.unwrap();
        if s.signed_checkpoint_tx_id == 20 {
            assert_eq!(s.primary_public_key, public1);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        primary.log().contains(&public1),
        "chainlogd logs its public key"
    );
    let pinned = std::fs::read_to_string(dir.path().join("r/db/rdb/PRIMARY_KEY")).unwrap();
    assert_eq!(pinned.trim(), public1);
    let (code, out, _) = cli(
        &replica.addr,
        &st,
        &["--db", "rdb", "replication", "status"],
    );
    assert!(
        code == 0 && out.contains("last signed checkpoint verified: tx 20"),
        "{out}"
    );

    // The primary comes back signing with another key: refused, nothing applied.
    assert!(primary.stop().success());
    let primary = Server::start_at(&pdir, &listen, &["--signing-key", key2.to_str().unwrap()]);
    let p = common::admin(&primary).await;
    p.set("defaultdb", vec![(b"after".to_vec(), b"v".to_vec())])
        .await
        .unwrap();
    let start = Instant::now();
    loop {
        let s = r.replication_status("rdb").await.unwrap();
        if s.last_error.contains("does not verify with its key") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(r.current_state("rdb").await.unwrap().tx_id, 20);
    // Given the new key explicitly, the operator lets it follow again.
    let public2 = ed25519_dalek::SigningKey::from_bytes(&[0x32; 32])
        .verifying_key()
        .to_bytes();
    let (code, out, err) = cli(
        &replica.addr,
        &st,
        &[
            "database",
            "update",
            "rdb",
            "--replication-primary-public-key",
            &chainlog::integrity::hex::encode(&public2),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let start = Instant::now();
    while r.current_state("rdb").await.unwrap().tx_id < 21 {
        assert!(start.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
