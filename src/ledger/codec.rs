//! The transaction record: the payload of one frame in a segment (docs/format.md,
//! "Transaction records"). All integers little-endian.
//!
//! ```text
//! header  u16 version | u64 id | u64 timestamp_us | [32] prev_alh | u32 entry_count |
//!         [32] entries_root | u64 history_size | [32] history_root | u64 epoch |
//!         [32] map_root | [32] alh                                                 (198 bytes)
//! entry   u16 key_len | u8 flags | u32 value_len | [u64 expires_at] | key | [32] value_hash |
//!         value                    (repeated; expires_at only when flags has bit 2)
//! ```
//!
//! A `value_len` of [`VALUE_DROPPED`] marks an entry whose value was dropped (by a
//! truncation, or on a digest-only replica): its value hash is kept, its value bytes are not.

use crate::integrity::{Digest, EntryMeta, TxHeader};

pub const HEADER_BYTES: usize = 198;
/// key_len, flags, value_len.
pub const ENTRY_FIXED_BYTES: usize = 7;
/// The `value_len` of an entry whose value was dropped: the value hash stays (so the entry
/// digest, the entries root and every proof are unchanged), the value bytes are gone.
pub const VALUE_DROPPED: u32 = u32::MAX;

pub fn encode_header(h: &TxHeader, alh: &Digest, out: &mut Vec<u8>) {
    out.extend_from_slice(&h.version.to_le_bytes());
    out.extend_from_slice(&h.id.to_le_bytes());
    out.extend_from_slice(&h.timestamp_us.to_le_bytes());
    out.extend_from_slice(&h.prev_alh.0);
    out.extend_from_slice(&h.entry_count.to_le_bytes());
    out.extend_from_slice(&h.entries_root.0);
    out.extend_from_slice(&h.history_size.to_le_bytes());
    out.extend_from_slice(&h.history_root.0);
    out.extend_from_slice(&h.epoch.to_le_bytes());
    out.extend_from_slice(&h.map_root.0);
    out.extend_from_slice(&alh.0);
}

/// The encoded size of an entry.
pub fn entry_bytes(key_len: usize, meta: EntryMeta, value_len: usize) -> usize {
    let expiry = if meta.expires_at.is_some() { 8 } else { 0 };
    ENTRY_FIXED_BYTES + expiry + key_len + 32 + value_len
}

/// Appends an entry's head, all that comes before its value hash; returns where the value
/// hash goes (`out.len()` after it).
pub fn encode_entry_head(
    key: &[u8],
    meta: EntryMeta,
    value_len: usize,
    out: &mut Vec<u8>,
) -> usize {
    out.extend_from_slice(&u16::try_from(key.len()).unwrap_or(u16::MAX).to_le_bytes());
    out.push(meta.to_flags());
    out.extend_from_slice(&crate::storage::len_u32(value_len).to_le_bytes());
    if let Some(t) = meta.expires_at {
        out.extend_from_slice(&t.to_le_bytes());
    }
    out.extend_from_slice(key);
    out.len()
}

/// Appends one entry; returns the offset of its value hash relative to the start of `out`.
pub fn encode_entry(
    key: &[u8],
    meta: EntryMeta,
    value_hash: &Digest,
    value: &[u8],
    out: &mut Vec<u8>,
) -> usize {
    // Callers check keys and values against the limits first (`prepare`); out-of-limit
    // lengths saturate, and such a record fails to decode rather than decoding wrongly.
    let at = encode_entry_head(key, meta, value.len(), out);
    out.extend_from_slice(&value_hash.0);
    out.extend_from_slice(value);
    at
}

/// Appends one entry whose value is dropped (docs/format.md, "Dropped values").
pub fn encode_entry_dropped(key: &[u8], meta: EntryMeta, value_hash: &Digest, out: &mut Vec<u8>) {
    out.extend_from_slice(&u16::try_from(key.len()).unwrap_or(u16::MAX).to_le_bytes());
    out.push(meta.to_flags());
    out.extend_from_slice(&VALUE_DROPPED.to_le_bytes());
    if let Some(t) = meta.expires_at {
        out.extend_from_slice(&t.to_le_bytes());
    }
    out.extend_from_slice(key);
    out.extend_from_slice(&value_hash.0);
}

