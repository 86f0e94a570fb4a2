//! The CLI as people and scripts use it against real servers: `chainlog login` keeps a
//! session (file 0600) that later commands use without the password until `logout` revokes
//! it; mutual TLS with --tls-cert/--tls-key; and connection failures that say what failed
//! (refused, no TLS, a client certificate required, a silent server) instead of hanging or
//! answering "transport error".
#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, ADMIN_PASSWORD};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs the CLI with `args` and `password` (none: no password anywhere).
fn run(args: &[&str], password: Option<&str>) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chainlog"));
    c.args(args)
        .env_remove("CHAINLOG_PASSWORD")
        .env_remove("CHAINLOG_USER")
        .env_remove("CHAINLOG_DB")
        .env_remove("CHAINLOG_ADDR");
    if let Some(p) = password {
        c.env("CHAINLOG_PASSWORD", p);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn a_login_session_replaces_the_password_until_logout() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let sessions = dir.path().join("session.json");
    let base = ["--addr", &server.addr, "--session-file", p(&sessions)];
    let with = |more: &[&str]| -> Vec<String> {
        base.iter().chain(more).map(ToString::to_string).collect()
    };

    let (c, out, err) = run_v(&(with(&["login"])), Some(ADMIN_PASSWORD));
    assert_eq!(c, 0, "{out}{err}");
    assert!(out.contains("logged in"), "{out}");
    let mode = std::fs::metadata(&sessions).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&sessions).unwrap();
    assert!(
        !text.contains(ADMIN_PASSWORD),
        "the session file holds no password"
    );
    // No password anywhere: the session does it.
    let (c, out, err) = run_v(&(with(&["set", "k", "v"])), None);
    assert_eq!(c, 0, "{out}{err}");
    let (c, out, err) = run_v(&(with(&["get", "k"])), None);
    assert_eq!(c, 0, "{out}{err}");
    assert!(out.contains('v'), "{out}");
    // Logout revokes it on the server as well: the token no longer works.
    let token = serde_json::from_str::<serde_json::Value>(&text).unwrap()["sessions"]
        [format!("{} admin", server.addr)]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (c, out, err) = run_v(&(with(&["logout"])), None);
    assert_eq!(c, 0, "{out}{err}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = chainlog::client::Client::connect(&server.addr, None)
            .await
            .unwrap();
        c.use_token(token);
        assert!(
            c.list_databases().await.is_err(),
            "the revoked token still works"
        );
    });
    let (c, _, err) = run_v(&(with(&["get", "k"])), None);
    assert_eq!(c, 1);
    assert!(err.contains("chainlog login"), "{err}");

    // A session the server ended (a password change ends them) is reported as such.
    let (c, out, err) = run_v(&(with(&["login"])), Some(ADMIN_PASSWORD));
    assert_eq!(c, 0, "{out}{err}");
    let (c, out, err) = run_v(
        &with(&[
            "user",
            "passwd",
            "admin",
            "--new-password",
            "another-long-password",
        ]),
        None,
    );
    assert_eq!(c, 0, "{out}{err}");
    let (c, _, err) = run_v(&(with(&["get", "k"])), None);
    assert_eq!(c, 1);
    assert!(err.contains("no longer valid"), "{err}");
}

struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki(dir: &Path) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let write = |name: &str, body: &str| {
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        path.to_str().unwrap().to_string()
    };
    let leaf = |name: &str, names: Vec<String>| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (
            write(&format!("{name}.pem"), &cert.pem()),
            write(&format!("{name}.key"), &key.serialize_pem()),
        )
    };
    let server = leaf("server", vec!["localhost".into(), "127.0.0.1".into()]);
    let client = leaf("client", vec!["client".into()]);
    Pki {
        ca: write("ca.pem", &ca.pem()),
        server,
        client,
    }
}

#[test]
fn mutual_tls_and_connection_failures_that_say_what_failed() {
    let dir = tempfile::tempdir().unwrap();
    let k = pki(dir.path());
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--tls-cert",
            &k.server.0,
            "--tls-key",
            &k.server.1,
            "--tls-client-ca",
            &k.ca,
        ],
    );
    let https = server.addr.replace("http://", "https://");
    let state = dir.path().join("state.json");
    let common = [
        "--addr",
        &https,
        "--state-file",
        p(&state),
        "--tls-ca",
        &k.ca,
    ];
    let mtls: Vec<&str> = common
        .iter()
        .copied()
        .chain(["--tls-cert", &k.client.0, "--tls-key", &k.client.1])
        .collect();
    let (c, out, err) = run(
        &[&mtls[..], &["vset", "k", "over mutual tls"]].concat(),
        Some(ADMIN_PASSWORD),
    );
    assert_eq!(c, 0, "{out}{err}");
    let (c, out, err) = run(&[&mtls[..], &["vget", "k"]].concat(), Some(ADMIN_PASSWORD));
    assert_eq!(c, 0, "{out}{err}");
    assert!(out.contains("over mutual tls"), "{out}");

    // Without the client certificate.
    let (c, _, err) = run(&[&common[..], &["get", "k"]].concat(), Some(ADMIN_PASSWORD));
    assert_eq!(c, 1);
    assert!(err.contains("client certificate"), "{err}");
    assert!(!err.trim_end().ends_with("transport error"), "{err}");
    // Plain text to the TLS port.
    let (c, _, err) = run(&["--addr", &server.addr, "get", "k"], Some(ADMIN_PASSWORD));
    assert_eq!(c, 1);
    assert!(err.contains("TLS") || err.contains("https"), "{err}");
    // TLS with a CA that did not sign the server's certificate.
    let other = tempfile::tempdir().unwrap();
    let wrong = pki(other.path());
    let (c, _, err) = run(
        &[
            "--addr",
            &https,
            "--tls-ca",
            &wrong.ca,
            "--tls-cert",
            &k.client.0,
            "--tls-key",
            &k.client.1,
            "get",
            "k",
        ],
        Some(ADMIN_PASSWORD),
    );
    assert_eq!(c, 1);
    assert!(err.contains("not signed by a CA"), "{err}");
    // Nothing listening.
    let port = common::free_port();
    let (c, _, err) = run(
        &["--addr", &format!("http://127.0.0.1:{port}"), "get", "k"],
        Some(ADMIN_PASSWORD),
    );
    assert_eq!(c, 1);
    assert!(err.contains("connection refused"), "{err}");
    // A server that accepts and never answers: the command ends, and says so.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", silent.local_addr().unwrap());
    let start = Instant::now();
    let (c, _, err) = run(
        &[
            "--addr",
            &addr,
            "--connect-timeout",
            "1",
            "--timeout",
            "2",
            "get",
            "k",
        ],
        Some(ADMIN_PASSWORD),
    );
    assert_eq!(c, 1);
    assert!(start.elapsed() < Duration::from_secs(15), "it hung");
    assert!(err.contains("in time") || err.contains("within"), "{err}");
    drop(silent);
}

fn run_v(args: &[String], password: Option<&str>) -> (i32, String, String) {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&a, password)
}
