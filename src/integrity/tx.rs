//! Transactions as the hash chain sees them: entry digests, the inner hash, the Alh.

use super::merkle::{leaf_hash, root_of_leaves};
use super::{Digest, TAG_ALH, TAG_ENTRY, TAG_INNER, TAG_VALUE};

/// 1-based transaction id. Tx `n` is the `n`-th committed transaction; 0 means "none".
pub type TxId = u64;

/// Version of the transaction format and of every hash input in docs/format.md. Version 2
/// added the key map's root to the header and hashes tree nodes in one BLAKE3 block.
pub const FORMAT_VERSION: u16 = 2;

/// Longest key, in bytes (keys are 1..=this).
pub const KEY_BYTES_MAX: usize = 1024;
/// Largest value, in bytes (above [`VALUE_UNARY_BYTES_MAX`], written and read by streaming).
pub const VALUE_BYTES_MAX: usize = 256 << 20;
/// Largest value a unary call (Set, Get) carries; larger ones go through StreamSet and
/// StreamGet.
pub const VALUE_UNARY_BYTES_MAX: usize = 32 << 20;
/// Most entries in one transaction.
pub const ENTRIES_PER_TX_MAX: usize = 1024;
/// Largest encoded transaction record, in bytes (keys, values, hashes and headers).
pub const TX_BYTES_MAX: usize = 257 << 20;

/// Alh(0): the value the first transaction chains from.
pub const ALH_GENESIS: Digest = Digest::ZERO;

/// Per-entry metadata (docs/format.md, "Entry metadata"): a flags byte, then an expiry time
/// when the entry has one. Every field enters the entry digest, so none can be changed
/// without breaking the proofs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryMeta {
    /// A logical delete: the key reads as absent from this tx on, and its history shows it.
    pub deleted: bool,
    /// Not indexed: the entry is in its tx (and in every proof of it) but not in the key
    /// index or the key map, so reads by key never see it.
    pub not_indexed: bool,
    /// The entry expires at this time (seconds since the Unix epoch): from then on reads by
    /// key treat it as absent; its history still shows it.
    pub expires_at: Option<u64>,
    /// A reference: the value names another key ([`super::kv::reference_value`]), and a
    /// read of this key resolves to that key's version.
    pub reference: bool,
}

/// Why a metadata combination is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaError {
    /// A flag this version does not know.
    UnknownFlags,
    /// A delete that is not indexed (it would delete nothing) or expires.
    DeleteWithMetadata,
    /// An entry not indexed cannot expire (nothing reads it by key).
    NotIndexedExpiry,
    /// An expiry time of 0.
    ZeroExpiry,
    /// A reference that is also a delete, left out of the index, or expiring.
    ReferenceWithMetadata,
}

impl std::fmt::Display for MetaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MetaError::UnknownFlags => "unknown entry flags",
            MetaError::DeleteWithMetadata => "a delete cannot expire or be left out of the index",
            MetaError::NotIndexedExpiry => "an entry left out of the index cannot expire",
            MetaError::ZeroExpiry => "an expiry time of 0",
            MetaError::ReferenceWithMetadata => {
                "a reference cannot be a delete, expire or be left out of the index"
            }
        })
    }
}

impl EntryMeta {
    pub const FLAG_DELETED: u8 = 0x01;
    pub const FLAG_NOT_INDEXED: u8 = 0x02;
    pub const FLAG_EXPIRES: u8 = 0x04;
    pub const FLAG_REFERENCE: u8 = 0x08;
    const KNOWN: u8 =
        Self::FLAG_DELETED | Self::FLAG_NOT_INDEXED | Self::FLAG_EXPIRES | Self::FLAG_REFERENCE;

    /// A logical delete.
    pub const DELETE: EntryMeta = EntryMeta {
        deleted: true,
        not_indexed: false,
        expires_at: None,
        reference: false,
    };

    /// A reference.
    pub const REFERENCE: EntryMeta = EntryMeta {
        deleted: false,
        not_indexed: false,
        expires_at: None,
        reference: true,
    };

    pub fn to_flags(self) -> u8 {
        let mut f = 0;
        if self.deleted {
            f |= Self::FLAG_DELETED;
        }
        if self.not_indexed {
            f |= Self::FLAG_NOT_INDEXED;
        }
        if self.expires_at.is_some() {
            f |= Self::FLAG_EXPIRES;
        }
        if self.reference {
            f |= Self::FLAG_REFERENCE;
        }
        f
    }

