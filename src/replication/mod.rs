//! Replication: a replica database follows its primary over one long-lived stream, verifying
//! each tx before applying it byte for byte.
//!
//! - [`hub`]: per database, who follows it (primary side) and how its replicator is doing
//!   (replica side); acknowledgements for synchronous commits.
//! - [`primary`]: the primary side of a stream: position check, batches, heartbeats.
//! - [`replicator`]: the replica side, a tokio task per replica database.
//! - [`external`]: the external replicator (`chainlog-replicator`): ExportTx on a source,
//!   ReplicateTx on a target.
//! - [`Backoff`] and [`ReplicaState`]: the decisions, without I/O.

pub mod evidence;
pub mod external;
pub mod hub;
pub mod primary;
pub mod replicator;

use crate::integrity::{Digest, TxId};
use std::time::Duration;

/// Why a replication call cannot go on, as a domain outcome: the server maps each to its
/// status (and reason) in one place.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// The replica expects another database than this one.
    #[error("this database is {ours}, the replica follows {theirs}")]
    OtherDatabase { ours: String, theirs: String },
    /// The replica holds txs this database does not.
    #[error("the replica is at tx {replica}, this database at tx {head}")]
    ReplicaAhead { replica: TxId, head: TxId },
    /// At a tx both hold, the two histories differ.
    #[error("at tx {tx} database {database} has Alh {ours}, the other side has {theirs}")]
    Diverged {
        database: String,
        tx: TxId,
        ours: Digest,
        theirs: Digest,
    },
    /// A pushed tx does not extend the replica: the histories differ.
    #[error("tx {tx} does not extend database {database}: {reason}")]
    NotNext {
        database: String,
        tx: TxId,
        reason: crate::ledger::ChainBreak,
    },
    /// Another stream applied the same tx meanwhile: go on from the replica's state.
    #[error("tx {tx} was applied to database {database} by another stream meanwhile; go on from its state")]
    Concurrent { database: String, tx: TxId },
    /// The pushed txs skip some: send them in order.
    #[error("tx {tx} does not follow database {database}'s last tx {last}: send txs in order from tx {}", last + 1)]
    Gap {
        database: String,
        tx: TxId,
        last: TxId,
    },
    /// A synchronous commit is durable here, but too few replicas acknowledged it in time.
    #[error("tx {tx} is durable on the primary but not yet replicated: {have} of {needed} replicas acknowledged it within {timeout_ms} ms")]
    NotReplicated {
        tx: TxId,
        have: usize,
        needed: usize,
        timeout_ms: u64,
    },
    /// The caller may no longer do this: its session ended (logout, password change, expiry:
    /// `unauthenticated`) or its permission was revoked.
    #[error("{message}")]
    Unauthorized {
        unauthenticated: bool,
        message: String,
    },
    /// A replica acknowledged a tx it was never sent: its acknowledgements are not trusted.
    #[error(
        "the replica acknowledged tx {acked}, but only txs up to {sent} were sent on this stream"
    )]
    BadAck { acked: TxId, sent: TxId },
    /// This database, a primary, was replaced by a newer epoch (a replica was promoted):
    /// it fenced itself on hearing of it and serves no replica.
    #[error("database {database} is at epoch {epoch}, but epoch {newer} replaced it{}: it takes no writes and serves no replica; follow the newer primary", if newer_primary.is_empty() { String::new() } else { format!(" (its primary is {newer_primary})") })]
    StalePrimary {
        database: String,
        epoch: u64,
        newer: u64,
        newer_primary: String,
    },
    /// The two sides speak replication protocols of different major versions.
    #[error("replication protocol {theirs_major}.{theirs_minor} on the other side, {ours_major}.{ours_minor} here: the major versions must match")]
    IncompatibleProtocol {
        ours_major: u32,
        ours_minor: u32,
        theirs_major: u32,
        theirs_minor: u32,
    },
    /// The database replication acts on failed.
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
}

/// A random u16 from the operating system, for backoff jitter.
pub(crate) fn jitter() -> u16 {
    let mut b = [0u8; 2];
    // Jitter only spreads reconnections out; a failing random source must not stop them.
    let _ = getrandom::fill(&mut b);
    u16::from_le_bytes(b)
}

/// Where a replicator is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaState {
    Connecting,
    CatchingUp,
    Streaming,
    /// Its history and the primary's differ: it stopped, and keeps its data as it was.
    Diverged,
    Stopped,
}

impl ReplicaState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaState::Connecting => "connecting",
            ReplicaState::CatchingUp => "catching-up",
            ReplicaState::Streaming => "streaming",
            ReplicaState::Diverged => "diverged",
            ReplicaState::Stopped => "stopped",
        }
    }

    /// Catching up while more than a batch behind, streaming once within one.
    pub fn while_applying(applied: u64, head: u64) -> ReplicaState {
        if head.saturating_sub(applied) > primary::BATCH_TXS_MAX as u64 {
            ReplicaState::CatchingUp
        } else {
            ReplicaState::Streaming
        }
    }
}

/// Reconnection delays: exponential from `BACKOFF_MIN` to `BACKOFF_MAX`, each with up to 50%
/// random jitter taken off, so replicas of one primary do not reconnect in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    /// The delay before the next attempt; `jitter` is any random u16.
    pub fn delay(&mut self, jitter: u16) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        base - base.mul_f64(f64::from(jitter) / f64::from(u16::MAX) / 2.0)
    }

    /// After a connection that worked.
    pub fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_jitters_and_resets() {
        let mut b = Backoff::default();
        assert_eq!(b.delay(0), BACKOFF_MIN);
        assert_eq!(b.delay(0), BACKOFF_MIN * 2);
        let half = b.delay(u16::MAX);
        assert_eq!(half, BACKOFF_MIN * 2);
        for _ in 0..20 {
            b.delay(0);
        }
        assert_eq!(b.delay(0), BACKOFF_MAX);
        b.reset();
        assert_eq!(b.delay(0), BACKOFF_MIN);
    }

    #[test]
    fn states() {
        assert_eq!(
            ReplicaState::while_applying(0, 5000),
            ReplicaState::CatchingUp
        );
        assert_eq!(
            ReplicaState::while_applying(4900, 5000),
            ReplicaState::Streaming
        );
        assert_eq!(ReplicaState::Diverged.as_str(), "diverged");
    }
}