/// The record `payload` with the value of every entry that has one dropped: the same header,
/// Alh, keys, flags and value hashes. `None` if no entry holds a value.
pub fn drop_values(payload: &[u8]) -> Result<Option<Vec<u8>>, &'static str> {
    let rec = decode(payload)?;
    if rec
        .entries
        .iter()
        .all(|e| e.dropped || e.meta.deleted || e.value.is_empty())
    {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(payload.len());
    encode_header(&rec.header, &rec.alh, &mut out);
    for e in &rec.entries {
        if e.meta.deleted || (e.value.is_empty() && !e.dropped) {
            encode_entry(e.key, e.meta, &e.value_hash, e.value, &mut out);
        } else {
            encode_entry_dropped(e.key, e.meta, &e.value_hash, &mut out);
        }
    }
    Ok(Some(out))
}

/// One entry as stored, borrowed from the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredEntry<'a> {
    pub key: &'a [u8],
    pub meta: EntryMeta,
    pub value_hash: Digest,
    /// Empty when dropped.
    pub value: &'a [u8],
    /// The value was dropped (`value_len` [`VALUE_DROPPED`]); `value_hash` is what it hashed to.
    pub dropped: bool,
    /// Offset of `value_hash` within the record payload.
    pub value_hash_at: usize,
}

/// A decoded transaction record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxRecord<'a> {
    pub header: TxHeader,
    pub alh: Digest,
    pub entries: Vec<StoredEntry<'a>>,
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or("record too short")?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, &'static str> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, &'static str> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, &'static str> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn digest(&mut self) -> Result<Digest, &'static str> {
        let mut a = [0u8; 32];
        a.copy_from_slice(self.take(32)?);
        Ok(Digest(a))
    }
}

/// Encodes a whole record: the header, then each entry with its value's hash.
pub fn encode_record(h: &TxHeader, alh: &Digest, entries: &[super::NewEntry]) -> Vec<u8> {
    let body: usize = entries
        .iter()
        .map(|e| entry_bytes(e.key.len(), e.meta, e.value.len()))
        .sum();
    let mut out = Vec::with_capacity(HEADER_BYTES + body);
    encode_header(h, alh, &mut out);
    for e in entries {
        let vh = crate::integrity::value_hash(&e.value);
        encode_entry(&e.key, e.meta, &vh, &e.value, &mut out);
    }
    out
}

/// Decodes only the header and Alh at the start of a record.
pub fn decode_header(payload: &[u8]) -> Result<(TxHeader, Digest), &'static str> {
    let mut r = Reader { b: payload, at: 0 };
    header(&mut r)
}

