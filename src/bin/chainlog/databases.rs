//! `chainlog database …`: create, list, update and refresh databases.

use crate::out::{hex, Out};
use crate::session::Session;
use crate::Failure;
use chainlog::wire;
use clap::Subcommand;
use serde_json::json;
use std::path::PathBuf;

/// Replication settings of a database (immudb's flag names; its older names, from its
/// replication guide, are aliases).
#[derive(Debug, clap::Args, Default)]
pub struct ReplicationFlags {
    /// The database is a replica: it takes txs only from its primary, and refuses writes.
    /// `=false` promotes a replica to primary
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    replication_is_replica: Option<bool>,
    /// immudb's older --replication-is-replica: a replica, following its primary at
    /// --replication-master-address (default 127.0.0.1, as immudb's) and port (default 3322)
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    replication_enabled: Option<bool>,
    /// Host of the primary (no host: no replicator; txs come from an external replicator)
    #[arg(
        long,
        value_name = "HOST",
        visible_alias = "replication-master-address"
    )]
    replication_primary_host: Option<String>,
    /// Port of the primary [default: 3322]
    #[arg(long, value_name = "PORT", visible_alias = "replication-master-port")]
    replication_primary_port: Option<u32>,
    /// Database on the primary [default: defaultdb]
    #[arg(
        long,
        value_name = "NAME",
        visible_alias = "replication-master-database"
    )]
    replication_primary_database: Option<String>,
    /// User the replicator logs in to the primary as (it needs the replication permission there)
    #[arg(
        long,
        value_name = "USER",
        visible_alias = "replication-follower-username"
    )]
    replication_primary_username: Option<String>,
    /// Its password (prefer --replication-primary-password-file); never shown again
    #[arg(
        long,
        value_name = "PASSWORD",
        visible_alias = "replication-follower-password"
    )]
    replication_primary_password: Option<String>,
    /// File holding that password (first line)
    #[arg(long, value_name = "FILE")]
    replication_primary_password_file: Option<PathBuf>,
    /// On a primary: acknowledge commits only once replicas hold them (with --replication-sync-acks)
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    replication_sync_enabled: Option<bool>,
    /// On a primary: how many replicas must hold a tx before its commit is acknowledged
    #[arg(long, value_name = "K")]
    replication_sync_acks: Option<u32>,
    /// Longest a synchronous commit waits for its acknowledgements [default: 5000]
    #[arg(long, value_name = "MS")]
    replication_sync_timeout_ms: Option<u64>,
    /// Txs the primary may send ahead of the replica's acknowledgements
    #[arg(long, value_name = "N")]
    replication_prefetch_tx_buffer_size: Option<u32>,
    /// PEM CA file to verify the primary's TLS certificate (the replicator then uses TLS);
    /// read here and sent, so the server keeps its content
    #[arg(long, value_name = "FILE")]
    replication_primary_tls_ca: Option<PathBuf>,
    /// PEM client certificate for a primary requiring mutual TLS (with the key and the CA)
    #[arg(long, value_name = "FILE")]
    replication_primary_tls_cert: Option<PathBuf>,
    /// PEM key of that client certificate; never shown again
    #[arg(long, value_name = "FILE")]
    replication_primary_tls_key: Option<PathBuf>,
    /// The primary's Ed25519 public key (64 hex, as `chainlogd` logs it): its signed
    /// checkpoints must verify with it [default: the first key it signs with is pinned]
    #[arg(long, value_name = "HEX")]
    replication_primary_public_key: Option<String>,
    /// immudb's replicated txs applied at once, 1 to 1024: kept and shown; chainlog's
    /// replicator verifies the next batch while the last is written, whatever this says
    #[arg(long, value_name = "N")]
    replication_commit_concurrency: Option<u32>,
    /// A replica whose history parts from its primary's (a former primary rejoining the one
    /// that replaced it) cuts its txs past the fork, kept in rewound-*.json in its directory,
    /// and follows; without it, it stops and says how many txs it would discard
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    replication_allow_tx_discarding: Option<bool>,
    /// immudb's skipping of the replica's checks: only false is accepted (chainlog verifies
    /// every replicated tx)
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    replication_skip_integrity_check: Option<bool>,
    /// immudb's waiting for the index before acknowledging: only true is accepted (chainlog
    /// always indexes a tx before it is read or acknowledged)
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    replication_wait_for_indexing: Option<bool>,
    /// A digest-only replica: verify every replicated tx whole, then store it without its
    /// values (headers, keys and value hashes kept: the chain and every proof verify, value
    /// reads answer "value truncated"), for an auditor that needs no values
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    replication_digest_only: Option<bool>,
}

