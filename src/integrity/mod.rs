//! Pure functions over values: digests, the hash chain, Merkle trees, proofs and their
//! verification. No I/O, no clocks, no locks; everything here is deterministic, so a client
//! verifies with exactly the code the server proves with.
//!
//! Every hash is BLAKE3 over a one-byte domain tag followed by fixed-layout fields
//! (docs/format.md, "Hash inputs"). The tags are the `TAG_*` constants below; no two hash
//! inputs share a tag, so no digest can be replayed as another kind of digest.
#![deny(clippy::cast_possible_truncation)]

mod digest;
pub mod hex;
pub mod kv;
pub mod map;
pub mod merkle;
pub mod proof;
pub mod signing;
pub mod tx;

pub use digest::{Digest, DIGEST_BYTES};
pub use proof::{EntryProof, StateProof, TxProof, VerifyError};
pub use tx::{
    alh, entry_digest, inner_hash, value_hash, Entry, EntryMeta, MetaError, TxHeader, TxId,
    ALH_GENESIS, ENTRIES_PER_TX_MAX, FORMAT_VERSION, KEY_BYTES_MAX, TX_BYTES_MAX, VALUE_BYTES_MAX,
    VALUE_UNARY_BYTES_MAX,
};

/// Leaf of a Merkle tree (RFC 6962 `0x00`).
pub const TAG_LEAF: u8 = 0x00;
/// Interior node of a Merkle tree: `H(0x01)` is the key of the keyed hash of its children.
pub const TAG_NODE: u8 = 0x01;
/// Hash of a value.
pub const TAG_VALUE: u8 = 0x10;
/// Digest of one entry: key, metadata and value hash.
pub const TAG_ENTRY: u8 = 0x11;
/// Inner hash of a transaction header.
pub const TAG_INNER: u8 = 0x12;
/// Accumulated linear hash (Alh) of a transaction.
pub const TAG_ALH: u8 = 0x13;
/// Where a key lives in the key map: `H(0x14 || key)`.
pub const TAG_MAP_KEY: u8 = 0x14;
/// A leaf of the key map: one key's latest version.
pub const TAG_MAP_LEAF: u8 = 0x15;
/// Interior node of the key map: `H(0x16)` is the key of the keyed hash of its children.
pub const TAG_MAP_NODE: u8 = 0x16;
