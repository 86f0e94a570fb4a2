//! chainlog: the command-line client. Parses arguments, calls the SDK, prints the answer.

use chainlog::client::{Client, ClientError, ClientTls, VerifiedClient};
use chainlog::wire;
use clap::{Parser, Subcommand};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit status of a failed verification: the server's answer does not prove itself against
/// the trusted state (tamper evidence). Other failures exit with 1; usage errors with 2.
const EXIT_VERIFICATION_FAILED: u8 = 3;

/// chainlog command-line client.
///
/// Exit status: 0 success; 1 error; 2 bad usage; 3 verification failed (the server's answer
/// does not prove itself against the trusted state: possible tampering; also `verify` finding
/// damage).
#[derive(Debug, Parser)]
#[command(name = "chainlog", version)]
struct Cli {
    /// Server address
    #[arg(
        long,
        global = true,
        env = "CHAINLOG_ADDR",
        default_value = "http://127.0.0.1:3322"
    )]
    addr: String,
    /// User to log in as
    #[arg(long, global = true, env = "CHAINLOG_USER", default_value = "admin")]
    user: String,
    /// Password (prefer --password-file or CHAINLOG_PASSWORD)
    #[arg(long, global = true, env = "CHAINLOG_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// File holding the password (first line)
    #[arg(long, global = true, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Database to act on
    #[arg(long, global = true, env = "CHAINLOG_DB", default_value = "defaultdb")]
    db: String,
    /// Print JSON instead of text
    #[arg(long, global = true)]
    json: bool,
    /// PEM CA to verify the server's TLS certificate (use an https:// address)
    #[arg(long, global = true, env = "CHAINLOG_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Where verified commands keep trusted states [default: ~/.chainlog/state.json]
    #[arg(long, global = true, env = "CHAINLOG_STATE_FILE", value_name = "FILE")]
    state_file: Option<PathBuf>,
    /// Hex Ed25519 public key of the server: verified commands then require signed states
    #[arg(long, global = true, env = "CHAINLOG_SERVER_KEY", value_name = "HEX")]
    server_key: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, list and update databases
    #[command(subcommand)]
    Database(DatabaseCmd),
    /// Create and list users, grant and revoke permissions, change passwords
    #[command(subcommand)]
    User(UserCmd),
    /// Set KEY to VALUE (one transaction)
    Set { key: String, value: String },
    /// Read the latest value of KEY
    Get {
        key: String,
        /// Value as of this tx
        #[arg(long, default_value_t = 0)]
        at_tx: u64,
    },
    /// Logically delete KEY
    Delete { key: String },
    /// Versions of KEY
    History {
        key: String,
        #[arg(long, default_value_t = 0)]
        offset: u64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        desc: bool,
    },
    /// Live keys starting with PREFIX
    Scan {
        prefix: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        desc: bool,
        /// Continue after this key
        #[arg(long)]
        after: Option<String>,
    },
    /// Transaction ID with its entries
    Tx { id: u64 },
    /// Set, verified: the tx must hold exactly this entry, in a state extending the trusted one
    Vset { key: String, value: String },
    /// Get, verified against the trusted state
    Vget {
        key: String,
        #[arg(long, default_value_t = 0)]
        at_tx: u64,
    },
    /// Transaction ID, verified against the trusted state
    Vtx { id: u64 },
    /// The database's current state, verified to extend the trusted one
    State,
    /// Replication status
    #[command(subcommand)]
    Replication(ReplicationCmd),
    /// Check a database directory offline (no server; the server must be stopped)
    Verify {
        /// The server's data directory
        #[arg(long)]
        data_dir: PathBuf,
    },
}

