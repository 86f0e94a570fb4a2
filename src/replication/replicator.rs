//! The replica side: a tokio task per replica database that logs in to the primary, follows
//! its log from this database's last durable tx, verifies each tx and applies it, and
//! acknowledges what is durable. It stops for good, keeping its data, when the histories
//! differ; any other failure is retried with capped, jittered backoff.

use super::hub::Hub;
use super::{jitter, Backoff, ReplicaState, ReplicationError};
use crate::client::{Client, ClientTls};
use crate::integrity;
use crate::ledger::{Ledger, LedgerError};
use crate::wire::{self, follow_response::Msg, FollowHello, FollowRequest, Reason};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;

/// What the replicator needs from the server that holds the replica database.
pub trait Local: Send + Sync + 'static {
    /// The replica database's ledger as it is now (settings updates reopen it).
    fn ledger(&self) -> Option<Arc<Ledger>>;
    /// The database identity the replica holds.
    fn uuid(&self) -> String;
    /// Takes the primary's identity: a replica holds the primary's log, so it carries its
    /// identity, and a client's trusted state works on either.
    fn adopt_uuid(&self, uuid: &str) -> Result<(), String>;
    /// Keeps the evidence of a divergence (the JSON document of
    /// [`super::evidence::Evidence::to_json`]) where a third party can find it.
    fn record_divergence(&self, evidence: &serde_json::Value) -> Result<(), String>;
    /// Cuts the replica back to its first `keep` txs (the fork point with its primary),
    /// after writing every tx past them, as stored, into an evidence file with `divergence`
    /// (the rejoin of a former primary: `--replication-allow-tx-discarding`). Blocking.
    fn rewind(&self, keep: integrity::TxId, divergence: serde_json::Value) -> Result<u64, String>;
    /// The primary's public key pinned on first contact (hex), if any.
    fn pinned_key(&self) -> Option<String>;
    /// Pins the primary's public key (hex): its checkpoints must verify with it from now on.
    fn pin_key(&self, key: &str) -> Result<(), String>;
}

#[derive(Clone, Debug)]
pub struct ReplicatorConfig {
    /// `http://host:port`, or `https://` with `tls`.
    pub primary_url: String,
    pub primary_database: String,
    pub username: String,
    pub password: SecretString,
    pub tls: Option<ClientTls>,
    /// How this replica names itself in the primary's status.
    pub replica_name: String,
    /// Whether a replica whose history parts from its primary's may cut its own txs past the
    /// fork (kept in an evidence file) to follow it: immudb's `allow-tx-discarding`.
    pub allow_tx_discarding: bool,
    /// The primary's public key (hex) its signed checkpoints must verify with; `None`: the
    /// first key it signs with is pinned.
    pub primary_public_key: Option<String>,
    /// This server's signing key, if it has one: the replica cosigns every state it
    /// acknowledges with it.
    pub cosign_key: Option<ed25519_dalek::SigningKey>,
}

/// A signed checkpoint of the primary's, its signature verified: the tx, its Alh, and when
/// the primary signed it.
#[derive(Clone, Copy)]
struct Checkpoint {
    tx: integrity::TxId,
    alh: integrity::Digest,
    timestamp_ms: u64,
}

/// Verifies the signature of a checkpoint the primary sent (`None` when it sends none):
/// with the configured key, else the pinned one, else the key it names, pinned then (trust
/// on first use). Unsigned checkpoints from a primary whose key is known, another key, a
/// signature that does not verify or another database's state stop the replica.
fn verify_checkpoint(
    local: &dyn Local,
    hub: &Hub,
    config: &ReplicatorConfig,
    state: Option<&wire::State>,
) -> Result<Option<Checkpoint>, End> {
    let known = config
        .primary_public_key
        .clone()
        .or_else(|| local.pinned_key());
    let Some(s) = state.filter(|s| !s.signature.is_empty()) else {
        return match known {
            Some(k) => Err(End::Unverified(format!(
                "the primary sends no signed checkpoints, but this replica checks them with key {k}"
            ))),
            None => Ok(None),
        };
    };
    let key_hex = match &known {
        Some(k) => k.clone(),
        None => integrity::hex::encode(&s.public_key),
    };
    let key = integrity::Digest::from_hex(&key_hex)
        .and_then(|d| ed25519_dalek::VerifyingKey::from_bytes(&d.0).ok())
        .ok_or_else(|| End::Stop(format!("the primary's key {key_hex} is not an Ed25519 key")))?;
    let alh = integrity::Digest::from_slice_lossy(&s.alh);
    if !integrity::signing::verify_state(&key, &s.uuid, s.tx_id, &alh, s.timestamp_ms, &s.signature)
    {
        return Err(End::Unverified(format!(
            "a signed checkpoint of the primary (tx {}) does not verify with its key {key_hex}: forged, or signed by another server",
            s.tx_id
        )));
    }
    if s.uuid != local.uuid() {
        return Err(End::Unverified(format!(
            "a signed checkpoint is of database {}, this replica holds {}",
            s.uuid,
            local.uuid()
        )));
    }
    if known.is_none() {
        local.pin_key(&key_hex).map_err(End::Retry)?;
        tracing::info!(primary = %config.primary_url, key = %key_hex, "pinned the primary's signing key");
    }
    hub.update_status(|st| st.primary_key = Some(key_hex.clone()));
    Ok(Some(Checkpoint {
        tx: s.tx_id,
        alh,
        timestamp_ms: s.timestamp_ms,
    }))
}