/// A database's retention: how long, or how many txs, values are kept. Older values are
/// dropped in the background (as `database truncate` does); headers, keys, value hashes and
/// proofs stay.
#[derive(Debug, clap::Args, Default)]
pub struct RetentionFlags {
    /// Drop the values of txs committed longer ago than this (immudb's flag): a duration
    /// such as 90d, 24h, 30m or 3600s; 0 keeps every value [default: 0]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    retention_period: Option<u64>,
    /// Keep the values of only the newest N txs; 0: no limit by count [default: 0]
    #[arg(long, value_name = "N")]
    retention_txs: Option<u64>,
    /// How often the retention runs (immudb's flag), from 1s to 30d [default: 1h]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    truncation_frequency: Option<u64>,
}

/// A duration in seconds from `90d`, `24h`, `30m`, `45s`, `1h30m` or plain seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a duration (say 90d, 24h, 30m, 45s or 1h30m)");
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    let (mut total, mut num) = (0u64, String::new());
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        num.clear();
    }
    if !num.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

impl ReplicationFlags {
    pub fn settings(&self) -> Result<Option<wire::ReplicationSettings>, Failure> {
        let password = match &self.replication_primary_password_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| Failure::Error(format!("{}: {e}", f.display())))?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            ),
            None => self.replication_primary_password.clone(),
        };
        let sync_acks = match (self.replication_sync_enabled, self.replication_sync_acks) {
            (Some(false), _) => Some(0),
            (Some(true), None) => Some(1),
            (_, k) => k,
        };
        let (is_replica, primary_host) = match self.replication_enabled {
            // immudb's older flags: a replica always has a replicator, its master defaulting
            // to this machine.
            Some(true) => (
                Some(true),
                Some(
                    self.replication_primary_host
                        .clone()
                        .unwrap_or_else(|| "127.0.0.1".into()),
                ),
            ),
            Some(false) => (Some(false), self.replication_primary_host.clone()),
            None => (
                self.replication_is_replica,
                self.replication_primary_host.clone(),
            ),
        };
        let r = wire::ReplicationSettings {
            is_replica,
            primary_host,
            primary_port: self.replication_primary_port,
            primary_database: self.replication_primary_database.clone(),
            primary_username: self.replication_primary_username.clone(),
            primary_password: password,
            sync_acks,
            sync_timeout_ms: self.replication_sync_timeout_ms,
            prefetch_tx_buffer_size: self.replication_prefetch_tx_buffer_size,
            primary_tls_ca_pem: read_pem(&self.replication_primary_tls_ca)?,
            primary_tls_cert_pem: read_pem(&self.replication_primary_tls_cert)?,
            primary_tls_key_pem: read_pem(&self.replication_primary_tls_key)?,
            primary_password_set: false,
            primary_tls_key_set: false,
            commit_concurrency: self.replication_commit_concurrency,
            allow_tx_discarding: self.replication_allow_tx_discarding,
            skip_integrity_check: self.replication_skip_integrity_check,
            wait_for_indexing: self.replication_wait_for_indexing,
            primary_public_key: self.replication_primary_public_key.clone(),
            digest_only: self.replication_digest_only,
        };
        Ok((r != wire::ReplicationSettings::default()).then_some(r))
    }
}

