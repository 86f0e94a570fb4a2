//! A data directory laid out as servers before the system database kept it (`users.json`,
//! `catalog.json`) is moved into `systemdb` at the first start: every user, password,
//! permission, database, identity and setting is kept, the replication password goes to
//! `secrets.json` (0600) and never into the system database, the old files are gone, and a
//! second start finds the same.
#![allow(clippy::unwrap_used)]

mod common;

use argon2::password_hash::{PasswordHasher, SaltString};
use chainlog::ledger::{Ledger, NewEntry, Options};
use common::{Server, ADMIN_PASSWORD};
use std::path::Path;

fn phc(password: &str) -> String {
    let salt = SaltString::encode_b64(b"sixteen byte slt").unwrap();
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

/// A database directory with `n` txs and the given identity.
fn database(data: &Path, name: &str, uuid: &str, n: u32) {
    let dir = data.join("db").join(name);
    let l = Ledger::open(&dir, Options::default()).unwrap();
    for i in 0..n {
        l.commit(vec![NewEntry::put(format!("k{i}"), format!("{name}-{i}"))])
            .unwrap();
    }
    l.close().unwrap();
    std::fs::write(dir.join("IDENTITY"), format!("{uuid}\n")).unwrap();
}

fn legacy_data_dir(data: &Path) {
    std::fs::create_dir_all(data.join("db")).unwrap();
    database(data, "defaultdb", "11111111-1111-4111-8111-111111111111", 3);
    database(data, "app", "22222222-2222-4222-8222-222222222222", 5);
    database(data, "mirror", "33333333-3333-4333-8333-333333333333", 0);
    let users = serde_json::json!({
        "admin": {"password": phc(ADMIN_PASSWORD), "superuser": true, "grants": {}},
        "ann": {"password": phc("ann-password"), "superuser": false, "grants": {"app": "readwrite"}},
    });
    std::fs::write(data.join("users.json"), users.to_string()).unwrap();
    let catalog = serde_json::json!({
        "defaultdb": {"uuid": "11111111-1111-4111-8111-111111111111", "settings": {}},
        "app": {"uuid": "22222222-2222-4222-8222-222222222222", "settings": {"buffered": true}},
        "mirror": {"uuid": "33333333-3333-4333-8333-333333333333", "settings": {"replication": {
            "is_replica": true, "primary_host": "127.0.0.1", "primary_port": 9,
            "primary_username": "admin", "primary_password": "the-mirror-secret"}}},
    });
    std::fs::write(data.join("catalog.json"), catalog.to_string()).unwrap();
}

async fn check(server: &Server) {
    let admin = common::admin(server).await;
    let mut listed: Vec<(String, String)> = admin
        .list_databases()
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.name, i.uuid))
        .collect();
    listed.retain(|(n, _)| n != "systemdb");
    assert_eq!(
        listed,
        [
            ("app".into(), "22222222-2222-4222-8222-222222222222".into()),
            (
                "defaultdb".into(),
                "11111111-1111-4111-8111-111111111111".into()
            ),
            (
                "mirror".into(),
                "33333333-3333-4333-8333-333333333333".into()
            ),
        ]
    );
    let info = admin.list_databases().await.unwrap();
    let app = info.iter().find(|i| i.name == "app").unwrap();
    assert_eq!(
        app.settings.as_ref().unwrap().durability,
        Some(chainlog::wire::Durability::Buffered as i32)
    );
    let mirror = info.iter().find(|i| i.name == "mirror").unwrap();
    let r = mirror
        .settings
        .as_ref()
        .unwrap()
        .replication
        .as_ref()
        .unwrap();
    assert_eq!(r.is_replica, Some(true));
    assert!(r.primary_password_set, "the password was kept");
    assert!(admin.current_state("app").await.unwrap().tx_id >= 5);
    // ann keeps her password and her grant, and nothing more.
    let ann = chainlog::client::Client::connect(&server.addr, None)
        .await
        .unwrap();
    ann.login("ann", "ann-password").await.unwrap();
    assert_eq!(
        ann.get("app", b"k4").await.unwrap().unwrap().value,
        b"app-4"
    );
    ann.set("app", vec![(b"by-ann".to_vec(), b"v".to_vec())])
        .await
        .unwrap();
    assert!(ann.get("defaultdb", b"k0").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_permissions_and_databases_move_into_systemdb() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    legacy_data_dir(&data);
    let server = Server::start(&data, &[]);
    check(&server).await;
    assert!(!data.join("users.json").exists() && !data.join("catalog.json").exists());
    let secrets = std::fs::read_to_string(data.join("secrets.json")).unwrap();
    assert!(secrets.contains("the-mirror-secret"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("secrets.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(server.stop().success());
    let mut system = Vec::new();
    for seg in std::fs::read_dir(data.join("db/systemdb/segments")).unwrap() {
        system.extend(std::fs::read(seg.unwrap().path()).unwrap());
    }
    let system = String::from_utf8_lossy(&system);
    assert!(system.contains("user/ann") && system.contains("database/mirror"));
    assert!(
        !system.contains("the-mirror-secret"),
        "no secret in systemdb"
    );
    // The second start finds the same, from the system database alone.
    let server = Server::start(&data, &[]);
    check(&server).await;
    // The system database is verified offline like any database.
    drop(server);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chainlog"))
        .args(["verify", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("systemdb: ok") && text.contains("app: ok"),
        "{text}"
    );
}

/// The system database is written by the server alone, and a data directory that lost it is
/// refused rather than started empty (every user and database would be forgotten).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemdb_is_the_servers_alone_and_never_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let admin = common::admin(&server).await;
    let e = admin
        .set("systemdb", vec![(b"user/mallory".to_vec(), b"{}".to_vec())])
        .await
        .unwrap_err();
    let chainlog::client::ClientError::Status(s) = e else {
        panic!("{e}")
    };
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s}");
    // Readable by a superuser, and its records are the users.
    assert!(admin
        .get("systemdb", b"user/admin")
        .await
        .unwrap()
        .is_some());
    assert!(server.stop().success());
    std::fs::remove_dir_all(data.join("db/systemdb")).unwrap();
    let out = std::process::Command::new(common::launcher::chainlogd_bin())
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("CHAINLOG_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("system database is missing"), "{err}");
    assert!(!data.join("db/systemdb").exists(), "nothing was recreated");
}
