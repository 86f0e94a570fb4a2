//! Prometheus metrics at `/metrics`.

use super::{ServerError, ServerState};
use std::future::Future;
use std::sync::Arc;

/// Prometheus text for every database.
pub fn metrics_text(state: &ServerState) -> String {
    let mut out = String::from(
        "# HELP chainlog_database_tx_id Id of the last committed transaction.\n# TYPE chainlog_database_tx_id gauge\n",
    );
    for db in state.catalog.list() {
        out.push_str(&format!(
            "chainlog_database_tx_id{{database=\"{}\"}} {}\n",
            db.name,
            db.ledger.state().tx_id
        ));
    }
    out.push_str("# HELP chainlog_replica_lag_txs Txs the primary has that this replica has not applied.\n# TYPE chainlog_replica_lag_txs gauge\n");
    out.push_str("# HELP chainlog_replica_lag_ms Commit-time distance from the primary's head.\n# TYPE chainlog_replica_lag_ms gauge\n");
    out.push_str("# HELP chainlog_replica_diverged 1 if the replicator stopped on a divergence.\n# TYPE chainlog_replica_diverged gauge\n");
    out.push_str("# HELP chainlog_replicas_connected Replicas following this database.\n# TYPE chainlog_replicas_connected gauge\n");
    for db in state.catalog.list() {
        if let Some(s) = db.hub.status() {
            let d = &db.name;
            out.push_str(&format!(
                "chainlog_replica_lag_txs{{database=\"{d}\"}} {}\n",
                s.lag_txs()
            ));
            out.push_str(&format!(
                "chainlog_replica_lag_ms{{database=\"{d}\"}} {}\n",
                s.lag_ms()
            ));
            let diverged = u8::from(s.state == crate::replication::ReplicaState::Diverged);
            out.push_str(&format!(
                "chainlog_replica_diverged{{database=\"{d}\"}} {diverged}\n"
            ));
        }
        out.push_str(&format!(
            "chainlog_replicas_connected{{database=\"{}\"}} {}\n",
            db.name,
            db.hub.followers().len()
        ));
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