    /// The metadata of `flags`, with `expires_at` read when the flags say there is one
    /// (called only then); refused combinations are errors.
    pub fn decode(
        flags: u8,
        expires_at: impl FnOnce() -> Option<u64>,
    ) -> Result<EntryMeta, MetaError> {
        if flags & !Self::KNOWN != 0 {
            return Err(MetaError::UnknownFlags);
        }
        let meta = EntryMeta {
            deleted: flags & Self::FLAG_DELETED != 0,
            not_indexed: flags & Self::FLAG_NOT_INDEXED != 0,
            expires_at: if flags & Self::FLAG_EXPIRES != 0 {
                Some(expires_at().ok_or(MetaError::UnknownFlags)?)
            } else {
                None
            },
            reference: flags & Self::FLAG_REFERENCE != 0,
        };
        meta.check()?;
        Ok(meta)
    }

    /// Refuses the combinations docs/format.md forbids.
    pub fn check(self) -> Result<(), MetaError> {
        if self.reference && (self.deleted || self.not_indexed || self.expires_at.is_some()) {
            return Err(MetaError::ReferenceWithMetadata);
        }
        if self.deleted && (self.not_indexed || self.expires_at.is_some()) {
            return Err(MetaError::DeleteWithMetadata);
        }
        if self.not_indexed && self.expires_at.is_some() {
            return Err(MetaError::NotIndexedExpiry);
        }
        if self.expires_at == Some(0) {
            return Err(MetaError::ZeroExpiry);
        }
        Ok(())
    }

    /// The metadata's bytes as the entry digest takes them: the flags, then `u64
    /// expires_at` when set (1 or 9 bytes).
    pub fn to_bytes(self) -> ([u8; 9], u8) {
        let mut b = [0u8; 9];
        b[0] = self.to_flags();
        match self.expires_at {
            Some(t) => {
                b[1..9].copy_from_slice(&t.to_le_bytes());
                (b, 9)
            }
            None => (b, 1),
        }
    }

    /// The entry has expired at `now_secs` (seconds since the Unix epoch).
    pub fn expired_at(self, now_secs: u64) -> bool {
        self.expires_at.is_some_and(|t| now_secs >= t)
    }
}

/// What an entry contributes to the chain: the value enters only through its hash, so a
/// value can be dropped later without breaking any proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub meta: EntryMeta,
    pub value_hash: Digest,
}

impl Entry {
    pub fn digest(&self) -> Digest {
        entry_digest(&self.key, self.meta, &self.value_hash)
    }
}

/// `H(0x10 || value)`.
pub fn value_hash(value: &[u8]) -> Digest {
    // One-shot hashing of a stack copy is much cheaper than the incremental hasher for the
    // small values that dominate; the digest is the same.
    const SMALL: usize = 256;
    if value.len() <= SMALL {
        let mut buf = [0u8; 1 + SMALL];
        buf[0] = TAG_VALUE;
        buf[1..=value.len()].copy_from_slice(value);
        return blake3::hash(&buf[..=value.len()]).into();
    }
    let mut h = blake3::Hasher::new();
    h.update(&[TAG_VALUE]);
    h.update(value);
    h.finalize().into()
}

/// `H(0x11 || u16 meta_len || meta || u16 key_len || key || value_hash)`, lengths little-endian;
/// `meta` is [`EntryMeta::to_bytes`]. Valid keys are at most [`KEY_BYTES_MAX`] bytes; a longer
/// one (say, from a lying server) is hashed with a length of at most 65535, which no stored
/// entry can match.
pub fn entry_digest(key: &[u8], meta: EntryMeta, value_hash: &Digest) -> Digest {
    let key_len = u16::try_from(key.len()).unwrap_or(u16::MAX).to_le_bytes();
    let (meta, meta_len) = meta.to_bytes();
    let meta = &meta[..usize::from(meta_len)];
    const FIXED: usize = 1 + 2 + 9 + 2 + 32;
    let mut buf = [0u8; FIXED + 1024];
    if key.len() <= 1024 {
        let mut at = 0;
        let mut put = |b: &[u8]| {
            buf[at..at + b.len()].copy_from_slice(b);
            at += b.len();
        };
        put(&[TAG_ENTRY]);
        put(&u16::from(meta_len).to_le_bytes());
        put(meta);
        put(&key_len);
        put(key);
        put(&value_hash.0);
        return blake3::hash(&buf[..at]).into();
    }
    let mut h = blake3::Hasher::new();
    h.update(&[TAG_ENTRY]);
    h.update(&u16::from(meta_len).to_le_bytes());
    h.update(meta);
    h.update(&key_len);
    h.update(key);
    h.update(&value_hash.0);
    h.finalize().into()
}

/// Root of the entries tree over the digests of a tx's entries, in entry order.
pub fn entries_root(digests: &[Digest]) -> Digest {
    let leaves: Vec<Digest> = digests.iter().map(|d| leaf_hash(&d.0)).collect();
    root_of_leaves(&leaves)
}

