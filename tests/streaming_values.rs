//! Values above the 32 MiB a unary call carries, with the real binaries: written with
//! StreamSet (`set --value-file`, `vset --value-file`), read with StreamGet (`get --out`,
//! `vget --out`), byte for byte; unary calls refuse them with a pointer to the streaming
//! ones; a stream whose bytes do not add up to its announced length writes nothing; a
//! man in the middle that changes one byte of a verified stream is caught and leaves no
//! file; a replica copies the large txs and serves them; a restart and the offline check
//! read them back.
#![allow(clippy::unwrap_used)]

mod common;

use chainlog::client::ClientError;
use chainlog::wire;
use common::{mitm, Server};
use std::path::Path;

const BIG: usize = 40 << 20;

use common::json;

use common::cli_async as run;

fn ok((c, out, err): (i32, String, String), what: &str) -> String {
    assert_eq!(c, 0, "{what}: {out}{err}");
    out
}

fn same_file(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert_eq!(x.len(), y.len(), "{} and {}", a.display(), b.display());
    assert!(x == y, "{} and {} differ", a.display(), b.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_above_the_message_size_stream_both_ways_verified_and_replicated() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = common::free_port();
    let data = d.join("a");
    let a = Server::start_at(&data, &format!("127.0.0.1:{port}"), &[]);
    let st = d.join("state.json");
    let mut rng = common::rng::Rng::new(7);
    let value: Vec<u8> = (0..BIG / 8)
        .flat_map(|_| rng.next_u64().to_le_bytes())
        .collect();
    let f = d.join("value.bin");
    std::fs::write(&f, &value).unwrap();
    let fs = f.to_str().unwrap();

    let v = json(&ok(
        run(&a.addr, &st, &["--json", "set", "big", "--value-file", fs]).await,
        "set --value-file",
    ));
    assert_eq!(v["value_len"].as_u64(), Some(BIG as u64), "{v}");
    let v = json(&ok(
        run(
            &a.addr,
            &st,
            &["--json", "vset", "big2", "--value-file", fs],
        )
        .await,
        "vset --value-file",
    ));
    assert_eq!(v["verified"], true, "{v}");

    // Unary reads refuse it, naming the streaming call.
    let (c, out, err) = run(&a.addr, &st, &["get", "big"]).await;
    assert_eq!(c, 1, "{out}");
    assert!(err.contains("StreamGet"), "{err}");
    // Streamed reads give it back byte for byte, verified or not.
    for (cmd, key, name) in [
        ("get", "big", "o1"),
        ("vget", "big", "o2"),
        ("vget", "big2", "o3"),
    ] {
        let o = d.join(name);
        let out = ok(
            run(
                &a.addr,
                &st,
                &["--json", cmd, key, "--out", o.to_str().unwrap()],
            )
            .await,
            cmd,
        );
        same_file(&f, &o);
        assert!(json(&out)["tx_id"].as_u64().is_some(), "{out}");
    }

    // Unary writes refuse it; streams that do not add up write nothing.
    let admin = common::admin(&a).await;
    let before = admin.current_state("defaultdb").await.unwrap().tx_id;
    let r = admin
        .set("defaultdb", vec![(b"u".to_vec(), vec![1; (32 << 20) + 1])])
        .await;
    assert!(
        matches!(&r, Err(ClientError::Status(s)) if s.code() == tonic::Code::InvalidArgument && s.message().contains("StreamSet")),
        "{r:?}"
    );
    for (announced, sent) in [(10u64, 5usize), (10, 15)] {
        let msgs = vec![
            wire::StreamSetRequest {
                header: Some(wire::StreamSetHeader {
                    database: "defaultdb".into(),
                    key: b"short".to_vec(),
                    value_len: announced,
                    ..Default::default()
                }),
                chunk: Vec::new(),
            },
            wire::StreamSetRequest {
                header: None,
                chunk: vec![7; sent],
            },
        ];
        let r = admin.data().stream_set(tokio_stream::iter(msgs)).await;
        assert_eq!(
            r.unwrap_err().code(),
            tonic::Code::InvalidArgument,
            "{announced} announced, {sent} sent"
        );
    }
    assert_eq!(
        admin.current_state("defaultdb").await.unwrap().tx_id,
        before
    );

    // One byte changed on the way: caught, and no file left.
    let m = mitm::start(&a.addr).await;
    let mut seen = 0usize;
    mitm::set(
        &m.hooks.stream_get,
        move |msg: &mut wire::StreamGetResponse| {
            seen += 1;
            if seen == 3 {
                msg.chunk[1000] ^= 1;
            }
        },
    );
    let bad = d.join("bad");
    let (c, out, err) = run(
        &m.addr,
        &st,
        &["vget", "big", "--out", bad.to_str().unwrap()],
    )
    .await;
    assert_eq!(c, 3, "{out}{err}");
    assert!(err.contains("VERIFICATION FAILED"), "{err}");
    assert!(!bad.exists());
    assert!(
        std::fs::read_dir(d).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".part")),
        "no partial file left"
    );

    // A replica copies the large txs and serves them.
    let b = Server::start(&d.join("b"), &[]);
    let head = admin.current_state("defaultdb").await.unwrap().tx_id;
    common::replica_of_defaultdb(&b.addr, &st, "r", port, head).await;
    let o = d.join("o4");
    ok(
        run(
            &b.addr,
            &st,
            &["--db", "r", "vget", "big", "--out", o.to_str().unwrap()],
        )
        .await,
        "vget on the replica",
    );
    same_file(&f, &o);

    // A restart reads it back; the offline check passes over the large frames.
    drop(m);
    a.stop();
    ok(
        run(
            "http://127.0.0.1:1",
            &st,
            &["verify", "--data-dir", data.to_str().unwrap()],
        )
        .await,
        "offline check",
    );
    let a = Server::start_at(&data, &format!("127.0.0.1:{port}"), &[]);
    let o = d.join("o5");
    ok(
        run(&a.addr, &st, &["get", "big2", "--out", o.to_str().unwrap()]).await,
        "get after restart",
    );
    same_file(&f, &o);
}
