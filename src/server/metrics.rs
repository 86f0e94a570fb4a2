//! Prometheus metrics at `/metrics`.

use super::{ServerError, ServerState};
use std::future::Future;
use std::sync::Arc;

/// One metric family: its help, type and samples, written together.
struct Family {
    name: &'static str,
    help: &'static str,
    samples: Vec<String>,
}

impl Family {
    fn new(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            samples: Vec::new(),
        }
    }

    fn db(&mut self, database: &str, value: impl std::fmt::Display) {
        self.samples.push(format!(
            "{}{{database=\"{database}\"}} {value}\n",
            self.name
        ));
    }

    fn write(&self, out: &mut String) {
        out.push_str(&format!(
            "# HELP {n} {h}\n# TYPE {n} gauge\n",
            n = self.name,
            h = self.help
        ));
        for s in &self.samples {
            out.push_str(s);
        }
    }
}

/// Prometheus text for every database: each family's samples under its own header.
pub fn metrics_text(state: &ServerState) -> String {
    let mut tx = Family::new(
        "chainlog_database_tx_id",
        "Id of the last committed transaction.",
    );
    let mut epoch = Family::new(
        "chainlog_database_epoch",
        "Epoch of the last committed transaction.",
    );
    let mut fenced = Family::new(
        "chainlog_database_fenced",
        "1 if this database was a primary that a newer epoch replaced (it refuses writes).",
    );
    let mut lag_txs = Family::new(
        "chainlog_replica_lag_txs",
        "Txs the primary has that this replica has not applied.",
    );
    let mut lag_ms = Family::new(
        "chainlog_replica_lag_ms",
        "Commit-time distance from the primary's head.",
    );
    let mut diverged = Family::new(
        "chainlog_replica_diverged",
        "1 if the replicator stopped on a divergence.",
    );
    let mut checkpoint = Family::new(
        "chainlog_replica_signed_checkpoint_tx_id",
        "Tx of the primary's last signed checkpoint the replica verified.",
    );
    let mut connected = Family::new(
        "chainlog_replicas_connected",
        "Replicas following this database.",
    );
    let mut cosignatures = Family::new(
        "chainlog_cosignatures_held",
        "Replica keys whose cosignature of a state this primary holds.",
    );
    for db in state.catalog.list() {
        let d = &db.name;
        tx.db(d, db.ledger.state().tx_id);
        epoch.db(d, db.ledger.epoch());
        fenced.db(d, u8::from(db.hub.fenced().is_some()));
        if let Some(s) = db.hub.status() {
            lag_txs.db(d, s.lag_txs());
            lag_ms.db(d, s.lag_ms());
            diverged.db(
                d,
                u8::from(s.state == crate::replication::ReplicaState::Diverged),
            );
            checkpoint.db(d, s.signed_checkpoint.map_or(0, |c| c.0));
        }
        connected.db(d, db.hub.followers().len());
        cosignatures.db(d, db.hub.cosignatures().len());
    }
    let mut out = String::new();
    for f in [
        &tx,
        &epoch,
        &fenced,
        &lag_txs,
        &lag_ms,
        &diverged,
        &checkpoint,
        &connected,
        &cosignatures,
    ] {
        f.write(&mut out);
    }
    out.push_str("# HELP chainlog_databases Databases held.\n# TYPE chainlog_databases gauge\n");
    out.push_str(&format!(
        "chainlog_databases {}\n",
        state.catalog.list().len()
    ));
    out
}

/// Serves `GET /metrics` (Prometheus text format) on `listener` until `shutdown` resolves.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    state: Arc<ServerState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let state = state.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    metrics_text(&state),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
