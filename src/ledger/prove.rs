//! Proofs: an entry in a tx, a tx in a state, a state extending an older one, and a key's
//! latest version (or its absence) as of a tx.

use super::{Damage, Ledger, LedgerError, Result, TxEntry};
use crate::integrity::map::{Latest, MapProof};
use crate::integrity::merkle;
use crate::integrity::{Digest, EntryProof, StateProof, TxId, TxProof};

impl Ledger {
    /// What the key map says of `key` as of tx `at` (its latest version then, or that it had
    /// none), with the proof against the map root in tx `at`'s header. `at` 0 is the empty
    /// database. The proof is verified before it is returned: one built from damaged map
    /// files is [`Damage::MapNode`], never served.
    pub fn latest_proof(&self, key: &[u8], at: TxId) -> Result<(Latest, MapProof)> {
        if at > 0 {
            self.check_committed(at)?;
        }
        let (latest, proof, root) = self.shared.map.prove(key, at)?;
        let committed = if at == 0 {
            crate::integrity::map::MAP_EMPTY
        } else {
            self.header(at)?.map_root
        };
        if root != committed {
            return Err(self.shared.map.damaged(Damage::MapNode));
        }
        Ok((latest, proof))
    }

    /// Proof that the entry for `key` is in tx `id`, with that entry.
    pub fn entry_proof(&self, id: TxId, key: &[u8]) -> Result<(TxEntry, EntryProof)> {
        let tx = self.tx(id)?;
        let leaves: Vec<Digest> = tx
            .entries
            .iter()
            .map(|e| merkle::leaf_hash(&e.digest().0))
            .collect();
        let index = tx
            .entries
            .iter()
            .position(|e| e.key == key)
            .ok_or(LedgerError::KeyNotFound)?;
        let proof = EntryProof {
            index: crate::storage::len_u32(index),
            entry_count: tx.header.entry_count,
            path: merkle::path_of_leaf(&leaves, index),
        };
        Ok((tx.entries[index].clone(), proof))
    }

    /// Proof that tx `id` is in the state at tx `state` (`id <= state`).
    pub fn tx_proof(&self, id: TxId, state: TxId) -> Result<TxProof> {
        self.check_committed(state)?;
        if id > state {
            return Err(LedgerError::TxNotFound { id, last: state });
        }
        let tx = self.header(id)?;
        let state_header = self.header(state)?;
        let path = if id == state {
            Vec::new()
        } else {
            self.inclusion_path(id - 1, state - 1)?
        };
        let proof = TxProof {
            tx,
            state: state_header,
            path,
        };
        // Assert twice: a proof built from damaged history nodes is never served.
        proof
            .verify(state, &proof.state.alh())
            .map_err(|_| self.history_damaged())?;
        Ok(proof)
    }

    /// The error for a proof that does not verify although the headers it joins do: the
    /// history nodes it was built from are damaged.
    fn history_damaged(&self) -> LedgerError {
        LedgerError::Damaged {
            path: self.shared.history.file.path().to_path_buf(),
            offset: 0,
            reason: Damage::HistoryNode,
        }
    }

    /// Proof that the state at tx `new` extends the state at tx `old` (`1 <= old <= new`).
    /// `old` 0 (the empty state, which every state extends) or above `new` is
    /// [`LedgerError::StateOrder`].
    pub fn state_proof(&self, old: TxId, new: TxId) -> Result<StateProof> {
        if old == 0 || old > new {
            return Err(LedgerError::StateOrder { old, new });
        }
        self.check_committed(new)?;
        let (old_h, new_h) = (self.header(old)?, self.header(new)?);
        if old == new {
            return Ok(StateProof {
                old: old_h,
                new: new_h,
                inclusion: Vec::new(),
                consistency: Vec::new(),
            });
        }
        let proof = StateProof {
            old: old_h,
            new: new_h,
            inclusion: self.inclusion_path(old - 1, new - 1)?,
            consistency: self.consistency_path(old - 1, new - 1)?,
        };
        proof
            .verify(old, &old_h.alh(), new, &new_h.alh())
            .map_err(|_| self.history_damaged())?;
        Ok(proof)
    }

    /// Audit path of leaf `leaf` (Alh of tx `leaf + 1`) in the history tree of `size` leaves.
    pub fn inclusion_path(&self, leaf: u64, size: u64) -> Result<Vec<Digest>> {
        self.check_tree_size(size)?;
        if leaf >= size {
            return Err(LedgerError::TxNotFound {
                id: leaf + 1,
                last: size,
            });
        }
        Ok(merkle::inclusion_path(&self.shared.history, leaf, size)?)
    }

    /// Consistency proof of the history tree from `old_size` to `new_size` leaves.
    pub fn consistency_path(&self, old_size: u64, new_size: u64) -> Result<Vec<Digest>> {
        self.check_tree_size(new_size)?;
        if old_size > new_size {
            return Err(LedgerError::TxNotFound {
                id: old_size,
                last: new_size,
            });
        }
        Ok(merkle::consistency_path(
            &self.shared.history,
            old_size,
            new_size,
        )?)
    }

    /// Root of the history tree over the first `size` Alhs.
    pub fn history_root(&self, size: u64) -> Result<Digest> {
        self.check_tree_size(size)?;
        Ok(merkle::subtree_root(&self.shared.history, 0, size)?)
    }

    fn check_tree_size(&self, size: u64) -> Result<()> {
        let last = self.state().tx_id;
        if size > last {
            return Err(LedgerError::TxNotFound { id: size, last });
        }
        Ok(())
    }
}