fn header(r: &mut Reader<'_>) -> Result<(TxHeader, Digest), &'static str> {
    let header = TxHeader {
        version: r.u16()?,
        id: r.u64()?,
        timestamp_us: r.u64()?,
        prev_alh: r.digest()?,
        entry_count: r.u32()?,
        entries_root: r.digest()?,
        history_size: r.u64()?,
        history_root: r.digest()?,
        epoch: r.u64()?,
        map_root: r.digest()?,
    };
    let alh = r.digest()?;
    if header.version != crate::integrity::FORMAT_VERSION {
        return Err("unknown format version");
    }
    if header.epoch == 0 {
        return Err("epoch 0");
    }
    if header.entry_count as usize > super::ENTRIES_PER_TX_MAX {
        return Err("entry count above the limit");
    }
    Ok((header, alh))
}

/// Decodes a record; the reason names what is malformed. Does not check any hash.
pub fn decode(payload: &[u8]) -> Result<TxRecord<'_>, &'static str> {
    let mut r = Reader { b: payload, at: 0 };
    let (header, alh) = header(&mut r)?;
    let mut entries = Vec::with_capacity(header.entry_count as usize);
    for _ in 0..header.entry_count {
        let key_len = r.u16()? as usize;
        let flags = r.take(1)?[0];
        let value_len = r.u32()?;
        let meta = if flags & EntryMeta::FLAG_EXPIRES != 0 {
            let t = r.u64()?;
            EntryMeta::decode(flags, || Some(t))
        } else {
            EntryMeta::decode(flags, || None)
        }
        .map_err(|e| match e {
            crate::integrity::MetaError::UnknownFlags => "unknown entry flags",
            _ => "entry metadata the format forbids",
        })?;
        let dropped = value_len == VALUE_DROPPED;
        if dropped && meta.deleted {
            return Err("a delete with a dropped value");
        }
        let key = r.take(key_len)?;
        let value_hash_at = r.at;
        let value_hash = r.digest()?;
        let value = if dropped {
            &[][..]
        } else {
            r.take(value_len as usize)?
        };
        entries.push(StoredEntry {
            key,
            meta,
            value_hash,
            value,
            dropped,
            value_hash_at,
        });
    }
    if r.at != payload.len() {
        return Err("trailing bytes after the last entry");
    }
    Ok(TxRecord {
        header,
        alh,
        entries,
    })
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::integrity::value_hash;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip_and_truncation(
            entries in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 1..20), any::<bool>(), proptest::collection::vec(any::<u8>(), 0..50), 0u8..3), 1..8),
            cut in 0usize..10_000,
        ) {
            let h = TxHeader {
                version: crate::integrity::FORMAT_VERSION, id: 9, timestamp_us: 77, prev_alh: Digest([1; 32]), entry_count: entries.len() as u32,
                entries_root: Digest([2; 32]), history_size: 8, history_root: Digest([3; 32]), epoch: 4, map_root: Digest([5; 32]),
            };
            let mut out = Vec::new();
            encode_header(&h, &Digest([4; 32]), &mut out);
            prop_assert_eq!(out.len(), HEADER_BYTES);
            // Deletes plain; other entries plain, not indexed or expiring.
            let meta = |d: bool, m: u8| if d { EntryMeta::DELETE } else {
                EntryMeta { not_indexed: m == 1, expires_at: (m == 2).then_some(1_800_000_000 + u64::from(m)), ..EntryMeta::default() }
            };
            for (k, d, v, m) in &entries {
                encode_entry(k, meta(*d, *m), &value_hash(v), v, &mut out);
            }
            let rec = decode(&out).unwrap();
            prop_assert_eq!(rec.header, h);
            prop_assert_eq!(rec.alh, Digest([4; 32]));
            for (e, (k, d, v, m)) in rec.entries.iter().zip(&entries) {
                prop_assert_eq!(e.key, &k[..]);
                prop_assert_eq!(e.value, &v[..]);
                prop_assert_eq!(e.meta, meta(*d, *m));
                prop_assert_eq!(&out[e.value_hash_at..e.value_hash_at + 32], &value_hash(v).0[..]);
            }
            let cut = cut % out.len();
            prop_assert!(decode(&out[..cut]).is_err());
            // Dropping the values keeps the header, keys, flags and value hashes, and only
            // those: each entry with a value is marked dropped and the record shrinks by
            // exactly the value bytes. Dropping twice changes nothing more.
            match drop_values(&out).unwrap() {
                None => prop_assert!(entries.iter().all(|(_, d, v, _)| *d || v.is_empty())),
                Some(dropped) => {
                    let values: usize = entries.iter().filter(|(_, d, _, _)| !*d).map(|(_, _, v, _)| v.len()).sum();
                    prop_assert_eq!(dropped.len(), out.len() - values);
                    let r = decode(&dropped).unwrap();
                    prop_assert_eq!(r.header, h);
                    for (e, (k, d, v, m)) in r.entries.iter().zip(&entries) {
                        prop_assert_eq!(e.key, &k[..]);
                        prop_assert_eq!(e.meta, meta(*d, *m));
                        prop_assert_eq!(e.value_hash, value_hash(v));
                        prop_assert_eq!(e.dropped, !*d && !v.is_empty());
                        prop_assert!(e.value.is_empty() || *d);
                    }
                    prop_assert_eq!(drop_values(&dropped).unwrap(), None);
                }
            }
        }
    }
}
