//! chainlog: a verifiable key-value database. Each database is an append-only, hash-chained
//! log of transactions with a Merkle tree over its whole history.
//!
//! # Layout
//!
//! Layers depend one way, top to bottom (ARCHITECTURE.md):
//!
//! - [`integrity`]: pure functions: digests, the hash chain, Merkle trees, proofs and their
//!   verification. Depends on nothing else here.
//! - [`storage`]: bytes on disk: crc32 frames, segment files, recovery of a torn tail, the
//!   memory maps. Knows nothing of hashes or keys.
//! - [`index`]: key -> versions, in memory and in sorted run files.
//! - [`ledger`]: one database: the only writer; composes storage, integrity and index; owns
//!   commit order, group commit, checkpoints, recovery and the offline check.
//! - [`replication`]: replica databases following a primary: the stream's two sides, the
//!   replicator task, status and acknowledgements.
//! - [`server`]: `chainlogd`: tonic adapters over many ledgers, users and permissions.
//! - [`client`]: the Rust SDK (also used by the CLI); depends on `integrity`, never `storage`.
//! - [`proto`]: the generated gRPC types and the one place that converts them to and from
//!   domain types; used only by `server` and `client`.

pub mod client;
pub mod index;
pub mod integrity;
pub mod ledger;
pub mod replication;
pub mod server;
pub mod storage;
pub mod wire;

/// Sends `tracing` logs at `filter` (env-filter syntax) to stderr, coloured only on a
/// terminal: the one logging set-up of `chainlogd` and `chainlog-replicator`.
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
