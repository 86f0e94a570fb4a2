//! The real `chainlogd` with TLS and mutual TLS (certificates made by rcgen at test time),
//! settings from a TOML file and from CHAINLOG_* variables, the metrics endpoint, and the
//! standard gRPC health service.
#![allow(clippy::unwrap_used)]

mod common;

use chainlog::client::{Client, ClientTls};
use common::{Server, ADMIN_PASSWORD};
use std::io::{Read, Write};

struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca_pem: ca.pem(),
        server: leaf(vec!["localhost".into(), "127.0.0.1".into()]),
        client: leaf(vec!["client".into()]),
    }
}

/// Writes `body` to `dir/name`; returns the path as text, for flags.
fn write_file(dir: &std::path::Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path.to_str().unwrap().to_string()
}

/// The PEM files of a [`Pki`], written to a directory.
struct PkiFiles {
    server_cert: String,
    server_key: String,
    ca: String,
    client_cert: String,
    client_key: String,
}

impl PkiFiles {
    /// chainlogd's flags for TLS that requires client certificates signed by the CA.
    fn server_args(&self) -> [&str; 6] {
        [
            "--tls-cert",
            &self.server_cert,
            "--tls-key",
            &self.server_key,
            "--tls-client-ca",
            &self.ca,
        ]
    }
}

