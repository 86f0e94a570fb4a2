//! The external replicator: copies a source database on one server into a replica database
//! on another, through `ExportTx` on the source and `ReplicateTx` on the target. The target
//! verifies every tx as an in-process replicator does (entries root, previous Alh, history
//! root, Alh) before it applies it, so the copy is exactly as trustworthy.
//!
//! Resumable by construction: each pass starts from the target's durable state, and the
//! source refuses a position that is not in its history.

use super::Backoff;
use crate::client::{Client, ClientError, ClientTls};
use crate::wire::{self, follow_response::Msg, Reason};
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

/// One end of a copy.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `http://host:port`, or `https://` with `tls`.
    pub url: String,
    pub database: String,
    pub username: String,
    pub password: SecretString,
    pub tls: Option<ClientTls>,
}

#[derive(Debug, Clone)]
pub struct CopyConfig {
    pub source: Endpoint,
    pub target: Endpoint,
    /// Keep copying new txs as they commit on the source; else stop at its head.
    pub follow: bool,
    /// Failed passes in a row after which [`run`] gives up (`None`: never).
    pub retries_max: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The target's history is not a prefix of the source's (or they are different
    /// databases): copying stops, nothing is changed on the target.
    #[error("the target's history differs from the source's: {0}")]
    Diverged(String),
    /// A refusal that a retry would meet again: a wrong password, a missing permission or
    /// database, a target that is not a replica with no primary host. Copying stops.
    #[error("refused: {0}")]
    Refused(String),
    /// Anything else (a server down, a cut connection): worth a retry.
    #[error("{0}")]
    Failed(String),
}

/// Where a copy pass got to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// Txs applied to the target in this pass.
    pub txs: u64,
    /// The target's state after the pass.
    pub tx_id: u64,
    pub alh: Vec<u8>,
}

fn classify(s: &tonic::Status) -> CopyError {
    let msg = format!("{}: {}", s.code(), s.message());
    use tonic::Code;
    if Reason::of(s).is_some_and(Reason::is_divergence) {
        CopyError::Diverged(msg)
    } else if matches!(
        s.code(),
        Code::FailedPrecondition
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::NotFound
            | Code::InvalidArgument
    ) {
        CopyError::Refused(msg)
    } else {
        CopyError::Failed(msg)
    }
}

fn failed(e: impl std::fmt::Display) -> CopyError {
    CopyError::Failed(e.to_string())
}

fn client_error(e: ClientError) -> CopyError {
    match e {
        ClientError::Status(s) => classify(&s),
        e => failed(e),
    }
}

async fn login(e: &Endpoint) -> Result<Client, CopyError> {
    let c = Client::connect(&e.url, e.tls.clone())
        .await
        .map_err(|err| failed(format!("{}: {err}", e.url)))?;
    c.login(&e.username, e.password.expose_secret())
        .await
        .map_err(|err| {
            let what = format!("{}/{}", e.url, e.database);
            match client_error(err) {
                CopyError::Refused(m) => CopyError::Refused(format!("{what}: {m}")),
                other => failed(format!("{what}: {other}")),
            }
        })?;
    Ok(c)
}

/// Batches waiting between the export and the replicate stream.
const PIPELINE_BATCHES: usize = 4;

