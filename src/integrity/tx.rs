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
/// Largest value, in bytes.
pub const VALUE_BYTES_MAX: usize = 32 << 20;
/// Most entries in one transaction.
pub const ENTRIES_PER_TX_MAX: usize = 1024;
/// Largest encoded transaction record, in bytes (keys, values, hashes and headers).
pub const TX_BYTES_MAX: usize = 128 << 20;

/// Alh(0): the value the first transaction chains from.
pub const ALH_GENESIS: Digest = Digest::ZERO;

/// Per-entry metadata. Encoded as one flags byte (docs/format.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryMeta {
    /// A logical delete: the key reads as absent from this tx on, and its history shows it.
    pub deleted: bool,
}

impl EntryMeta {
    pub const FLAG_DELETED: u8 = 0x01;

    pub fn to_flags(self) -> u8 {
        if self.deleted {
            Self::FLAG_DELETED
        } else {
            0
        }
    }

    /// `None` for flags this version does not know.
    pub fn from_flags(flags: u8) -> Option<EntryMeta> {
        if flags & !Self::FLAG_DELETED != 0 {
            return None;
        }
        Some(EntryMeta {
            deleted: flags & Self::FLAG_DELETED != 0,
        })
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

/// `H(0x11 || u16 meta_len || meta || u16 key_len || key || value_hash)`, lengths little-endian.
/// Valid keys are at most [`KEY_BYTES_MAX`] bytes; a longer one (say, from a lying server)
/// is hashed with a length of at most 65535, which no stored entry can match.
pub fn entry_digest(key: &[u8], meta: EntryMeta, value_hash: &Digest) -> Digest {
    let key_len = u16::try_from(key.len()).unwrap_or(u16::MAX).to_le_bytes();
    const FIXED: usize = 1 + 2 + 1 + 2 + 32;
    let mut buf = [0u8; FIXED + 1024];
    if key.len() <= 1024 {
        let n = FIXED + key.len();
        buf[0] = TAG_ENTRY;
        buf[1..3].copy_from_slice(&1u16.to_le_bytes());
        buf[3] = meta.to_flags();
        buf[4..6].copy_from_slice(&key_len);
        buf[6..6 + key.len()].copy_from_slice(key);
        buf[6 + key.len()..n].copy_from_slice(&value_hash.0);
        return blake3::hash(&buf[..n]).into();
    }
    let mut h = blake3::Hasher::new();
    h.update(&[TAG_ENTRY]);
    h.update(&1u16.to_le_bytes());
    h.update(&[meta.to_flags()]);
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
                entry_digest(&k, EntryMeta { deleted: true }, &vh),
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
    fn deleted_flag_changes_the_digest() {
        let vh = value_hash(b"");
        assert_ne!(
            entry_digest(b"k", EntryMeta { deleted: false }, &vh),
            entry_digest(b"k", EntryMeta { deleted: true }, &vh)
        );
        assert_eq!(EntryMeta::from_flags(0x02), None);
        assert_eq!(EntryMeta::from_flags(1), Some(EntryMeta { deleted: true }));
    }
}