#[derive(Debug, Subcommand)]
pub enum DatabaseCmd {
    /// Create database NAME
    Create {
        name: String,
        /// Commits return once written to the OS, not fsynced
        #[arg(long)]
        buffered: bool,
        #[arg(long)]
        segment_bytes_max: Option<u64>,
        #[arg(long)]
        checkpoint_txs: Option<u64>,
        #[command(flatten)]
        retention: RetentionFlags,
        #[command(flatten)]
        replication: Box<ReplicationFlags>,
    },
    /// List databases with settings and state
    List,
    /// Change settings of database NAME (applied without a restart)
    Update {
        name: String,
        #[arg(long)]
        buffered: Option<bool>,
        #[arg(long)]
        segment_bytes_max: Option<u64>,
        #[arg(long)]
        checkpoint_txs: Option<u64>,
        #[command(flatten)]
        retention: RetentionFlags,
        #[command(flatten)]
        replication: Box<ReplicationFlags>,
    },
    /// Wipe replica NAME's data and copy its primary's again (for a replica that diverged or
    /// started from another database). Its replicator restarts from the first tx; a replica
    /// with no primary host is left empty for an external replicator to fill.
    Refresh { name: String },
    /// Close and open database NAME again, without a server restart: after a failed write
    /// (say, a full disk that has space again) or for a database listed as unavailable (after
    /// its files were restored). Recovery runs; nothing acknowledged is lost.
    Reopen {
        name: String,
        /// Let recovery cut txs the log no longer holds although tx.idx or history.nodes show
        /// they were committed: they are lost (superuser only; logged)
        #[arg(long)]
        accept_tx_loss: bool,
    },
    /// Delete database NAME and its files (superuser)
    ///
    /// Refused for systemdb and defaultdb, and while replicas follow it unless --force.
    /// Grants on it are revoked. There is no undo: take a backup first.
    Delete {
        name: String,
        /// Delete it even though replicas follow it
        #[arg(long)]
        force: bool,
    },
    /// Close database NAME without a restart; it stays listed as unloaded until `database
    /// load` or the next start (superuser)
    Unload { name: String },
    /// Open an unloaded database again (superuser)
    Load { name: String },
    /// Drop the values of old txs of NAME to reclaim space (immudb's truncate)
    ///
    /// Every header, Alh, key and value hash stays, so every state and proof still verifies;
    /// a dropped value reads as "value truncated". Works on whole sealed segments (64 MiB by
    /// default), so values from a little before the cut may stay: the answer says from which
    /// tx on values are kept. The database is closed and reopened around it. A replica keeps
    /// its own values until it is truncated itself. Needs admin on the database.
    ///
    /// Example:
    ///
    ///     chainlog database truncate sales --retention-period 90d
    Truncate {
        name: String,
        /// Drop the values of txs below this one
        #[arg(
            long,
            value_name = "TX",
            conflicts_with = "retention_period",
            required_unless_present = "retention_period"
        )]
        before_tx: Option<u64>,
        /// Drop the values of txs committed longer ago than this (90d, 24h, 30m, 3600s)
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        retention_period: Option<u64>,
    },
}

/// A PEM file's content, read on this side.
fn read_pem(path: &Option<PathBuf>) -> Result<Option<Vec<u8>>, Failure> {
    path.as_ref()
        .map(|p| std::fs::read(p).map_err(|e| Failure::Error(format!("{}: {e}", p.display()))))
        .transpose()
}

fn info_json(i: &wire::DatabaseInfo) -> serde_json::Value {
    let s = i.settings.clone().unwrap_or_default();
    let st = i.state.clone().unwrap_or_default();
    json!({"name": i.name, "uuid": i.uuid, "tx_id": st.tx_id, "alh": hex(&st.alh),
           "unavailable": (!i.unavailable.is_empty()).then_some(&i.unavailable),
           "settings": {"durability": if s.durability == Some(wire::Durability::Buffered as i32) {"buffered"} else {"synced"},
                        "segment_bytes_max": s.segment_bytes_max, "checkpoint_txs": s.checkpoint_txs,
                        "retention_period_secs": s.retention_period_secs, "retention_txs": s.retention_txs,
                        "truncation_interval_secs": s.truncation_interval_secs,
                        "replication": s.replication.as_ref().map(|r| json!({
                            "is_replica": r.is_replica, "primary_host": r.primary_host, "primary_port": r.primary_port,
                            "primary_database": r.primary_database, "primary_username": r.primary_username,
                            "primary_password_set": r.primary_password_set, "sync_acks": r.sync_acks,
                            "digest_only": r.digest_only}))}})
}

fn durability(buffered: Option<bool>) -> Option<i32> {
    buffered.map(|b| {
        if b {
            wire::Durability::Buffered as i32
        } else {
            wire::Durability::Synced as i32
        }
    })
}

