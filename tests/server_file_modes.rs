//! Only the owner of a data directory can read it: every file chainlogd and the ledger create
//! is mode 0600 and every directory 0700, whatever the umask.
#![allow(clippy::unwrap_used)]

mod common;

use common::{admin, Server};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn walk(p: &Path, out: &mut Vec<(std::path::PathBuf, u32, bool)>) {
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        out.push((e.path(), md.permissions().mode() & 0o777, md.is_dir()));
        if md.is_dir() {
            walk(&e.path(), out);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_0600_and_directories_0700() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let c = admin(&server).await;
    c.create_database("app", chainlog::wire::DatabaseSettings::default())
        .await
        .unwrap();
    for i in 0..5 {
        c.set("app", vec![(format!("k{i}").into_bytes(), b"v".to_vec())])
            .await
            .unwrap();
    }
    assert!(server.stop().success());
    let mut all = Vec::new();
    walk(&data, &mut all);
    assert!(all
        .iter()
        .any(|(p, ..)| p.ends_with("db/app/segments/0000000001.seg")));
    for (p, mode, is_dir) in all {
        let want = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{} is {mode:o}", p.display());
    }
    let top = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(top, 0o700, "the data directory itself");
}
