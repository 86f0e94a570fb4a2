//! Proofs a client checks against the last state it trusts. A state is `(tx id, Alh)`.
//!
//! - [`EntryProof`]: an entry is in a tx (inclusion in the tx's entries tree).
//! - [`TxProof`]: a tx is in a state (inclusion of its Alh in the history tree).
//! - [`StateProof`]: a state extends an older one (inclusion plus consistency).
//!
//! Verification is total: any wrong, truncated or mis-sized proof gives a [`VerifyError`].

use super::merkle::{leaf_hash, verify_consistency, verify_inclusion};
use super::{Digest, TxHeader, TxId};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("leaf index {index} is outside a tree of {size} leaves")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("proof has {actual} hashes, the tree shape needs {expected}")]
    ProofLength { expected: usize, actual: usize },
    #[error("computed root {computed} does not match expected root {expected}")]
    RootMismatch { expected: Digest, computed: Digest },
    #[error("consistency proof from size {old_size} to smaller size {new_size}")]
    SizeOrder { old_size: u64, new_size: u64 },
    #[error("header of tx {id} hashes to Alh {computed}, the state says {expected}")]
    AlhMismatch {
        id: TxId,
        expected: Digest,
        computed: Digest,
    },
    #[error("proof is for tx {actual}, expected tx {expected}")]
    WrongTx { expected: TxId, actual: TxId },
    #[error("header of tx {id} is malformed: {reason}")]
    MalformedHeader { id: TxId, reason: &'static str },
    #[error("tx {tx} is newer than state {state}")]
    TxAfterState { tx: TxId, state: TxId },
    #[error("state {new} is older than trusted state {old}")]
    StateRegressed { old: TxId, new: TxId },
}

fn check_header(h: &TxHeader) -> Result<(), VerifyError> {
    if h.id == 0 {
        return Err(VerifyError::MalformedHeader {
            id: 0,
            reason: "tx id 0",
        });
    }
    if h.history_size != h.id - 1 {
        return Err(VerifyError::MalformedHeader {
            id: h.id,
            reason: "history size is not id - 1",
        });
    }
    Ok(())
}

fn check_alh(h: &TxHeader, expected: &Digest) -> Result<(), VerifyError> {
    check_header(h)?;
    let computed = h.alh();
    if computed != *expected {
        return Err(VerifyError::AlhMismatch {
            id: h.id,
            expected: *expected,
            computed,
        });
    }
    Ok(())
}

/// An entry is leaf `index` of the entries tree of a tx with `entry_count` entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryProof {
    pub index: u32,
    pub entry_count: u32,
    pub path: Vec<Digest>,
}

impl EntryProof {
    /// Verifies that the entry with digest `entry_digest` is in the tx with header `tx`.
    pub fn verify(&self, entry_digest: &Digest, tx: &TxHeader) -> Result<(), VerifyError> {
        if self.entry_count != tx.entry_count {
            return Err(VerifyError::IndexOutOfRange {
                index: u64::from(self.entry_count),
                size: u64::from(tx.entry_count),
            });
        }
        verify_inclusion(
            u64::from(self.index),
            u64::from(tx.entry_count),
            &leaf_hash(&entry_digest.0),
            &self.path,
            &tx.entries_root,
        )
    }
}

/// Tx `tx.id` is in the state `(state.id, alh(state))`: the state's header, and the audit
/// path of Alh(tx) (leaf `tx.id - 1`) in the history tree of `state.id - 1` leaves whose root
/// the state's header carries. Empty path when `tx == state`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxProof {
    pub tx: TxHeader,
    pub state: TxHeader,
    pub path: Vec<Digest>,
}

impl TxProof {
    /// Verifies the proof against a state the caller trusts (or is about to accept).
    pub fn verify(&self, state_id: TxId, state_alh: &Digest) -> Result<(), VerifyError> {
        if self.state.id != state_id {
            return Err(VerifyError::WrongTx {
                expected: state_id,
                actual: self.state.id,
            });
        }
        check_alh(&self.state, state_alh)?;
        check_header(&self.tx)?;
        if self.tx.id > self.state.id {
            return Err(VerifyError::TxAfterState {
                tx: self.tx.id,
                state: self.state.id,
            });
        }
        if self.tx.id == self.state.id {
            if !self.path.is_empty() {
                return Err(VerifyError::ProofLength {
                    expected: 0,
                    actual: self.path.len(),
                });
            }
            return check_alh(&self.tx, state_alh);
        }
        verify_inclusion(
            self.tx.id - 1,
            self.state.history_size,
            &leaf_hash(&self.tx.alh().0),
            &self.path,
            &self.state.history_root,
        )
    }
}

/// The state `(new.id, alh(new))` extends the trusted state `(old.id, alh(old))`: both
/// headers, the audit path of Alh(old) in the history tree the new header commits to, and the
/// consistency proof between the two headers' history trees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateProof {
    pub old: TxHeader,
    pub new: TxHeader,
    pub inclusion: Vec<Digest>,
    pub consistency: Vec<Digest>,
}

impl StateProof {
    /// Verifies that `(new_id, new_alh)` extends `(old_id, old_alh)`.
    pub fn verify(
        &self,
        old_id: TxId,
        old_alh: &Digest,
        new_id: TxId,
        new_alh: &Digest,
    ) -> Result<(), VerifyError> {
        if self.old.id != old_id {
            return Err(VerifyError::WrongTx {
                expected: old_id,
                actual: self.old.id,
            });
        }
        if self.new.id != new_id {
            return Err(VerifyError::WrongTx {
                expected: new_id,
                actual: self.new.id,
            });
        }
        if new_id < old_id {
            return Err(VerifyError::StateRegressed {
                old: old_id,
                new: new_id,
            });
        }
        check_alh(&self.old, old_alh)?;
        check_alh(&self.new, new_alh)?;
        if old_id == new_id {
            if !self.inclusion.is_empty() || !self.consistency.is_empty() {
                return Err(VerifyError::ProofLength {
                    expected: 0,
                    actual: self.inclusion.len() + self.consistency.len(),
                });
            }
            return Ok(());
        }
        verify_inclusion(
            old_id - 1,
            self.new.history_size,
            &leaf_hash(&old_alh.0),
            &self.inclusion,
            &self.new.history_root,
        )?;
        verify_consistency(
            self.old.history_size,
            self.new.history_size,
            &self.old.history_root,
            &self.new.history_root,
            &self.consistency,
        )
    }
}
