//! References (SetReference) and sorted sets (ZAdd, ZScan) with the real binaries: a read of
//! a reference gives its target's version (the latest, or the one it is bound to), verified
//! reads prove both the reference and the target, bad targets are refused with nothing
//! written, ExecAll mixes a reference with puts in one tx; sorted sets scan by score (bounds,
//! descending, pages, bound members); a verified ZAdd or SetReference answered with a
//! proof of another tx is caught.
#![allow(clippy::unwrap_used)]

mod common;

use chainlog::client::ClientError;
use chainlog::wire::{self, Reason};
use common::{mitm, Server};

use common::json;

use common::cli_async as run;

fn ok((c, out, err): (i32, String, String), what: &str) -> String {
    assert_eq!(c, 0, "{what}: {out}{err}");
    out
}

fn refused((c, out, err): (i32, String, String), what: &str) -> serde_json::Value {
    assert_eq!(c, 1, "{what}: {out}{err}");
    json(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_follow_their_target_verified_and_refuse_bad_targets() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let st = dir.path().join("state.json");
    let a = &server.addr;
    ok(run(a, &st, &["set", "config", "v1"]).await, "tx 1");
    ok(run(a, &st, &["set", "config", "v2"]).await, "tx 2");
    ok(
        run(a, &st, &["reference", "latest", "config"]).await,
        "tx 3",
    );
    let v = json(&ok(
        run(
            a,
            &st,
            &[
                "--json",
                "reference",
                "--verify",
                "pinned",
                "config",
                "--at-tx",
                "1",
            ],
        )
        .await,
        "tx 4",
    ));
    assert_eq!(v["verified"], true, "{v}");

    // Plain reads follow the reference.
    let v = json(&ok(
        run(a, &st, &["--json", "get", "latest"]).await,
        "get latest",
    ));
    assert_eq!(v["key"], "config", "{v}");
    assert_eq!(v["value"], "v2", "{v}");
    assert_eq!(v["referenced_by"]["key"], "latest", "{v}");
    assert_eq!(v["referenced_by"]["tx_id"], 3, "{v}");
    let v = json(&ok(
        run(a, &st, &["--json", "get", "pinned"]).await,
        "get pinned",
    ));
    assert_eq!(v["value"], "v1", "bound to tx 1: {v}");

    // A new version of the target: the unbound reference follows it, the bound one stays.
    ok(run(a, &st, &["set", "config", "v3"]).await, "tx 5");
    let out = ok(run(a, &st, &["vget", "latest"]).await, "vget latest");
    assert!(out.starts_with("v3\t"), "{out}");
    assert!(
        out.contains("through reference latest -> config (tx 3, verified)"),
        "{out}"
    );
    let v = json(&ok(
        run(a, &st, &["--json", "vget", "pinned"]).await,
        "vget pinned",
    ));
    assert_eq!(v["value"], "v1", "{v}");
    assert_eq!(v["tx_id"], 1, "{v}");
    assert_eq!(v["referenced_by"]["bound_tx_id"], 1, "{v}");
    // As of tx 3, the unbound reference saw v2.
    let out = ok(
        run(a, &st, &["vget", "latest", "--at-tx", "3"]).await,
        "vget as of 3",
    );
    assert!(out.starts_with("v2\t"), "{out}");
    let v = json(&ok(
        run(
            a,
            &st,
            &["--json", "get-all", "--verify", "latest", "pinned"],
        )
        .await,
        "get-all --verify",
    ));
    assert_eq!(
        (v[0]["value"].clone(), v[1]["value"].clone()),
        ("v3".into(), "v1".into())
    );
    // History shows the reference itself.
    let v = json(&ok(
        run(a, &st, &["--json", "history", "latest"]).await,
        "history",
    ));
    assert_eq!(v[0]["reference"]["referenced_key"], "config", "{v}");

    // Bad targets: refused, typed, nothing written.
    let before = common::admin(&server)
        .await
        .current_state("defaultdb")
        .await
        .unwrap()
        .tx_id;
    for (args, what) in [
        (
            &["--json", "reference", "r", "nope"][..],
            "a target with no value",
        ),
        (
            &["--json", "reference", "r", "latest"][..],
            "a reference to a reference",
        ),
        (
            &["--json", "reference", "r", "config", "--at-tx", "99"][..],
            "a tx not yet written",
        ),
    ] {
        let v = refused(run(a, &st, args).await, what);
        assert_eq!(v["error"]["reason"], "precondition_failed", "{what}: {v}");
    }
    let (c, _, _) = run(a, &st, &["reference", "config", "config"]).await;
    assert_eq!(c, 1, "a key referencing itself");
    let admin = common::admin(&server).await;
    assert_eq!(
        admin.current_state("defaultdb").await.unwrap().tx_id,
        before
    );

    // ExecAll: a put and a reference in one tx.
    let h = admin
        .exec_all(
            "defaultdb",
            vec![
                wire::Op {
                    op: Some(wire::op::Op::Kv(wire::KeyValue {
                        key: b"other".to_vec(),
                        value: b"x".to_vec(),
                        metadata: None,
                    })),
                },
                wire::Op {
                    op: Some(wire::op::Op::Ref(chainlog::client::reference_request(
                        "", b"alias", b"config", 0,
                    ))),
                },
            ],
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(h.entry_count, 2);
    let e = admin.get("defaultdb", b"alias").await.unwrap().unwrap();
    assert_eq!(e.value, b"v3");
    // A deleted target: the reference reads as absent.
    admin
        .delete("defaultdb", vec![b"config".to_vec()])
        .await
        .unwrap();
    let r = admin.get("defaultdb", b"alias").await;
    assert!(matches!(r, Ok(None)), "{r:?}");
    let (c, out, _) = run(a, &st, &["vget", "latest"]).await;
    assert_eq!(c, 1, "{out}");
    assert!(out.contains("deleted by tx"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sorted_sets_scan_by_score_and_verify_what_was_added() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let st = dir.path().join("state.json");
    let a = &server.addr;
    ok(
        run(a, &st, &["set", "ann", "a1", "bob", "b1", "cy", "c1"]).await,
        "tx 1",
    );
    ok(
        run(a, &st, &["zadd", "board", "10", "ann"]).await,
        "zadd ann",
    );
    ok(
        run(a, &st, &["zadd", "board", "--", "-3", "bob"]).await,
        "zadd bob",
    );
    ok(
        run(a, &st, &["zadd", "--verify", "board", "42.5", "cy"]).await,
        "zadd cy",
    );
    ok(
        run(a, &st, &["zadd", "other", "1", "ann"]).await,
        "another set",
    );
    ok(run(a, &st, &["set", "ann", "a2"]).await, "ann's new value");
    ok(
        run(a, &st, &["zadd", "board", "7", "ann", "--at-tx", "1"]).await,
        "ann bound",
    );

    let scan = |args: &'static [&'static str]| {
        let st = st.clone();
        async move {
            let mut v = vec!["--json", "zscan", "board"];
            v.extend_from_slice(args);
            json(&ok(run(a, &st, &v).await, "zscan"))
        }
    };
    let row = |v: &serde_json::Value, i: usize| {
        (
            v["entries"][i]["key"].as_str().unwrap().to_string(),
            v["entries"][i]["score"].as_f64().unwrap(),
            v["entries"][i]["entry"]["value"]
                .as_str()
                .unwrap()
                .to_string(),
        )
    };
    let v = scan(&[]).await;
    assert_eq!(v["entries"].as_array().unwrap().len(), 4, "{v}");
    assert_eq!(row(&v, 0), ("bob".into(), -3.0, "b1".into()));
    assert_eq!(
        row(&v, 1),
        ("ann".into(), 7.0, "a1".into()),
        "bound to tx 1"
    );
    assert_eq!(
        row(&v, 2),
        ("ann".into(), 10.0, "a2".into()),
        "unbound: latest"
    );
    assert_eq!(row(&v, 3), ("cy".into(), 42.5, "c1".into()));
    let v = scan(&["--min", "0", "--max", "10"]).await;
    let keys: Vec<f64> = (0..v["entries"].as_array().unwrap().len())
        .map(|i| row(&v, i).1)
        .collect();
    assert_eq!(keys, vec![7.0, 10.0], "{v}");
    let v = scan(&["--desc", "--limit", "2"]).await;
    assert_eq!((row(&v, 0).1, row(&v, 1).1), (42.5, 10.0), "{v}");
    let v = scan(&["--desc", "--max", "9.5", "--min", "-5"]).await;
    assert_eq!((row(&v, 0).1, row(&v, 1).1), (7.0, -3.0), "{v}");
    // Pages: one at a time, each after the last cursor.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut args = vec!["--json", "zscan", "board", "--limit", "1"];
        let cursor;
        if let Some(c) = &after {
            cursor = c.clone();
            args.extend_from_slice(&["--after", &cursor]);
        }
        let v = json(&ok(run(a, &st, &args).await, "page"));
        let Some(e) = v["entries"].as_array().unwrap().first() else {
            break;
        };
        seen.push(e["score"].as_f64().unwrap());
        after = Some(e["cursor"].as_str().unwrap().to_string());
    }
    assert_eq!(seen, vec![-3.0, 7.0, 10.0, 42.5]);
    // As of the tx before cy joined.
    let v = scan(&["--at-tx", "3"]).await;
    assert_eq!(v["entries"].as_array().unwrap().len(), 2, "{v}");

    // Refused: a member with no value, a NaN score; nothing written.
    let admin = common::admin(&server).await;
    let before = admin.current_state("defaultdb").await.unwrap().tx_id;
    let v = refused(
        run(a, &st, &["--json", "zadd", "board", "1", "nobody"]).await,
        "no value",
    );
    assert_eq!(v["error"]["reason"], "precondition_failed", "{v}");
    let r = admin.zadd("defaultdb", b"board", f64::NAN, b"ann", 0).await;
    assert!(
        matches!(&r, Err(ClientError::Status(s)) if s.code() == tonic::Code::InvalidArgument),
        "{r:?}"
    );
    let (c, _, _) = run(a, &st, &["zadd", "--verify", "board", "NaN", "ann"]).await;
    assert_ne!(c, 0);
    assert_eq!(
        admin.current_state("defaultdb").await.unwrap().tx_id,
        before
    );
    // A member key written directly through Set must be of the canonical form.
    let r = admin
        .set(
            "defaultdb",
            vec![(b"\0chainlog/z/junk".to_vec(), Vec::new())],
        )
        .await;
    assert!(
        matches!(&r, Err(ClientError::Status(s)) if s.code() == tonic::Code::InvalidArgument),
        "{r:?}"
    );
    // Scans and counts of user keys leave the sets' own keys out; the reserved prefix lists
    // them.
    let keys = admin
        .scan(wire::ScanRequest {
            database: "defaultdb".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let names: Vec<&[u8]> = keys.iter().map(|e| e.key.as_slice()).collect();
    assert_eq!(names, vec![&b"ann"[..], b"bob", b"cy"]);
    let v = json(&ok(run(a, &st, &["--json", "count"]).await, "count"));
    assert_eq!(v["count"], 3, "{v}");
    let v = json(&ok(
        run(
            a,
            &st,
            &["--json", "--key-hex", "count", "00636861696e6c6f672f"],
        )
        .await,
        "count of the reserved prefix",
    ));
    assert_eq!(v["count"], 5, "four members of board, one of other: {v}");
    let _ = Reason::PreconditionFailed;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_zadd_or_reference_answered_with_another_txs_proof_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let st = dir.path().join("state.json");
    let m = mitm::start(&server.addr).await;
    ok(run(&m.addr, &st, &["set", "ann", "a"]).await, "tx 1");
    // Record a real answer: a verified ZAdd of ann with score 1.
    let seen: std::sync::Arc<std::sync::Mutex<Option<wire::VerifiableTx>>> = Default::default();
    let keep = seen.clone();
    mitm::set(&m.hooks.verifiable_tx, move |vt| {
        *keep.lock().unwrap() = Some(vt.clone());
    });
    ok(
        run(&m.addr, &st, &["zadd", "--verify", "board", "1", "ann"]).await,
        "tx 2",
    );
    let recorded = seen.lock().unwrap().clone().unwrap();
    // The next verified writes are answered with that proof: valid, of the trusted state,
    // but of a tx holding another entry.
    mitm::set(&m.hooks.verifiable_tx, move |vt| *vt = recorded.clone());
    for args in [
        &["zadd", "--verify", "board", "2", "ann"][..],
        &["reference", "--verify", "alias", "ann"][..],
    ] {
        let (c, out, err) = run(&m.addr, &st, args).await;
        assert_eq!(c, 3, "{args:?}: {out}{err}");
        assert!(err.contains("VERIFICATION FAILED"), "{err}");
    }
}
