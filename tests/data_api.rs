//! The immudb-style data calls with the real binaries: several pairs in one tx, GetAll as of
//! one tx, Count, TxScan, ServerInfo, and ExecAll with preconditions, where concurrent
//! compare-and-set increments never lose an update (the writer checks each condition in
//! commit order, txs of one group commit included).
#![allow(clippy::unwrap_used)]

mod common;

use chainlog::client::{Client, ClientError};
use chainlog::wire::{self, Reason};
use common::{cli, Server};

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap()
}

#[test]
fn pairs_getall_count_txscan_info_and_conditions_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let st = dir.path().join("state.json");
    let run = |args: &[&str]| cli(&server.addr, &st, args);

    let (c, out, err) = run(&["--json", "set", "a", "1", "b", "2"]);
    assert_eq!(c, 0, "{out}{err}");
    assert_eq!(json(&out)["entry_count"], 2, "both pairs in one tx");
    let (c, out, _) = run(&["set", "odd", "1", "dangling"]);
    assert_ne!(c, 0, "{out}");

    let (c, out, err) = run(&["--json", "get-all", "a", "b", "nope"]);
    assert_eq!(c, 0, "{out}{err}");
    let v = json(&out);
    assert_eq!(v["at_tx_id"], 1);
    assert_eq!(v["entries"].as_array().unwrap().len(), 2, "{v}");
    let (c, out, err) = run(&["--json", "get-all", "--verify", "a", "b", "nope"]);
    assert_eq!(c, 0, "{out}{err}");
    let v = json(&out);
    assert_eq!(v[0]["value"], "1", "{v}");
    assert_eq!(v[1]["value"], "2", "{v}");
    assert_eq!(v[2]["found"], false, "{v}");
    assert!(v.as_array().unwrap().iter().all(|e| e["verified"] == true));
    let (_, out, _) = run(&["--json", "count", ""]);
    assert_eq!(json(&out)["count"], 2);
    let (_, out, _) = run(&["--json", "count", "a"]);
    assert_eq!(json(&out)["count"], 1);

    // Compare-and-set: a's version is tx 1.
    let (c, out, err) = run(&["set", "a", "10", "--not-modified-after", "a=1"]);
    assert_eq!(c, 0, "{out}{err}");
    let (c, out, _) = run(&["--json", "set", "a", "11", "--not-modified-after", "a=1"]);
    assert_eq!(c, 1);
    let e = json(&out);
    assert_eq!(e["error"]["reason"], "precondition_failed", "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("tx 2"),
        "{e}"
    );
    let (_, out, _) = run(&["get", "a"]);
    assert!(
        out.contains("10"),
        "nothing written by the refused tx: {out}"
    );
    let (c, _, _) = run(&["set", "c", "1", "--must-exist", "c"]);
    assert_eq!(c, 1);
    let (c, _, _) = run(&["set", "c", "1", "--must-not-exist", "c"]);
    assert_eq!(c, 0);
    let (c, _, _) = run(&["set", "c", "2", "--must-not-exist", "c"]);
    assert_eq!(c, 1);
    let (c, out, err) = run(&["--json", "delete", "a", "b"]);
    assert_eq!(c, 0, "{out}{err}");
    assert_eq!(json(&out)["entry_count"], 2);
    let (_, out, _) = run(&["--json", "count", ""]);
    assert_eq!(json(&out)["count"], 1, "only c is live");
    let (c, _, _) = run(&["set", "a", "back", "--must-not-exist", "a"]);
    assert_eq!(c, 0, "a deleted key does not exist");

    let (c, out, err) = run(&["--json", "txs", "--from", "2", "--limit", "2"]);
    assert_eq!(c, 0, "{out}{err}");
    let v = json(&out);
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["header"]["id"], 2);
    let (_, out, _) = run(&["--json", "txs", "--desc", "--limit", "1"]);
    assert_eq!(json(&out)[0]["header"]["id"], 5);

    let (c, out, err) = run(&["--json", "info"]);
    assert_eq!(c, 0, "{out}{err}");
    let v = json(&out);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["databases"], 1, "{v}");
}

/// Reads the counter and writes it + 1 on condition that nobody wrote it since; retries when
/// somebody did. Returns the retries.
async fn increment(c: &Client) -> u32 {
    let mut retries = 0;
    loop {
        let (n, tx) = match c.get("defaultdb", b"counter").await.unwrap() {
            Some(e) => (
                String::from_utf8(e.value).unwrap().parse::<u64>().unwrap(),
                e.tx,
            ),
            None => (0, 0),
        };
        let op = wire::Op {
            op: Some(wire::op::Op::Kv(wire::KeyValue {
                key: b"counter".to_vec(),
                value: (n + 1).to_string().into_bytes(),
                metadata: None,
            })),
        };
        let cond = wire::Precondition {
            precondition: Some(wire::precondition::Precondition::KeyNotModifiedAfterTx(
                wire::KeyNotModifiedAfterTx {
                    key: b"counter".to_vec(),
                    tx_id: tx,
                },
            )),
        };
        match c.exec_all("defaultdb", vec![op], vec![cond]).await {
            Ok(_) => return retries,
            Err(ClientError::Status(s)) if Reason::of(&s) == Some(Reason::PreconditionFailed) => {
                retries += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_compare_and_set_loses_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let c = common::admin(&server).await;
        tasks.push(tokio::spawn(async move {
            let mut retries = 0;
            for _ in 0..10 {
                retries += increment(&c).await;
            }
            retries
        }));
    }
    let mut retries = 0;
    for t in tasks {
        retries += t.await.unwrap();
    }
    let c = common::admin(&server).await;
    let v = c.get("defaultdb", b"counter").await.unwrap().unwrap();
    assert_eq!(String::from_utf8(v.value).unwrap(), "80", "no lost update");
    assert!(
        retries > 0,
        "the writers did contend (else the test proves nothing)"
    );
    // Every refused attempt wrote nothing: 80 txs, one per increment.
    assert_eq!(c.current_state("defaultdb").await.unwrap().tx_id, 80);
}
