//! Preparing a tx on the committer's thread: limits checked, values hashed, entries encoded;
//! and, for a replicated tx, the record checked against itself. Nothing here depends on the
//! tx's position, so it runs before the writer sees the tx.

use super::{
    chain, codec, LedgerError, NewEntry, Result, ENTRIES_PER_TX_MAX, KEY_BYTES_MAX, TX_BYTES_MAX,
    VALUE_BYTES_MAX,
};
use crate::integrity::map::MapLeaf;
use crate::integrity::{
    entry_digest, kv, tx::entries_root, value_hash, Digest, EntryMeta, TxHeader,
};
use crate::storage::len_u32;
use bytes::Bytes;
use std::collections::HashSet;

/// A validated, hashed and encoded tx waiting for its id.
pub(crate) struct Prepared {
    pub(crate) entry_count: u32,
    pub(crate) entries_root: Digest,
    /// The encoded entries, as they follow the header in the record.
    pub(crate) body: Bytes,
    /// crc32 state over `body`, so the writer checksums only the header.
    pub(crate) body_crc: crc32fast::Hasher,
    /// Per indexed entry (the entries not left out of the index): key, metadata, offset of
    /// the value hash in `body`, value length.
    pub(crate) refs: Vec<(Vec<u8>, EntryMeta, usize, u32)>,
    /// The key map versions the tx writes, sorted by key hash; their tx id is set by the
    /// writer when it gives the tx its id.
    pub(crate) leaves: Vec<MapLeaf>,
    /// A replicated tx: the header it must be written with, byte for byte, and its Alh
    /// (already checked against the header).
    pub(crate) fixed: Option<(TxHeader, Digest)>,
    /// The tx starts this epoch (the promotion marker).
    pub(crate) epoch: Option<u64>,
    /// Conditions the writer checks against the database as it is just before this tx (the
    /// txs before it in its group included); one that fails refuses the tx, nothing written.
    pub(crate) conditions: Vec<super::Precondition>,
}

/// The prefix of the keys the database writes itself.
pub(crate) const RESERVED_PREFIX: &[u8] = kv::RESERVED_PREFIX;
/// The key of the marker tx that starts an epoch; its value is the epoch, in decimal.
pub(crate) const EPOCH_KEY: &[u8] = b"\0chainlog/epoch";

/// Prepares a tx copied from another database, as the record its source stores: the record
/// must be well formed and within this database's limits, each value must match its stored
/// hash, the entries must hash to the header's entries root and the header to the Alh. The
/// writer then checks that the header extends this database exactly, and stores the record's
/// bytes as they came.
pub(crate) fn prepare_record(record: Bytes) -> Result<Prepared> {
    let rec = codec::decode(&record).map_err(|reason| LedgerError::BadRecord { reason })?;
    let mut seen = HashSet::with_capacity(rec.entries.len());
    let mut bytes = codec::HEADER_BYTES;
    let mut refs = Vec::with_capacity(rec.entries.len());
    for (index, e) in rec.entries.iter().enumerate() {
        bytes += check_entry(index, e.key, e.value.len(), e.meta, &mut seen)?;
        if !e.meta.not_indexed {
            let at = e.value_hash_at - codec::HEADER_BYTES;
            refs.push((e.key.to_vec(), e.meta, at, len_u32(e.value.len())));
        }
    }
    check_tx_size(rec.entries.len(), bytes)?;
    let leaves = chain::check_contents(&rec).map_err(|reason| LedgerError::NotNext {
        tx: rec.header.id,
        reason,
    })?;
    let fixed = Some((rec.header, rec.alh));
    let body = record.slice(codec::HEADER_BYTES..);
    let mut body_crc = crc32fast::Hasher::new();
    body_crc.update(&body);
    Ok(Prepared {
        entry_count: len_u32(rec.entries.len()),
        entries_root: rec.header.entries_root,
        body,
        body_crc,
        refs,
        leaves,
        fixed,
        epoch: None,
        conditions: Vec::new(),
    })
}

/// [`prepare_record`], then the same record with its values dropped, to be stored instead
/// (a digest-only replica): the values are checked against their hashes before they go.
pub(crate) fn prepare_record_digest_only(record: Bytes) -> Result<Prepared> {
    let checked = prepare_record(record.clone())?;
    match codec::drop_values(&record).map_err(|reason| LedgerError::BadRecord { reason })? {
        Some(dropped) => prepare_record(Bytes::from(dropped)),
        None => Ok(checked),
    }
}

/// Checks one entry against the limits; returns its encoded size.
fn check_entry<'a>(
    index: usize,
    key: &'a [u8],
    value_len: usize,
    meta: EntryMeta,
    seen: &mut HashSet<&'a [u8]>,
) -> Result<usize> {
    if key.is_empty() {
        return Err(LedgerError::EmptyKey { index });
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(LedgerError::KeyTooLong {
            index,
            len: key.len(),
            max: KEY_BYTES_MAX,
        });
    }
    if value_len > VALUE_BYTES_MAX {
        return Err(LedgerError::ValueTooLarge {
            index,
            len: value_len,
            max: VALUE_BYTES_MAX,
        });
    }
    if meta.deleted && value_len > 0 {
        return Err(LedgerError::DeleteWithValue { index });
    }
    meta.check()
        .map_err(|reason| LedgerError::BadMetadata { index, reason })?;
    if !seen.insert(key) {
        return Err(LedgerError::DuplicateKey { index });
    }
    Ok(codec::entry_bytes(key.len(), meta, value_len))
}

