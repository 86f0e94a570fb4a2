//! The wire contract both ends of the API share: the gRPC types generated from
//! proto/chainlog/v1/chainlog.proto, every conversion between them and the `integrity`
//! domain types, the error reasons clients match on, and the message limits.
//!
//! Conversions that involve the server's own types (settings, ledger reads) live with the
//! server; everything here depends on `integrity` alone, so an application that only wants
//! the SDK compiles no storage engine.
#![deny(missing_docs)]

mod convert;
mod reason;

pub use convert::{
    digest, digests, entry_meta, entry_value_hash, metadata_wire, new_entry_meta, required,
    streamed_value_hash, WireError,
};
pub use reason::{Reason, PRIMARY_KEY, REASON_KEY};

/// The generated code: the only place lints are relaxed (it is not ours to change).
#[allow(clippy::all, missing_docs, unreachable_pub)]
mod generated {
    tonic::include_proto!("chainlog.v1");
}
pub use generated::*;

/// The descriptor set served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/chainlog_descriptor.bin"));

/// Largest gRPC message, either way: one maximal transaction and its framing (a tx record on
/// a replication stream, a TxById answer).
pub const MESSAGE_BYTES_MAX: usize = crate::integrity::TX_BYTES_MAX + (1 << 20);

/// Largest request a unary `Data` call takes (Set, ExecAll…): 128 MiB of entries and their
/// framing. A larger value goes through StreamSet.
pub const REQUEST_BYTES_MAX: usize = (128 << 20) + (1 << 20);

/// Largest chunk of a streamed value (StreamSet, StreamGet).
pub const CHUNK_BYTES_MAX: usize = 4 << 20;

/// The name of the system database: a server's users and databases, recorded by the server
/// itself (docs/replication.md, "A whole server").
pub const SYSTEM_DATABASE: &str = "systemdb";

/// The replication protocol this build speaks (FollowHello/Welcome): a peer of another
/// major version is refused; one of another minor version is followed (rolling upgrades).
/// Minor 1 added epochs, fencing and protocol versions.
pub const PROTOCOL_MAJOR: u32 = 1;
/// See [`PROTOCOL_MAJOR`].
pub const PROTOCOL_MINOR: u32 = 1;

/// Most results one History or Scan call returns.
pub const PAGE_LIMIT_MAX: u32 = 1000;
