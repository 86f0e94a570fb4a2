//! Per database: the replicas following it, their acknowledged positions, and (on a replica)
//! its replicator's status.

use super::{ReplicaState, ReplicationError};
use crate::integrity::{TxHeader, TxId};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follower {
    pub replica: String,
    pub peer: String,
    pub acked: TxId,
    /// False once it acknowledged what it was not sent, or lost its permission: its
    /// acknowledgements no longer count.
    pub trusted: bool,
}

/// A replicator's view, for status and metrics.
#[derive(Debug, Clone)]
pub struct ReplicaStatus {
    pub state: ReplicaState,
    pub primary: String,
    pub last_applied: TxId,
    pub last_applied_timestamp_us: u64,
    pub primary_head: TxId,
    pub primary_head_timestamp_us: u64,
    pub last_error: Option<String>,
    /// The replica's and the primary's header where they differ.
    pub diverged: Option<(Option<TxHeader>, TxHeader)>,
    /// The replica's header where it holds a tx its primary does not (replica ahead).
    pub diverged_local_only: Option<TxHeader>,
    /// The last of the primary's signed checkpoints verified: its tx and signing time (ms).
    pub signed_checkpoint: Option<(TxId, u64)>,
    /// The primary's public key checkpoints are verified with (hex), given or pinned.
    pub primary_key: Option<String>,
    /// Connections to the primary lost and tried again since the replicator started.
    pub reconnects: u64,
    /// Times what the primary sent failed verification (a divergence, a forged or
    /// mismatched checkpoint) since the replicator started.
    pub verification_failures: u64,
}

impl ReplicaStatus {
    pub fn lag_txs(&self) -> u64 {
        self.primary_head.saturating_sub(self.last_applied)
    }

    pub fn lag_ms(&self) -> u64 {
        if self.lag_txs() == 0 {
            0
        } else {
            self.primary_head_timestamp_us
                .saturating_sub(self.last_applied_timestamp_us)
                / 1000
        }
    }
}

/// The file in a database's directory that records a fence: `{"epoch", "newer_primary"}`.
pub const FENCE_FILE: &str = "FENCED";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Debug)]
pub struct Hub {
    followers: Mutex<BTreeMap<u64, Follower>>,
    next_id: AtomicU64,
    /// Bumped on every acknowledgement, for synchronous commits to wait on.
    acks: tokio::sync::watch::Sender<u64>,
    status: Mutex<Option<ReplicaStatus>>,
    runner: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Set once this database, a primary, learned of a newer epoch: the epoch, and where
    /// its primary is if known. Writes are refused from then on.
    fenced: Mutex<Option<(u64, String)>>,
    /// The newest state each replica key cosigned (checked), by key (hex).
    cosignatures: Mutex<BTreeMap<String, crate::wire::State>>,
    /// For a primary whose leadership is a lease (automatic failover): writes are taken
    /// only until this instant, which each renewal of the lease moves on.
    write_deadline: Mutex<Option<std::time::Instant>>,
    /// What the failover coordinator last saw for this database, for status.
    coordinator: Mutex<Option<String>>,
}

impl Default for Hub {
    fn default() -> Hub {
        Hub {
            followers: Mutex::default(),
            next_id: AtomicU64::new(1),
            acks: tokio::sync::watch::Sender::new(0),
            status: Mutex::default(),
            runner: Mutex::default(),
            fenced: Mutex::default(),
            cosignatures: Mutex::default(),
            write_deadline: Mutex::default(),
            coordinator: Mutex::default(),
        }
    }
}

/// Unregisters a follower when its stream ends.
pub struct Registration {
    hub: Arc<Hub>,
    id: u64,
}

impl Registration {
    /// The last tx this follower holds durably, by its acknowledgements.
    pub fn acked(&self) -> TxId {
        lock(&self.hub.followers)
            .get(&self.id)
            .map_or(0, |f| f.acked)
    }

    pub fn ack(&self, tx: TxId) {
        if let Some(f) = lock(&self.hub.followers).get_mut(&self.id) {
            if f.trusted {
                f.acked = f.acked.max(tx);
            }
        }
        self.hub.acks.send_modify(|g| *g += 1);
    }

    /// Stops counting this follower's acknowledgements, at once.
    pub fn distrust(&self) {
        if let Some(f) = lock(&self.hub.followers).get_mut(&self.id) {
            f.trusted = false;
            f.acked = 0;
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.hub.followers).remove(&self.id);
        self.hub.acks.send_modify(|g| *g += 1);
    }
}

impl Hub {
    /// Fences this database: a newer epoch `epoch` replaced it as primary (its primary at
    /// `newer`, if known). Keeps the highest epoch heard of; returns whether this is news.
    /// With `dir` (the database's directory), the fence is also written there
    /// ([`FENCE_FILE`]), so a restart keeps it.
    pub fn fence_in(&self, dir: Option<&std::path::Path>, epoch: u64, newer: &str) -> bool {
        let news = self.fence(epoch, newer);
        if let (Some(dir), Some((e, n))) = (dir, self.fenced()) {
            let doc = serde_json::json!({"epoch": e, "newer_primary": n});
            if let Err(err) = crate::fs::replace(
                &dir.join(FENCE_FILE),
                doc.to_string().as_bytes(),
                crate::fs::FILE_MODE,
            ) {
                tracing::error!(error = %err, "could not record the fence; it holds until the server stops");
            }
        }
        news
    }

    /// Loads the fence a database's directory records, if any.
    pub fn load_fence(&self, dir: &std::path::Path) {
        if let Ok(Some(b)) = crate::fs::read(&dir.join(FENCE_FILE)) {
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
            if let Some(e) = v["epoch"].as_u64() {
                self.fence(e, v["newer_primary"].as_str().unwrap_or_default());
            }
        }
    }