/// This replica's cosignature of the state at tx `tx` (Alh `alh`) of database `uuid`.
fn cosignature(
    key: &ed25519_dalek::SigningKey,
    uuid: &str,
    tx: integrity::TxId,
    alh: &integrity::Digest,
) -> wire::State {
    let timestamp_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    wire::State {
        uuid: uuid.to_string(),
        tx_id: tx,
        alh: alh.0.to_vec(),
        timestamp_ms,
        signature: integrity::signing::sign_state(key, uuid, tx, alh, timestamp_ms).to_vec(),
        public_key: key.verifying_key().to_bytes().to_vec(),
        ..wire::State::default()
    }
}

/// Checks a verified checkpoint against this replica's own history, if it holds its tx yet.
fn match_checkpoint(hub: &Hub, ledger: &Ledger, c: Checkpoint) -> Result<(), End> {
    if c.tx == 0 || c.tx > ledger.state().tx_id {
        return Ok(());
    }
    let ours = ledger
        .header(c.tx)
        .map_err(|e| End::Retry(e.to_string()))?
        .alh();
    if ours != c.alh {
        return Err(End::Unverified(format!(
            "the primary signed tx {} with Alh {}, but this replica holds Alh {ours} there: the primary showed it another history",
            c.tx, c.alh
        )));
    }
    hub.update_status(|st| st.signed_checkpoint = Some((c.tx, c.timestamp_ms)));
    Ok(())
}

/// Why a follow attempt ended.
enum End {
    /// Retry after a backoff.
    Retry(String),
    /// The histories differ: stop.
    Diverged(Box<Divergence>),
    /// The primary cannot be followed (replaced by a newer epoch, another protocol): stop,
    /// keeping the data, until the replica is re-pointed.
    Stop(String),
    /// What the primary sent does not verify (a signed checkpoint forged, of another
    /// database or of another history; signatures withheld): stop as for `Stop`, counted
    /// as a verification failure.
    Unverified(String),
}

struct Divergence {
    reason: String,
    local: Option<integrity::TxHeader>,
    remote: Option<integrity::TxHeader>,
    evidence: Option<super::evidence::Evidence>,
}

fn diverged(
    reason: String,
    local: Option<integrity::TxHeader>,
    remote: Option<integrity::TxHeader>,
) -> End {
    End::Diverged(Box::new(Divergence {
        reason,
        local,
        remote,
        evidence: None,
    }))
}

/// Verifies and applies `txs` pushed by ReplicateTx to replica database `name`: txs it
/// already holds with the same Alh are skipped; a tx another stream applied meanwhile is
/// [`ReplicationError::Concurrent`], a gap [`ReplicationError::Gap`], any other difference a
/// divergence.
pub async fn apply_pushed(
    ledger: &Ledger,
    name: &str,
    txs: Vec<wire::ReplicatedTx>,
) -> Result<(), ReplicationError> {
    let head = ledger.state().tx_id;
    let mut fresh = Vec::with_capacity(txs.len());
    let mut sent = Vec::with_capacity(txs.len());
    for tx in txs {
        let (header, alh) = crate::ledger::record_header(&tx.record)?;
        if header.id > head {
            fresh.push(tx.record);
            sent.push((header.id, alh));
            continue;
        }
        let ours = ledger.header(header.id)?.alh();
        if ours != alh {
            return Err(ReplicationError::Diverged {
                database: name.to_string(),
                tx: header.id,
                ours,
                theirs: alh,
            });
        }
    }
    let (tx, reason) = match ledger.apply_records(fresh).await {
        (_, None) => return Ok(()),
        (_, Some(LedgerError::NotNext { tx, reason })) => (tx, reason),
        (_, Some(e)) => return Err(e.into()),
    };
    // Not every refusal is a divergence: another stream may have applied the same tx
    // meanwhile, or the caller skipped some.
    let last = ledger.state().tx_id;
    let sent_alh = sent.iter().find(|(id, _)| *id == tx).map(|(_, a)| *a);
    let database = name.to_string();
    if tx <= last && ledger.header(tx).ok().map(|h| h.alh()) == sent_alh {
        return Err(ReplicationError::Concurrent { database, tx });
    }
    if tx > last + 1 {
        return Err(ReplicationError::Gap { database, tx, last });
    }
    Err(ReplicationError::NotNext {
        database,
        tx,
        reason,
    })
}

