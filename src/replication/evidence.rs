//! Divergence evidence: where a replica's history and its primary's part, with the proofs
//! that show it, gathered when a replicator stops as diverged and written to
//! `divergence.json` in the replica's database directory, for a third party to check
//! (docs/replication.md, "Divergence evidence").
//!
//! The fork point is the last tx both histories share: the largest `t` whose Alh is the same
//! on both sides (Alhs chain, so all before it are equal too), found by bisection. Each side
//! then contributes its header of tx `t + 1` (where they differ) and a [`StateProof`] from it
//! to that side's state, so the two headers are proven to belong to the two histories.

use crate::client::Client;
use crate::integrity::{hex, Digest, StateProof, TxHeader, TxId, ALH_GENESIS};
use crate::ledger::Ledger;
use crate::wire;

/// One side's account of the first tx where the histories differ.
#[derive(Debug, Clone)]
pub struct Side {
    /// That side's header of tx `fork_after + 1`.
    pub header: TxHeader,
    /// From `header` to `state`: the header is in that side's history.
    pub proof: StateProof,
    /// The side's state the proof leads to.
    pub state: (TxId, Digest),
}

/// Where two histories of one database part.
#[derive(Debug, Clone)]
pub struct Evidence {
    /// The last tx both hold (0: none), and its Alh.
    pub fork_after: TxId,
    pub shared_alh: Digest,
    /// The replica's side, if it holds tx `fork_after + 1`.
    pub local: Option<Side>,
    /// The primary's side, if it holds tx `fork_after + 1`.
    pub remote: Option<Side>,
    /// The primary's state when the evidence was gathered, as it gave it (with its signature
    /// when it signs states).
    pub remote_state: wire::State,
}

/// The primary's header of tx `t` and the proof that it is in the primary's state at `head`.
async fn remote_at(
    client: &Client,
    db: &str,
    t: TxId,
    head: TxId,
) -> Result<(TxHeader, StateProof), String> {
    let p = client
        .data()
        .consistency_proof(wire::ConsistencyProofRequest {
            database: db.to_string(),
            old_tx_id: t,
            new_tx_id: head,
        })
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner();
    let proof: StateProof = (&p)
        .try_into()
        .map_err(|e: wire::WireError| e.to_string())?;
    Ok((proof.old, proof))
}

/// Gathers the evidence of a divergence between `ledger` and database `db` on the primary
/// `client` is logged in to.
pub async fn gather(client: &Client, db: &str, ledger: &Ledger) -> Result<Evidence, String> {
    let remote_state = client.current_state(db).await.map_err(|e| e.to_string())?;
    let head = remote_state.tx_id;
    let local_last = ledger.state().tx_id;
    let local_alh = |t: TxId| -> Result<Digest, String> {
        if t == 0 {
            return Ok(ALH_GENESIS);
        }
        ledger.header(t).map(|h| h.alh()).map_err(|e| e.to_string())
    };
    let remote_alh = |t: TxId| async move {
        if t == 0 {
            return Ok(ALH_GENESIS);
        }
        remote_at(client, db, t, head).await.map(|(h, _)| h.alh())
    };
    // Bisection: the largest t at which both Alhs agree (t = 0 always does).
    let (mut lo, mut hi) = (0, local_last.min(head));
    if local_alh(hi)? == remote_alh(hi).await? {
        lo = hi;
    } else {
        while lo + 1 < hi {
            let mid = lo + (hi - lo) / 2;
            if local_alh(mid)? == remote_alh(mid).await? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
    }
    let fork_after = lo;
    let next = fork_after + 1;
    let local = if next <= local_last {
        let proof = ledger
            .state_proof(next, local_last)
            .map_err(|e| e.to_string())?;
        Some(Side {
            header: proof.old,
            state: (local_last, proof.new.alh()),
            proof,
        })
    } else {
        None
    };
    let remote = if next <= head {
        let (header, proof) = remote_at(client, db, next, head).await?;
        Some(Side {
            header,
            state: (head, proof.new.alh()),
            proof,
        })
    } else {
        None
    };
    Ok(Evidence {
        fork_after,
        shared_alh: local_alh(fork_after)?,
        local,
        remote,
        remote_state,
    })
}

fn header_json(h: &TxHeader) -> serde_json::Value {
    serde_json::json!({
        "version": h.version, "id": h.id, "timestamp_us": h.timestamp_us,
        "prev_alh": h.prev_alh.to_hex(), "entry_count": h.entry_count,
        "entries_root": h.entries_root.to_hex(), "history_size": h.history_size,
        "history_root": h.history_root.to_hex(), "epoch": h.epoch, "map_root": h.map_root.to_hex(), "alh": h.alh().to_hex(),
    })
}

fn side_json(s: &Side) -> serde_json::Value {
    serde_json::json!({
        "header": header_json(&s.header),
        "state": {"tx_id": s.state.0, "alh": s.state.1.to_hex()},
        "proof": {
            "old": header_json(&s.proof.old),
            "new": header_json(&s.proof.new),
            "inclusion": s.proof.inclusion.iter().map(Digest::to_hex).collect::<Vec<_>>(),
            "consistency": s.proof.consistency.iter().map(Digest::to_hex).collect::<Vec<_>>(),
        },
    })
}

/// The file the evidence is written to, in the replica's database directory.
pub const FILE_NAME: &str = "divergence.json";

impl Evidence {
    /// The evidence as the JSON document of docs/replication.md.
    pub fn to_json(&self, replica_uuid: &str, primary: &str, reason: &str) -> serde_json::Value {
        let st = &self.remote_state;
        serde_json::json!({
            "format": "chainlog-divergence-v1",
            "replica_uuid": replica_uuid,
            "primary": primary,
            "primary_uuid": st.uuid,
            "reason": reason,
            "detected_at_ms": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            "fork_after_tx": self.fork_after,
            "shared_alh": self.shared_alh.to_hex(),
            "local": self.local.as_ref().map(side_json),
            "remote": self.remote.as_ref().map(side_json),
            "remote_state": {
                "database": st.database, "uuid": st.uuid, "tx_id": st.tx_id,
                "alh": hex::encode(&st.alh), "timestamp_ms": st.timestamp_ms,
                "signature": hex::encode(&st.signature),
            },
        })
    }
}
