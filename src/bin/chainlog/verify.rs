//! `chainlog verify`: the offline check of a data directory, every database in it (or one),
//! optionally against the states a client trusted.

use crate::out::Out;
use crate::Failure;
use chainlog::integrity::Digest;
use chainlog::ledger::{
    check_and_collect, check_with_progress, CheckReport, LedgerError, StorageError,
};
use chainlog::wire::SYSTEM_DATABASE;
use serde_json::json;
use std::path::{Path, PathBuf};

/// Whether an offline check's error is damage (verification failed) rather than, say, a
/// missing directory or a held lock.
fn is_damage(e: &LedgerError) -> bool {
    matches!(
        e,
        LedgerError::BadTx { .. }
            | LedgerError::Damaged { .. }
            | LedgerError::Lost { .. }
            | LedgerError::IndexMissing { .. }
            | LedgerError::StateMismatch { .. }
            | LedgerError::Storage(StorageError::Corrupt { .. })
    )
}

/// The databases to check: (name, directory, identity, checked already). A data directory's
/// system database is checked first (`pre`), and the databases it lists are read from its
/// log; a data directory from before the system database lists them in `catalog.json`; a
/// directory holding one database is checked alone.
fn targets(data_dir: &Path, only: Option<&str>) -> Result<Targets, Failure> {
    let system = data_dir.join("db").join(SYSTEM_DATABASE);
    let listed: Vec<(String, String)> = if system.join("segments").is_dir() {
        let (pre, records) = match check_and_collect(&system, &[], Some(b"database/"), |_, _| {}) {
            Ok((r, records)) => (Ok(r), records),
            // A damaged system database is reported; its list is then unknown.
            Err(e) => (Err(e), Default::default()),
        };
        let mut out = Vec::new();
        for (k, v) in records {
            let name = String::from_utf8_lossy(&k["database/".len()..]).into_owned();
            let r: serde_json::Value = serde_json::from_slice(&v).unwrap_or_default();
            out.push((name, r["uuid"].as_str().unwrap_or_default().to_string()));
        }
        let uuid = std::fs::read_to_string(system.join("IDENTITY"))
            .unwrap_or_default()
            .trim()
            .to_string();
        return finish(
            data_dir,
            only,
            out,
            Some((SYSTEM_DATABASE.to_string(), system, uuid, pre)),
        );
    } else if let Ok(bytes) = std::fs::read(data_dir.join("catalog.json")) {
        let catalog = data_dir.join("catalog.json");
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Failure::Error(format!("{}: {e}", catalog.display())))?;
        let Some(map) = v.as_object() else {
            return Err(Failure::Error(format!(
                "{}: not an object",
                catalog.display()
            )));
        };
        map.iter()
            .map(|(n, r)| {
                (
                    n.clone(),
                    r["uuid"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    } else if data_dir.join("segments").is_dir() {
        let name = only.unwrap_or("(this directory)").to_string();
        return Ok(Targets {
            system: None,
            rest: vec![(name, data_dir.to_path_buf(), String::new())],
        });
    } else {
        return Err(Failure::Error(format!(
            "{}: neither a data directory (no db/{SYSTEM_DATABASE}/) nor a database directory (no segments/)",
            data_dir.display()
        )));
    };
    finish(data_dir, only, listed, None)
}

type Checked = Result<CheckReport, LedgerError>;

/// The system database (already checked) and the other databases to check.
struct Targets {
    system: Option<(String, PathBuf, String, Checked)>,
    rest: Vec<(String, PathBuf, String)>,
}

fn finish(
    data_dir: &Path,
    only: Option<&str>,
    listed: Vec<(String, String)>,
    system: Option<(String, PathBuf, String, Checked)>,
) -> Result<Targets, Failure> {
    let mut rest: Vec<(String, PathBuf, String)> = listed
        .into_iter()
        .filter(|(name, _)| only.is_none_or(|o| o == name.as_str()))
        .map(|(name, uuid)| (name.clone(), data_dir.join("db").join(name), uuid))
        .collect();
    rest.sort();
    let system = system.filter(|_| only.is_none_or(|o| o == SYSTEM_DATABASE));
    if let (Some(o), true, true) = (only, rest.is_empty(), system.is_none()) {
        return Err(Failure::Error(format!(
            "database {o:?} is not listed in {}",
            data_dir.display()
        )));
    }
    Ok(Targets { system, rest })
}

fn report_json(name: &str, r: &CheckReport) -> serde_json::Value {
    json!({"database": name, "ok": true, "txs": r.txs, "segments": r.segments,
           "tx_id": r.last_tx, "alh": r.last_alh.to_hex(),
           "index_runs": r.index_runs, "index_records": r.index_records,
           "states_checked": r.states_checked,
           "torn_tail": r.torn_tail.as_ref().map(|(p, o)| json!({"file": p, "offset": o}))})
}

fn report_text(name: &str, r: &CheckReport) -> String {
    let mut s = format!(
        "{name}: ok: {} txs in {} segments, state {} {}; {} index records in {} runs match the log",
        r.txs, r.segments, r.last_tx, r.last_alh, r.index_records, r.index_runs
    );
    if r.states_checked > 0 {
        s.push_str(&format!(
            "; {} trusted states are states of this log",
            r.states_checked
        ));
    }
    if let Some((p, o)) = &r.torn_tail {
        s.push_str(&format!(
            "\n{name}: torn tail at {} offset {o}: an unfinished write that no committed tx's records point to; the next open cuts it",
            p.display()
        ));
    }
    s
}

pub fn run(
    data_dir: &Path,
    only: Option<&str>,
    state_file: Option<&Path>,
    out: &Out,
) -> Result<(), Failure> {
    let trusted = match state_file {
        Some(f) => chainlog::client::read_trusted_states(f)?,
        None => Default::default(),
    };
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr()) && !out.json;
    let mut damaged = Vec::new();
    let mut failed = Vec::new();
    let mut results = Vec::new();
    let mut matched = 0usize;
    let targets = targets(data_dir, only)?;
    let mut pre = None;
    let mut all = Vec::new();
    if let Some((name, dir, uuid, checked)) = targets.system {
        pre = Some(checked);
        all.push((name, dir, uuid));
    }
    all.extend(targets.rest);
    for (name, dir, uuid) in all {
        let states: Vec<(u64, Digest)> = trusted
            .values()
            .filter(|t| !uuid.is_empty() && t.uuid == uuid && t.tx_id > 0)
            .filter_map(|t| Digest::from_hex(&t.alh).map(|a| (t.tx_id, a)))
            .collect();
        matched += states.len();
        let mut last = 0u64;
        let checked_already = if name == SYSTEM_DATABASE && states.is_empty() {
            pre.take()
        } else {
            None
        };
        let report = match checked_already {
            Some(r) => r,
            None if !dir.is_dir() => Err(LedgerError::Storage(StorageError::Corrupt {
                path: dir.clone(),
                offset: 0,
                reason: chainlog::ledger::Corruption::ShortFile,
            })),
            None => check_with_progress(&dir, &states, |done, total| {
                let pct = (done * 100).checked_div(total).unwrap_or(100);
                if tty && pct != last {
                    last = pct;
                    let bar = "#".repeat((pct / 4) as usize);
                    eprint!("\r{name}: [{bar:<25}] {pct:>3}%");
                }
            }),
        };
        if tty {
            eprintln!();
        }
        match report {
            Ok(r) => {
                results.push(report_json(&name, &r));
                if !out.json {
                    println!("{}", report_text(&name, &r));
                }
            }
            Err(e) => {
                let damage = is_damage(&e);
                results.push(json!({"database": name, "ok": false, "damaged": damage, "error": e.to_string()}));
                if !out.json {
                    eprintln!(
                        "{name}: {}: {e}",
                        if damage { "DAMAGED" } else { "not checked" }
                    );
                }
                if damage {
                    damaged.push(name);
                } else {
                    failed.push(name);
                }
            }
        }
    }
    if state_file.is_some() && matched == 0 && !trusted.is_empty() {
        eprintln!("chainlog: no state in the state file is of a database in this data directory");
    }
    if out.json {
        println!("{}", serde_json::Value::Array(results));
    }
    if out.json && !(damaged.is_empty() && failed.is_empty()) {
        // The array printed above says it all, per database.
        return Err(Failure::Reported(if damaged.is_empty() { 1 } else { 3 }));
    }
    if !damaged.is_empty() {
        return Err(Failure::Verification(format!(
            "damage found in {}",
            damaged.join(", ")
        )));
    }
    if !failed.is_empty() {
        return Err(Failure::Error(format!(
            "could not check {}",
            failed.join(", ")
        )));
    }
    Ok(())
}
