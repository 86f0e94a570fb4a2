//! The primary side of a follow stream: check the replica's position against this history,
//! then send committed txs in bounded batches as they commit, and heartbeats while idle.

use super::hub::Hub;
use super::ReplicationError;
use crate::integrity::{Digest, TxId};
use crate::ledger::{Ledger, LedgerError};
use crate::wire::{
    self, follow_response::Msg, FollowHello, FollowRequest, FollowResponse, TxBatch,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Most txs in one batch.
pub const BATCH_TXS_MAX: usize = 1000;
/// Most record bytes in one batch (a larger tx still goes alone).
pub const BATCH_BYTES_MAX: usize = 4 << 20;
/// A heartbeat goes out after this long without a batch.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Longest a fresh batch waits for the replica to acknowledge the one before it.
const ACK_WAIT_MAX: Duration = Duration::from_millis(5);
/// Most txs read on the streaming task itself rather than on a blocking thread.
const READ_INLINE_TXS_MAX: u64 = 64;
/// Batches sent ahead of the replica by default.
pub const PREFETCH_BATCHES_DEFAULT: usize = 4;

/// Batches that may wait ahead of a replica, from the database's
/// `prefetch_tx_buffer_size` setting (in txs; unset: [`PREFETCH_BATCHES_DEFAULT`]).
pub fn prefetch_batches(prefetch_tx_buffer_size: Option<u32>) -> usize {
    prefetch_tx_buffer_size.map_or(PREFETCH_BATCHES_DEFAULT, |n| {
        (n as usize).div_ceil(BATCH_TXS_MAX).max(1)
    })
}

/// The protocol a hello or welcome names (an older peer names none: 1.0).
pub fn protocol_of(major: u32, minor: u32) -> (u32, u32) {
    if major == 0 {
        (1, 0)
    } else {
        (major, minor)
    }
}

/// Checks what a hello says beside its position: the protocol's major version must be this
/// one's, and a replica that knows a newer epoch than this database's means this primary was
/// replaced: it is fenced (`hub`) before the refusal.
pub fn check_hello(
    ledger: &Ledger,
    hub: &Hub,
    database: &str,
    hello: &FollowHello,
) -> Result<(), ReplicationError> {
    let (major, minor) = protocol_of(hello.protocol_major, hello.protocol_minor);
    if major != wire::PROTOCOL_MAJOR {
        return Err(ReplicationError::IncompatibleProtocol {
            ours_major: wire::PROTOCOL_MAJOR,
            ours_minor: wire::PROTOCOL_MINOR,
            theirs_major: major,
            theirs_minor: minor,
        });
    }
    let epoch = ledger.epoch();
    if hello.epoch > epoch {
        if hub.fence_in(Some(ledger.dir()), hello.epoch, &hello.newer_primary) {
            tracing::error!(
                database, epoch, newer = hello.epoch, newer_primary = %hello.newer_primary, replica = %hello.replica,
                "a replica knows a newer epoch: this primary was replaced, and refuses writes from now on"
            );
        }
        let newer_primary = hub.fenced().map(|(_, p)| p).unwrap_or_default();
        return Err(ReplicationError::StalePrimary {
            database: database.to_string(),
            epoch,
            newer: hello.epoch,
            newer_primary,
        });
    }
    Ok(())
}

/// Checks a replica's cosignature: it signs a state of this database, at a tx sent on the
/// stream, whose Alh is this history's there, with the key it names. Returns the key (hex).
pub fn check_cosignature(
    ledger: &Ledger,
    uuid: &str,
    s: &wire::State,
    sent: TxId,
) -> Result<String, String> {
    if s.uuid != uuid || s.tx_id == 0 || s.tx_id > sent {
        return Err(format!(
            "a state of another database or tx ({} at tx {})",
            s.uuid, s.tx_id
        ));
    }
    let key = <[u8; 32]>::try_from(s.public_key.as_slice())
        .ok()
        .and_then(|k| ed25519_dalek::VerifyingKey::from_bytes(&k).ok())
        .ok_or("no Ed25519 public key")?;
    let alh = Digest::from_slice_lossy(&s.alh);
    if !crate::integrity::signing::verify_state(
        &key,
        uuid,
        s.tx_id,
        &alh,
        s.timestamp_ms,
        &s.signature,
    ) {
        return Err("its signature does not verify".into());
    }
    let ours = ledger.header(s.tx_id).map_err(|e| e.to_string())?.alh();
    if ours != alh {
        return Err(format!(
            "it signs Alh {alh} at tx {}, this history has {ours}",
            s.tx_id
        ));
    }
    Ok(crate::integrity::hex::encode(&s.public_key))
}

/// Whether the replica's position `(hello.tx_id, hello.alh)` is in this history.
pub fn check_position(
    ledger: &Ledger,
    database: &str,
    uuid: &str,
    hello: &FollowHello,
) -> Result<(), ReplicationError> {
    if !hello.expected_uuid.is_empty() && hello.expected_uuid != uuid {
        return Err(ReplicationError::OtherDatabase {
            ours: uuid.to_string(),
            theirs: hello.expected_uuid.clone(),
        });
    }
    let head = ledger.state().tx_id;
    if hello.tx_id > head {
        return Err(ReplicationError::ReplicaAhead {
            replica: hello.tx_id,
            head,
        });
    }
    if hello.tx_id > 0 {
        let ours = ledger.header(hello.tx_id)?.alh();
        if ours.0.as_slice() != hello.alh.as_slice() {
            return Err(ReplicationError::Diverged {
                database: database.to_string(),
                tx: hello.tx_id,
                ours,
                theirs: Digest::from_slice_lossy(&hello.alh),
            });
        }
    }
    Ok(())
}

/// The stored records of txs `from..=to`, at most one batch of them.
fn read_batch(
    ledger: &Ledger,
    from: TxId,
    to: TxId,
) -> Result<Vec<wire::ReplicatedTx>, LedgerError> {
    let to = to.min(from + BATCH_TXS_MAX as u64 - 1);
    Ok(ledger
        .records(from, to, BATCH_BYTES_MAX)?
        .into_iter()
        .map(|record| wire::ReplicatedTx { record })
        .collect())
}

/// Whether the caller of a stream may still hold it: checked when the stream starts
/// sending, and again on every change to users, grants or sessions (`changes`), so that a
/// revoked permission, a password change or a logout ends the stream at once.
pub struct Authority {
    pub check: Box<dyn Fn() -> Result<(), ReplicationError> + Send + Sync>,
    pub changes: tokio::sync::watch::Receiver<u64>,
}

/// Signs the state at a tx (its id and Alh) as the server signs states: the checkpoints a
/// primary with a signing key sends on its streams.
pub type Signer = Arc<dyn Fn(TxId, &Digest) -> wire::State + Send + Sync>;

/// A checked follow (or export) request, ready to be served.
pub struct Follow {
    pub ledger: Arc<Ledger>,
    pub uuid: String,
    pub hub: Arc<Hub>,
    pub hello: FollowHello,
    pub peer: String,
    /// Batches that may wait in the stream ahead of the replica.
    pub prefetch_batches: usize,
    /// Turns true when the server shuts down.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Stop once the head at the start has been sent (an export that does not follow).
    pub until_head: bool,
    pub authority: Authority,
    /// Set when the server signs states: every batch and heartbeat carries a checkpoint.
    pub signer: Option<Signer>,
}

/// Serves a follow stream whose hello was checked: a task sends batches into the returned
/// channel (bounded: flow control). With `inbound` (a replica's Follow), the replica is
/// registered in the hub and another task reads its acknowledgements; without (ExportTx),
/// nothing is acknowledged.
pub fn serve(
    follow: Follow,
    inbound: Option<tonic::Streaming<FollowRequest>>,
) -> tokio::sync::mpsc::Receiver<Result<FollowResponse, ReplicationError>> {
    let Follow {
        ledger,
        uuid,
        hub,
        hello,
        peer,
        prefetch_batches,
        mut stopping,
        until_head,
        authority,
        signer,
    } = follow;
    let Authority {
        check: still_allowed,
        mut changes,
    } = authority;
    let (out, rx) = tokio::sync::mpsc::channel(prefetch_batches.max(1));
    // The last tx sent on this stream: no acknowledgement may go past it.
    let sent_through = Arc::new(AtomicU64::new(hello.tx_id));
    let (cosign_ledger, cosign_uuid, cosign_hub, cosign_name) = (
        ledger.clone(),
        uuid.clone(),
        hub.clone(),
        hello.replica.clone(),
    );
    let registration = inbound.map(|mut inbound| {
        let registration = Arc::new(hub.register(hello.replica.clone(), peer, hello.tx_id));
        let (acks, sent_through, out) = (registration.clone(), sent_through.clone(), out.clone());
        tokio::spawn(async move {
            while let Ok(Some(msg)) = inbound.message().await {
                if let Some(wire::follow_request::Msg::Cosignature(s)) = msg.msg {
                    let sent = sent_through.load(Ordering::Acquire);
                    match check_cosignature(&cosign_ledger, &cosign_uuid, &s, sent) {
                        Ok(key) => cosign_hub.cosign(key, s),
                        Err(why) => tracing::warn!(replica = %cosign_name, %why, "a cosignature was refused"),
                    }
                    continue;
                }
                if let Some(wire::follow_request::Msg::AckTxId(tx)) = msg.msg {
                    let sent = sent_through.load(Ordering::Acquire);
                    if tx > sent {
                        acks.distrust();
                        let _ = out
                            .send(Err(ReplicationError::BadAck { acked: tx, sent }))
                            .await;
                        return;
                    }
                    acks.ack(tx);
                }
            }
        });
        registration
    });
    let replica = hello.replica.clone();
    tokio::spawn(async move {
        let _log = LogOnDrop(replica);
        let mut published = ledger.subscribe();
        let mut acks = hub.subscribe_acks();
        let mut sent = hello.tx_id;
        let start_head = ledger.state().tx_id;
        let welcome = Msg::Welcome(wire::Welcome {
            epoch: ledger.epoch(),
            protocol_major: wire::PROTOCOL_MAJOR,
            protocol_minor: wire::PROTOCOL_MINOR,
            features: vec!["epochs".into()],
            uuid,
            head_tx_id: start_head,
        });
        if out
            .send(Ok(FollowResponse { msg: Some(welcome) }))
            .await
            .is_err()
        {
            return;
        }
        loop {
            if *stopping.borrow() || (until_head && sent >= start_head) {
                return;
            }
            // Closed (reopened or truncated meanwhile): the follower reconnects to the
            // database as it is now.
            if ledger.is_closed() {
                let _ = out
                    .send(Err(crate::ledger::LedgerError::Closed.into()))
                    .await;
                return;
            }
            if let Err(e) = still_allowed() {
                if let Some(r) = &registration {
                    r.distrust();
                }
                let _ = out.send(Err(e)).await;
                return;
            }
            let head = if until_head {
                start_head
            } else {
                ledger.state().tx_id
            };
            let head_ts = ledger.last_header().map_or(0, |h| h.timestamp_us);
            if sent < head {
                // Natural batching: while the replica is still storing the last batch and
                // only a few txs wait, let the next commits join them rather than sending
                // each group commit on its own (each batch costs the replica an fsync). A
                // replica that is idle has acknowledged everything, so nothing waits then.
                if let Some(r) = &registration {
                    if head - sent < BATCH_TXS_MAX as u64 && r.acked() < sent {
                        tokio::select! {
                            _ = acks.changed() => {}
                            _ = changes.changed() => {}
                            _ = tokio::time::sleep(ACK_WAIT_MAX) => {}
                            _ = stopping.changed() => return,
                        }
                        continue;
                    }
                }
                // A few fresh txs are read in place (they are in the page cache); a backlog
                // is read on a blocking thread.
                let read = if head - sent <= READ_INLINE_TXS_MAX {
                    Ok(read_batch(&ledger, sent + 1, head))
                } else {
                    let l = ledger.clone();
                    tokio::task::spawn_blocking(move || read_batch(&l, sent + 1, head)).await
                };
                let txs = match read {
                    Ok(Ok(txs)) => txs,
                    Ok(Err(e)) => {
                        let _ = out.send(Err(e.into())).await;
                        return;
                    }
                    Err(_) => return,
                };
                sent += txs.len() as u64;
                sent_through.store(sent, Ordering::Release);
                // The checkpoint: the state at the batch's last tx, whose Alh its record holds.
                let checkpoint = signer.as_ref().and_then(|sign| {
                    let last = txs.last()?;
                    let (h, alh) = crate::ledger::record_header(&last.record).ok()?;
                    Some(sign(h.id, &alh))
                });
                let batch = TxBatch {
                    txs,
                    head_tx_id: head,
                    head_timestamp_us: head_ts,
                    checkpoint,
                };
                if out
                    .send(Ok(FollowResponse {
                        msg: Some(Msg::Batch(batch)),
                    }))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
            // Caught up: wait for the next commit, or send a heartbeat.
            // (The watch's guard must not live across the send below: map it away first.)
            let woke = tokio::select! {
                r = tokio::time::timeout(HEARTBEAT_INTERVAL, published.wait_for(|&id| id > sent)) => r.map(|r| r.is_ok()),
                _ = changes.changed() => continue,
                _ = stopping.changed() => return,
            };
            match woke {
                Ok(true) => {}
                Ok(false) => return,
                Err(_) => {
                    let checkpoint = signer.as_ref().map(|sign| {
                        let s = ledger.state();
                        sign(s.tx_id, &s.alh)
                    });
                    let beat = TxBatch {
                        txs: Vec::new(),
                        head_tx_id: head,
                        head_timestamp_us: head_ts,
                        checkpoint,
                    };
                    if out
                        .send(Ok(FollowResponse {
                            msg: Some(Msg::Heartbeat(beat)),
                        }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// Logs the end of a follow stream, however it ends.
struct LogOnDrop(String);

impl Drop for LogOnDrop {
    fn drop(&mut self) {
        tracing::info!(replica = %self.0, "replica stream ended");
    }
}
