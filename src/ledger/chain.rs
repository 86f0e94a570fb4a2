//! The one chain check: whether a tx record agrees with itself ([`check_contents`]) and
//! extends the history before it ([`check_link`]). Recovery, the offline check, the writer and
//! replica apply all call these; [`ChainBreak`] names what failed.

use super::codec::TxRecord;
use super::ChainBreak;
use crate::integrity::{entry_digest, tx::entries_root, value_hash, Digest, TxHeader, TxId};

/// Where the next tx must attach: the last tx's id, Alh and timestamp, and the root of the
/// history tree over every Alh so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Link {
    pub last_id: TxId,
    pub last_alh: Digest,
    pub last_ts: u64,
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
    Ok(())
}

/// Checks that a record agrees with itself: each value hashes to its stored value hash, the
/// entries hash to the entries root, and the header to the stored Alh.
pub(crate) fn check_contents(rec: &TxRecord<'_>) -> Result<(), ChainBreak> {
    let mut digests = Vec::with_capacity(rec.entries.len());
    for e in &rec.entries {
        if value_hash(e.value) != e.value_hash {
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
    Ok(())
}

/// Both checks, as recovery and the offline check apply them to every tx they read.
pub(crate) fn check_record(rec: &TxRecord<'_>, link: &Link) -> Result<(), ChainBreak> {
    check_link(&rec.header, link)?;
    check_contents(rec)
}
