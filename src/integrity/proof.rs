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
    #[error("map proof ends at depth {depth} in a leaf off the key's path")]
    MapLeafOffPath { depth: usize },
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

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    //! Every [`VerifyError`] variant produced by the proof it guards, from proofs built over a
    //! real chain of headers; and, by proptest, every mutation of a valid proof refused.
    use super::*;
    use crate::integrity::merkle::reference::{mth, path, proof};
    use crate::integrity::merkle::{leaf_hash, verify_consistency};
    use crate::integrity::{entry_digest, tx::entries_root, value_hash, EntryMeta, ALH_GENESIS};
    use proptest::prelude::*;

    /// A chain of `n` one-entry txs: headers, and the leaf hashes of their Alhs.
    fn chain(n: u64) -> (Vec<TxHeader>, Vec<Digest>) {
        let (mut headers, mut leaves) = (Vec::new(), Vec::new());
        let mut prev = ALH_GENESIS;
        for id in 1..=n {
            let d = entry_digest(&id.to_le_bytes(), EntryMeta::default(), &value_hash(b"v"));
            let h = TxHeader {
                version: crate::integrity::FORMAT_VERSION,
                id,
                timestamp_us: id,
                prev_alh: prev,
                entry_count: 1,
                entries_root: entries_root(&[d]),
                history_size: id - 1,
                history_root: mth(&leaves),
                epoch: 1,
                map_root: Digest([id as u8; 32]),
            };
            prev = h.alh();
            leaves.push(leaf_hash(&prev.0));
            headers.push(h);
        }
        (headers, leaves)
    }

    fn tx_proof(h: &[TxHeader], leaves: &[Digest], tx: u64, state: u64) -> TxProof {
        TxProof {
            tx: h[(tx - 1) as usize],
            state: h[(state - 1) as usize],
            path: if tx == state {
                Vec::new()
            } else {
                path((tx - 1) as usize, &leaves[..(state - 1) as usize])
            },
        }
    }

    fn state_proof(h: &[TxHeader], leaves: &[Digest], old: u64, new: u64) -> StateProof {
        let (o, n) = ((old - 1) as usize, (new - 1) as usize);
        StateProof {
            old: h[o],
            new: h[n],
            inclusion: if old == new {
                Vec::new()
            } else {
                path(o, &leaves[..n])
            },
            consistency: if old == new || o == 0 {
                Vec::new()
            } else {
                proof(o, &leaves[..n])
            },
        }
    }

    #[test]
    fn entry_proofs_refuse_wrong_counts_paths_and_roots() {
        let digests: Vec<Digest> = (0..5u8)
            .map(|i| entry_digest(&[i], EntryMeta::default(), &value_hash(&[i])))
            .collect();
        let leaves: Vec<Digest> = digests.iter().map(|d| leaf_hash(&d.0)).collect();
        let (h, _) = chain(1);
        let tx = TxHeader {
            entry_count: 5,
            entries_root: entries_root(&digests),
            ..h[0]
        };
        let good = EntryProof {
            index: 3,
            entry_count: 5,
            path: path(3, &leaves),
        };
        assert_eq!(good.verify(&digests[3], &tx), Ok(()));
        let count = EntryProof {
            entry_count: 4,
            ..good.clone()
        };
        assert!(matches!(
            count.verify(&digests[3], &tx),
            Err(VerifyError::IndexOutOfRange { .. })
        ));
        let beyond = EntryProof {
            index: 5,
            ..good.clone()
        };
        assert!(matches!(
            beyond.verify(&digests[3], &tx),
            Err(VerifyError::IndexOutOfRange { index: 5, size: 5 })
        ));
        let short = EntryProof {
            path: good.path[1..].to_vec(),
            ..good.clone()
        };
        assert!(matches!(
            short.verify(&digests[3], &tx),
            Err(VerifyError::ProofLength { .. })
        ));
        assert!(matches!(
            good.verify(&digests[2], &tx),
            Err(VerifyError::RootMismatch { .. })
        ));
    }

    #[test]
    fn tx_proofs_refuse_each_way_they_can_be_wrong() {
        let (h, leaves) = chain(9);
        let (s, s_alh) = (9, h[8].alh());
        let good = tx_proof(&h, &leaves, 4, 9);
        assert_eq!(good.verify(s, &s_alh), Ok(()));
        assert_eq!(tx_proof(&h, &leaves, 9, 9).verify(s, &s_alh), Ok(()));
        // Proven against another state than the one trusted.
        assert!(matches!(
            good.verify(8, &h[7].alh()),
            Err(VerifyError::WrongTx {
                expected: 8,
                actual: 9
            })
        ));
        assert!(matches!(
            good.verify(s, &h[7].alh()),
            Err(VerifyError::AlhMismatch { id: 9, .. })
        ));
        let zero = TxProof {
            tx: TxHeader { id: 0, ..good.tx },
            ..good.clone()
        };
        assert!(matches!(
            zero.verify(s, &s_alh),
            Err(VerifyError::MalformedHeader { id: 0, .. })
        ));
        let sized = TxProof {
            tx: TxHeader {
                history_size: 7,
                ..good.tx
            },
            ..good.clone()
        };
        assert!(matches!(
            sized.verify(s, &s_alh),
            Err(VerifyError::MalformedHeader { id: 4, .. })
        ));
        // A tx newer than the state that is supposed to hold it.
        let later = TxProof {
            tx: h[8],
            state: h[5],
            path: Vec::new(),
        };
        assert!(matches!(
            later.verify(6, &h[5].alh()),
            Err(VerifyError::TxAfterState { tx: 9, state: 6 })
        ));
        let padded = TxProof {
            path: vec![Digest::ZERO],
            ..tx_proof(&h, &leaves, 9, 9)
        };
        assert!(matches!(
            padded.verify(s, &s_alh),
            Err(VerifyError::ProofLength {
                expected: 0,
                actual: 1
            })
        ));
        let mut forged = good.clone();
        forged.path[0].0[0] ^= 1;
        assert!(matches!(
            forged.verify(s, &s_alh),
            Err(VerifyError::RootMismatch { .. })
        ));
    }

    #[test]
    fn state_proofs_refuse_each_way_they_can_be_wrong() {
        let (h, leaves) = chain(12);
        let alh = |id: u64| h[(id - 1) as usize].alh();
        let good = state_proof(&h, &leaves, 5, 12);
        assert_eq!(good.verify(5, &alh(5), 12, &alh(12)), Ok(()));
        assert_eq!(
            state_proof(&h, &leaves, 1, 12).verify(1, &alh(1), 12, &alh(12)),
            Ok(())
        );
        assert!(matches!(
            good.verify(4, &alh(4), 12, &alh(12)),
            Err(VerifyError::WrongTx {
                expected: 4,
                actual: 5
            })
        ));
        assert!(matches!(
            good.verify(5, &alh(5), 11, &alh(11)),
            Err(VerifyError::WrongTx {
                expected: 11,
                actual: 12
            })
        ));
        // A "newer" state older than the trusted one: a rollback.
        let back = StateProof {
            old: h[11],
            new: h[4],
            inclusion: Vec::new(),
            consistency: Vec::new(),
        };
        assert!(matches!(
            back.verify(12, &alh(12), 5, &alh(5)),
            Err(VerifyError::StateRegressed { old: 12, new: 5 })
        ));
        assert!(matches!(
            good.verify(5, &alh(6), 12, &alh(12)),
            Err(VerifyError::AlhMismatch { id: 5, .. })
        ));
        let same = StateProof {
            consistency: vec![Digest::ZERO],
            ..state_proof(&h, &leaves, 7, 7)
        };
        assert!(matches!(
            same.verify(7, &alh(7), 7, &alh(7)),
            Err(VerifyError::ProofLength { expected: 0, .. })
        ));
        let mut forged = good.clone();
        forged.consistency[0].0[31] ^= 0x80;
        assert!(matches!(
            forged.verify(5, &alh(5), 12, &alh(12)),
            Err(VerifyError::RootMismatch { .. })
        ));
        // The headers' checks keep a StateProof's sizes in order; the consistency check
        // underneath refuses sizes out of order on its own.
        assert!(matches!(
            verify_consistency(
                8,
                4,
                &h[8].history_root,
                &h[4].history_root,
                &good.consistency
            ),
            Err(VerifyError::SizeOrder {
                old_size: 8,
                new_size: 4
            })
        ));
    }

    /// One way of spoiling a proof's hash lists.
    #[derive(Debug, Clone)]
    enum Mutation {
        Flip { list: usize, at: usize, bit: u8 },
        Drop { list: usize, at: usize },
        Extra { list: usize },
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (0usize..2, any::<usize>(), 0u8..8).prop_map(|(list, at, bit)| Mutation::Flip {
                list,
                at,
                bit
            }),
            (0usize..2, any::<usize>()).prop_map(|(list, at)| Mutation::Drop { list, at }),
            (0usize..2).prop_map(|list| Mutation::Extra { list }),
        ]
    }

    /// Applies `m` to `lists`; false if it changed nothing (an empty list to flip or drop in).
    fn apply(m: &Mutation, lists: [&mut Vec<Digest>; 2]) -> bool {
        match *m {
            Mutation::Flip { list, at, bit } => {
                let l = &mut *lists[list];
                if l.is_empty() {
                    return false;
                }
                let n = l.len();
                l[at % n].0[at % 32] ^= 1 << bit;
            }
            Mutation::Drop { list, at } => {
                let l = &mut *lists[list];
                if l.is_empty() {
                    return false;
                }
                let n = l.len();
                l.remove(at % n);
            }
            Mutation::Extra { list } => lists[list].push(Digest([7; 32])),
        }
        true
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Valid proofs pass; every flipped bit, dropped or extra node, and every proof from
        /// another state or for another tx is refused with an error, never a panic.
        #[test]
        fn mutated_proofs_are_refused(n in 2u64..70, a in any::<u64>(), b in any::<u64>(), m in mutation()) {
            let (h, leaves) = chain(n);
            let alh = |id: u64| h[(id - 1) as usize].alh();
            let (old, new) = {
                let (x, y) = (1 + a % n, 1 + b % n);
                (x.min(y), x.max(y))
            };
            let good = state_proof(&h, &leaves, old, new);
            prop_assert_eq!(good.verify(old, &alh(old), new, &alh(new)), Ok(()));
            let mut bad = good.clone();
            if apply(&m, [&mut bad.inclusion, &mut bad.consistency]) {
                prop_assert!(bad.verify(old, &alh(old), new, &alh(new)).is_err());
            }
            if old < new {
                // Proof of another pair of states.
                let other = state_proof(&h, &leaves, old, new - 1);
                prop_assert!(other.verify(old, &alh(old), new, &alh(new)).is_err());
            }
            let tp = tx_proof(&h, &leaves, old, new);
            prop_assert_eq!(tp.verify(new, &alh(new)), Ok(()));
            let mut bad = tp.clone();
            let mut same = bad.path.clone();
            // Both lists stand for the tx proof's one path.
            if apply(&m, [&mut bad.path, &mut same]) && bad.path == tp.path {
                bad.path = same;
            }
            if bad.path != tp.path {
                prop_assert!(bad.verify(new, &alh(new)).is_err());
            }
            if old + 1 < new {
                // The proof for tx `old` passed off as one for the tx after it (short of the
                // state itself, which an empty path does prove).
                let swapped = TxProof { tx: h[old as usize], ..tp.clone() };
                prop_assert!(swapped.verify(new, &alh(new)).is_err());
            }
        }
    }
}