impl Pki {
    fn write(&self, dir: &std::path::Path) -> PkiFiles {
        PkiFiles {
            server_cert: write_file(dir, "server.pem", &self.server.0),
            server_key: write_file(dir, "server.key", &self.server.1),
            ca: write_file(dir, "ca.pem", &self.ca_pem),
            client_cert: write_file(dir, "client.pem", &self.client.0),
            client_key: write_file(dir, "client.key", &self.client.1),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki();
    let f = p.write(dir.path());
    let server = Server::start(&dir.path().join("data"), &f.server_args());
    let https = server.addr.replace("http://", "https://");
    let tls = |with_identity: bool| ClientTls {
        ca_pem: Some(p.ca_pem.clone().into_bytes()),
        identity_pem: with_identity.then(|| {
            (
                p.client.0.clone().into_bytes(),
                p.client.1.clone().into_bytes(),
            )
        }),
        domain: Some("localhost".into()),
    };
    let c = Client::connect(&https, Some(tls(true))).await.unwrap();
    c.login("admin", ADMIN_PASSWORD).await.unwrap();
    c.set("defaultdb", vec![(b"k".to_vec(), b"over tls".to_vec())])
        .await
        .unwrap();
    assert_eq!(
        c.get("defaultdb", b"k").await.unwrap().unwrap().value,
        b"over tls"
    );
    // Without a client certificate, the handshake or the first call fails.
    let refused = match Client::connect(&https, Some(tls(false))).await {
        Err(_) => true,
        Ok(c) => c.login("admin", ADMIN_PASSWORD).await.is_err(),
    };
    assert!(
        refused,
        "mutual TLS must refuse a client without a certificate"
    );
    // Plain text to a TLS port fails.
    let plain = match Client::connect(&server.addr, None).await {
        Err(_) => true,
        Ok(c) => c.login("admin", ADMIN_PASSWORD).await.is_err(),
    };
    assert!(plain);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_environment_metrics_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("chainlogd.toml");
    std::fs::write(&config, format!("metrics_listen = \"127.0.0.1:{metrics_port}\"\ntoken_ttl_secs = 3600\nlog = \"info\"\n")).unwrap();
    // The data directory comes from the environment, the rest from the file.
    let data = dir.path().join("from-env");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_chainlogd"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("CHAINLOG_DATA_DIR", &data)
        .env("CHAINLOG_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut body = String::new();
    for _ in 0..200 {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", metrics_port)) {
            s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .unwrap();
            s.read_to_string(&mut body).unwrap();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(
        body.contains("chainlog_database_tx_id{database=\"defaultdb\"} 0"),
        "{body}"
    );
    assert!(
        data.join("db/systemdb/segments").is_dir(),
        "CHAINLOG_DATA_DIR was used"
    );

    // Health: the standard service answers SERVING.
    let server = Server::start(&dir.path().join("data2"), &[]);
    let channel = tonic::transport::Endpoint::from_shared(server.addr.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let r = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // A bad config file is a clear error, not a start.
    std::fs::write(&config, "no_such_setting = 1\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chainlogd"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_setting"));
}

/// Replication over mutual TLS, both ways a database is copied: a replica database whose
/// replicator connects with the CA and a client certificate, and the external
/// `chainlog-replicator` with the same files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_and_the_external_replicator_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki();
    let f = p.write(dir.path());
    let (ca, ccert, ckey) = (&f.ca, &f.client_cert, &f.client_key);
    let password_file = write_file(dir.path(), "admin-password", ADMIN_PASSWORD);
    let primary = Server::start(&dir.path().join("p"), &f.server_args());
    let pport = primary.addr.rsplit(':').next().unwrap().to_string();
    let https = format!("https://localhost:{pport}");
    let replica = Server::start(&dir.path().join("r"), &[]);
    let state_file = dir.path().join("cli-state.json");
    // An in-process replicator over mutual TLS.
    let (code, out, err) = common::cli(
        &replica.addr,
        &state_file,
        &[
            "database",
            "create",
            "rdb",
            "--replication-is-replica",
            "--replication-primary-host",
            "localhost",
            "--replication-primary-port",
            &pport,
            "--replication-primary-username",
            "admin",
            "--replication-primary-password-file",
            &password_file,
            "--replication-primary-tls-ca",
            ca,
            "--replication-primary-tls-cert",
            ccert,
            "--replication-primary-tls-key",
            ckey,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    // A replica with no primary host, for the external replicator.
    let (code, out, err) = common::cli(
        &replica.addr,
        &state_file,
        &["database", "create", "copy", "--replication-is-replica"],
    );
    assert_eq!(code, 0, "{out}{err}");

    let tls = ClientTls {
        ca_pem: Some(p.ca_pem.clone().into_bytes()),
        identity_pem: Some((
            p.client.0.clone().into_bytes(),
            p.client.1.clone().into_bytes(),
        )),
        domain: None,
    };
    let pc = Client::connect(&https, Some(tls)).await.unwrap();
    pc.login("admin", ADMIN_PASSWORD).await.unwrap();
    for i in 0..200u32 {
        pc.set(
            "defaultdb",
            vec![(format!("k{i}").into_bytes(), b"over tls".to_vec())],
        )
        .await
        .unwrap();
    }
    let head = pc.current_state("defaultdb").await.unwrap();
    let rc = common::admin(&replica).await;
    let start = std::time::Instant::now();
    loop {
        let s = rc.current_state("rdb").await.unwrap();
        if s.tx_id == head.tx_id {
            assert_eq!(s.alh, head.alh);
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the TLS replica is at tx {} of {}",
            s.tx_id,
            head.tx_id
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chainlog-replicator"))
        .args(["--once", "--source-addr", &https, "--source-password-file"])
        .args([&password_file, "--source-tls-ca", ca, "--source-tls-cert"])
        .args([ccert, "--source-tls-key", ckey, "--target-addr"])
        .args([
            &replica.addr,
            "--target-db",
            "copy",
            "--target-password-file",
        ])
        .arg(&password_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = rc.current_state("copy").await.unwrap();
    assert_eq!(
        (s.tx_id, &s.alh, &s.uuid),
        (head.tx_id, &head.alh, &head.uuid)
    );
    // Without the client certificate the source refuses the copy.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chainlog-replicator"))
        .args(["--once", "--retries", "0", "--source-addr", &https])
        .args([
            "--source-password-file",
            &password_file,
            "--source-tls-ca",
            ca,
        ])
        .args(["--target-addr", &replica.addr, "--target-db", "copy"])
        .args(["--target-password-file", &password_file])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
