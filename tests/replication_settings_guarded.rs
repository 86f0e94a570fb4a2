//! A replica's connection to its primary holds credentials, and they stay where they belong:
//! only a superuser changes it, moving it elsewhere needs the password again (no byte of the
//! stored one reaches a new host), TLS files are read by the client and checked by the
//! server when set, and every setting is bounded, the flag named in the error.
#![allow(clippy::unwrap_used)]

mod common;

use common::{admin, cli, Server};
use std::io::Read;
use std::time::Duration;

const SECRET: &str = "the-replicas-secret-password";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stored_password_never_goes_to_a_new_host() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Server::start(&dir.path().join("p"), &[]);
    let replica = Server::start(&dir.path().join("r"), &[]);
    let st = dir.path().join("st.json");
    let pport = primary.addr.rsplit(':').next().unwrap().to_string();
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
            &pport,
            "--replication-primary-username",
            "admin",
            "--replication-primary-password",
            SECRET,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    // A listener that records everything a replicator would send it.
    let evil = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let evil_port = evil.local_addr().unwrap().port().to_string();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    {
        let seen = seen.clone();
        std::thread::spawn(move || {
            for conn in evil.incoming() {
                let Ok(mut c) = conn else { continue };
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut b = [0u8; 4096];
                    while let Ok(n) = c.read(&mut b) {
                        if n == 0 {
                            break;
                        }
                        seen.lock().unwrap().extend_from_slice(&b[..n]);
                    }
                });
            }
        });
    }
    // The database's own admin (not a superuser) cannot repoint it.
    let a = admin(&replica).await;
    a.create_user("dbowner", "dbowner-password", false)
        .await
        .unwrap();
    a.grant("dbowner", "rdb", chainlog::wire::Permission::Admin)
        .await
        .unwrap();
    let redirect = [
        "database",
        "update",
        "rdb",
        "--replication-primary-host",
        "127.0.0.1",
        "--replication-primary-port",
        &evil_port,
    ];
    let mut as_owner = vec!["--user", "dbowner", "--password", "dbowner-password"];
    as_owner.extend_from_slice(&redirect);
    let (code, _, err) = cli(&replica.addr, &st, &as_owner);
    assert!(code == 1 && err.contains("superuser"), "{err}");
    // A superuser must give the password again.
    let (code, _, err) = cli(&replica.addr, &st, &redirect);
    assert!(
        code == 1 && err.contains("--replication-primary-password"),
        "{err}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = seen.lock().unwrap().clone();
    assert!(
        !seen.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
        "the password reached the new host"
    );
    // The replica still follows its real primary.
    let s = a.replication_status("rdb").await.unwrap();
    assert!(s.primary.ends_with(&format!(":{pport}/defaultdb")), "{s:?}");
}

#[test]
fn tls_material_is_read_by_the_client_and_checked_by_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let st = dir.path().join("st.json");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "this is not a certificate").unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["database", "create", "r", "--replication-is-replica"];
        args.extend_from_slice(extra);
        cli(&server.addr, &st, &args)
    };
    let (code, _, err) = run(&["--replication-primary-tls-ca", "/no/such/file.pem"]);
    assert!(code == 1 && err.contains("/no/such/file.pem"), "{err}");
    let (code, _, err) = run(&["--replication-primary-tls-ca", not_pem.to_str().unwrap()]);
    assert!(
        code == 1 && err.contains("--replication-primary-tls-ca"),
        "{err}"
    );
    let (code, _, err) = run(&["--replication-primary-tls-cert", not_pem.to_str().unwrap()]);
    assert!(
        code == 1 && err.contains("--replication-primary-tls"),
        "{err}"
    );
}

#[test]
fn every_replication_setting_is_bounded_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let st = dir.path().join("st.json");
    for (flag, value) in [
        ("--replication-primary-port", "0"),
        ("--replication-primary-host", "a b/../x"),
        ("--replication-sync-timeout-ms", "999999999"),
        ("--replication-sync-acks", "1000"),
        ("--replication-prefetch-tx-buffer-size", "0"),
    ] {
        let (code, _, err) = cli(
            &server.addr,
            &st,
            &["database", "update", "defaultdb", flag, value],
        );
        assert!(code == 1 && err.contains(flag), "{flag} {value}: {err}");
    }
    let (code, _, err) = cli(
        &server.addr,
        &st,
        &["database", "create", "x", "--segment-bytes-max", "1"],
    );
    assert!(code == 1 && err.contains("--segment-bytes-max"), "{err}");
}