/// Replication settings of a database (immudb's flag names).
#[derive(Debug, clap::Args, Default)]
struct ReplicationFlags {
    /// The database is a replica: it takes txs only from its primary, and refuses writes.
    /// `=false` promotes a replica to primary
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    replication_is_replica: Option<bool>,
    /// Host of the primary (no host: no replicator; txs come from an external replicator)
    #[arg(long, value_name = "HOST")]
    replication_primary_host: Option<String>,
    /// Port of the primary [default: 3322]
    #[arg(long, value_name = "PORT")]
    replication_primary_port: Option<u32>,
    /// Database on the primary [default: defaultdb]
    #[arg(long, value_name = "NAME")]
    replication_primary_database: Option<String>,
    /// User the replicator logs in to the primary as (read permission is enough)
    #[arg(long, value_name = "USER")]
    replication_primary_username: Option<String>,
    /// Its password (prefer --replication-primary-password-file); never shown again
    #[arg(long, value_name = "PASSWORD")]
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
    /// PEM CA file to verify the primary's TLS certificate (the replicator then uses TLS)
    #[arg(long, value_name = "FILE")]
    replication_primary_tls_ca: Option<String>,
    /// PEM client certificate and key for a primary requiring mutual TLS
    #[arg(long, value_name = "FILE")]
    replication_primary_tls_cert: Option<String>,
    #[arg(long, value_name = "FILE")]
    replication_primary_tls_key: Option<String>,
}

impl ReplicationFlags {
    fn settings(&self) -> Result<Option<wire::ReplicationSettings>, Failure> {
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
        let r = wire::ReplicationSettings {
            is_replica: self.replication_is_replica,
            primary_host: self.replication_primary_host.clone(),
            primary_port: self.replication_primary_port,
            primary_database: self.replication_primary_database.clone(),
            primary_username: self.replication_primary_username.clone(),
            primary_password: password,
            sync_acks,
            sync_timeout_ms: self.replication_sync_timeout_ms,
            prefetch_tx_buffer_size: self.replication_prefetch_tx_buffer_size,
            primary_tls_ca_file: self.replication_primary_tls_ca.clone(),
            primary_tls_cert_file: self.replication_primary_tls_cert.clone(),
            primary_tls_key_file: self.replication_primary_tls_key.clone(),
            primary_password_set: false,
        };
        Ok((r != wire::ReplicationSettings::default()).then_some(r))
    }
}

#[derive(Debug, Subcommand)]
enum ReplicationCmd {
    /// Replication state of --db: on a replica its replicator, on a primary its replicas
    Status,
}

#[derive(Debug, Subcommand)]
enum DatabaseCmd {
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
        replication: Box<ReplicationFlags>,
    },
    /// Wipe replica NAME's data and copy its primary's again (for a replica that diverged or
    /// started from another database). Its replicator restarts from the first tx; a replica
    /// with no primary host is left empty for an external replicator to fill.
    Refresh { name: String },
}

#[derive(Debug, Subcommand)]
enum UserCmd {
    /// Create user NAME; the password comes from --new-password or the prompt-free
    /// CHAINLOG_NEW_PASSWORD
    Create {
        name: String,
        #[arg(long, env = "CHAINLOG_NEW_PASSWORD", hide_env_values = true)]
        new_password: String,
        #[arg(long)]
        superuser: bool,
    },
    /// List users and their permissions
    List,
    /// Grant NAME a permission (read, readwrite, admin) on --db
    Grant { name: String, permission: String },
    /// Revoke NAME's permission on --db
    Revoke { name: String },
    /// Change NAME's password
    Passwd {
        name: String,
        #[arg(long, env = "CHAINLOG_NEW_PASSWORD", hide_env_values = true)]
        new_password: String,
        /// NAME's current password (not needed by a superuser)
        #[arg(long, default_value = "")]
        old_password: String,
    },
}