/// One pass: from the target's state, stream the source's txs into the target, until the
/// source's head at the start (or, with `follow`, until the stream breaks).
/// `progress(applied_through, source_head)` is called after each batch is handed on.
pub async fn copy_pass(
    config: &CopyConfig,
    mut progress: impl FnMut(u64, u64),
) -> Result<Copied, CopyError> {
    let (source, target) = tokio::try_join!(login(&config.source), login(&config.target))?;
    let start = target
        .current_state(&config.target.database)
        .await
        .map_err(client_error)?;
    // The target's epoch: a source below it was replaced, and is refused (and fenced).
    let epoch = target
        .replication_status(&config.target.database)
        .await
        .map_or(0, |s| s.epoch);
    let request = wire::ExportTxRequest {
        epoch,
        database: config.source.database.clone(),
        expected_uuid: if start.tx_id == 0 {
            String::new()
        } else {
            start.uuid.clone()
        },
        tx_id: start.tx_id,
        alh: if start.tx_id == 0 {
            Vec::new()
        } else {
            start.alh.clone()
        },
        follow: config.follow,
    };
    let mut export = source
        .replication()
        .export_tx(request)
        .await
        .map_err(|s| classify(&s))?
        .into_inner();
    let source_uuid = match export.message().await.map_err(|s| classify(&s))? {
        Some(wire::FollowResponse {
            msg: Some(Msg::Welcome(w)),
        }) => w.uuid,
        _ => return Err(failed("the source did not open the export with a welcome")),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(PIPELINE_BATCHES);
    tx.send(wire::ReplicateTxRequest {
        database: config.target.database.clone(),
        source_uuid,
        txs: Vec::new(),
    })
    .await
    .map_err(failed)?;
    let mut replicate = target.replication();
    let call = tokio::spawn(async move {
        replicate
            .replicate_tx(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    let mut copied = 0u64;
    let pumped: Result<(), CopyError> = async {
        while let Some(msg) = export.message().await.map_err(|s| classify(&s))? {
            match msg.msg {
                Some(Msg::Batch(b)) => {
                    let last = b
                        .txs
                        .last()
                        .and_then(|t| crate::ledger::record_header(&t.record).ok())
                        .map_or(0, |(h, _)| h.id);
                    copied += b.txs.len() as u64;
                    let head = b.head_tx_id;
                    let req = wire::ReplicateTxRequest {
                        txs: b.txs,
                        ..Default::default()
                    };
                    if tx.send(req).await.is_err() {
                        // The target ended the call: its answer says why.
                        return Ok(());
                    }
                    progress(last, head);
                }
                Some(Msg::Heartbeat(b)) => {
                    if tx.is_closed() {
                        return Ok(());
                    }
                    progress(0, b.head_tx_id)
                }
                _ => {}
            }
        }
        Ok(())
    }
    .await;
    drop(tx);
    let answer = call.await.map_err(failed)?;
    let state = answer.map_err(|s| classify(&s))?.into_inner();
    pumped?;
    Ok(Copied {
        txs: copied.min(state.tx_id.saturating_sub(start.tx_id)),
        tx_id: state.tx_id,
        alh: state.alh,
    })
}

/// Copies until done: passes with capped, jittered backoff between failures (at most
/// `retries_max` failed passes in a row). Without `follow`, returns after the first pass that
/// reaches the source's head; with it, runs until the histories differ. A divergence or a
/// refusal is returned at once, never retried.
pub async fn run(
    config: &CopyConfig,
    mut progress: impl FnMut(u64, u64),
) -> Result<Copied, CopyError> {
    let mut backoff = Backoff::default();
    let mut failures = 0u32;
    loop {
        let mut moved = false;
        let pass = copy_pass(config, |applied, head| {
            moved |= applied > 0;
            progress(applied, head)
        })
        .await;
        if moved {
            backoff.reset();
            failures = 0;
        }
        match pass {
            Ok(c) if !config.follow => return Ok(c),
            Ok(c) => {
                tracing::warn!(target_tx = c.tx_id, "the export stream ended; reconnecting");
            }
            Err(e @ (CopyError::Diverged(_) | CopyError::Refused(_))) => return Err(e),
            Err(CopyError::Failed(e)) => {
                failures += 1;
                if config.retries_max.is_some_and(|m| failures > m) {
                    return Err(CopyError::Failed(e));
                }
                let delay = backoff.delay(super::jitter());
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "copy interrupted");
                tokio::time::sleep(delay.max(Duration::from_millis(1))).await;
            }
        }
    }
}
