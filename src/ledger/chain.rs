//! The one chain check: whether a tx record agrees with itself ([`check_contents`]), extends
//! the history before it ([`check_link`]) and carries the key map's root after it
//! ([`check_map_root`]). Recovery, the offline check, the writer and replica apply all call
//! these; [`ChainBreak`] names what failed.

use super::codec::TxRecord;
use super::ChainBreak;
use crate::integrity::map::{key_hash, MapLeaf};
use crate::integrity::{entry_digest, tx::entries_root, value_hash, Digest, TxHeader, TxId};

/// Where the next tx must attach: the last tx's id, Alh and timestamp, and the root of the
/// history tree over every Alh so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Link {
    pub last_id: TxId,
    pub last_alh: Digest,
    pub last_ts: u64,
    /// The last tx's epoch (1 before the first tx).
    pub last_epoch: u64,
    pub history_root: Digest,
}

/// Checks that `h` is the next tx after `link`: its id, previous Alh, history size and root,
/// and a timestamp not before the last one.
pub(crate) fn check_link(h: &TxHeader, link: &Link) -> Result<(), ChainBreak> {
    let id = link.last_id + 1;
    if h.id != id {
        return Err(ChainBreak::Id);
    }
    if h.prev_alh != link.last_alh {
        return Err(ChainBreak::PrevAlh);
    }
    if h.history_size != id - 1 || h.history_root != link.history_root {
        return Err(ChainBreak::HistoryRoot);
    }
    if h.timestamp_us < link.last_ts {
        return Err(ChainBreak::Timestamp);
    }
    if h.epoch < link.last_epoch {
        return Err(ChainBreak::Epoch);
    }
    Ok(())
}

/// The key map versions tx `tx` writes, one per entry (key, deleted, entry digest), sorted
/// by key hash as `integrity::map::update` takes them.
pub(crate) fn map_leaves<'a>(
    tx: TxId,
    entries: impl Iterator<Item = (&'a [u8], bool, Digest)>,
) -> Vec<MapLeaf> {
    let mut leaves: Vec<MapLeaf> = entries
        .map(|(key, deleted, entry_digest)| MapLeaf {
            key_hash: key_hash(key),
            tx_id: tx,
            deleted,
            entry_digest,
        })
        .collect();
    leaves.sort_unstable_by_key(|l| l.key_hash);
    leaves
}

/// Checks that a record agrees with itself: each value hashes to its stored value hash (a
/// dropped value has only its hash, which the entries root still checks), the
/// entries hash to the entries root, and the header to the stored Alh. Returns the key map
/// versions it writes.
pub(crate) fn check_contents(rec: &TxRecord<'_>) -> Result<Vec<MapLeaf>, ChainBreak> {
    let mut digests = Vec::with_capacity(rec.entries.len());
    for e in &rec.entries {
        if !e.dropped && value_hash(e.value) != e.value_hash {
            return Err(ChainBreak::ValueHash);
        }
        digests.push(entry_digest(e.key, e.meta, &e.value_hash));
    }
    if entries_root(&digests) != rec.header.entries_root {
        return Err(ChainBreak::EntriesRoot);
    }
    if rec.header.alh() != rec.alh {
        return Err(ChainBreak::Alh);
    }
    Ok(map_leaves(
        rec.header.id,
        rec.entries
            .iter()
            .zip(digests)
            .filter(|(e, _)| !e.meta.not_indexed)
            .map(|(e, d)| (e.key, e.meta.deleted, d)),
    ))
}

/// Both checks, as recovery and the offline check apply them to every tx they read; returns
/// the key map versions the tx writes.
pub(crate) fn check_record(rec: &TxRecord<'_>, link: &Link) -> Result<Vec<MapLeaf>, ChainBreak> {
    check_link(&rec.header, link)?;
    check_contents(rec)
}

/// Checks that `h` carries `computed`, the key map's root once its entries are applied.
pub(crate) fn check_map_root(h: &TxHeader, computed: &Digest) -> Result<(), ChainBreak> {
    if h.map_root != *computed {
        return Err(ChainBreak::MapRoot);
    }
    Ok(())
}
