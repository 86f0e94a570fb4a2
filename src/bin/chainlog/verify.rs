//! `chainlog verify`: the offline check of a data directory.

use crate::out::Out;
use crate::Failure;
use chainlog::ledger::{check_with_progress, LedgerError, StorageError};
use serde_json::json;
use std::path::Path;

pub fn run(data_dir: &Path, db: &str, out: &Out) -> Result<(), Failure> {
    let dir = data_dir.join("db").join(db);
    let dir = if dir.is_dir() {
        dir
    } else {
        data_dir.to_path_buf()
    };
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr()) && !out.json;
    let mut last = 0u64;
    let report = check_with_progress(&dir, |done, total| {
        let pct = (done * 100).checked_div(total).unwrap_or(100);
        if tty && pct != last {
            last = pct;
            let bar = "#".repeat((pct / 4) as usize);
            eprint!("\r[{bar:<25}] {pct:>3}%");
        }
    });
    if tty {
        eprintln!();
    }
    match report {
        Ok(r) => out.print(
            json!({"ok": true, "txs": r.txs, "segments": r.segments, "alh": r.last_alh.to_hex(),
                   "torn_tail": r.torn_tail.map(|(p, o)| json!({"file": p, "offset": o}))}),
            || {
                format!(
                    "ok: {} txs in {} segments, state {} {}",
                    r.txs, r.segments, r.last_tx, r.last_alh
                )
            },
        ),
        Err(
            e @ (LedgerError::BadTx { .. }
            | LedgerError::Damaged { .. }
            | LedgerError::Storage(StorageError::Corrupt { .. })),
        ) => {
            return Err(Failure::Verification(e.to_string()));
        }
        Err(e) => return Err(Failure::Error(e.to_string())),
    }
    Ok(())
}