/// Runs until the task is aborted or the histories differ.
pub async fn run(local_replica: Arc<dyn Local>, hub: Arc<Hub>, config: ReplicatorConfig) {
    let mut backoff = Backoff::default();
    loop {
        hub.update_status(|s| s.state = ReplicaState::Connecting);
        let (end, progressed) = follow(&*local_replica, &hub, &config).await;
        let unverified = matches!(end, End::Unverified(_));
        match end {
            End::Diverged(d) => {
                let Divergence {
                    reason,
                    mut local,
                    mut remote,
                    evidence,
                } = *d;
                let mut head = None;
                let mut reason = reason;
                if let Some(ev) = &evidence {
                    local = ev.local.as_ref().map(|s| s.header).or(local);
                    remote = ev.remote.as_ref().map(|s| s.header).or(remote);
                    head = Some(ev.remote_state.tx_id);
                    let doc =
                        ev.to_json(&local_uuid(&*local_replica), &config.primary_url, &reason);
                    let ours = local_replica.ledger().map_or(0, |l| l.state().tx_id);
                    let discard = ours.saturating_sub(ev.fork_after);
                    if config.allow_tx_discarding {
                        let (l, keep) = (local_replica.clone(), ev.fork_after);
                        let rewound =
                            tokio::task::spawn_blocking(move || l.rewind(keep, doc.clone()))
                                .await
                                .map_err(|e| e.to_string())
                                .and_then(|r| r);
                        match rewound {
                            Ok(n) => {
                                tracing::warn!(primary = %config.primary_url, database = %config.primary_database, fork_after_tx = keep, discarded = n, "rejoined: this database's txs after the fork were moved to rewound-*.json and cut; following the primary");
                                backoff.reset();
                                continue;
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "the rewind failed; the replica stops with its data as it was");
                            }
                        }
                    } else if let Err(e) = local_replica.record_divergence(&doc) {
                        tracing::error!(error = %e, "could not write the divergence evidence");
                    }
                    if discard > 0 && !config.allow_tx_discarding {
                        reason = format!("{reason}; following this primary would discard this replica's {discard} txs after tx {} (kept in an evidence file): allow it with --replication-allow-tx-discarding", ev.fork_after);
                    }
                }
                tracing::error!(
                    primary = %config.primary_url, database = %config.primary_database, %reason,
                    fork_after_tx = evidence.as_ref().map(|e| e.fork_after),
                    local = ?local, remote = ?remote,
                    "replication stopped: this replica's history differs from its primary's; local data is kept as is, the evidence is in divergence.json"
                );
                hub.update_status(|s| {
                    s.state = ReplicaState::Diverged;
                    s.verification_failures += 1;
                    s.last_error = Some(reason.clone());
                    if let Some(h) = head {
                        s.primary_head = h;
                    }
                    if let Some(r) = remote {
                        s.diverged = Some((local, r));
                    } else if let Some(l) = local {
                        s.diverged_local_only = Some(l);
                    }
                });
                return;
            }
            End::Stop(reason) | End::Unverified(reason) => {
                tracing::error!(primary = %config.primary_url, database = %config.primary_database, %reason, "replication stopped");
                hub.update_status(|s| {
                    if unverified {
                        s.verification_failures += 1;
                    }
                    s.state = ReplicaState::Stopped;
                    s.last_error = Some(reason.clone());
                });
                return;
            }
            End::Retry(e) => {
                if progressed {
                    backoff.reset();
                }
                let delay = backoff.delay(jitter());
                tracing::warn!(primary = %config.primary_url, error = %e, retry_in_ms = delay.as_millis() as u64, "replication interrupted");
                hub.update_status(|s| {
                    s.state = ReplicaState::Connecting;
                    s.reconnects += 1;
                    s.last_error = Some(e.clone());
                });
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// One connection: returns how it ended and whether it applied or heard anything.
async fn follow(local: &dyn Local, hub: &Hub, config: &ReplicatorConfig) -> (End, bool) {
    let mut progressed = false;
    let end = follow_inner(local, hub, config, &mut progressed).await;
    (
        end.err()
            .unwrap_or_else(|| End::Retry("the primary closed the stream".into())),
        progressed,
    )
}

async fn follow_inner(
    local: &dyn Local,
    hub: &Hub,
    config: &ReplicatorConfig,
    progressed: &mut bool,
) -> Result<(), End> {
    let retry = |e: &dyn std::fmt::Display| End::Retry(e.to_string());
    let ledger = local
        .ledger()
        .ok_or_else(|| End::Retry("the replica database is not open".into()))?;
    let client = Client::connect(&config.primary_url, config.tls.clone())
        .await
        .map_err(|e| retry(&e))?;
    client
        .login(&config.username, config.password.expose_secret())
        .await
        .map_err(|e| retry(&e))?;
    let state = ledger.state();
    let expected_uuid = if state.tx_id == 0 {
        String::new()
    } else {
        local.uuid()
    };
    let (acks, outbound) = tokio::sync::mpsc::channel(16);
    let hello = FollowHello {
        epoch: ledger.epoch(),
        newer_primary: String::new(),
        protocol_major: wire::PROTOCOL_MAJOR,
        protocol_minor: wire::PROTOCOL_MINOR,
        features: vec!["epochs".into()],
        database: config.primary_database.clone(),
        expected_uuid,
        tx_id: state.tx_id,
        alh: if state.tx_id == 0 {
            Vec::new()
        } else {
            state.alh.0.to_vec()
        },
        replica: config.replica_name.clone(),
    };
    acks.send(FollowRequest {
        msg: Some(wire::follow_request::Msg::Hello(hello)),
    })
    .await
    .map_err(|_| End::Retry("stream closed".into()))?;
    let mut stream = match client
        .replication()
        .follow(tokio_stream::wrappers::ReceiverStream::new(outbound))
        .await
    {
        Ok(s) => s.into_inner(),
        Err(s) => {
            if let Some(reason @ (Reason::StalePrimary | Reason::IncompatibleProtocol)) =
                Reason::of(&s)
            {
                return Err(End::Stop(format!("{}: {}", reason.as_str(), s.message())));
            }
            if let Some(reason) = Reason::of(&s).filter(|r| r.is_divergence()) {
                let local_header = ledger.last_header();
                let mut end = diverged(
                    format!("{}: {}", reason.as_str(), s.message()),
                    local_header,
                    None,
                );
                if let End::Diverged(d) = &mut end {
                    d.evidence = gather(&client, config, &ledger).await;
                }
                return Err(end);
            }
            return Err(retry(&s.message()));
        }
    };
    // Two stages: this task reads, decodes, verifies and queues each batch; `complete` waits
    // for the writer to store it, then acknowledges it. So the next batch is verified while the
    // writer stores this one.
    let (queued, completions) = tokio::sync::mpsc::channel(APPLY_PIPELINE_BATCHES);
    let reader = read_batches(local, hub, config, &ledger, &mut stream, queued, progressed);
    let cosign = config.cosign_key.as_ref().map(|k| (k, local));
    let completer = complete(hub, &ledger, completions, acks, cosign);
    // The reader ends first (the stream ended or failed, or the completer stopped taking
    // batches); the completer then drains what was queued, so that the next connection starts
    // from a position that includes it.
    let (read, completed) = tokio::join!(reader, completer);
    let mut end = completed.and(read);
    if let Err(End::Diverged(d)) = &mut end {
        d.evidence = gather(&client, config, &ledger).await;
    }
    end
}

async fn gather(
    client: &Client,
    config: &ReplicatorConfig,
    ledger: &Ledger,
) -> Option<super::evidence::Evidence> {
    match super::evidence::gather(client, &config.primary_database, ledger).await {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::warn!(error = %e, "could not gather the evidence of a divergence");
            None
        }
    }
}

fn local_uuid(local: &dyn Local) -> String {
    local.uuid()
}

/// Batches verified and queued to the writer ahead of the one being stored.
const APPLY_PIPELINE_BATCHES: usize = 4;

/// A batch queued to the writer, with what its acknowledgement needs.
struct InFlight {
    queued: crate::ledger::Queued,
    remote: Vec<integrity::TxHeader>,
    head: u64,
    head_ts: u64,
    /// The batch's signed checkpoint, checked once the batch is stored.
    checkpoint: Option<Checkpoint>,
}

async fn read_batches(
    local: &dyn Local,
    hub: &Hub,
    config: &ReplicatorConfig,
    ledger: &Arc<Ledger>,
    stream: &mut tonic::Streaming<wire::FollowResponse>,
    queued: tokio::sync::mpsc::Sender<InFlight>,
    progressed: &mut bool,
) -> Result<(), End> {
    let retry = |e: &dyn std::fmt::Display| End::Retry(e.to_string());
    loop {
        let msg = tokio::select! {
            m = stream.message() => match m {
                Ok(Some(m)) => m,
                Ok(None) => return Ok(()),
                Err(s) => return Err(retry(&s.message())),
            },
            // The completer stopped: it has the reason.
            _ = queued.closed() => return Ok(()),
        };
        *progressed = true;
        match msg.msg {
            Some(Msg::Welcome(w)) => {
                let (major, minor) =
                    super::primary::protocol_of(w.protocol_major, w.protocol_minor);
                if major != wire::PROTOCOL_MAJOR {
                    return Err(End::Stop(
                        ReplicationError::IncompatibleProtocol {
                            ours_major: wire::PROTOCOL_MAJOR,
                            ours_minor: wire::PROTOCOL_MINOR,
                            theirs_major: major,
                            theirs_minor: minor,
                        }
                        .to_string(),
                    ));
                }
                let ours = ledger.epoch();
                if major == 1 && minor >= 1 && w.epoch < ours {
                    return Err(End::Stop(format!(
                        "stale_primary: the primary is at epoch {}, this replica at epoch {ours}: it was replaced, and this replica does not take its txs; re-point the replica to the newer primary",
                        w.epoch
                    )));
                }
                if w.uuid != local.uuid() {
                    if ledger.state().tx_id == 0 {
                        local.adopt_uuid(&w.uuid).map_err(End::Retry)?;
                    } else {
                        return Err(diverged(
                            format!(
                                "the primary is database {}, this replica holds {}",
                                w.uuid,
                                local.uuid()
                            ),
                            ledger.last_header(),
                            None,
                        ));
                    }
                }
                hub.update_status(|s| {
                    s.primary_head = w.head_tx_id;
                    s.state = ReplicaState::while_applying(ledger.state().tx_id, w.head_tx_id);
                    s.last_error = None;
                });
            }
            Some(Msg::Heartbeat(b)) => {
                if let Some(c) = verify_checkpoint(local, hub, config, b.checkpoint.as_ref())? {
                    match_checkpoint(hub, ledger, c)?;
                }
                let applied = ledger.state().tx_id;
                hub.update_status(|s| {
                    s.primary_head = b.head_tx_id;
                    s.primary_head_timestamp_us = b.head_timestamp_us;
                    s.last_applied = applied;
                    s.state = ReplicaState::while_applying(applied, b.head_tx_id);
                });
            }
            Some(Msg::Batch(b)) => {
                let checkpoint = verify_checkpoint(local, hub, config, b.checkpoint.as_ref())?;
                let mut records = Vec::with_capacity(b.txs.len());
                let mut remote = Vec::with_capacity(b.txs.len());
                for tx in b.txs {
                    let (header, _) =
                        crate::ledger::record_header(&tx.record).map_err(|e| retry(&e))?;
                    remote.push(header);
                    records.push(tx.record);
                }
                let batch = InFlight {
                    queued: ledger.apply_records_queued(records).await,
                    remote,
                    head: b.head_tx_id,
                    head_ts: b.head_timestamp_us,
                    checkpoint,
                };
                if queued.send(batch).await.is_err() {
                    return Ok(());
                }
            }
            None => {}
        }
    }
}

/// Waits for each queued batch in order, acknowledges it and records progress; stops at the
/// first refusal.
async fn complete(
    hub: &Hub,
    ledger: &Ledger,
    mut completions: tokio::sync::mpsc::Receiver<InFlight>,
    acks: tokio::sync::mpsc::Sender<FollowRequest>,
    cosign: Option<(&ed25519_dalek::SigningKey, &dyn Local)>,
) -> Result<(), End> {
    while let Some(batch) = completions.recv().await {
        let InFlight {
            queued,
            remote,
            head,
            head_ts,
            checkpoint,
        } = batch;
        let (applied, error) = queued.wait().await;
        let last = applied.last().copied();
        if let Some(h) = last {
            let _ = acks
                .send(FollowRequest {
                    msg: Some(wire::follow_request::Msg::AckTxId(h.id)),
                })
                .await;
            if let Some((key, local)) = cosign {
                let _ = acks
                    .send(FollowRequest {
                        msg: Some(wire::follow_request::Msg::Cosignature(cosignature(
                            key,
                            &local.uuid(),
                            h.id,
                            &h.alh(),
                        ))),
                    })
                    .await;
            }
        }
        match error {
            None => {}
            Some(LedgerError::NotNext { tx, reason }) => {
                let local_header = ledger.header(tx).ok().or_else(|| ledger.last_header());
                let remote_header = remote
                    .iter()
                    .find(|h| h.id == tx)
                    .copied()
                    .or(remote.get(applied.len()).copied());
                return Err(diverged(
                    format!("tx {tx} from the primary does not extend this replica: {reason}"),
                    local_header,
                    remote_header,
                ));
            }
            Some(e) => return Err(End::Retry(e.to_string())),
        }
        if let Some(c) = checkpoint {
            match_checkpoint(hub, ledger, c)?;
        }
        if let Some(h) = last {
            hub.update_status(|s| {
                s.last_applied = h.id;
                s.last_applied_timestamp_us = h.timestamp_us;
                s.primary_head = head.max(h.id);
                s.primary_head_timestamp_us = head_ts.max(h.timestamp_us);
                s.state = ReplicaState::while_applying(h.id, head);
                s.last_error = None;
            });
        }
    }
    Ok(())
}

/// How long a promoted database keeps trying to reach its former primary.
const TELL_FORMER_PRIMARY_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// Tells the primary a database followed before its promotion that epoch `epoch` replaced
/// it: a hello that carries the new epoch and where the new primary is (`advertise`), which
/// the former primary answers by fencing itself (`stale_primary`). Tried with backoff for a
/// minute; a former primary that is down is fenced when it next hears of the epoch (a
/// replica's hello, a verified client) or is re-pointed.
pub async fn tell_former_primary(
    config: ReplicatorConfig,
    epoch: u64,
    advertise: String,
    uuid: String,
    state: crate::ledger::State,
) {
    let started = tokio::time::Instant::now();
    let mut backoff = Backoff::default();
    loop {
        let attempt = async {
            let client = Client::connect(&config.primary_url, config.tls.clone())
                .await
                .map_err(|e| e.to_string())?;
            client
                .login(&config.username, config.password.expose_secret())
                .await
                .map_err(|e| e.to_string())?;
            let hello = FollowHello {
                database: config.primary_database.clone(),
                expected_uuid: uuid.clone(),
                tx_id: state.tx_id,
                alh: state.alh.0.to_vec(),
                replica: format!("{} (promoted)", config.replica_name),
                epoch,
                newer_primary: advertise.clone(),
                protocol_major: wire::PROTOCOL_MAJOR,
                protocol_minor: wire::PROTOCOL_MINOR,
                features: vec!["epochs".into()],
            };
            let first = FollowRequest {
                msg: Some(wire::follow_request::Msg::Hello(hello)),
            };
            match client
                .replication()
                .follow(tokio_stream::iter([first]))
                .await
            {
                Err(s) if Reason::of(&s) == Some(Reason::StalePrimary) => Ok(true),
                Err(s) => Err(s.message().to_string()),
                // A former primary that does not know epochs (an older release).
                Ok(_) => Ok(false),
            }
        };
        match attempt.await {
            Ok(true) => {
                tracing::info!(primary = %config.primary_url, database = %config.primary_database, epoch, "the former primary was told of the new epoch and fenced itself");
                return;
            }
            Ok(false) => {
                tracing::warn!(primary = %config.primary_url, database = %config.primary_database, epoch, "the former primary did not fence itself (it predates epochs): stop its writes by hand");
                return;
            }
            Err(e) if started.elapsed() < TELL_FORMER_PRIMARY_FOR => {
                let delay = backoff.delay(jitter());
                tracing::warn!(primary = %config.primary_url, error = %e, retry_in_ms = delay.as_millis() as u64, "could not reach the former primary to tell it of the new epoch");
                tokio::time::sleep(delay).await;
            }
            Err(e) => {
                tracing::warn!(primary = %config.primary_url, error = %e, "gave up telling the former primary of the new epoch: it is fenced when it next hears of it");
                return;
            }
        }
    }
}
