//! `chainlog verify` checks every database of a data directory (or the one `--db` names),
//! reports every torn tail it finds, and with `--state-file` proves the copy consistent with
//! every state a client trusted: a copy rolled back or forked since fails (exit 3).
#![allow(clippy::unwrap_used)]

mod common;

use common::files::{flip, frame_of};
use common::{cli, free_port, Server};
use std::path::Path;

fn verify(data: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["verify", "--data-dir", data.to_str().unwrap()];
    args.extend_from_slice(extra);
    cli(
        "http://127.0.0.1:1",
        Path::new("/nonexistent/state.json"),
        &args,
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), t).unwrap();
        }
    }
}

#[test]
fn every_database_is_checked_and_the_damaged_one_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let st = dir.path().join("state.json");
    let server = Server::start(&data, &[]);
    let run = |args: &[&str]| cli(&server.addr, &st, args);
    assert_eq!(run(&["database", "create", "app"]).0, 0);
    for i in 0..5 {
        assert_eq!(run(&["set", &format!("k{i}"), "v"]).0, 0);
        assert_eq!(run(&["--db", "app", "set", &format!("k{i}"), "v"]).0, 0);
    }
    assert!(server.stop().success());
    let (code, out, err) = verify(&data, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("app: ok: 5 txs")
            && out.contains("defaultdb: ok: 5 txs")
            && out.contains("systemdb: ok"),
        "{out}"
    );
    // Damage in app, which is not the default database.
    let (seg, offset, len) = frame_of(&data.join("db/app"), 3);
    flip(&seg, offset + u64::from(len) - 2);
    let (code, out, err) = verify(&data, &[]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("app: DAMAGED") && err.contains("0000000001.seg"),
        "{err}"
    );
    assert!(out.contains("defaultdb: ok"), "{out}");
    let (code, _, _) = verify(&data, &["--db", "defaultdb"]);
    assert_eq!(code, 0);
    let (code, out, _) = verify(&data, &["--json"]);
    assert_eq!(code, 3);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(3));
}

#[test]
fn a_torn_tail_is_reported_in_text_output() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let st = dir.path().join("state.json");
    let server = Server::start(&data, &[]);
    for i in 0..3 {
        assert_eq!(cli(&server.addr, &st, &["set", &format!("k{i}"), "v"]).0, 0);
    }
    server.signal("KILL");
    drop(server);
    // A write that began in the free space after tx 3 and stopped inside its frame header.
    let db = data.join("db/defaultdb");
    let (seg, offset, len) = frame_of(&db, 3);
    let mut b = std::fs::read(&seg).unwrap();
    let end = (offset + u64::from(len)) as usize;
    assert!(
        b.len() > end + 12 && b[end..].iter().all(|x| *x == 0),
        "free space follows"
    );
    b[end..end + 6].copy_from_slice(&[9, 9, 9, 9, 9, 9]);
    std::fs::write(&seg, &b).unwrap();
    let (code, out, err) = verify(&data, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("torn tail") && out.contains(&format!("offset {end}")),
        "{out}"
    );
}

#[test]
fn a_copy_rolled_back_or_forked_since_a_client_trusted_it_fails() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let st = dir.path().join("state.json");
    let listen = format!("127.0.0.1:{}", free_port());
    let server = Server::start_at(&data, &listen, &[]);
    for i in 0..3 {
        assert_eq!(
            cli(&server.addr, &st, &["vset", &format!("k{i}"), "v"]).0,
            0
        );
    }
    assert!(server.stop().success());
    let old = dir.path().join("old");
    copy_dir(&data, &old);
    let server = Server::start_at(&data, &listen, &[]);
    for i in 3..5 {
        assert_eq!(
            cli(&server.addr, &st, &["vset", &format!("k{i}"), "v"]).0,
            0
        );
    }
    assert!(server.stop().success());
    let sf = st.to_str().unwrap();
    let (code, out, err) = verify(&data, &["--state-file", sf]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("1 trusted states are states of this log"),
        "{out}"
    );
    // The copy taken at tx 3: the client has since trusted tx 5.
    let (code, _, err) = verify(&old, &["--state-file", sf]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("rolled back"), "{err}");
    // The old copy, written on: txs 4 and 5 differ from what the client trusted.
    let server = Server::start(&old, &[]);
    for i in 3..5 {
        assert_eq!(
            cli(
                &server.addr,
                &dir.path().join("other.json"),
                &["set", &format!("k{i}"), "forked"]
            )
            .0,
            0
        );
    }
    assert!(server.stop().success());
    let (code, _, err) = verify(&old, &["--state-file", sf]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("forked"), "{err}");
}
