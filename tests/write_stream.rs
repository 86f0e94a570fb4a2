//! WriteStream with the real binaries: thousands of writes pipelined on one stream commit in
//! the order sent, each answered in order; a refused write is answered for itself and the
//! stream goes on; a permission revoked mid-stream refuses the writes after it; every write
//! answered before a kill -9 is there after the restart; the verified form checks every
//! answer and catches one changed by a man in the middle; `chainlog import` loads JSON lines
//! and CSV through it and reports bad lines by number.
#![allow(clippy::unwrap_used)]

mod common;

use chainlog::client::{Client, ClientError, Put, VerifiedClient};
use chainlog::wire;
use common::{cli, mitm, Server, ADMIN_PASSWORD};
use std::path::Path;

fn put(k: String, v: String) -> Vec<Put> {
    vec![Put::new(k.into_bytes(), v.into_bytes())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_writes_commit_in_order_and_a_refused_one_stays_alone() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let admin = common::admin(&server).await;
    let mut ws = admin.write_stream("defaultdb").await.unwrap();
    let mut pending = Vec::new();
    for i in 0..2000u32 {
        // Write 700 is refused (an empty key); the others go on.
        let entries = if i == 700 {
            put(String::new(), "x".into())
        } else {
            put(format!("k{i}"), format!("v{i}"))
        };
        pending.push(ws.send(entries).await.unwrap());
    }
    drop(ws);
    let mut ids = Vec::new();
    for (i, p) in pending.into_iter().enumerate() {
        match p.header().await {
            Ok(h) => ids.push(h.id),
            Err(ClientError::Status(s)) if i == 700 => {
                assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}")
            }
            Err(e) => panic!("write {i}: {e}"),
        }
    }
    assert_eq!(
        ids,
        (1..=1999).collect::<Vec<u64>>(),
        "consecutive, in the order sent"
    );
    assert_eq!(
        admin
            .get("defaultdb", b"k1999")
            .await
            .unwrap()
            .unwrap()
            .value,
        b"v1999"
    );

    // A user whose right to write is revoked mid-stream: the writes after it are refused.
    admin
        .create_user("ann", "ann's long password", false)
        .await
        .unwrap();
    admin
        .grant("ann", "defaultdb", wire::Permission::Readwrite)
        .await
        .unwrap();
    let ann = Client::connect(&server.addr, None).await.unwrap();
    ann.login("ann", "ann's long password").await.unwrap();
    let mut ws = ann.write_stream("defaultdb").await.unwrap();
    let p = ws.send(put("ann1".into(), "x".into())).await.unwrap();
    p.header().await.unwrap();
    admin.revoke("ann", "defaultdb").await.unwrap();
    let p = ws.send(put("ann2".into(), "x".into())).await.unwrap();
    match p.header().await {
        Err(ClientError::Status(s)) => assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}"),
        other => panic!("a write after the revocation: {other:?}"),
    }
    assert!(admin.get("defaultdb", b"ann2").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_answered_before_a_kill_9_survives_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let server = Server::start_at(&data, &listen, &[]);
    let admin = common::admin(&server).await;
    let mut ws = admin.write_stream("defaultdb").await.unwrap();
    let mut answered = Vec::new();
    let mut in_flight = std::collections::VecDeque::new();
    for i in 0..20_000u32 {
        in_flight.push_back((
            i,
            ws.send(put(format!("k{i}"), format!("v{i}")))
                .await
                .unwrap(),
        ));
        if in_flight.len() >= 500 {
            let (i, p) = in_flight.pop_front().unwrap();
            answered.push((i, p.header().await.unwrap().id));
        }
        if answered.len() == 3000 {
            // Writes are in flight, some in the writer's hands: kill it there.
            server.signal("KILL");
            break;
        }
    }
    drop(ws);
    drop(in_flight);
    let mut server = server;
    server.wait_exit(std::time::Duration::from_secs(10));
    let server = Server::start_at(&data, &listen, &[]);
    let admin = common::admin(&server).await;
    for (i, id) in &answered {
        let e = admin
            .get("defaultdb", format!("k{i}").as_bytes())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("write {i} (tx {id}) answered before the kill is gone"));
        assert_eq!(e.tx, *id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_streams_check_every_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let m = mitm::start(&server.addr).await;
    let connect = |addr: String| async move {
        let c = Client::connect(&addr, None).await.unwrap();
        c.login("admin", ADMIN_PASSWORD).await.unwrap();
        c
    };
    let state = dir.path().join("state.json");
    let v = VerifiedClient::new(connect(m.addr.clone()).await, &state, None).unwrap();
    let txs: Vec<Vec<Put>> = (0..500)
        .map(|i| put(format!("k{i}"), format!("v{i}")))
        .collect();
    let written = v.write_all("defaultdb", txs).await.unwrap();
    assert_eq!(written.len(), 500);
    assert!(written.iter().all(Result::is_ok));
    assert_eq!(v.state("defaultdb").await.unwrap().tx_id, 500);
    let saved = chainlog::client::read_trusted_states(&state).unwrap();
    assert!(
        saved.iter().any(|(_, t)| t.tx_id == 500),
        "saved once at the end: {saved:?}"
    );

    // An answer whose tx is not the one written: its header's entries root changed.
    let mut n = 0;
    mitm::set(
        &m.hooks.write_answers,
        move |a: &mut wire::WriteResponse| {
            n += 1;
            if n == 7 {
                if let Some(vt) = a.verifiable.as_mut() {
                    if let Some(h) = vt.tx.as_mut().and_then(|t| t.header.as_mut()) {
                        h.entries_root[0] ^= 1;
                    }
                }
            }
        },
    );
    let txs: Vec<Vec<Put>> = (0..20).map(|i| put(format!("t{i}"), "x".into())).collect();
    match v.write_all("defaultdb", txs).await {
        Err(ClientError::Tamper(_)) => {}
        other => panic!("a changed answer: {other:?}"),
    }
}

fn run(addr: &str, state: &Path, args: &[&str]) -> (i32, String, String) {
    cli(addr, state, args)
}

#[test]
fn import_loads_json_lines_and_csv_and_names_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let st = dir.path().join("state.json");
    let jl = dir.path().join("in.jsonl");
    let mut text = String::new();
    for i in 0..3000 {
        text.push_str(&format!("{{\"key\": \"j{i}\", \"value\": \"v{i}\"}}\n"));
    }
    text.push_str("not json\n{\"key_hex\": \"00ff\", \"value\": \"binary key\"}\n");
    std::fs::write(&jl, text).unwrap();
    let (c, out, err) = run(
        &server.addr,
        &st,
        &["--json", "import", jl.to_str().unwrap()],
    );
    assert_eq!(c, 1, "one bad line: {out}{err}");
    assert!(err.contains("\"line\":3001"), "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["txs"], 3001, "{v}");
    assert_eq!(v["failed"], 1, "{v}");
    let (c, out, _) = run(&server.addr, &st, &["--key-hex", "get", "00ff"]);
    assert_eq!(c, 0);
    assert!(out.starts_with("binary key"), "{out}");

    let csv = dir.path().join("in.csv");
    std::fs::write(&csv, "a,1\n\"b,2\",\"say \"\"hi\"\"\"\nc,3\n").unwrap();
    let (c, out, err) = run(
        &server.addr,
        &st,
        &[
            "--json",
            "import",
            csv.to_str().unwrap(),
            "--format",
            "csv",
            "--batch",
            "2",
        ],
    );
    assert_eq!(c, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (v["txs"].as_u64(), v["entries"].as_u64()),
        (Some(2), Some(3)),
        "{v}"
    );
    let (_, out, _) = run(&server.addr, &st, &["get", "b,2"]);
    assert!(out.starts_with("say \"hi\""), "{out}");

    // Verified: every write proven, the trusted state saved at the end.
    let (c, out, err) = run(
        &server.addr,
        &st,
        &[
            "--json",
            "import",
            csv.to_str().unwrap(),
            "--format",
            "csv",
            "--verify",
        ],
    );
    assert_eq!(c, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["txs"], 3, "{v}");
    let last = v["last_tx_id"].as_u64().unwrap();
    let saved = chainlog::client::read_trusted_states(&st).unwrap();
    assert!(saved.values().any(|t| t.tx_id == last), "{saved:?}");
}