pub async fn run(cmd: &DatabaseCmd, session: &Session, out: &Out) -> Result<(), Failure> {
    let c = session.connect().await?;
    match cmd {
        DatabaseCmd::Create {
            name,
            buffered,
            segment_bytes_max,
            checkpoint_txs,
            retention,
            replication,
        } => {
            let settings = wire::DatabaseSettings {
                durability: durability(buffered.then_some(true)),
                segment_bytes_max: *segment_bytes_max,
                checkpoint_txs: *checkpoint_txs,
                replication: replication.settings()?,
                retention_period_secs: retention.retention_period,
                retention_txs: retention.retention_txs,
                truncation_interval_secs: retention.truncation_frequency,
            };
            let i = c.create_database(name, settings).await?;
            out.print(info_json(&i), || {
                format!("created database {} ({})", i.name, i.uuid)
            });
        }
        DatabaseCmd::List => {
            let l = c.list_databases().await?;
            out.print(json!(l.iter().map(info_json).collect::<Vec<_>>()), || {
                l.iter()
                    .map(|i| {
                        if i.unavailable.is_empty() {
                            format!(
                                "{}\t{}\ttx {}",
                                i.name,
                                i.uuid,
                                i.state.as_ref().map_or(0, |s| s.tx_id)
                            )
                        } else {
                            format!("{}\t{}\tUNAVAILABLE: {}", i.name, i.uuid, i.unavailable)
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        DatabaseCmd::Update {
            name,
            buffered,
            segment_bytes_max,
            checkpoint_txs,
            retention,
            replication,
        } => {
            let settings = wire::DatabaseSettings {
                durability: durability(*buffered),
                segment_bytes_max: *segment_bytes_max,
                checkpoint_txs: *checkpoint_txs,
                replication: replication.settings()?,
                retention_period_secs: retention.retention_period,
                retention_txs: retention.retention_txs,
                truncation_interval_secs: retention.truncation_frequency,
            };
            let i = c.update_database(name, settings).await?;
            out.print(info_json(&i), || format!("updated database {}", i.name));
        }
        DatabaseCmd::Reopen {
            name,
            accept_tx_loss,
        } => {
            let i = c.reopen_database(name, *accept_tx_loss).await?;
            out.print(info_json(&i), || {
                format!(
                    "reopened database {} at tx {}",
                    i.name,
                    i.state.as_ref().map_or(0, |s| s.tx_id)
                )
            });
        }
        DatabaseCmd::Delete { name, force } => {
            c.delete_database(name, *force).await?;
            out.print(json!({"name": name, "deleted": true}), || {
                format!("deleted database {name}")
            });
        }
        DatabaseCmd::Unload { name } => {
            let i = c.unload_database(name).await?;
            out.print(info_json(&i), || format!("unloaded database {name}"));
        }
        DatabaseCmd::Load { name } => {
            let i = c.load_database(name).await?;
            out.print(info_json(&i), || {
                format!(
                    "loaded database {} at tx {}",
                    i.name,
                    i.state.as_ref().map_or(0, |s| s.tx_id)
                )
            });
        }
        DatabaseCmd::Truncate {
            name,
            before_tx,
            retention_period,
        } => {
            let t = c
                .truncate_database(wire::TruncateDatabaseRequest {
                    name: name.clone(),
                    before_tx: before_tx.unwrap_or(0),
                    retention_period_secs: retention_period.unwrap_or(0),
                })
                .await?;
            out.print(
                json!({"database": t.database, "values_from_tx": t.values_from_tx,
                       "segments_rewritten": t.segments_rewritten,
                       "bytes_before": t.bytes_before, "bytes_after": t.bytes_after}),
                || {
                    if t.values_from_tx <= 1 {
                        format!("truncated {}: nothing to drop yet (values are dropped a whole sealed segment at a time)", t.database)
                    } else {
                        format!(
                            "truncated {}: values of txs below {} dropped; {} segment(s) rewritten, {} -> {} bytes",
                            t.database, t.values_from_tx, t.segments_rewritten, t.bytes_before, t.bytes_after
                        )
                    }
                },
            );
        }
        DatabaseCmd::Refresh { name } => {
            let i = c.refresh_database(name).await?;
            let has_primary = i
                .settings
                .as_ref()
                .and_then(|s| s.replication.as_ref())
                .and_then(|r| r.primary_host.as_deref())
                .is_some_and(|h| !h.is_empty());
            out.print(info_json(&i), || {
                if has_primary {
                    format!("refreshed database {}: its data was wiped and is copied again from its primary", i.name)
                } else {
                    format!("refreshed database {}: its data was wiped; chainlog-replicator can fill it again", i.name)
                }
            });
        }
    }
    Ok(())
}
