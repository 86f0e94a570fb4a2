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
//! - [`backup`]: backup files: taking one from a server, verifying one offline, restoring one
//!   onto a server.
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

#[cfg(all(feature = "client", feature = "engine"))]
pub mod backup;
#[cfg(feature = "server")]
pub mod replication;
#[cfg(feature = "server")]
pub mod server;

/// The README's library snippet, compiled as a doctest so it cannot drift from the API.
#[cfg(all(doctest, feature = "engine"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// How `chainlogd` and `chainlog-replicator` write their logs.
#[cfg(feature = "cli")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event, coloured only on a terminal.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and the event's
    /// fields at the top level, for log collectors.
    Json,
}

/// Sends `tracing` logs to stderr: the one logging set-up of `chainlogd` and
/// `chainlog-replicator`. The filter (env-filter syntax) is `filter` when given (`--log`),
/// else `RUST_LOG` when set, else `info`.
#[cfg(feature = "cli")]
pub fn init_logging(filter: Option<&str>, format: LogFormat) -> Result<(), String> {
    let rust_log = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter = filter.filter(|f| !f.trim().is_empty());
    let (source, text) = match (filter, &rust_log) {
        (Some(f), _) => ("--log", f.to_string()),
        (None, Some(v)) => ("RUST_LOG", v.clone()),
        (None, None) => ("the default", "info".to_string()),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&text)
        .map_err(|e| format!("{source} {text:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
    Ok(())
}
