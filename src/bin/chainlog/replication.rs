//! `chainlog replication status`.

use crate::out::{header_json, Out};
use crate::session::Session;
use crate::Failure;
use chainlog::wire;
use clap::Subcommand;
use serde_json::json;

#[derive(Debug, Subcommand)]
pub enum ReplicationCmd {
    /// Replication state of --db, or of every database without --db: on a replica its
    /// replicator, on a primary its replicas
    Status,
}

fn role_name(r: wire::Role) -> &'static str {
    match r {
        wire::Role::Primary | wire::Role::Unspecified => "primary",
        wire::Role::Replica => "replica",
        wire::Role::ExternalReplica => "external-replica",
    }
}

fn state_name(s: wire::ReplicaState) -> &'static str {
    match s {
        wire::ReplicaState::Unspecified => "",
        wire::ReplicaState::Connecting => "connecting",
        wire::ReplicaState::CatchingUp => "catching-up",
        wire::ReplicaState::Streaming => "streaming",
        wire::ReplicaState::Diverged => "diverged",
        wire::ReplicaState::Stopped => "stopped",
    }
}

/// `replication status` of `db`, or of every database the caller sees when `db` is `None`.
pub async fn run(
    cmd: &ReplicationCmd,
    session: &Session,
    db: Option<&str>,
    out: &Out,
) -> Result<(), Failure> {
    let ReplicationCmd::Status = cmd;
    let c = session.connect().await?;
    let names: Vec<String> = match db {
        Some(d) => vec![d.to_string()],
        None => c
            .list_databases()
            .await?
            .into_iter()
            .filter(|i| i.unavailable.is_empty())
            .map(|i| i.name)
            .collect(),
    };
    let mut all = Vec::new();
    for name in &names {
        all.push(c.replication_status(name).await?);
    }
    if db.is_some() {
        let (json, text) = status(&all[0]);
        out.print(json, || text);
    } else {
        let (json, text): (Vec<_>, Vec<_>) = all.iter().map(status).unzip();
        out.print(serde_json::Value::Array(json), || text.join("\n"));
    }
    Ok(())
}

/// One database's status as JSON and as text.
fn status(r: &wire::ReplicationStatusResponse) -> (serde_json::Value, String) {
    let replicas: Vec<serde_json::Value> = r
        .replicas
        .iter()
        .map(|l| json!({"replica": l.replica, "peer": l.peer, "acked_tx_id": l.acked_tx_id, "lag_txs": l.lag_txs}))
        .collect();
    (
        json!({"database": r.database, "role": role_name(r.role()), "primary": r.primary, "state": state_name(r.state()),
               "last_applied_tx_id": r.last_applied_tx_id, "primary_head_tx_id": r.primary_head_tx_id,
               "lag_txs": r.lag_txs, "lag_ms": r.lag_ms, "last_error": r.last_error,
               "epoch": r.epoch, "fenced": (!r.fenced.is_empty()).then_some(&r.fenced),
               "signed_checkpoint_tx_id": r.signed_checkpoint_tx_id,
               "signed_checkpoint_timestamp_ms": r.signed_checkpoint_timestamp_ms,
               "primary_public_key": (!r.primary_public_key.is_empty()).then_some(&r.primary_public_key),
               "coordinator": (!r.coordinator.is_empty()).then_some(&r.coordinator),
               "cosignatures": r.cosignatures,
               "diverged_local": r.diverged_local.as_ref().map(header_json),
               "diverged_remote": r.diverged_remote.as_ref().map(header_json),
               "replicas": replicas}),
        {
            let mut s = match r.role() {
                wire::Role::ExternalReplica => format!(
                    "{} replica with no primary host (fed by chainlog-replicator through ReplicateTx): applied tx {}",
                    r.database, r.last_applied_tx_id
                ),
                wire::Role::Replica => format!(
                    "{} replica of {}: {}, applied tx {}, primary at tx {}, lag {} txs / {} ms",
                    r.database, r.primary, state_name(r.state()), r.last_applied_tx_id, r.primary_head_tx_id, r.lag_txs, r.lag_ms
                ),
                _ => format!("{} primary at tx {}", r.database, r.last_applied_tx_id),
            };
            s.push_str(&format!(", epoch {}", r.epoch));
            if r.signed_checkpoint_tx_id > 0 {
                s.push_str(&format!(
                    "\nlast signed checkpoint verified: tx {} (key {})",
                    r.signed_checkpoint_tx_id, r.primary_public_key
                ));
            }
            if !r.coordinator.is_empty() {
                s.push_str(&format!("\n{}", r.coordinator));
            }
            if r.cosignatures > 0 {
                s.push_str(&format!("\ncosignatures held: {}", r.cosignatures));
            }
            if !r.fenced.is_empty() {
                s.push_str(&format!("\nFENCED: {} (refuses writes)", r.fenced));
            }
            if !r.last_error.is_empty() {
                s.push_str(&format!("\nlast error: {}", r.last_error));
            }
            for l in &r.replicas {
                s.push_str(&format!(
                    "\nreplica {} ({}): acked tx {}, lag {} txs",
                    l.replica, l.peer, l.acked_tx_id, l.lag_txs
                ));
            }
            s
        },
    )
}
