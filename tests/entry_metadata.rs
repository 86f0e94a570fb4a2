//! Entry metadata (immudb's KVMetadata) with the real binaries: an entry that expires reads
//! as present until its time and absent after it, in every read by key (get, get-all, scan,
//! count, and vget, which proves the expired version and judges the time by the client's
//! clock), while history still shows it; an entry left out of the index is in its tx and
//! its proofs and never read by key. Both survive a restart, the offline check and
//! replication; a man in the middle that moves an expiry time or strips the metadata to
//! hide or show a key is caught.
#![allow(clippy::unwrap_used)]

mod common;

use chainlog::client::{ClientError, Put};
use chainlog::wire;
use common::mitm;
use common::Server;
use std::time::Duration;

use common::json;

use common::cli_async as run;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn sleep_until(secs: u64) {
    while now() < secs {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_and_unindexed_entries_read_as_documented_through_restart_and_replication() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let data = dir.path().join("a");
    let a = Server::start_at(&data, &format!("127.0.0.1:{port}"), &[]);
    let st = dir.path().join("state.json");
    // Long enough for every read before it, on a slow machine.
    let t = now() + 6;
    let ts = t.to_string();
    let expect = |(c, out, err): (i32, String, String), code: i32, what: &str| {
        assert_eq!(c, code, "{what}: {out}{err}");
        out
    };

    let h = |out: String| json(&out)["tx_id"].as_u64().unwrap();
    let tx_e = h(expect(
        run(
            &a.addr,
            &st,
            &["--json", "set", "e", "v", "--expires-at", &ts],
        )
        .await,
        0,
        "set e",
    ));
    expect(
        run(&a.addr, &st, &["set", "keep", "k"]).await,
        0,
        "set keep",
    );
    let tx_n = h(expect(
        run(
            &a.addr,
            &st,
            &["--json", "set", "n", "hidden", "--no-index"],
        )
        .await,
        0,
        "set n",
    ));
    expect(
        run(&a.addr, &st, &["vset", "e2", "v2", "--expires-at", &ts]).await,
        0,
        "vset e2",
    );

    // Before the time: present everywhere, with its expiry shown.
    let v = json(&expect(
        run(&a.addr, &st, &["--json", "get", "e"]).await,
        0,
        "get e",
    ));
    assert_eq!(v["value"], "v", "{v}");
    assert_eq!(v["expires_at"].as_u64(), Some(t), "{v}");
    let v = json(&expect(
        run(&a.addr, &st, &["--json", "vget", "e2"]).await,
        0,
        "vget e2",
    ));
    assert_eq!(v["value"], "v2", "{v}");
    assert_eq!(v["expires_at"].as_u64(), Some(t), "{v}");
    let count = |out: String| json(&out)["count"].as_u64().unwrap();
    assert_eq!(
        count(expect(
            run(&a.addr, &st, &["--json", "count"]).await,
            0,
            "count"
        )),
        3,
        "e, keep and e2; n is not indexed"
    );

    // The unindexed entry: never by key, always by its tx, verified.
    expect(run(&a.addr, &st, &["get", "n"]).await, 1, "get n");
    let out = expect(run(&a.addr, &st, &["vget", "n"]).await, 1, "vget n");
    assert!(out.contains("never written"), "{out}");
    let v = json(&expect(
        run(&a.addr, &st, &["--json", "vtx", &tx_n.to_string()]).await,
        0,
        "vtx n",
    ));
    assert_eq!(v["entries"][0]["key"], "n", "{v}");
    assert_eq!(v["entries"][0]["value"], "hidden", "{v}");
    assert_eq!(v["entries"][0]["non_indexable"], true, "{v}");

    // A replica copies and verifies both kinds.
    let b = Server::start(&dir.path().join("b"), &[]);
    common::replica_of_defaultdb(&b.addr, &st, "r", port, 4).await;

    // After the time: absent to every read by key; history keeps the version.
    sleep_until(t).await;
    for (addr, db) in [(a.addr.clone(), "defaultdb"), (b.addr.clone(), "r")] {
        let st = st.clone();
        let r = move |args: &[&str]| {
            let mut v = vec!["--db", db];
            v.extend_from_slice(args);
            let v: Vec<String> = v.iter().map(ToString::to_string).collect();
            let (addr, st) = (addr.clone(), st.clone());
            async move {
                let v: Vec<&str> = v.iter().map(String::as_str).collect();
                run(&addr, &st, &v).await
            }
        };
        expect(r(&["get", "e"]).await, 1, "get e after its time");
        let v = json(&expect(r(&["--json", "vget", "e"]).await, 1, "vget e"));
        assert_eq!(v["found"], false, "{db}: {v}");
        assert_eq!(v["expired"], true, "{db}: {v}");
        assert_eq!(v["tx_id"].as_u64(), Some(tx_e), "{db}: {v}");
        let out = expect(r(&["vget", "e2"]).await, 1, "vget e2");
        assert!(out.contains("expired at"), "{db}: {out}");
        assert_eq!(count(expect(r(&["--json", "count"]).await, 0, "count")), 1);
        let v = json(&expect(r(&["--json", "scan", ""]).await, 0, "scan"));
        let keys: Vec<_> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["key"].clone())
            .collect();
        assert_eq!(keys, vec![serde_json::json!("keep")], "{db}: {v}");
        let v = json(&expect(
            r(&["--json", "get-all", "e", "keep", "e2"]).await,
            0,
            "get-all",
        ));
        assert_eq!(v["entries"].as_array().unwrap().len(), 1, "{db}: {v}");
        let v = json(&expect(r(&["--json", "history", "e"]).await, 0, "history"));
        assert_eq!(v[0]["expires_at"].as_u64(), Some(t), "{db}: {v}");
    }

    // A new version without an expiry is live again.
    expect(
        run(&a.addr, &st, &["set", "e", "back"]).await,
        0,
        "set e again",
    );
    expect(run(&a.addr, &st, &["get", "e"]).await, 0, "get e again");

    // The index rebuilt at a restart and the offline check agree with the log.
    a.stop();
    let out = expect(
        run(
            "http://127.0.0.1:1",
            &st,
            &["verify", "--data-dir", data.to_str().unwrap()],
        )
        .await,
        0,
        "offline check",
    );
    assert!(!out.is_empty());
    let a = Server::start_at(&data, &format!("127.0.0.1:{port}"), &[]);
    expect(
        run(&a.addr, &st, &["get", "e2"]).await,
        1,
        "e2 after restart",
    );
    expect(run(&a.addr, &st, &["get", "n"]).await, 1, "n after restart");
    assert_eq!(
        count(expect(
            run(&a.addr, &st, &["--json", "count"]).await,
            0,
            "count"
        )),
        2,
        "keep and e"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_metadata_and_a_moved_expiry_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let st = dir.path().join("state.json");
    let admin = common::admin(&server).await;

    // Combinations the format forbids are refused, nothing written.
    let bad = admin
        .set_entries(
            "defaultdb",
            vec![Put::new(b"x".to_vec(), b"y".to_vec())
                .not_indexed()
                .expiring_at(now() + 100)],
        )
        .await;
    assert!(
        matches!(&bad, Err(ClientError::Status(s)) if s.code() == tonic::Code::InvalidArgument),
        "{bad:?}"
    );
    let (c, _, err) = run(&server.addr, &st, &["set", "x", "y", "--expires-at", "0"]).await;
    assert_ne!(c, 0, "{err}");
    assert_eq!(admin.current_state("defaultdb").await.unwrap().tx_id, 0);

    let far = now() + 3600;
    admin
        .set_entries(
            "defaultdb",
            vec![Put::new(b"k".to_vec(), b"v".to_vec()).expiring_at(far)],
        )
        .await
        .unwrap();
    let m = mitm::start(&server.addr).await;
    let (c, out, err) = run(&m.addr, &st, &["vget", "k"]).await;
    assert_eq!(c, 0, "{out}{err}");

    // Hiding a live key by moving its expiry into the past, or showing a key past its time
    // by stripping the expiry: the entry's digest covers the metadata.
    mitm::set(
        &m.hooks.verifiable_entry,
        |ve: &mut wire::VerifiableEntry| {
            if let Some(e) = ve.entry.as_mut() {
                e.metadata.as_mut().unwrap().expires_at = 1;
            }
        },
    );
    let (c, _, err) = run(&m.addr, &st, &["vget", "k"]).await;
    assert_eq!(c, 3, "{err}");
    assert!(err.contains("VERIFICATION FAILED"), "{err}");
    mitm::set(
        &m.hooks.verifiable_entry,
        |ve: &mut wire::VerifiableEntry| {
            if let Some(e) = ve.entry.as_mut() {
                e.metadata = None;
            }
        },
    );
    let (c, _, err) = run(&m.addr, &st, &["vget", "k"]).await;
    assert_eq!(c, 3, "{err}");
    // Claiming the entry is left out of the index (so not the key's) is caught too.
    mitm::set(
        &m.hooks.verifiable_entry,
        |ve: &mut wire::VerifiableEntry| {
            if let Some(e) = ve.entry.as_mut() {
                e.metadata = Some(wire::KvMetadata {
                    expires_at: 0,
                    non_indexable: true,
                    reference: false,
                });
            }
        },
    );
    let (c, _, err) = run(&m.addr, &st, &["vget", "k"]).await;
    assert_eq!(c, 3, "{err}");
}
