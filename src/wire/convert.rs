//! Wire <-> `integrity` conversions. A wire value that does not decode into its domain type is
//! a [`WireError`] naming the field.

use super::generated as pb;
use crate::integrity::{self, Digest};

/// A wire value that does not decode into its domain type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {field}: {reason}")]
pub struct WireError {
    /// The message field at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A 32-byte digest field.
pub fn digest(field: &'static str, b: &[u8]) -> Result<Digest, WireError> {
    <[u8; 32]>::try_from(b).map(Digest).map_err(|_| WireError {
        field,
        reason: "not 32 bytes",
    })
}

/// A repeated 32-byte digest field.
pub fn digests(field: &'static str, v: &[Vec<u8>]) -> Result<Vec<Digest>, WireError> {
    v.iter().map(|b| digest(field, b)).collect()
}

/// The value hash an entry's digest takes: its value's hash, or the hash it carries when
/// its value was truncated (then it carries no value).
pub fn entry_value_hash(e: &pb::Entry) -> Result<Digest, WireError> {
    if e.value_streamed {
        return Err(WireError {
            field: "entry.value_streamed",
            reason: "a streamed value outside a stream",
        });
    }
    if !e.value_truncated {
        return Ok(integrity::value_hash(&e.value));
    }
    if !e.value.is_empty() {
        return Err(WireError {
            field: "entry.value",
            reason: "a truncated value with bytes",
        });
    }
    digest("entry.value_hash", &e.value_hash)
}

/// The value hash of the entry that starts a StreamGet: the value follows in chunks.
pub fn streamed_value_hash(e: &pb::Entry) -> Result<Digest, WireError> {
    if !e.value_streamed || e.value_truncated || !e.value.is_empty() {
        return Err(WireError {
            field: "entry.value_streamed",
            reason: "not the entry of a streamed value",
        });
    }
    digest("entry.value_hash", &e.value_hash)
}

/// An entry's metadata as the wire carries it: unset for an ordinary entry or a delete.
pub fn metadata_wire(meta: integrity::EntryMeta) -> Option<pb::KvMetadata> {
    (meta.expires_at.is_some() || meta.not_indexed || meta.reference).then(|| pb::KvMetadata {
        expires_at: meta.expires_at.unwrap_or(0),
        non_indexable: meta.not_indexed,
        reference: meta.reference,
    })
}

/// The metadata of an entry to write with Set, VerifiableSet or ExecAll's `kv` (a reference
/// is written with SetReference, which checks what it references).
pub fn new_entry_meta(
    deleted: bool,
    m: Option<&pb::KvMetadata>,
) -> Result<integrity::EntryMeta, WireError> {
    let meta = meta_of(deleted, m)?;
    if meta.reference {
        return Err(WireError {
            field: "metadata.reference",
            reason: "write references with SetReference",
        });
    }
    Ok(meta)
}

fn meta_of(deleted: bool, m: Option<&pb::KvMetadata>) -> Result<integrity::EntryMeta, WireError> {
    let meta = integrity::EntryMeta {
        deleted,
        not_indexed: m.is_some_and(|m| m.non_indexable),
        expires_at: m.map(|m| m.expires_at).filter(|t| *t != 0),
        reference: m.is_some_and(|m| m.reference),
    };
    meta.check().map_err(|e| WireError {
        field: "metadata",
        reason: match e {
            integrity::MetaError::UnknownFlags => "unknown flags",
            integrity::MetaError::DeleteWithMetadata => "a delete cannot carry metadata",
            integrity::MetaError::NotIndexedExpiry => "a non-indexable entry cannot expire",
            integrity::MetaError::ZeroExpiry => "an expiry time of 0",
            integrity::MetaError::ReferenceWithMetadata => {
                "a reference cannot be a delete, expire or be non-indexable"
            }
        },
    })?;
    Ok(meta)
}

/// The metadata an entry's digest takes, from the entry as the wire carries it.
pub fn entry_meta(e: &pb::Entry) -> Result<integrity::EntryMeta, WireError> {
    meta_of(e.deleted, e.metadata.as_ref())
}

/// A required message field.
pub fn required<'a, T>(field: &'static str, v: &'a Option<T>) -> Result<&'a T, WireError> {
    v.as_ref().ok_or(WireError {
        field,
        reason: "missing",
    })
}

impl From<&integrity::TxHeader> for pb::TxHeader {
    fn from(h: &integrity::TxHeader) -> pb::TxHeader {
        pb::TxHeader {
            version: u32::from(h.version),
            id: h.id,
            timestamp_us: h.timestamp_us,
            prev_alh: h.prev_alh.0.to_vec(),
            entry_count: h.entry_count,
            entries_root: h.entries_root.0.to_vec(),
            history_size: h.history_size,
            history_root: h.history_root.0.to_vec(),
            epoch: h.epoch,
            map_root: h.map_root.0.to_vec(),
        }
    }
}

impl TryFrom<&pb::TxHeader> for integrity::TxHeader {
    type Error = WireError;
    fn try_from(h: &pb::TxHeader) -> Result<Self, WireError> {
        Ok(integrity::TxHeader {
            version: u16::try_from(h.version).map_err(|_| WireError {
                field: "version",
                reason: "too large",
            })?,
            id: h.id,
            timestamp_us: h.timestamp_us,
            prev_alh: digest("prev_alh", &h.prev_alh)?,
            entry_count: h.entry_count,
            entries_root: digest("entries_root", &h.entries_root)?,
            history_size: h.history_size,
            history_root: digest("history_root", &h.history_root)?,
            epoch: h.epoch,
            map_root: digest("map_root", &h.map_root)?,
        })
    }
}

impl From<&integrity::StateProof> for pb::StateProof {
    fn from(p: &integrity::StateProof) -> pb::StateProof {
        pb::StateProof {
            old: Some((&p.old).into()),
            new: Some((&p.new).into()),
            inclusion: p.inclusion.iter().map(|d| d.0.to_vec()).collect(),
            consistency: p.consistency.iter().map(|d| d.0.to_vec()).collect(),
        }
    }
}

impl TryFrom<&pb::StateProof> for integrity::StateProof {
    type Error = WireError;
    fn try_from(p: &pb::StateProof) -> Result<Self, WireError> {
        Ok(integrity::StateProof {
            old: required("old", &p.old)?.try_into()?,
            new: required("new", &p.new)?.try_into()?,
            inclusion: digests("inclusion", &p.inclusion)?,
            consistency: digests("consistency", &p.consistency)?,
        })
    }
}

impl From<&integrity::map::MapLeaf> for pb::MapLeaf {
    fn from(l: &integrity::map::MapLeaf) -> pb::MapLeaf {
        pb::MapLeaf {
            key_hash: l.key_hash.0.to_vec(),
            tx_id: l.tx_id,
            deleted: l.deleted,
            entry_digest: l.entry_digest.0.to_vec(),
        }
    }
}

impl TryFrom<&pb::MapLeaf> for integrity::map::MapLeaf {
    type Error = WireError;
    fn try_from(l: &pb::MapLeaf) -> Result<Self, WireError> {
        Ok(integrity::map::MapLeaf {
            key_hash: digest("latest.leaf.key_hash", &l.key_hash)?,
            tx_id: l.tx_id,
            deleted: l.deleted,
            entry_digest: digest("latest.leaf.entry_digest", &l.entry_digest)?,
        })
    }
}

impl From<&integrity::map::MapProof> for pb::MapProof {
    fn from(p: &integrity::map::MapProof) -> pb::MapProof {
        pb::MapProof {
            siblings: p.siblings.iter().map(|d| d.0.to_vec()).collect(),
            leaf: p.leaf.as_ref().map(Into::into),
        }
    }
}

impl TryFrom<&pb::MapProof> for integrity::map::MapProof {
    type Error = WireError;
    fn try_from(p: &pb::MapProof) -> Result<Self, WireError> {
        if p.siblings.len() > integrity::map::MAP_DEPTH_MAX {
            return Err(WireError {
                field: "latest.siblings",
                reason: "more than 256",
            });
        }
        Ok(integrity::map::MapProof {
            siblings: digests("latest.siblings", &p.siblings)?,
            leaf: p.leaf.as_ref().map(TryInto::try_into).transpose()?,
        })
    }
}