    /// Lifts the fence and removes its record from `dir`.
    pub fn unfence_in(&self, dir: &std::path::Path) {
        self.unfence();
        let _ = crate::fs::remove(&dir.join(FENCE_FILE));
    }

    /// [`Hub::fence_in`] without recording it.
    pub fn fence(&self, epoch: u64, newer: &str) -> bool {
        let mut f = lock(&self.fenced);
        match &mut *f {
            Some((e, n)) if *e >= epoch => {
                if n.is_empty() && *e == epoch && !newer.is_empty() {
                    *n = newer.to_string();
                }
                false
            }
            _ => {
                *f = Some((epoch, newer.to_string()));
                true
            }
        }
    }

    /// The newer epoch that replaced this primary, and where its primary is (may be empty).
    pub fn fenced(&self) -> Option<(u64, String)> {
        lock(&self.fenced).clone()
    }

    /// Records what the failover coordinator sees for this database.
    pub fn set_coordinator_view(&self, view: String) {
        *lock(&self.coordinator) = Some(view);
    }

    /// What the failover coordinator last saw, if one runs.
    pub fn coordinator_view(&self) -> Option<String> {
        lock(&self.coordinator).clone()
    }

    /// Takes writes only until `deadline` (`None`: no lease, always).
    pub fn set_write_deadline(&self, deadline: Option<std::time::Instant>) {
        *lock(&self.write_deadline) = deadline;
    }

    /// Whether a lease deadline has passed: the primary may have been replaced meanwhile.
    pub fn lease_lapsed(&self) -> bool {
        lock(&self.write_deadline).is_some_and(|d| std::time::Instant::now() >= d)
    }

    /// Keeps `state`, a checked cosignature by `key`, if it is that key's newest.
    pub fn cosign(&self, key: String, state: crate::wire::State) {
        let mut c = lock(&self.cosignatures);
        if c.get(&key).is_none_or(|old| old.tx_id <= state.tx_id) {
            c.insert(key, state);
        }
    }

    /// The newest cosignature of every replica key.
    pub fn cosignatures(&self) -> Vec<crate::wire::State> {
        lock(&self.cosignatures).values().cloned().collect()
    }

    /// Lifts the fence: the database became a replica of the newer primary, or a primary of
    /// a newer epoch itself.
    pub fn unfence(&self) {
        *lock(&self.fenced) = None;
    }

    pub fn register(self: &Arc<Self>, replica: String, peer: String, acked: TxId) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.followers).insert(
            id,
            Follower {
                replica,
                peer,
                acked,
                trusted: true,
            },
        );
        Registration {
            hub: self.clone(),
            id,
        }
    }

    pub fn followers(&self) -> Vec<Follower> {
        lock(&self.followers).values().cloned().collect()
    }

    /// How many followers hold tx `tx` durably.
    pub fn acked(&self, tx: TxId) -> usize {
        lock(&self.followers)
            .values()
            .filter(|f| f.trusted && f.acked >= tx)
            .count()
    }

    pub fn subscribe_acks(&self) -> tokio::sync::watch::Receiver<u64> {
        self.acks.subscribe()
    }

    /// Waits until `needed` followers hold tx `tx` durably, at most `timeout`, and no longer
    /// once `stopping` turns true (the server shuts down): a synchronous commit's
    /// acknowledgement.
    pub async fn await_acks(
        &self,
        tx: TxId,
        needed: usize,
        timeout: Duration,
        mut stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), ReplicationError> {
        let mut acks = self.subscribe_acks();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let have = self.acked(tx);
            if have >= needed {
                return Ok(());
            }
            let woke = tokio::select! {
                c = tokio::time::timeout_at(deadline, acks.changed()) => matches!(c, Ok(Ok(()))),
                _ = stopping.wait_for(|s| *s) => false,
            };
            if !woke {
                return Err(ReplicationError::NotReplicated {
                    tx,
                    have,
                    needed,
                    timeout_ms: timeout.as_millis() as u64,
                });
            }
        }
    }

    pub fn status(&self) -> Option<ReplicaStatus> {
        lock(&self.status).clone()
    }

    pub fn update_status(&self, f: impl FnOnce(&mut ReplicaStatus)) {
        if let Some(s) = lock(&self.status).as_mut() {
            f(s);
        }
    }

    /// Starts `runner` as this database's replicator, stopping any previous one.
    pub fn start_replicator(&self, primary: String, runner: tokio::task::JoinHandle<()>) {
        self.stop_replicator();
        *lock(&self.status) = Some(ReplicaStatus {
            state: ReplicaState::Connecting,
            primary,
            last_applied: 0,
            last_applied_timestamp_us: 0,
            primary_head: 0,
            primary_head_timestamp_us: 0,
            last_error: None,
            diverged: None,
            diverged_local_only: None,
            signed_checkpoint: None,
            primary_key: None,
            reconnects: 0,
            verification_failures: 0,
        });
        *lock(&self.runner) = Some(runner);
    }

    pub fn stop_replicator(&self) {
        if let Some(h) = lock(&self.runner).take() {
            h.abort();
        }
        if let Some(s) = lock(&self.status).as_mut() {
            if s.state != ReplicaState::Diverged {
                s.state = ReplicaState::Stopped;
            }
        }
    }

    /// Forgets the replicator entirely (the database is a primary now).
    pub fn clear_replicator(&self) {
        self.stop_replicator();
        *lock(&self.status) = None;
    }
}
