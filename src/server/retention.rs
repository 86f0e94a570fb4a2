//! Retention: which txs' values a database keeps, and the background task that drops the
//! rest (`TruncateDatabase` on a schedule). Each database's settings say how long
//! (`retention_period_secs`), how many txs (`retention_txs`) and how often
//! (`truncation_interval_secs`).

use super::catalog::Catalog;
use super::settings::Settings;
use crate::integrity::TxId;
use crate::ledger::{Ledger, LedgerError};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often the task looks at the databases' schedules.
const TICK: Duration = Duration::from_secs(1);

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The first tx whose values a retention keeps: of the txs committed within `period`
/// and of the newest `keep_txs`, whichever keeps fewer. Never past the last tx.
pub fn cutoff(
    ledger: &Ledger,
    period: Option<Duration>,
    keep_txs: Option<u64>,
) -> Result<TxId, LedgerError> {
    let head = ledger.state().tx_id;
    let mut before = 1;
    if let Some(p) = period.filter(|p| !p.is_zero()) {
        let since = now_us().saturating_sub(u64::try_from(p.as_micros()).unwrap_or(u64::MAX));
        before = before.max(ledger.first_tx_since(since)?);
    }
    if let Some(n) = keep_txs.filter(|n| *n > 0) {
        before = before.max(head.saturating_sub(n) + 1);
    }
    Ok(before.min(head))
}

/// The cutoff a database's settings ask for (1: keep everything).
pub fn cutoff_of(ledger: &Ledger, settings: &Settings) -> Result<TxId, LedgerError> {
    cutoff(
        ledger,
        settings.retention_period_secs.map(Duration::from_secs),
        settings.retention_txs,
    )
}

/// Runs each database's retention on its schedule until the server stops. A database with
/// nothing to drop is left alone (it is not even reopened).
pub async fn run(catalog: Arc<Catalog>, mut stopping: tokio::sync::watch::Receiver<bool>) {
    let mut last: HashMap<String, Instant> = HashMap::new();
    loop {
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            _ = stopping.changed() => return,
        }
        if *stopping.borrow() {
            return;
        }
        for db in catalog.list() {
            if !db.settings.retains() {
                continue;
            }
            let due = last
                .get(&db.name)
                .is_none_or(|t| t.elapsed() >= db.settings.truncation_interval());
            if !due {
                continue;
            }
            last.insert(db.name.clone(), Instant::now());
            let (catalog, name, database) = (catalog.clone(), db.name.clone(), db.name.clone());
            let done = tokio::task::spawn_blocking(move || -> Result<_, String> {
                let before = cutoff_of(&db.ledger, &db.settings).map_err(|e| e.to_string())?;
                if !crate::ledger::would_drop(db.ledger.dir(), before).map_err(|e| e.to_string())? {
                    return Ok(None);
                }
                drop(db);
                catalog
                    .truncate(&name, before)
                    .map(|(_, t)| Some((before, t)))
                    .map_err(|e| e.to_string())
            })
            .await;
            match done {
                Ok(Ok(Some((before, t)))) => tracing::info!(
                    %database, before_tx = before, values_from_tx = t.values_from_tx,
                    segments_rewritten = t.segments_rewritten, bytes_before = t.bytes_before,
                    bytes_after = t.bytes_after, "retention: values dropped"
                ),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(%database, error = %e, "retention failed; it runs again at the next interval")
                }
                Err(e) => tracing::warn!(error = %e, "retention task failed"),
            }
        }
    }
}