enum Failure {
    Error(String),
    Verification(String),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        match e {
            ClientError::Tamper(_) => Failure::Verification(e.to_string()),
            e => Failure::Error(e.to_string()),
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn header_json(h: &wire::TxHeader) -> serde_json::Value {
    json!({"id": h.id, "timestamp_us": h.timestamp_us, "entry_count": h.entry_count,
           "prev_alh": hex(&h.prev_alh), "entries_root": hex(&h.entries_root),
           "history_size": h.history_size, "history_root": hex(&h.history_root)})
}

fn entry_json(e: &wire::Entry) -> serde_json::Value {
    json!({"key": text(&e.key), "value": text(&e.value), "tx": e.tx, "deleted": e.deleted})
}

fn permission_of(s: &str) -> Result<wire::Permission, Failure> {
    match s {
        "read" => Ok(wire::Permission::Read),
        "readwrite" => Ok(wire::Permission::Readwrite),
        "admin" => Ok(wire::Permission::Admin),
        _ => Err(Failure::Error(format!(
            "unknown permission {s:?}: use read, readwrite or admin"
        ))),
    }
}

struct Out {
    json: bool,
}

impl Out {
    fn print(&self, v: serde_json::Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{v}");
        } else {
            println!("{}", human());
        }
    }
}

async fn connect(cli: &Cli) -> Result<Client, Failure> {
    let tls = match &cli.tls_ca {
        Some(p) => Some(ClientTls {
            ca_pem: Some(
                std::fs::read(p).map_err(|e| Failure::Error(format!("{}: {e}", p.display())))?,
            ),
            ..ClientTls::default()
        }),
        None => None,
    };
    let client = Client::connect(&cli.addr, tls).await?;
    let password = match (&cli.password, &cli.password_file) {
        (_, Some(f)) => std::fs::read_to_string(f)
            .map_err(|e| Failure::Error(format!("{}: {e}", f.display())))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        (Some(p), None) => p.clone(),
        (None, None) => {
            return Err(Failure::Error(
                "no password: give --password-file, CHAINLOG_PASSWORD or --password".into(),
            ))
        }
    };
    client.login(&cli.user, &password).await?;
    Ok(client)
}

fn state_file(cli: &Cli) -> PathBuf {
    cli.state_file
        .clone()
        .unwrap_or_else(|| match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h).join(".chainlog").join("state.json"),
            None => PathBuf::from(".chainlog-state.json"),
        })
}

