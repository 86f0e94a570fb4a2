//! The gRPC wire types generated from proto/chainlog/v1/chainlog.proto, and the one place
//! that converts them to and from domain types.
#![allow(clippy::all, missing_docs)]

tonic::include_proto!("chainlog.v1");

/// The descriptor set served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/chainlog_descriptor.bin"));

use crate::integrity::{self, Digest};

/// A wire value that does not decode into its domain type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {field}: {reason}")]
pub struct WireError {
    pub field: &'static str,
    pub reason: &'static str,
}

pub fn digest(field: &'static str, b: &[u8]) -> Result<Digest, WireError> {
    <[u8; 32]>::try_from(b).map(Digest).map_err(|_| WireError {
        field,
        reason: "not 32 bytes",
    })
}

pub fn digests(field: &'static str, v: &[Vec<u8>]) -> Result<Vec<Digest>, WireError> {
    v.iter().map(|b| digest(field, b)).collect()
}

impl From<&integrity::TxHeader> for TxHeader {
    fn from(h: &integrity::TxHeader) -> TxHeader {
        TxHeader {
            version: u32::from(h.version),
            id: h.id,
            timestamp_us: h.timestamp_us,
            prev_alh: h.prev_alh.0.to_vec(),
            entry_count: h.entry_count,
            entries_root: h.entries_root.0.to_vec(),
            history_size: h.history_size,
            history_root: h.history_root.0.to_vec(),
        }
    }
}

impl TryFrom<&TxHeader> for integrity::TxHeader {
    type Error = WireError;
    fn try_from(h: &TxHeader) -> Result<Self, WireError> {
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
        })
    }
}

/// A required message field.
pub fn required<'a, T>(field: &'static str, v: &'a Option<T>) -> Result<&'a T, WireError> {
    v.as_ref().ok_or(WireError {
        field,
        reason: "missing",
    })
}

impl From<&integrity::StateProof> for StateProof {
    fn from(p: &integrity::StateProof) -> StateProof {
        StateProof {
            old: Some((&p.old).into()),
            new: Some((&p.new).into()),
            inclusion: p.inclusion.iter().map(|d| d.0.to_vec()).collect(),
            consistency: p.consistency.iter().map(|d| d.0.to_vec()).collect(),
        }
    }
}

impl TryFrom<&StateProof> for integrity::StateProof {
    type Error = WireError;
    fn try_from(p: &StateProof) -> Result<Self, WireError> {
        Ok(integrity::StateProof {
            old: required("old", &p.old)?.try_into()?,
            new: required("new", &p.new)?.try_into()?,
            inclusion: digests("inclusion", &p.inclusion)?,
            consistency: digests("consistency", &p.consistency)?,
        })
    }
}

/// A committed tx with its entries, as the wire carries it.
impl From<crate::ledger::Tx> for Tx {
    fn from(tx: crate::ledger::Tx) -> Tx {
        let id = tx.header.id;
        Tx {
            header: Some((&tx.header).into()),
            entries: tx
                .entries
                .into_iter()
                .map(|e| Entry {
                    key: e.key,
                    value: e.value,
                    tx: id,
                    deleted: e.meta.deleted,
                })
                .collect(),
        }
    }
}
