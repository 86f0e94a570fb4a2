//! chainlog: a verifiable key-value database. Each database is an append-only, hash-chained
//! log of transactions with a Merkle tree over its whole history.
//!
//! # Layout
//!
//! Layers depend one way (ARCHITECTURE.md has the rule, and `tests/layering.rs` checks it):
//!
//! - [`integrity`]: pure functions: digests, the hash chain, Merkle trees, proofs and their
//!   verification. Depends on nothing else here.
//! - [`wire`]: the API contract: the generated gRPC types, their conversions to `integrity`
//!   types, the error reasons and the message limits. Depends on `integrity`.
//! - [`client`]: the Rust SDK; depends on `integrity` and `wire`, never on the engine.
//! - `storage` (internal): bytes on disk: crc32 frames, segment files, recovery of a torn tail,
//!   the memory maps. Knows nothing of hashes or keys.
//! - `index` (internal): key -> versions, in memory and in sorted run files.
//! - [`ledger`]: one database: the only writer; composes storage, integrity and index; owns
//!   commit order, group commit, checkpoints, recovery and the offline check.
//! - [`replication`]: replica databases following a primary: the stream's two sides, the
//!   replicator task, status and acknowledgements.
//! - [`server`]: `chainlogd`: the catalog of databases, users, and the gRPC services.
//!
//! # Features
//!
//! - `client`: `integrity`, `wire` and `client`: what an application needs to talk to a
//!   server and verify its answers.
//! - `engine`: `integrity` and the storage engine (`ledger`), to embed one database.
//! - `server` (default): both, plus `replication` and `server`.
//! - `cli` (default): what the binaries need besides (flags, config files, logging).
#![deny(unsafe_code)]

// Offsets and lengths on disk are u64 and are used as in-memory indexes: a narrower target
// would have to truncate them.
#[cfg(not(target_pointer_width = "64"))]
compile_error!("chainlog supports 64-bit targets only");

pub mod integrity;

#[cfg(any(feature = "client", feature = "engine"))]
mod fs;

#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "client")]
pub mod wire;

#[cfg(feature = "engine")]
mod index;
#[cfg(feature = "engine")]
pub mod ledger;
#[cfg(feature = "engine")]
mod storage;

#[cfg(feature = "server")]
pub mod replication;
#[cfg(feature = "server")]
pub mod server;

/// The README's library snippet, compiled as a doctest so it cannot drift from the API.
#[cfg(all(doctest, feature = "engine"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Sends `tracing` logs at `filter` (env-filter syntax) to stderr, coloured only on a
/// terminal: the one logging set-up of `chainlogd` and `chainlog-replicator`.
#[cfg(feature = "cli")]
pub fn init_logging(filter: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| format!("--log {filter:?}: {e}"))?;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .init();
    Ok(())
}