/// Checks a tx's entry count and encoded size against the limits.
fn check_tx_size(count: usize, bytes: usize) -> Result<()> {
    if count == 0 {
        return Err(LedgerError::EmptyTx);
    }
    if count > ENTRIES_PER_TX_MAX {
        return Err(LedgerError::TooManyEntries {
            count,
            max: ENTRIES_PER_TX_MAX,
        });
    }
    if bytes > TX_BYTES_MAX {
        return Err(LedgerError::TxTooLarge {
            bytes,
            max: TX_BYTES_MAX,
        });
    }
    Ok(())
}

/// Checks limits and hashes everything that does not depend on the tx's position; a key the
/// database reserves for itself is refused.
pub(crate) fn prepare(entries: Vec<NewEntry>) -> Result<Prepared> {
    // Under the reserved prefix, only sorted-set members (which a ZAdd writes): a plain entry
    // of their canonical form, with no value.
    let member = |e: &NewEntry| {
        kv::parse_zset_key(&e.key).is_some() && e.value.is_empty() && e.meta == EntryMeta::default()
    };
    if let Some(index) = entries
        .iter()
        .position(|e| e.key.starts_with(RESERVED_PREFIX) && !member(e))
    {
        return Err(LedgerError::ReservedKey { index });
    }
    if let Some(index) = entries
        .iter()
        .position(|e| e.meta.reference && kv::parse_reference(&e.value).is_none())
    {
        return Err(LedgerError::BadReference { index });
    }
    prepare_unchecked(entries)
}

/// The marker tx that starts epoch `epoch`.
pub(crate) fn prepare_epoch(epoch: u64) -> Result<Prepared> {
    let mut p = prepare_unchecked(vec![NewEntry::put(
        EPOCH_KEY.to_vec(),
        epoch.to_string().into_bytes(),
    )])?;
    p.epoch = Some(epoch);
    Ok(p)
}

fn prepare_unchecked(entries: Vec<NewEntry>) -> Result<Prepared> {
    // The count first: a huge entry list is refused before it is walked.
    if entries.len() > ENTRIES_PER_TX_MAX {
        check_tx_size(entries.len(), 0)?;
    }
    let mut seen = HashSet::with_capacity(entries.len());
    let mut bytes = codec::HEADER_BYTES;
    for (index, e) in entries.iter().enumerate() {
        bytes += check_entry(index, &e.key, e.value.len(), e.meta, &mut seen)?;
    }
    check_tx_size(entries.len(), bytes)?;
    let mut body = Vec::with_capacity(bytes - codec::HEADER_BYTES);
    let mut digests = Vec::with_capacity(entries.len());
    let mut refs = Vec::with_capacity(entries.len());
    for e in entries {
        let vh = value_hash(&e.value);
        digests.push(entry_digest(&e.key, e.meta, &vh));
        let at = codec::encode_entry(&e.key, e.meta, &vh, &e.value, &mut body);
        refs.push((e.key, e.meta, at, len_u32(e.value.len())));
    }
    let leaves = chain::map_leaves(
        0,
        refs.iter()
            .zip(&digests)
            .filter(|((_, meta, _, _), _)| !meta.not_indexed)
            .map(|((key, meta, _, _), d)| (key.as_slice(), meta.deleted, *d)),
    );
    refs.retain(|(_, meta, _, _)| !meta.not_indexed);
    Ok(Prepared {
        entry_count: len_u32(digests.len()),
        entries_root: entries_root(&digests),
        body_crc: {
            let mut h = crc32fast::Hasher::new();
            h.update(&body);
            h
        },
        body: body.into(),
        refs,
        leaves,
        fixed: None,
        epoch: None,
        conditions: Vec::new(),
    })
}

/// Checks one new entry before its value is taken (a streamed value): the key, the
/// metadata (a reference is not streamed) and the value's length.
pub(crate) fn check_new(key: &[u8], meta: EntryMeta, value_len: usize) -> Result<()> {
    if key.starts_with(RESERVED_PREFIX) {
        return Err(LedgerError::ReservedKey { index: 0 });
    }
    if meta.reference || meta.deleted {
        return Err(LedgerError::BadMetadata {
            index: 0,
            reason: crate::integrity::MetaError::ReferenceWithMetadata,
        });
    }
    let bytes = codec::HEADER_BYTES + check_entry(0, key, value_len, meta, &mut HashSet::new())?;
    check_tx_size(1, bytes)
}

/// A one-entry tx whose entry is already encoded in `body` (value hash `vh` at `hash_at`),
/// checked by [`check_new`].
pub(crate) fn prepare_encoded(
    key: Vec<u8>,
    meta: EntryMeta,
    vh: Digest,
    hash_at: usize,
    value_len: usize,
    body: Vec<u8>,
) -> Prepared {
    let d = entry_digest(&key, meta, &vh);
    let leaves = if meta.not_indexed {
        Vec::new()
    } else {
        chain::map_leaves(0, std::iter::once((key.as_slice(), false, d)))
    };
    let refs = if meta.not_indexed {
        Vec::new()
    } else {
        vec![(key, meta, hash_at, len_u32(value_len))]
    };
    let mut body_crc = crc32fast::Hasher::new();
    body_crc.update(&body);
    Prepared {
        entry_count: 1,
        entries_root: entries_root(&[d]),
        body: body.into(),
        body_crc,
        refs,
        leaves,
        fixed: None,
        epoch: None,
        conditions: Vec::new(),
    }
}
