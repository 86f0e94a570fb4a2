//! The real `chainlogd` driven through the SDK: auth failures and the permission matrix,
//! every data call, verified calls, restart persistence, graceful shutdown under load.
#![allow(clippy::unwrap_used)]

mod common;

use chainlog::client::{Client, ClientError, VerifiedClient, VerifiedRead};
use chainlog::wire;
use common::{admin, Server, ADMIN_PASSWORD};
use tonic::Code;

fn code(e: ClientError) -> Code {
    match e {
        ClientError::Status(s) => s.code(),
        other => panic!("expected a status, got {other}"),
    }
}

/// The users and grants of the permission tests: database `app` (holding `k`), with
/// `reader`, `writer` and `owner` (read, readwrite, admin on it), `stranger` (nothing), each
/// logged in, and the admin.
struct Matrix {
    _dir: tempfile::TempDir,
    server: Server,
    admin: Client,
    reader: Client,
    writer: Client,
    owner: Client,
    stranger: Client,
}

async fn matrix() -> Matrix {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let admin = admin(&server).await;
    admin
        .databases()
        .create_database(wire::CreateDatabaseRequest {
            name: "app".into(),
            settings: None,
        })
        .await
        .unwrap();
    for (name, perm) in [
        ("reader", wire::Permission::Read),
        ("writer", wire::Permission::Readwrite),
        ("owner", wire::Permission::Admin),
    ] {
        admin
            .users()
            .create_user(wire::CreateUserRequest {
                name: name.into(),
                password: format!("{name}-password"),
                superuser: false,
            })
            .await
            .unwrap();
        admin
            .users()
            .grant(wire::GrantRequest {
                user: name.into(),
                database: "app".into(),
                permission: perm as i32,
            })
            .await
            .unwrap();
    }
    admin
        .users()
        .create_user(wire::CreateUserRequest {
            name: "stranger".into(),
            password: "stranger-password".into(),
            superuser: false,
        })
        .await
        .unwrap();
    admin
        .set("app", vec![(b"k".to_vec(), b"v".to_vec())])
        .await
        .unwrap();

    let login = |name: &'static str| {
        let addr = server.addr.clone();
        async move {
            let c = Client::connect(&addr, None).await.unwrap();
            c.login(name, &format!("{name}-password")).await.unwrap();
            c
        }
    };
    let (reader, writer, owner, stranger) = (
        login("reader").await,
        login("writer").await,
        login("owner").await,
        login("stranger").await,
    );
    Matrix {
        _dir: dir,
        server,
        admin,
        reader,
        writer,
        owner,
        stranger,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_user_wrong_password_and_no_token_are_unauthenticated_alike() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let anon = Client::connect(&server.addr, None).await.unwrap();
    // No token, wrong password, wrong user: UNAUTHENTICATED, without saying which.
    assert_eq!(
        code(anon.get("defaultdb", b"k").await.unwrap_err()),
        Code::Unauthenticated
    );
    let e = anon.login("admin", "nope").await.unwrap_err();
    let ClientError::Status(s1) = e else { panic!() };
    let e = anon.login("nobody", "nope").await.unwrap_err();
    let ClientError::Status(s2) = e else { panic!() };
    assert_eq!((s1.code(), s1.message()), (s2.code(), s2.message()));
    assert_eq!(s1.code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_needs_read_and_write_needs_readwrite() {
    let m = matrix().await;
    let Matrix {
        reader,
        writer,
        owner,
        stranger,
        ..
    } = &m;
    // Read: reader, writer, owner; not stranger.
    for c in [&reader, &writer, &owner] {
        assert_eq!(c.get("app", b"k").await.unwrap().unwrap().value, b"v");
    }
    assert_eq!(
        code(stranger.get("app", b"k").await.unwrap_err()),
        Code::PermissionDenied
    );
    // Write: writer, owner.
    assert_eq!(
        code(
            reader
                .set("app", vec![(b"k".to_vec(), b"x".to_vec())])
                .await
                .unwrap_err()
        ),
        Code::PermissionDenied
    );
    writer
        .set("app", vec![(b"k".to_vec(), b"w".to_vec())])
        .await
        .unwrap();
    owner
        .set("app", vec![(b"k".to_vec(), b"o".to_vec())])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_grants_need_admin_databases_and_users_a_superuser() {
    let m = matrix().await;
    let Matrix {
        writer,
        owner,
        stranger,
        ..
    } = &m;
    // Settings and grants: owner; creating databases and users: superuser only.
    let upd = |c: &Client| {
        let mut d = c.databases();
        async move {
            d.update_database(wire::UpdateDatabaseRequest {
                name: "app".into(),
                settings: None,
            })
            .await
        }
    };
    assert_eq!(
        upd(writer).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    upd(owner).await.unwrap();
    assert_eq!(
        owner
            .databases()
            .create_database(wire::CreateDatabaseRequest {
                name: "x".into(),
                settings: None
            })
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(
        owner
            .users()
            .create_user(wire::CreateUserRequest {
                name: "y".into(),
                password: "long-enough".into(),
                superuser: false
            })
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    owner
        .users()
        .grant(wire::GrantRequest {
            user: "stranger".into(),
            database: "app".into(),
            permission: wire::Permission::Read as i32,
        })
        .await
        .unwrap();
    assert!(stranger.get("app", b"k").await.unwrap().is_some());
    assert_eq!(
        writer
            .users()
            .revoke(wire::RevokeRequest {
                user: "stranger".into(),
                database: "app".into()
            })
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    owner
        .users()
        .revoke(wire::RevokeRequest {
            user: "stranger".into(),
            database: "app".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        code(stranger.get("app", b"k").await.unwrap_err()),
        Code::PermissionDenied
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_show_what_the_caller_may_see_and_logout_ends_the_session() {
    let m = matrix().await;
    let Matrix { reader, .. } = &m;
    // Lists show only what the caller may see.
    let seen = reader
        .databases()
        .list_databases(wire::ListDatabasesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        seen.databases
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>(),
        vec!["app"]
    );
    assert_eq!(
        reader
            .users()
            .list_users(wire::ListUsersRequest {})
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    // Logout ends the session.
    reader.logout().await.unwrap();
    assert_eq!(
        code(reader.get("app", b"k").await.unwrap_err()),
        Code::Unauthenticated
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_map_to_codes_and_no_password_is_stored_or_logged() {
    let m = matrix().await;
    let Matrix {
        _dir: dir,
        server,
        admin,
        ..
    } = &m;
    // Errors map to codes.
    assert_eq!(
        code(admin.get("nodb", b"k").await.unwrap_err()),
        Code::NotFound
    );
    assert_eq!(
        code(
            admin
                .set("app", vec![(Vec::new(), b"v".to_vec())])
                .await
                .unwrap_err()
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            admin
                .set("app", vec![(vec![1; 2000], b"v".to_vec())])
                .await
                .unwrap_err()
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        admin
            .databases()
            .create_database(wire::CreateDatabaseRequest {
                name: "app".into(),
                settings: None
            })
            .await
            .unwrap_err()
            .code(),
        Code::AlreadyExists
    );
    assert_eq!(
        admin
            .databases()
            .create_database(wire::CreateDatabaseRequest {
                name: "bad/name".into(),
                settings: None
            })
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        code(admin.tx("app", 999).await.unwrap_err()),
        Code::NotFound
    );
    // The first-start log names the password's source, never the password.
    assert!(!server.log().contains(ADMIN_PASSWORD));
    // Users are in the system database, as Argon2id hashes only.
    let mut system = Vec::new();
    for seg in std::fs::read_dir(dir.path().join("db/systemdb/segments")).unwrap() {
        system.extend(std::fs::read(seg.unwrap().path()).unwrap());
    }
    let system = String::from_utf8_lossy(&system);
    assert!(system.contains("$argon2id$"), "the hashes are in systemdb");
    assert!(!system.contains(ADMIN_PASSWORD) && !system.contains("reader-password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_data_call_and_the_verified_ones() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let c = admin(&server).await;
    let db = "defaultdb";
    let h1 = c
        .set(
            db,
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"p/x".to_vec(), b"x".to_vec()),
            ],
        )
        .await
        .unwrap();
    let h2 = c
        .set(
            db,
            vec![
                (b"a".to_vec(), b"2".to_vec()),
                (b"p/y".to_vec(), b"y".to_vec()),
            ],
        )
        .await
        .unwrap();
    assert_eq!((h1.id, h2.id), (1, 2));
    assert_eq!(c.get(db, b"a").await.unwrap().unwrap().value, b"2");
    let at1 = c
        .get_with(wire::GetRequest {
            database: db.into(),
            key: b"a".to_vec(),
            at_tx: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(at1.unwrap().value, b"1");
    // Waiting for a tx that comes later.
    let c2 = c.clone();
    let waiter = tokio::spawn(async move {
        c2.get_with(wire::GetRequest {
            database: "defaultdb".into(),
            key: b"late".to_vec(),
            since_tx: 3,
            wait_ms: 10_000,
            ..Default::default()
        })
        .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    c.set(db, vec![(b"late".to_vec(), b"arrived".to_vec())])
        .await
        .unwrap();
    assert_eq!(waiter.await.unwrap().unwrap().unwrap().value, b"arrived");
    let timed_out = c
        .get_with(wire::GetRequest {
            database: db.into(),
            key: b"a".to_vec(),
            since_tx: 99,
            wait_ms: 50,
            ..Default::default()
        })
        .await;
    assert_eq!(code(timed_out.unwrap_err()), Code::NotFound);

    c.delete(db, vec![b"a".to_vec()]).await.unwrap();
    assert_eq!(c.get(db, b"a").await.unwrap(), None);
    assert_eq!(
        code(c.delete(db, vec![b"a".to_vec()]).await.unwrap_err()),
        Code::NotFound
    );
    let hist = c
        .history(wire::HistoryRequest {
            database: db.into(),
            key: b"a".to_vec(),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        hist.iter().map(|e| (e.tx, e.deleted)).collect::<Vec<_>>(),
        vec![(1, false), (2, false), (4, true)]
    );
    let scan = c
        .scan(wire::ScanRequest {
            database: db.into(),
            prefix: b"p/".to_vec(),
            limit: 10,
            desc: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        scan.iter().map(|e| e.key.clone()).collect::<Vec<_>>(),
        vec![b"p/y".to_vec(), b"p/x".to_vec()]
    );
    let tx = c.tx(db, 2).await.unwrap();
    assert_eq!(tx.entries.len(), 2);

    // Verified: trust on first use, then every answer proven against the trusted state.
    let state_file = dir.path().join("client-state.json");
    let v = VerifiedClient::new(c.clone(), &state_file, None).unwrap();
    let e = v.get(db, b"p/x", 0).await.unwrap().value().unwrap();
    assert_eq!((e.value.as_slice(), e.tx), (&b"x"[..], 1));
    let first = v.trusted(db).await.unwrap();
    assert_eq!(first.tx_id, 4);
    // Absence is proven too: a key never written, and one as of a tx before it was written.
    assert_eq!(
        v.get(db, b"never", 0).await.unwrap(),
        VerifiedRead::Absent {
            at_tx: 4,
            state_tx: 4
        }
    );
    assert!(matches!(
        v.get(db, b"p/y", 1).await.unwrap(),
        VerifiedRead::Absent { at_tx: 1, .. }
    ));
    // "a" was deleted by tx 4: proven as the latest version, and its value as of tx 2.
    assert!(matches!(
        v.get(db, b"a", 0).await.unwrap(),
        VerifiedRead::Deleted {
            tx: 4,
            at_tx: 4,
            ..
        }
    ));
    let old = v.get(db, b"a", 3).await.unwrap().value().unwrap();
    assert_eq!((old.value.as_slice(), old.tx), (&b"2"[..], 2));
    let h = v
        .set(db, vec![(b"v".to_vec(), b"verified".to_vec())])
        .await
        .unwrap();
    assert_eq!(h.id, 5);
    c.set(db, vec![(b"more".to_vec(), b"m".to_vec())])
        .await
        .unwrap();
    let (th, entries) = v.tx(db, 2).await.unwrap();
    assert_eq!((th.id, entries.len()), (2, 2));
    assert_eq!(v.trusted(db).await.unwrap().tx_id, 6);
    // The state file survives the client.
    let again = VerifiedClient::new(c.clone(), &state_file, None).unwrap();
    assert_eq!(again.trusted(db).await.unwrap().tx_id, 6);
    let st = again.state(db).await.unwrap();
    assert_eq!(st.tx_id, 6);
    let cur = c.current_state(db).await.unwrap();
    assert_eq!(
        chainlog::integrity::Digest::from_hex(&st.alh)
            .unwrap()
            .0
            .to_vec(),
        cur.alh
    );
    let p = c
        .data()
        .consistency_proof(wire::ConsistencyProofRequest {
            database: db.into(),
            old_tx_id: 2,
            new_tx_id: 6,
        })
        .await
        .unwrap()
        .into_inner();
    let p: chainlog::integrity::StateProof = (&p).try_into().unwrap();
    p.verify(2, &p.old.alh(), 6, &p.new.alh()).unwrap();
    // A key that does not exist is proven absent, not a verification failure.
    assert!(matches!(
        v.get(db, b"nope", 0).await,
        Ok(VerifiedRead::Absent { at_tx: 6, .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_states_verify_with_the_server_key() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("signing.key");
    std::fs::write(&key_path, "11".repeat(32)).unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--signing-key", key_path.to_str().unwrap()],
    );
    let c = admin(&server).await;
    c.set("defaultdb", vec![(b"k".to_vec(), b"v".to_vec())])
        .await
        .unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[0x11; 32]).verifying_key();
    let v = VerifiedClient::new(c.clone(), dir.path().join("s.json"), Some(key)).unwrap();
    assert_eq!(
        v.get("defaultdb", b"k", 0)
            .await
            .unwrap()
            .value()
            .unwrap()
            .value,
        b"v"
    );
    let wrong = ed25519_dalek::SigningKey::from_bytes(&[0x22; 32]).verifying_key();
    let v = VerifiedClient::new(c, dir.path().join("s2.json"), Some(wrong)).unwrap();
    assert!(matches!(
        v.get("defaultdb", b"k", 0).await,
        Err(ClientError::Tamper(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_data_users_and_settings() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let c = admin(&server).await;
    c.databases()
        .create_database(wire::CreateDatabaseRequest {
            name: "kept".into(),
            settings: Some(wire::DatabaseSettings {
                checkpoint_txs: Some(7),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    c.users()
        .create_user(wire::CreateUserRequest {
            name: "ann".into(),
            password: "ann-password".into(),
            superuser: false,
        })
        .await
        .unwrap();
    for i in 0..20u32 {
        c.set(
            "kept",
            vec![(format!("k{i}").into_bytes(), i.to_le_bytes().to_vec())],
        )
        .await
        .unwrap();
    }
    let uuid = c.current_state("kept").await.unwrap().uuid;
    assert!(server.stop().success());

    let server = Server::start(dir.path(), &[]);
    let c = admin(&server).await;
    let st = c.current_state("kept").await.unwrap();
    assert_eq!((st.tx_id, st.uuid), (20, uuid));
    assert_eq!(
        c.get("kept", b"k19").await.unwrap().unwrap().value,
        19u32.to_le_bytes()
    );
    let dbs = c
        .databases()
        .list_databases(wire::ListDatabasesRequest {})
        .await
        .unwrap()
        .into_inner()
        .databases;
    let kept = dbs.iter().find(|d| d.name == "kept").unwrap();
    assert_eq!(kept.settings.as_ref().unwrap().checkpoint_txs, Some(7));
    let ann = Client::connect(&server.addr, None).await.unwrap();
    ann.login("ann", "ann-password").await.unwrap();
    // The admin password file exists only when the password was generated.
    assert!(!dir.path().join("admin-password").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_under_load_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let c = admin(&server).await;
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for t in 0..16 {
        let (c, acked) = (c.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let key = format!("t{t}-{i}").into_bytes();
                match c.set("defaultdb", vec![(key.clone(), b"v".to_vec())]).await {
                    Ok(_) => acked.lock().unwrap().push(key),
                    Err(_) => break,
                }
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let status = tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "only {} writes before shutdown",
        acked.len()
    );
    let server = Server::start(dir.path(), &[]);
    let c = admin(&server).await;
    for k in &acked {
        assert!(
            c.get("defaultdb", k).await.unwrap().is_some(),
            "acknowledged write {} lost",
            String::from_utf8_lossy(k)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_requests_get_errors_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let c = admin(&server).await;
    let big = vec![0u8; 33 << 20];
    assert_eq!(
        code(
            c.set("defaultdb", vec![(b"big".to_vec(), big)])
                .await
                .unwrap_err()
        ),
        Code::InvalidArgument
    );
    let bad = c
        .data()
        .verifiable_get(wire::VerifiableGetRequest {
            database: "defaultdb".into(),
            key: vec![],
            at_tx: 0,
            trusted_tx_id: 0,
            known_epoch: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    // 256 connections open at once: each is made, then all are asked at the same time, and
    // none is closed before every one has its answer.
    const CONNECTIONS: usize = 256;
    // (A task that fails still meets both barriers, so that the others do not wait forever.)
    let connected = std::sync::Arc::new(tokio::sync::Barrier::new(CONNECTIONS));
    let answered = std::sync::Arc::new(tokio::sync::Barrier::new(CONNECTIONS));
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let addr = server.addr.clone();
        let (connected, answered) = (connected.clone(), answered.clone());
        tasks.push(tokio::spawn(async move {
            let c = Client::connect(&addr, None).await;
            connected.wait().await;
            let outcome = match &c {
                Ok(c) => match c.get("defaultdb", b"x").await {
                    Err(ClientError::Status(s)) => format!("{:?}", s.code()),
                    other => format!("{other:?}"),
                },
                Err(e) => format!("no connection: {e}"),
            };
            answered.wait().await;
            outcome
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap(), "Unauthenticated", "connection {i}");
    }
    c.set("defaultdb", vec![(b"still".to_vec(), b"serving".to_vec())])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_empty_key_is_an_invalid_request_not_a_missing_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let c = admin(&server).await;
    let e = c.delete("defaultdb", vec![Vec::new()]).await.unwrap_err();
    assert_eq!(code(e), Code::InvalidArgument);
    let e = c
        .delete("defaultdb", vec![vec![1; 2000]])
        .await
        .unwrap_err();
    assert_eq!(code(e), Code::InvalidArgument);
    let e = c
        .delete("defaultdb", vec![b"absent".to_vec()])
        .await
        .unwrap_err();
    assert_eq!(code(e), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_racing_a_settings_update_never_meet_a_closed_database() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let c = admin(&server).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (c, stop) = (c.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    c.set(
                        "defaultdb",
                        vec![(format!("w{w}-{n}").into_bytes(), b"v".to_vec())],
                    )
                    .await
                    .unwrap_or_else(|e| panic!("a write racing an update failed: {e}"));
                    n += 1;
                }
                n
            })
        })
        .collect();
    // Each update of a storage setting reopens the ledger under the writers.
    for i in 0..6u64 {
        c.update_database(
            "defaultdb",
            wire::DatabaseSettings {
                segment_bytes_max: Some((2 + i % 2) << 20),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for w in writers {
        total += w.await.unwrap();
    }
    assert_eq!(c.current_state("defaultdb").await.unwrap().tx_id, total);
}