async fn verified(cli: &Cli) -> Result<VerifiedClient, Failure> {
    let key = match &cli.server_key {
        Some(h) => {
            let d = chainlog::integrity::Digest::from_hex(h)
                .ok_or_else(|| Failure::Error("--server-key: 64 hex characters".into()))?;
            Some(
                ed25519_dalek::VerifyingKey::from_bytes(&d.0)
                    .map_err(|e| Failure::Error(format!("--server-key: {e}")))?,
            )
        }
        None => None,
    };
    Ok(VerifiedClient::new(
        connect(cli).await?,
        state_file(cli),
        key,
    )?)
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let out = Out { json: cli.json };
    let db = cli.db.clone();
    match &cli.command {
        Command::Verify { data_dir } => {
            let dir = data_dir.join("db").join(&db);
            let dir = if dir.is_dir() { dir } else { data_dir.clone() };
            let tty = std::io::IsTerminal::is_terminal(&std::io::stderr()) && !cli.json;
            let mut last = 0u64;
            let report = chainlog::ledger::check_with_progress(&dir, |done, total| {
                let pct = (done * 100).checked_div(total).unwrap_or(100);
                if tty && pct != last {
                    last = pct;
                    let bar = "#".repeat((pct / 4) as usize);
                    eprint!("\r[{bar:<25}] {pct:>3}%");
                }
            });
            if tty {
                eprintln!();
            }
            match report {
                Ok(r) => out.print(
                    json!({"ok": true, "txs": r.txs, "segments": r.segments, "alh": r.last_alh.to_hex(),
                           "torn_tail": r.torn_tail.map(|(p, o)| json!({"file": p, "offset": o}))}),
                    || format!("ok: {} txs in {} segments, state {} {}", r.txs, r.segments, r.last_tx, r.last_alh),
                ),
                Err(e @ (chainlog::ledger::LedgerError::BadTx { .. } | chainlog::ledger::LedgerError::Damaged { .. } | chainlog::ledger::LedgerError::Storage(chainlog::ledger::StorageError::Corrupt { .. }))) => {
                    return Err(Failure::Verification(e.to_string()));
                }
                Err(e) => return Err(Failure::Error(e.to_string())),
            }
        }
        Command::Database(cmd) => {
            let c = connect(&cli).await?;
            let info_json = |i: &wire::DatabaseInfo| {
                let s = i.settings.clone().unwrap_or_default();
                let st = i.state.clone().unwrap_or_default();
                json!({"name": i.name, "uuid": i.uuid, "tx_id": st.tx_id, "alh": hex(&st.alh),
                       "settings": {"durability": if s.durability == Some(wire::Durability::Buffered as i32) {"buffered"} else {"synced"},
                                    "segment_bytes_max": s.segment_bytes_max, "checkpoint_txs": s.checkpoint_txs,
                                    "replication": s.replication.as_ref().map(|r| json!({
                                        "is_replica": r.is_replica, "primary_host": r.primary_host, "primary_port": r.primary_port,
                                        "primary_database": r.primary_database, "primary_username": r.primary_username,
                                        "primary_password_set": r.primary_password_set, "sync_acks": r.sync_acks}))}})
            };
            match cmd {
                DatabaseCmd::Create {
                    name,
                    buffered,
                    segment_bytes_max,
                    checkpoint_txs,
                    replication,
                } => {
                    let settings = wire::DatabaseSettings {
                        durability: buffered.then_some(wire::Durability::Buffered as i32),
                        segment_bytes_max: *segment_bytes_max,
                        checkpoint_txs: *checkpoint_txs,
                        replication: replication.settings()?,
                    };
                    let i = c
                        .databases()
                        .create_database(wire::CreateDatabaseRequest {
                            name: name.clone(),
                            settings: Some(settings),
                        })
                        .await
                        .map_err(ClientError::from)?
                        .into_inner();
                    out.print(info_json(&i), || {
                        format!("created database {} ({})", i.name, i.uuid)
                    });
                }
                DatabaseCmd::List => {
                    let l = c
                        .databases()
                        .list_databases(wire::ListDatabasesRequest {})
                        .await
                        .map_err(ClientError::from)?
                        .into_inner();
                    out.print(
                        json!(l.databases.iter().map(info_json).collect::<Vec<_>>()),
                        || {
                            l.databases
                                .iter()
                                .map(|i| {
                                    format!(
                                        "{}\t{}\ttx {}",
                                        i.name,
                                        i.uuid,
                                        i.state.as_ref().map_or(0, |s| s.tx_id)
                                    )
                                })
                                .collect::<Vec<_>>()
                                .join("\n")
                        },
                    );
                }
                DatabaseCmd::Update {
                    name,
                    buffered,
                    segment_bytes_max,
                    checkpoint_txs,
                    replication,
                } => {
                    let settings = wire::DatabaseSettings {
                        durability: buffered.map(|b| if b { wire::Durability::Buffered } else { wire::Durability::Synced } as i32),
                        segment_bytes_max: *segment_bytes_max,
                        checkpoint_txs: *checkpoint_txs,
                        replication: replication.settings()?,
                    };
                    let i = c
                        .databases()
                        .update_database(wire::UpdateDatabaseRequest {
                            name: name.clone(),
                            settings: Some(settings),
                        })
                        .await
                        .map_err(ClientError::from)?
                        .into_inner();
                    out.print(info_json(&i), || format!("updated database {}", i.name));
                }
                DatabaseCmd::Refresh { name } => {
                    let i = c
                        .databases()
                        .refresh_database(wire::RefreshDatabaseRequest { name: name.clone() })
                        .await
                        .map_err(ClientError::from)?
                        .into_inner();
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
        }
        Command::User(cmd) => {
            let c = connect(&cli).await?;
            let user_json = |u: &wire::User| {
                json!({"name": u.name, "superuser": u.superuser, "grants": u.grants.iter().map(|g| json!({"database": g.database,
                    "permission": perm_name(g.permission)})).collect::<Vec<_>>()})
            };
            let user_text = |u: &wire::User| {
                let grants: Vec<String> = u
                    .grants
                    .iter()
                    .map(|g| format!("{}:{}", g.database, perm_name(g.permission)))
                    .collect();
                format!(
                    "{}{}\t{}",
                    u.name,
                    if u.superuser { " (superuser)" } else { "" },
                    grants.join(",")
                )
            };
            match cmd {
                UserCmd::Create {
                    name,
                    new_password,
                    superuser,
                } => {
                    let u = c
                        .users()
                        .create_user(wire::CreateUserRequest {
                            name: name.clone(),
                            password: new_password.clone(),
                            superuser: *superuser,
                        })
                        .await
                        .map_err(ClientError::from)?
                        .into_inner();
                    out.print(user_json(&u), || format!("created user {}", u.name));
                }
                UserCmd::List => {
                    let l = c
                        .users()
                        .list_users(wire::ListUsersRequest {})
                        .await
                        .map_err(ClientError::from)?
                        .into_inner();
                    out.print(
                        json!(l.users.iter().map(user_json).collect::<Vec<_>>()),
                        || l.users.iter().map(user_text).collect::<Vec<_>>().join("\n"),
                    );
                }
                UserCmd::Grant { name, permission } => {
                    let p = permission_of(permission)?;
                    let u = c
                        .users()
                        .grant(wire::GrantRequest {
                            user: name.clone(),
                            database: db.clone(),
                            permission: p as i32,
                        })
                        .await
                        .map_err(ClientError::from)?
                        .into_inner();
                    out.print(user_json(&u), || user_text(&u));
                }
                UserCmd::Revoke { name } => {
                    let u = c
                        .users()
                        .revoke(wire::RevokeRequest {
                            user: name.clone(),
                            database: db.clone(),
                        })
                        .await
                        .map_err(ClientError::from)?
                        .into_inner();
                    out.print(user_json(&u), || user_text(&u));
                }
                UserCmd::Passwd {
                    name,
                    new_password,
                    old_password,
                } => {
                    c.users()
                        .change_password(wire::ChangePasswordRequest {
                            name: name.clone(),
                            old_password: old_password.clone(),
                            new_password: new_password.clone(),
                        })
                        .await
                        .map_err(ClientError::from)?;
                    out.print(json!({"ok": true}), || {
                        format!("password of {name} changed")
                    });
                }
            }
        }
        Command::Replication(ReplicationCmd::Status) => {
            let c = connect(&cli).await?;
            let r = c
                .replication()
                .replication_status(wire::ReplicationStatusRequest {
                    database: db.clone(),
                })
                .await
                .map_err(ClientError::from)?
                .into_inner();
            let replicas: Vec<serde_json::Value> = r
                .replicas
                .iter()
                .map(|l| json!({"replica": l.replica, "peer": l.peer, "acked_tx_id": l.acked_tx_id, "lag_txs": l.lag_txs}))
                .collect();
            out.print(
                json!({"database": r.database, "role": role_name(r.role()), "primary": r.primary, "state": state_name(r.state()),
                       "last_applied_tx_id": r.last_applied_tx_id, "primary_head_tx_id": r.primary_head_tx_id,
                       "lag_txs": r.lag_txs, "lag_ms": r.lag_ms, "last_error": r.last_error,
                       "diverged_local": r.diverged_local.as_ref().map(header_json),
                       "diverged_remote": r.diverged_remote.as_ref().map(header_json),
                       "replicas": replicas}),
                || {
                    let mut s = if r.role() == wire::Role::ExternalReplica {
                        format!(
                            "{} replica with no primary host (fed by chainlog-replicator through ReplicateTx): applied tx {}",
                            r.database, r.last_applied_tx_id
                        )
                    } else if r.role() == wire::Role::Replica {
                        format!(
                            "{} replica of {}: {}, applied tx {}, primary at tx {}, lag {} txs / {} ms",
                            r.database, r.primary, state_name(r.state()), r.last_applied_tx_id, r.primary_head_tx_id, r.lag_txs, r.lag_ms
                        )
                    } else {
                        format!("{} primary at tx {}", r.database, r.last_applied_tx_id)
                    };
                    if !r.last_error.is_empty() {
                        s.push_str(&format!("\nlast error: {}", r.last_error));
                    }
                    for l in &r.replicas {
                        s.push_str(&format!("\nreplica {} ({}): acked tx {}, lag {} txs", l.replica, l.peer, l.acked_tx_id, l.lag_txs));
                    }
                    s
                },
            );
        }
        Command::Set { key, value } => {
            let h = connect(&cli)
                .await?
                .set(
                    &db,
                    vec![(key.clone().into_bytes(), value.clone().into_bytes())],
                )
                .await?;
            out.print(header_json(&h), || format!("tx {}", h.id));
        }
        Command::Get { key, at_tx } => {
            let c = connect(&cli).await?;
            let e = c
                .get_with(wire::GetRequest {
                    database: db.clone(),
                    key: key.clone().into_bytes(),
                    at_tx: *at_tx,
                    ..Default::default()
                })
                .await?
                .ok_or_else(|| Failure::Error(format!("key {key:?} not found")))?;
            out.print(entry_json(&e), || {
                format!("{}\t(tx {})", text(&e.value), e.tx)
            });
        }
        Command::Delete { key } => {
            let h = connect(&cli)
                .await?
                .delete(&db, vec![key.clone().into_bytes()])
                .await?;
            out.print(header_json(&h), || format!("tx {}", h.id));
        }
        Command::History {
            key,
            offset,
            limit,
            desc,
        } => {
            let es = connect(&cli)
                .await?
                .history(wire::HistoryRequest {
                    database: db.clone(),
                    key: key.clone().into_bytes(),
                    offset: *offset,
                    limit: *limit,
                    desc: *desc,
                })
                .await?;
            out.print(json!(es.iter().map(entry_json).collect::<Vec<_>>()), || {
                es.iter()
                    .map(|e| {
                        if e.deleted {
                            format!("tx {}\t(deleted)", e.tx)
                        } else {
                            format!("tx {}\t{}", e.tx, text(&e.value))
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Scan {
            prefix,
            limit,
            desc,
            after,
        } => {
            let es = connect(&cli)
                .await?
                .scan(wire::ScanRequest {
                    database: db.clone(),
                    prefix: prefix.clone().into_bytes(),
                    after: after.clone().unwrap_or_default().into_bytes(),
                    limit: *limit,
                    desc: *desc,
                    at_tx: 0,
                })
                .await?;
            out.print(json!(es.iter().map(entry_json).collect::<Vec<_>>()), || {
                es.iter()
                    .map(|e| format!("{}\t{}", text(&e.key), text(&e.value)))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Tx { id } => {
            let tx = connect(&cli).await?.tx(&db, *id).await?;
            let h = tx.header.clone().unwrap_or_default();
            out.print(json!({"header": header_json(&h), "entries": tx.entries.iter().map(entry_json).collect::<Vec<_>>()}), || {
                let mut s = format!("tx {} at {} us, {} entries", h.id, h.timestamp_us, h.entry_count);
                for e in &tx.entries {
                    s.push_str(&format!("\n{}\t{}", text(&e.key), if e.deleted { "(deleted)".into() } else { text(&e.value) }));
                }
                s
            });
        }
        Command::Vset { key, value } => {
            let v = verified(&cli).await?;
            let h = v
                .set(
                    &db,
                    vec![(key.clone().into_bytes(), value.clone().into_bytes())],
                )
                .await?;
            out.print(json!({"tx": h.id, "verified": true}), || {
                format!("tx {} (verified)", h.id)
            });
        }
        Command::Vget { key, at_tx } => {
            let v = verified(&cli).await?;
            let e = v.get(&db, key.as_bytes(), *at_tx).await?;
            out.print(
                json!({"key": text(&e.key), "value": text(&e.value), "tx": e.tx, "verified": true}),
                || {
                    format!(
                        "{}\t(tx {}, verified in state {})",
                        text(&e.value),
                        e.tx,
                        e.state_tx
                    )
                },
            );
        }
        Command::Vtx { id } => {
            let v = verified(&cli).await?;
            let (h, entries) = v.tx(&db, *id).await?;
            out.print(json!({"tx": h.id, "entries": entries.iter().map(entry_json).collect::<Vec<_>>(), "verified": true}), || {
                format!("tx {} with {} entries (verified)", h.id, entries.len())
            });
        }
        Command::State => {
            let v = verified(&cli).await?;
            let s = v.state(&db).await?;
            out.print(
                json!({"database": db, "uuid": s.uuid, "tx_id": s.tx_id, "alh": s.alh}),
                || format!("{db} tx {} alh {}", s.tx_id, s.alh),
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chainlog: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Error(e)) => {
            eprintln!("chainlog: {e}");
            ExitCode::FAILURE
        }
        Err(Failure::Verification(e)) => {
            eprintln!("chainlog: VERIFICATION FAILED: {e}");
            ExitCode::from(EXIT_VERIFICATION_FAILED)
        }
    }
}

fn perm_name(p: i32) -> &'static str {
    match wire::Permission::try_from(p) {
        Ok(wire::Permission::Read) => "read",
        Ok(wire::Permission::Readwrite) => "readwrite",
        Ok(wire::Permission::Admin) => "admin",
        _ => "none",
    }
}

fn role_name(r: wire::Role) -> &'static str {
    match r {
        wire::Role::Primary | wire::Role::Unspecified => "primary",
        wire::Role::Replica => "replica",
        wire::Role::ExternalReplica => "external-replica",
    }
}

fn state_name(s: wire::ReplicaState) -> &'static str {
    match s {
        wire::ReplicaState::Unspecified => "",
        wire::ReplicaState::Connecting => "connecting",
        wire::ReplicaState::CatchingUp => "catching-up",
        wire::ReplicaState::Streaming => "streaming",
        wire::ReplicaState::Diverged => "diverged",
        wire::ReplicaState::Stopped => "stopped",
    }
}