/// The header of a committed transaction: everything the chain commits to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxHeader {
    pub version: u16,
    pub id: TxId,
    /// Commit time, microseconds since the Unix epoch; never decreases along the chain.
    pub timestamp_us: u64,
    /// Alh of tx `id - 1` (`ALH_GENESIS` for tx 1).
    pub prev_alh: Digest,
    pub entry_count: u32,
    pub entries_root: Digest,
    /// Leaves in the history tree before this tx: always `id - 1`.
    pub history_size: u64,
    /// Root of the history tree over Alh(1..id-1).
    pub history_root: Digest,
    /// The epoch the tx was written in: 1 for a new database, one more at each promotion of
    /// a replica to primary; never decreases along the chain.
    pub epoch: u64,
    /// Root of the key map after this tx: every key's latest version as of tx `id`
    /// (`integrity::map`).
    pub map_root: Digest,
}

impl TxHeader {
    pub fn inner_hash(&self) -> Digest {
        inner_hash(self)
    }

    pub fn alh(&self) -> Digest {
        alh(self.id, &self.prev_alh, &self.inner_hash())
    }
}

/// `H(0x12 || u16 version || u64 timestamp_us || u32 entry_count || entries_root ||
/// u64 history_size || history_root || u64 epoch || map_root)`, integers little-endian.
pub fn inner_hash(h: &TxHeader) -> Digest {
    let mut buf = [0u8; 1 + 2 + 8 + 4 + 32 + 8 + 32 + 8 + 32];
    buf[0] = TAG_INNER;
    buf[1..3].copy_from_slice(&h.version.to_le_bytes());
    buf[3..11].copy_from_slice(&h.timestamp_us.to_le_bytes());
    buf[11..15].copy_from_slice(&h.entry_count.to_le_bytes());
    buf[15..47].copy_from_slice(&h.entries_root.0);
    buf[47..55].copy_from_slice(&h.history_size.to_le_bytes());
    buf[55..87].copy_from_slice(&h.history_root.0);
    buf[87..95].copy_from_slice(&h.epoch.to_le_bytes());
    buf[95..127].copy_from_slice(&h.map_root.0);
    blake3::hash(&buf).into()
}

