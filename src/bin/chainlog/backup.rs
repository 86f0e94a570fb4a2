//! `chainlog backup`, `restore` and `verify --backup`: thin layers over `chainlog::backup`,
//! with a progress line on a terminal.

use crate::out::{hex, Out};
use crate::session::Session;
use crate::Failure;
use chainlog::backup::{self, BackupError, Progress, RestoreOptions};
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn failure(e: BackupError) -> Failure {
    if e.is_bad_backup() {
        Failure::Verification(e.to_string())
    } else {
        match e {
            BackupError::Client(c) => c.into(),
            e => Failure::Error(e.to_string()),
        }
    }
}

/// A progress line on stderr, redrawn at most every 200 ms, when stderr is a terminal.
struct Bar {
    what: String,
    on: bool,
    last: Option<Instant>,
    started: Instant,
}

impl Bar {
    fn new(what: impl Into<String>) -> Bar {
        Bar {
            what: what.into(),
            on: std::io::stderr().is_terminal(),
            last: None,
            started: Instant::now(),
        }
    }

    fn update(&mut self, p: Progress) {
        if !self.on
            || self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_millis(200))
        {
            return;
        }
        self.last = Some(Instant::now());
        let mib = p.bytes as f64 / f64::from(1u32 << 20);
        let line = if p.total > 0 {
            let pct = p.txs.saturating_mul(100) / p.total.max(1);
            format!(
                "{}: {} / {} txs ({pct}%), {mib:.1} MiB",
                self.what, p.txs, p.total
            )
        } else {
            format!("{}: {} txs, {mib:.1} MiB", self.what, p.txs)
        };
        let mut e = std::io::stderr();
        let _ = write!(e, "\r\x1b[2K{line}");
        let _ = e.flush();
    }

    fn done(&mut self) {
        if self.on && self.last.is_some() {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
        self.last = None;
    }

    fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

pub async fn take(
    s: &Session,
    out: &Out,
    file: &Path,
    since: Option<&Path>,
) -> Result<(), Failure> {
    let client = s.connect().await?;
    let mut bar = Bar::new(format!("backup of {}", s.db));
    let taken = backup::take(&client, &s.db, file, since, |p| bar.update(p)).await;
    bar.done();
    let t = taken.map_err(failure)?;
    let signed = !t.end.signature.is_empty();
    out.print(
        json!({"database": t.begin.database, "uuid": t.begin.uuid, "file": file.display().to_string(),
               "from_tx_id": t.begin.from_tx, "tx_id": t.end.to_tx, "alh": hex(&t.end.to_alh.0),
               "txs": t.end.txs, "bytes": t.bytes, "signed": signed,
               "seconds": bar.seconds()}),
        || {
            let kind = if t.begin.from_tx == 0 {
                "full backup".to_string()
            } else {
                format!("incremental backup after tx {}", t.begin.from_tx)
            };
            format!(
                "{kind} of {} ({}) written to {}: {} txs, up to tx {} with Alh {}, {} bytes{}",
                t.begin.database,
                t.begin.uuid,
                file.display(),
                t.end.txs,
                t.end.to_tx,
                t.end.to_alh,
                t.bytes,
                if signed { ", end state signed" } else { "" }
            )
        },
    );
    Ok(())
}

/// The scratch directory: the one given, else the first file's directory.
fn scratch_dir(given: Option<&Path>, files: &[PathBuf]) -> PathBuf {
    given.map(Path::to_path_buf).unwrap_or_else(|| {
        files
            .first()
            .and_then(|f| f.parent())
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    })
}

pub async fn verify(
    s: &Session,
    out: &Out,
    files: &[PathBuf],
    scratch: Option<&Path>,
) -> Result<(), Failure> {
    let key = s.server_key()?;
    let mut bar = Bar::new("verifying");
    let verified = backup::verify(files, &scratch_dir(scratch, files), key.as_ref(), |p| {
        bar.update(p)
    })
    .await;
    bar.done();
    let v = verified.map_err(failure)?;
    out.print(
        json!({"ok": true, "database": v.database, "uuid": v.uuid, "files": files.len(),
               "tx_id": v.to_tx, "alh": hex(&v.to_alh.0), "signed": v.signed,
               "signed_by": v.signed_by, "key_pinned": v.key_pinned}),
        || {
            let signature = match (&v.signed_by, v.key_pinned) {
                (Some(k), true) => format!("; end state signed by the given key {k}"),
                (Some(k), false) => format!(
                    "; end state signed by {k}, the key the file names: compare it with the server's (--server-key to require it)"
                ),
                (None, _) => "; end state not signed".to_string(),
            };
            format!(
                "ok: {} backup file(s) of {} ({}) verify, every tx up to tx {} with Alh {}{signature}",
                files.len(),
                v.database,
                v.uuid,
                v.to_tx,
                v.to_alh,
            )
        },
    );
    Ok(())
}

pub async fn restore(
    s: &Session,
    out: &Out,
    db: Option<&str>,
    files: &[PathBuf],
    new_identity: bool,
    replica: bool,
    scratch: Option<&Path>,
) -> Result<(), Failure> {
    let Some(db) = db else {
        return Err(Failure::Error(
            "restore needs --db: the name of the database to create".into(),
        ));
    };
    let client = s.connect().await?;
    let options = RestoreOptions {
        new_identity,
        replica,
        scratch: scratch_dir(scratch, files),
        server_key: s.server_key()?,
    };
    let mut bar = Bar::new(format!("restore of {db}"));
    let restored = backup::restore(&client, db, files, &options, |p| bar.update(p)).await;
    bar.done();
    let r = restored.map_err(failure)?;
    let role = if replica { "replica" } else { "primary" };
    out.print(
        json!({"database": db, "uuid": r.state.uuid, "tx_id": r.state.tx_id,
               "alh": hex(&r.state.alh), "verified": r.verified.is_some(), "role": role,
               "seconds": bar.seconds()}),
        || {
            format!(
                "restored {db} ({}): tx {} with Alh {}{}; now a {role}{}",
                r.state.uuid,
                r.state.tx_id,
                hex(&r.state.alh),
                if r.verified.is_some() {
                    ", every tx verified before it was sent"
                } else {
                    ""
                },
                if replica {
                    " (read-only; restore later incremental backups onto it)"
                } else {
                    " (a new epoch starts)"
                }
            )
        },
    );
    Ok(())
}