/// `Alh(n) = H(0x13 || u64 n || Alh(n-1) || inner_hash(n))`.
pub fn alh(id: TxId, prev_alh: &Digest, inner: &Digest) -> Digest {
    let mut buf = [0u8; 1 + 8 + 32 + 32];
    buf[0] = TAG_ALH;
    buf[1..9].copy_from_slice(&id.to_le_bytes());
    buf[9..41].copy_from_slice(&prev_alh.0);
    buf[41..73].copy_from_slice(&inner.0);
    blake3::hash(&buf).into()
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    /// Pins the hash inputs: if one of these changes, docs/format.md and every stored
    /// database change with it.
    #[test]
    fn hash_vectors_are_stable() {
        let vh = value_hash(b"value");
        let d = entry_digest(b"key", EntryMeta::default(), &vh);
        let h = TxHeader {
            version: FORMAT_VERSION,
            id: 1,
            timestamp_us: 1_700_000_000_000_000,
            prev_alh: ALH_GENESIS,
            entry_count: 1,
            entries_root: entries_root(&[d]),
            history_size: 0,
            history_root: crate::integrity::merkle::empty_root(),
            epoch: 1,
            map_root: crate::integrity::map::MapLeaf {
                key_hash: crate::integrity::map::key_hash(b"key"),
                tx_id: 1,
                deleted: false,
                entry_digest: d,
            }
            .hash(),
        };
        // Recomputed by hand from the documented byte layouts.
        let mut v = vec![TAG_VALUE];
        v.extend_from_slice(b"value");
        assert_eq!(vh, Digest::from(blake3::hash(&v)));
        let mut e = vec![TAG_ENTRY, 1, 0, 0, 3, 0];
        e.extend_from_slice(b"key");
        e.extend_from_slice(&vh.0);
        assert_eq!(d, Digest::from(blake3::hash(&e)));
        let mut leaf = vec![0u8];
        leaf.extend_from_slice(&d.0);
        assert_eq!(h.entries_root, Digest::from(blake3::hash(&leaf)));
        let mut inner = vec![TAG_INNER, 2, 0];
        inner.extend_from_slice(&h.timestamp_us.to_le_bytes());
        inner.extend_from_slice(&1u32.to_le_bytes());
        inner.extend_from_slice(&h.entries_root.0);
        inner.extend_from_slice(&0u64.to_le_bytes());
        inner.extend_from_slice(&h.history_root.0);
        inner.extend_from_slice(&1u64.to_le_bytes());
        inner.extend_from_slice(&h.map_root.0);
        assert_eq!(h.inner_hash(), Digest::from(blake3::hash(&inner)));
        let mut a = vec![TAG_ALH];
        a.extend_from_slice(&1u64.to_le_bytes());
        a.extend_from_slice(&[0; 32]);
        a.extend_from_slice(&h.inner_hash().0);
        assert_eq!(h.alh(), Digest::from(blake3::hash(&a)));
        assert_ne!(h.alh(), h.inner_hash());
    }

    /// The one-shot fast paths give the same digests as plain incremental hashing.
    #[test]
    fn fast_paths_match_incremental_hashing() {
        for len in [0usize, 1, 100, 255, 256, 257, 5000] {
            let v = vec![0xabu8; len];
            let mut h = blake3::Hasher::new();
            h.update(&[TAG_VALUE]);
            h.update(&v);
            assert_eq!(
                value_hash(&v),
                Digest::from(h.finalize()),
                "value of {len} bytes"
            );
        }
        for len in [1usize, 16, 1024, 1025] {
            let k = vec![7u8; len];
            let vh = value_hash(b"v");
            let mut h = blake3::Hasher::new();
            h.update(&[TAG_ENTRY, 1, 0, 1]);
            h.update(&(len as u16).to_le_bytes());
            h.update(&k);
            h.update(&vh.0);
            assert_eq!(
                entry_digest(&k, EntryMeta::DELETE, &vh),
                Digest::from(h.finalize()),
                "key of {len} bytes"
            );
        }
        let d = Digest([3; 32]);
        let mut h = blake3::Hasher::new();
        h.update(&[0]);
        h.update(&d.0);
        assert_eq!(
            crate::integrity::merkle::leaf_hash(&d.0),
            Digest::from(h.finalize())
        );
    }

    /// docs/format.md gives a delete's value hash (of the empty value) literally.
    #[test]
    fn a_deletes_value_hash_is_as_documented() {
        assert_eq!(
            value_hash(b"").to_hex(),
            "b35d4ab392fb952c8d7625efbfaff8af2c8cebf20d1ff9784a8ffe08dc667e12"
        );
    }

    #[test]
    fn every_metadata_field_changes_the_digest() {
        let vh = value_hash(b"");
        let plain = EntryMeta::default();
        let expiring = EntryMeta {
            expires_at: Some(1_800_000_000),
            ..plain
        };
        let digests = [
            entry_digest(b"k", plain, &vh),
            entry_digest(b"k", EntryMeta::DELETE, &vh),
            entry_digest(
                b"k",
                EntryMeta {
                    not_indexed: true,
                    ..plain
                },
                &vh,
            ),
            entry_digest(b"k", expiring, &vh),
            entry_digest(
                b"k",
                EntryMeta {
                    expires_at: Some(1_800_000_001),
                    ..plain
                },
                &vh,
            ),
            entry_digest(b"k", EntryMeta::REFERENCE, &vh),
        ];
        for (i, a) in digests.iter().enumerate() {
            for b in &digests[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // The documented layout of an expiring entry's digest: meta_len 9, the flags, then
        // u64 expires_at.
        let mut e = vec![TAG_ENTRY, 9, 0, EntryMeta::FLAG_EXPIRES];
        e.extend_from_slice(&1_800_000_000u64.to_le_bytes());
        e.extend_from_slice(&[1, 0]);
        e.extend_from_slice(b"k");
        e.extend_from_slice(&vh.0);
        assert_eq!(digests[3], Digest::from(blake3::hash(&e)));
        // docs/format.md gives this digest as a known answer.
        assert_eq!(
            digests[3].to_hex(),
            "6eda842083a354599afafdbeff3848331bf0f94d852dd8e555410c156d4733b4"
        );
    }

    #[test]
    fn metadata_decoding_refuses_what_the_format_forbids() {
        let none = || None;
        assert_eq!(EntryMeta::decode(0x10, none), Err(MetaError::UnknownFlags));
        assert_eq!(EntryMeta::decode(0x08, none), Ok(EntryMeta::REFERENCE));
        assert_eq!(
            EntryMeta::decode(0x09, none),
            Err(MetaError::ReferenceWithMetadata)
        );
        assert_eq!(
            EntryMeta::decode(0x0c, || Some(5)),
            Err(MetaError::ReferenceWithMetadata)
        );
        assert_eq!(EntryMeta::decode(0x01, none), Ok(EntryMeta::DELETE));
        assert_eq!(
            EntryMeta::decode(0x03, none),
            Err(MetaError::DeleteWithMetadata)
        );
        assert_eq!(
            EntryMeta::decode(0x05, || Some(5)),
            Err(MetaError::DeleteWithMetadata)
        );
        assert_eq!(
            EntryMeta::decode(0x06, || Some(5)),
            Err(MetaError::NotIndexedExpiry)
        );
        assert_eq!(
            EntryMeta::decode(0x04, || Some(0)),
            Err(MetaError::ZeroExpiry)
        );
        let m = EntryMeta::decode(0x04, || Some(5)).unwrap();
        assert!(!m.expired_at(4) && m.expired_at(5));
    }
}
