//! The databases a server holds: their names, identities and settings (recorded in the
//! system database, `server::system`, their secrets in `secrets.json`), and their open
//! ledgers (in `<data-dir>/db/<name>/`, each with an `IDENTITY` file holding its uuid). The
//! system database is one of them, `systemdb`, written by the server alone.
//!
//! On a replica server ([`ServerReplica`]) the catalog is not recorded here: the system
//! database follows the primary's, and every database the primary lists is held as a replica
//! of it, created when it first appears ([`Catalog::follow`]).
//!
//! A database the catalog lists but that cannot be served (its directory missing, holding
//! another identity, or failing to open: damage) is *unavailable*: it is kept in the catalog
//! with the reason, calls on it fail with `database_unavailable`, the other databases keep
//! serving, and nothing is ever recreated empty under its identity. `reopen` tries again.

use super::settings::SettingError;
use crate::fs;
use crate::integrity::TxId;
use crate::ledger::{Ledger, LedgerError, Options};
use crate::replication::hub::Hub;
use crate::replication::ReplicationError;
use crate::storage::StorageError;
use secrecy::{ExposeSecret, SecretString};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Longest database name.
pub const DATABASE_NAME_BYTES_MAX: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("database {0:?} not found")]
    NotFound(String),
    #[error("database {0:?} already exists")]
    Exists(String),
    #[error("invalid database name {0:?}: use 1 to 64 of a-z, A-Z, 0-9, '_' and '-'")]
    InvalidName(String),
    #[error("database {0:?} is not a replica: create it with --replication-is-replica")]
    NotReplica(String),
    #[error("database {name} replicates from its primary {primary}; ReplicateTx serves replicas with no primary host")]
    HasPrimary { name: String, primary: String },
    #[error("database {name} holds a copy of {holds}, the source is {source_uuid}")]
    OtherDatabase {
        name: String,
        holds: String,
        source_uuid: String,
    },
    #[error("database {name} is a replica (of {primary}); write to its primary")]
    ReadOnlyReplica { name: String, primary: String },
    #[error("this server replicates {primary}: databases are created and changed there")]
    ReplicaServer { primary: String },
    #[error("database {name} is a primary whose leadership lease is not confirmed (the failover coordinator cannot reach etcd, or another server may lead): it takes no writes until it is")]
    LeaseLapsed { name: String },
    #[error("database {name} was the primary of epoch {epoch}, but epoch {newer} replaced it{}: it takes no more writes; write to the newer primary, or re-point this database to it as a replica", if newer_primary.is_empty() { String::new() } else { format!(" (its primary is {newer_primary})") })]
    Fenced {
        name: String,
        epoch: u64,
        newer: u64,
        newer_primary: String,
    },
    #[error("{SYSTEM_DATABASE} holds the server's users and databases and is written by the server alone")]
    SystemDatabase,
    #[error("database {name} has {replicas} replica(s) following it: deleting it would leave them without a primary; give force to delete it anyway")]
    HasReplicas { name: String, replicas: usize },
    #[error("database {0} cannot be deleted or unloaded: {1}")]
    Protected(String, &'static str),
    #[error("the system database is missing from {dir} although other databases are there: restore db/{SYSTEM_DATABASE} from a backup or a replica; nothing was recreated")]
    SystemMissing { dir: PathBuf },
    #[error(transparent)]
    System(#[from] super::system::SystemError),
    #[error("database {name} is unavailable: {error}")]
    Unavailable { name: String, error: String },
    #[error(transparent)]
    Setting(#[from] SettingError),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

pub use super::settings::{ReplicationSettings, Role, Settings, SYNC_TIMEOUT_MS_DEFAULT};
use super::system::{self, DatabaseRecord, Secrets, SYSTEM_DATABASE};

/// A whole server as a replica of another: where the primary is, how to log in to it, and
/// which of its databases to follow (all, if `databases` is `None`).
#[derive(Debug, Clone)]
pub struct ServerReplica {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: SecretString,
    pub tls_ca_pem: Option<String>,
    pub tls_cert_pem: Option<String>,
    pub tls_key_pem: Option<SecretString>,
    pub databases: Option<Vec<String>>,
}

impl ServerReplica {
    /// `host:port`.
    pub fn primary(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The settings of the replica of the primary's database `name`.
    pub fn settings_for(&self, name: &str) -> Settings {
        Settings {
            replication: ReplicationSettings {
                is_replica: Some(true),
                primary_host: Some(self.host.clone()),
                primary_port: Some(self.port),
                primary_database: Some(name.to_string()),
                primary_username: Some(self.username.clone()),
                primary_password: Some(self.password.clone()),
                primary_tls_ca_pem: self.tls_ca_pem.clone(),
                primary_tls_cert_pem: self.tls_cert_pem.clone(),
                primary_tls_key_pem: self.tls_key_pem.clone(),
                ..ReplicationSettings::default()
            },
            ..Settings::default()
        }
    }

    /// Whether the primary's database `name` is followed.
    pub fn follows(&self, name: &str) -> bool {
        name == SYSTEM_DATABASE
            || self
                .databases
                .as_ref()
                .is_none_or(|l| l.iter().any(|d| d == name))
    }
}

/// One open database.
#[derive(Debug)]
pub struct Database {
    pub name: String,
    pub uuid: String,
    pub settings: Settings,
    pub ledger: Arc<Ledger>,
    /// Who follows it, and its replicator if it is a replica. Kept across settings updates.
    pub hub: Arc<Hub>,
}

impl Database {
    /// Waits, for a synchronous database (`sync_acks > 0`), until enough replicas hold tx `id`
    /// durably, at most `sync_timeout_ms` and not past the server's shutdown (`stopping`); at
    /// once otherwise.
    pub async fn replicated(
        &self,
        id: TxId,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), ReplicationError> {
        let r = &self.settings.replication;
        let Some(needed) = r.sync_acks.filter(|k| *k > 0) else {
            return Ok(());
        };
        let timeout = r.sync_timeout_ms.unwrap_or(SYNC_TIMEOUT_MS_DEFAULT);
        self.hub
            .await_acks(
                id,
                needed as usize,
                std::time::Duration::from_millis(timeout),
                stopping,
            )
            .await
    }
}

/// A database the catalog lists but cannot serve, and why.
#[derive(Debug, Clone)]
pub struct Unavailable {
    pub name: String,
    pub uuid: String,
    pub settings: Settings,
    pub error: String,
}

/// Least time between two attempts to reopen a database whose writes failed.
pub const RECOVER_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Name of the file in a database's directory that holds its identity.
pub const IDENTITY_FILE: &str = "IDENTITY";

/// Opens database `name` (identity `uuid`) of the data directory `dir` as the catalog lists
/// it: its directory must exist (it is never recreated), hold that identity (a directory
/// without an identity file, from an older release, gets one), and open.
fn open_listed(dir: &Path, name: &str, uuid: &str, options: Options) -> Result<Ledger, String> {
    let path = dir.join("db").join(name);
    if !path.is_dir() {
        return Err(format!(
            "its directory {} is missing; nothing was recreated (restore it from a backup or a replica)",
            path.display()
        ));
    }
    let ledger = Ledger::open_existing(&path, options).map_err(|e| e.to_string())?;
    let identity_path = path.join(IDENTITY_FILE);
    let held = fs::read(&identity_path)
        .map_err(|e| e.to_string())?
        .map(|b| String::from_utf8_lossy(&b).trim().to_string());
    match held {
        Some(h) if h == uuid => {}
        // An empty database holds nothing to protect: a crash while a replica adopted its
        // primary's identity leaves the two files apart.
        Some(h) if ledger.state().tx_id > 0 => {
            let _ = ledger.close();
            return Err(format!(
                "{} holds database {h}, but the catalog lists {name} as {uuid}",
                path.display()
            ));
        }
        _ => write_identity(&path, uuid).map_err(|e| e.to_string())?,
    }
    let report = ledger.recovery();
    if report.replayed_txs > 0 || report.truncated.is_some() || report.lost.is_some() {
        tracing::info!(database = %name, replayed = report.replayed_txs, truncated = ?report.truncated, lost = ?report.lost, "recovered");
    }
    Ok(ledger)
}

fn write_identity(db_dir: &Path, uuid: &str) -> Result<(), CatalogError> {
    fs::replace(
        &db_dir.join(IDENTITY_FILE),
        format!("{uuid}\n").as_bytes(),
        fs::FILE_MODE,
    )?;
    Ok(())
}

pub struct Catalog {
    dir: PathBuf,
    /// Set on a replica server.
    replica: Option<ServerReplica>,
    /// The address this server listens on (`host:port`), told to a former primary when a
    /// database here is promoted.
    advertise: std::sync::OnceLock<String>,
    /// The server's signing key: its replicas cosign what they acknowledge with it.
    signing_key: std::sync::OnceLock<ed25519_dalek::SigningKey>,
    /// What the system database and `secrets.json` last recorded (a primary server).
    recorded: std::sync::Mutex<(BTreeMap<String, String>, Secrets)>,
    dbs: RwLock<BTreeMap<String, Arc<Database>>>,
    unavailable: RwLock<BTreeMap<String, Unavailable>>,
    /// When each poisoned database was last tried for [`Catalog::recover_writes`].
    recover_tried: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// Serializes changes to the catalog file.
    change: std::sync::Mutex<()>,
}

fn check_name(name: &str) -> Result<(), CatalogError> {
    let ok = !name.is_empty()
        && name.len() <= DATABASE_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(CatalogError::InvalidName(name.to_string()))
    }
}

/// A random version 4 UUID, as text: a new database identity.
pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The replica database `name` (identity `uuid`) of a replica server: opened as
/// [`open_listed`] does, or created empty with that identity if the primary lists it and
/// this server does not hold it yet (its replicator then copies it).
fn open_replica(dir: &Path, name: &str, uuid: &str, options: Options) -> Result<Ledger, String> {
    let path = dir.join("db").join(name);
    if !path.is_dir() {
        let ledger = Ledger::open(&path, options).map_err(|e| e.to_string())?;
        write_identity(&path, uuid).map_err(|e| e.to_string())?;
        tracing::info!(database = %name, %uuid, "the primary has a database this replica server does not: created, following it");
        return Ok(ledger);
    }
    open_listed(dir, name, uuid, options)
}

impl Catalog {
    /// Opens the data directory `dir`: the system database (created at the first start; an
    /// older data directory's `users.json` and `catalog.json` are moved into it), then every
    /// database it lists, or, on a replica server (`replica`), every database of the
    /// primary's it has seen so far. Returns the catalog, what the system database holds,
    /// and whether this is the data directory's first start.
    pub fn open(
        dir: &Path,
        replica: Option<ServerReplica>,
    ) -> Result<(Catalog, system::Content, bool), CatalogError> {
        let db_dir = dir.join("db");
        fs::create_dir_all(&db_dir)?;
        remove_trash(&db_dir)?;
        let sys_dir = db_dir.join(SYSTEM_DATABASE);
        let legacy = system::has_legacy_files(dir);
        let exists = sys_dir.join("segments").is_dir();
        let others = fs::entries(&db_dir)?
            .into_iter()
            .any(|p| p.is_dir() && p != sys_dir);
        if !exists && !legacy && others && replica.is_none() {
            return Err(CatalogError::SystemMissing {
                dir: dir.to_path_buf(),
            });
        }
        let first_start = !exists && !legacy;
        let sys_settings = match &replica {
            Some(r) => r.settings_for(SYSTEM_DATABASE),
            None => Settings::default(),
        };
        let sys_ledger = Ledger::open(&sys_dir, sys_settings.options())?;
        let sys_uuid = match fs::read(&sys_dir.join(IDENTITY_FILE))? {
            Some(b) => String::from_utf8_lossy(&b).trim().to_string(),
            None => {
                let u = new_uuid();
                write_identity(&sys_dir, &u)?;
                u
            }
        };
        if replica.is_none() && system::migrate(dir, &sys_ledger)? {
            tracing::info!(
                "the data directory's users and databases are now in the system database"
            );
        }
        let content = system::read(&sys_ledger)?;
        let secrets = system::read_secrets(dir)?;
        let mut dbs = BTreeMap::new();
        let mut unavailable = BTreeMap::new();
        dbs.insert(
            SYSTEM_DATABASE.to_string(),
            Arc::new(Database {
                name: SYSTEM_DATABASE.to_string(),
                uuid: sys_uuid,
                settings: sys_settings,
                ledger: Arc::new(sys_ledger),
                hub: Arc::default(),
            }),
        );
        for (name, r) in &content.databases {
            let settings = match &replica {
                Some(rep) if !rep.follows(name) => continue,
                Some(rep) => rep.settings_for(name),
                None => system::join(r.settings.clone(), secrets.databases.get(name)),
            };
            let opened = match &replica {
                Some(_) => open_replica(dir, name, &r.uuid, settings.options()),
                None => open_listed(dir, name, &r.uuid, settings.options()),
            };
            match opened {
                Ok(ledger) => {
                    dbs.insert(
                        name.clone(),
                        Arc::new(Database {
                            name: name.clone(),
                            uuid: r.uuid.clone(),
                            settings,
                            ledger: Arc::new(ledger),
                            hub: Arc::default(),
                        }),
                    );
                }
                Err(error) => {
                    tracing::error!(database = %name, %error, "database unavailable: it is not served (the others are); fix it, then `chainlog database reopen`");
                    unavailable.insert(
                        name.clone(),
                        Unavailable {
                            name: name.clone(),
                            uuid: r.uuid.clone(),
                            settings,
                            error,
                        },
                    );
                }
            }
        }
        for db in dbs.values() {
            db.hub.load_fence(db.ledger.dir());
        }
        let recorded = content
            .databases
            .iter()
            .map(|(n, r)| (n.clone(), record_json(r)))
            .collect();
        let catalog = Catalog {
            dir: dir.to_path_buf(),
            replica,
            advertise: std::sync::OnceLock::new(),
            signing_key: std::sync::OnceLock::new(),
            recorded: std::sync::Mutex::new((recorded, secrets)),
            dbs: RwLock::new(dbs),
            unavailable: RwLock::new(unavailable),
            recover_tried: std::sync::Mutex::default(),
            change: std::sync::Mutex::new(()),
        };
        Ok((catalog, content, first_start))
    }

    /// The server's signing key, for its replicas' cosignatures (set once, before the
    /// replicators start).
    pub fn set_signing_key(&self, key: ed25519_dalek::SigningKey) {
        let _ = self.signing_key.set(key);
    }

    /// Records the address the server listens on (once).
    pub fn set_advertise(&self, addr: String) {
        let _ = self.advertise.set(addr);
    }

    /// The primary this server replicates, if it is a replica server.
    pub fn replica_of(&self) -> Option<&ServerReplica> {
        self.replica.as_ref()
    }

    /// The system database's ledger.
    pub fn system_ledger(&self) -> Result<Arc<Ledger>, CatalogError> {
        Ok(self.get(SYSTEM_DATABASE)?.ledger.clone())
    }

    /// Records changed users in the system database (`None`: removed); refused on a replica
    /// server, whose users follow its primary's.
    pub fn record_users(
        &self,
        changed: &[(String, Option<super::auth::UserRecord>)],
    ) -> Result<(), CatalogError> {
        if let Some(r) = &self.replica {
            return Err(CatalogError::ReplicaServer {
                primary: r.primary(),
            });
        }
        let _change = self
            .change
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let changes: Vec<system::Change<'_>> = changed
            .iter()
            .map(|(n, u)| system::Change::User(n, u.as_ref()))
            .collect();
        system::write(self.system_ledger()?.as_ref(), &changes)?;
        Ok(())
    }

    /// On a replica server: takes up every database the primary's system database lists
    /// (in `content`) that this server does not hold yet, as a replica following it.
    pub fn follow(self: &Arc<Self>, content: &system::Content) {
        let Some(rep) = self.replica.clone() else {
            return;
        };
        for (name, r) in &content.databases {
            if !rep.follows(name) || !matches!(self.get(name), Err(CatalogError::NotFound(_))) {
                continue;
            }
            let settings = rep.settings_for(name);
            let change = self
                .change
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match open_replica(&self.dir, name, &r.uuid, settings.options()) {
                Ok(ledger) => {
                    let db = Arc::new(Database {
                        name: name.clone(),
                        uuid: r.uuid.clone(),
                        settings,
                        ledger: Arc::new(ledger),
                        hub: Arc::default(),
                    });
                    if let Err(e) = self.install(name, db.clone()) {
                        tracing::error!(database = %name, error = %e, "could not take up the primary's database");
                        continue;
                    }
                    drop(change);
                    self.apply_replication(&db);
                }
                Err(error) => {
                    tracing::error!(database = %name, %error, "database unavailable: the primary lists it, but this server cannot serve its replica");
                    self.unavailable
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(
                            name.clone(),
                            Unavailable {
                                name: name.clone(),
                                uuid: r.uuid.clone(),
                                settings,
                                error,
                            },
                        );
                }
            }
        }
    }

    /// For a database whose writes failed (a full disk, say): when a write in its directory
    /// succeeds again, reopens it (recovery runs; nothing acknowledged is lost) and returns
    /// the new one; else `None`, and it stays as it is (its reads still served). Tried at
    /// most once per [`RECOVER_INTERVAL`] per database.
    pub fn recover_writes(self: &Arc<Self>, name: &str) -> Option<Arc<Database>> {
        // A change under way (a settings update reopening the ledger) is waited for: its
        // result is the database to use.
        drop(
            self.change
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let db = self.get(name).ok()?;
        if !db.ledger.poisoned() {
            return Some(db);
        }
        {
            let mut tried = self
                .recover_tried
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = std::time::Instant::now();
            if tried
                .get(name)
                .is_some_and(|t| now.duration_since(*t) < RECOVER_INTERVAL)
            {
                return None;
            }
            tried.insert(name.to_string(), now);
        }
        // A probe as large as the writer's next free-space step: if it fits, so does a group.
        let probe = db.ledger.dir().join(".write-probe.tmp");
        let fits = fs::replace(&probe, &vec![0u8; 1 << 20], fs::FILE_MODE);
        let _ = fs::remove(&probe);
        if let Err(e) = fits {
            tracing::warn!(database = %name, error = %e, "writes still fail; the database keeps refusing them");
            return None;
        }
        tracing::info!(database = %name, "writes succeed again: reopening the database");
        match self.reopen(name, false) {
            Ok(db) => Some(db),
            Err(e) => {
                tracing::error!(database = %name, error = %e, "reopening after failed writes did not work");
                None
            }
        }
    }

    /// The databases listed but not served, with why.
    pub fn unavailable(&self) -> Vec<Unavailable> {
        self.unavailable
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Closes and opens database `name` again, running recovery (which may cut a torn tail);
    /// for an unavailable one, tries to open it again. With `accept_loss`, a log that ends
    /// before txs its derived files show were committed is cut (they are lost) instead of
    /// refused. Requests in flight on the old ledger finish or fail with UNAVAILABLE.
    pub fn reopen(
        self: &Arc<Self>,
        name: &str,
        accept_loss: bool,
    ) -> Result<Arc<Database>, CatalogError> {
        self.reopen_around(name, accept_loss, |_| Ok(()))
            .map(|(db, _)| db)
    }

    /// Closes database `name` and lists it as unavailable ("unloaded") until
    /// [`Catalog::load`] or the next start: its files stay, nothing is served from them.
    pub fn unload(self: &Arc<Self>, name: &str) -> Result<(), CatalogError> {
        if name == SYSTEM_DATABASE {
            return Err(CatalogError::Protected(
                name.to_string(),
                "it holds the server's users and databases",
            ));
        }
        let _change = self
            .change
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let db = self.get(name)?;
        db.hub.stop_replicator();
        if let Err(e) = db.ledger.close() {
            tracing::warn!(database = %name, error = %e, "closing for the unload failed; it is unloaded all the same");
        }
        self.unavailable
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                name.to_string(),
                Unavailable {
                    name: name.to_string(),
                    uuid: db.uuid.clone(),
                    settings: db.settings.clone(),
                    error: UNLOADED.to_string(),
                },
            );
        self.dbs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name);
        Ok(())
    }

    /// Opens database `name` again after [`Catalog::unload`] (or one unavailable for another
    /// reason, as [`Catalog::reopen`]); one already served is returned as it is.
    pub fn load(self: &Arc<Self>, name: &str) -> Result<Arc<Database>, CatalogError> {
        match self.get(name) {
            Ok(db) => Ok(db),
            Err(CatalogError::Unavailable { .. }) => self.reopen(name, false),
            Err(e) => Err(e),
        }
    }

    /// Deletes database `name`: refused for the system database and `defaultdb`, and while
    /// replicas follow it unless `force`. Its record leaves the system database first; its
    /// directory is then renamed aside and removed (a crash leaves the renamed directory,
    /// removed at the next start). Its follow streams end.
    pub fn delete(self: &Arc<Self>, name: &str, force: bool) -> Result<(), CatalogError> {
        if name == SYSTEM_DATABASE {
            return Err(CatalogError::Protected(
                name.to_string(),
                "it holds the server's users and databases",
            ));
        }
        if name == "defaultdb" {
            return Err(CatalogError::Protected(
                name.to_string(),
                "it is the default database clients use (as immudb's)",
            ));
        }
        self.check_primary()?;
        let _change = self
            .change
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (uuid, served) = match self.get(name) {
            Ok(db) => (db.uuid.clone(), Some(db)),
            Err(CatalogError::Unavailable { .. }) => (
                self.unavailable
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(name)
                    .map(|u| u.uuid.clone())
                    .unwrap_or_default(),
                None,
            ),
            Err(e) => return Err(e),
        };
        if let Some(db) = &served {
            let replicas = db.hub.followers().len();
            if replicas > 0 && !force {
                return Err(CatalogError::HasReplicas {
                    name: name.to_string(),
                    replicas,
                });
            }
            db.hub.stop_replicator();
            if let Err(e) = db.ledger.close() {
                tracing::warn!(database = %name, error = %e, "closing before the delete failed; it is deleted all the same");
            }
        }
        let mut next = self
            .dbs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        next.remove(name);
        let held = self
            .unavailable
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name);
        if let Err(e) = self.persist(&next) {
            if let Some(u) = held {
                self.unavailable
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(name.to_string(), u);
            }
            return Err(e);
        }
        *self
            .dbs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
        let dir = self.dir.join("db").join(name);
        if dir.exists() {
            let trash = self
                .dir
                .join("db")
                .join(format!("{TRASH_PREFIX}{name}-{uuid}"));
            fs::rename(&dir, &trash)?;
            if let Err(e) = fs::remove_dir_all(&trash) {
                tracing::warn!(path = %trash.display(), error = %e, "could not remove a deleted database's files; they go at the next start");
            }
        }
        Ok(())
    }

    /// Drops the values of `name`'s txs before `before_tx` (`ledger::truncate`): the
    /// database is closed, truncated and opened again. A replica's replicator is stopped
    /// meanwhile and started again.
    pub fn truncate(
        self: &Arc<Self>,
        name: &str,
        before_tx: crate::integrity::TxId,
    ) -> Result<(Arc<Database>, crate::ledger::Truncation), CatalogError> {
        self.get(name)?;
        let (db, t) =
            self.reopen_around(name, false, |dir| crate::ledger::truncate(dir, before_tx))?;
        Ok((db, t?))
    }

    /// Closes `name`, runs `between` on its directory if it closed cleanly, and opens it
    /// again (whatever `between` answered).
    fn reopen_around<T>(
        self: &Arc<Self>,
        name: &str,
        accept_loss: bool,
        between: impl FnOnce(&Path) -> Result<T, LedgerError>,
    ) -> Result<(Arc<Database>, Result<T, LedgerError>), CatalogError> {
        let change = self
            .change
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut outcome = Err(LedgerError::Closed);
        let (uuid, settings, hub) = match self.get(name) {
            Ok(db) => {
                db.hub.stop_replicator();
                // A poisoned ledger says so on close; it is reopened all the same.
                match db.ledger.close() {
                    Ok(()) => outcome = between(&self.dir.join("db").join(name)),
                    Err(e) => {
                        tracing::warn!(database = %name, error = %e, "closing before the reopen failed");
                        outcome = Err(e);
                    }
                }
                (db.uuid.clone(), db.settings.clone(), db.hub.clone())
            }
            Err(CatalogError::Unavailable { .. }) => {
                let u = self
                    .unavailable
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(name)
                    .cloned()
                    .ok_or_else(|| CatalogError::NotFound(name.to_string()))?;
                (u.uuid, u.settings, Arc::default())
            }
            Err(e) => return Err(e),
        };
        let mut options = settings.options();
        if accept_loss {
            options.recovery = crate::ledger::Recovery::AcceptLoss;
        }
        let opened = open_listed(&self.dir, name, &uuid, options);
        let ledger = match opened {
            Ok(l) => l,
            Err(error) => {
                self.dbs
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(name);
                self.unavailable
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(
                        name.to_string(),
                        Unavailable {
                            name: name.to_string(),
                            uuid,
                            settings,
                            error: error.clone(),
                        },
                    );
                tracing::error!(database = %name, %error, "reopen failed: the database stays unavailable");
                return Err(CatalogError::Unavailable {
                    name: name.to_string(),
                    error,
                });
            }
        };
        let db = Arc::new(Database {
            name: name.to_string(),
            uuid,
            settings,
            ledger: Arc::new(ledger),
            hub,
        });
        self.unavailable
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name);
        self.install(name, db.clone())?;
        tracing::info!(database = %name, accept_loss, tx_id = db.ledger.state().tx_id, "database reopened");
        drop(change);
        self.apply_replication(&db);
        Ok((db, outcome))
    }

    /// The database `name`, if it takes writes from clients.
    pub fn writable(&self, name: &str) -> Result<Arc<Database>, CatalogError> {
        if name == SYSTEM_DATABASE {
            return Err(CatalogError::SystemDatabase);
        }
        let db = self.get(name)?;
        if db.settings.replication.is_replica() {
            return Err(CatalogError::ReadOnlyReplica {
                name: name.to_string(),
                primary: db.settings.replication.primary(),
            });
        }
        if db.hub.lease_lapsed() {
            return Err(CatalogError::LeaseLapsed {
                name: name.to_string(),
            });
        }
        if let Some((newer, newer_primary)) = db.hub.fenced() {
            return Err(CatalogError::Fenced {
                name: name.to_string(),
                epoch: db.ledger.epoch(),
                newer,
                newer_primary,
            });
        }
        Ok(db)
    }

    /// The replica database `name` as the target of a ReplicateTx from `source_uuid` (empty
    /// if unknown): it must be a replica without a primary host; an empty one takes the
    /// source's identity, a non-empty one must already hold it.
    pub fn push_target(
        &self,
        name: &str,
        source_uuid: &str,
    ) -> Result<Arc<Database>, CatalogError> {
        let db = self.get(name)?;
        match db.settings.replication.role() {
            Role::Primary => return Err(CatalogError::NotReplica(name.to_string())),
            Role::Replica => {
                return Err(CatalogError::HasPrimary {
                    name: name.to_string(),
                    primary: db.settings.replication.primary(),
                })
            }
            Role::ExternalReplica => {}
        }
        if source_uuid.is_empty() || source_uuid == db.uuid {
            return Ok(db);
        }
        if db.ledger.state().tx_id > 0 {
            return Err(CatalogError::OtherDatabase {
                name: name.to_string(),
                holds: db.uuid.clone(),
                source_uuid: source_uuid.to_string(),
            });
        }
        self.adopt_uuid(name, source_uuid)?;
        self.get(name)
    }

    /// Starts the replicators of the replica databases (needs a tokio runtime).
    pub fn start_replicators(self: &Arc<Self>) {
        for db in self.list() {
            self.apply_replication(&db);
        }
    }

    /// (Re)starts or stops `db`'s replicator to match its settings.
    fn apply_replication(self: &Arc<Self>, db: &Database) {
        let r = &db.settings.replication;
        db.ledger.set_digest_only(r.digest_only());
        let (Role::Replica, Some(host)) = (r.role(), r.primary_host.clone()) else {
            db.hub.clear_replicator();
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut config = replicator_config(r, &host, &db.name);
        config.cosign_key = self.signing_key.get().cloned();
        let local = Arc::new(LocalReplica {
            catalog: self.clone(),
            name: db.name.clone(),
        });
        let hub = db.hub.clone();
        tracing::info!(database = %db.name, primary = %r.primary(), "starting replicator");
        let task = rt.spawn(crate::replication::replicator::run(local, hub, config));
        db.hub.start_replicator(r.primary(), task);
    }

    /// Wipes replica `name`'s data and starts it again empty: its replicator (if it has a
    /// primary host) copies the primary's log from the first tx, and it takes the primary's
    /// identity. The old data is first renamed aside, so a crash leaves either the old
    /// database or an empty one, never a mix; the leftovers are removed at the next open.
    pub fn refresh(self: &Arc<Self>, name: &str) -> Result<Arc<Database>, CatalogError> {
        let _change = self
            .change
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = self.get(name)?;
        if !old.settings.replication.is_replica() {
            return Err(CatalogError::NotReplica(name.to_string()));
        }
        old.hub.stop_replicator();
        old.ledger.close()?;
        let dir = self.dir.join("db").join(name);
        let trash = self
            .dir
            .join("db")
            .join(format!("{TRASH_PREFIX}{name}-{}", new_uuid()));
        if dir.exists() {
            fs::rename(&dir, &trash)?;
        }
        let ledger = Ledger::open(&dir, old.settings.options())?;
        let uuid = new_uuid();
        write_identity(&dir, &uuid)?;
        let db = Arc::new(Database {
            name: old.name.clone(),
            uuid,
            settings: old.settings.clone(),
            ledger: Arc::new(ledger),
            hub: old.hub.clone(),
        });
        self.install(name, db.clone())?;
        // The evidence of the divergence that made the refresh needed outlives it.
        let evidence = trash.join(crate::replication::evidence::FILE_NAME);
        if evidence.exists() {
            let ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let kept = dir.join(format!("divergence-{ms}.json"));
            if let Err(e) = fs::rename(&evidence, &kept) {
                tracing::warn!(error = %e, "could not keep the divergence evidence across the refresh");
            }
        }
        if let Err(e) = fs::remove_dir_all(&trash) {
            tracing::warn!(path = %trash.display(), error = %e, "could not remove a refreshed replica's old data; it goes at the next start");
        }
        tracing::info!(database = %name, "replica refreshed: its data was wiped and is copied again from its primary");
        drop(_change);
        self.apply_replication(&db);
        Ok(db)
    }

    /// Cuts replica `name` back to its first `keep` txs (a former primary rejoining the
    /// primary that replaced it): every tx past them is written, as stored, to
    /// `rewound-<ms>.json` in its directory with `divergence` (where the histories part and
    /// the proofs), then the first `keep` txs are copied into a new directory, verified as a
    /// replica verifies them, which replaces the old one (renamed aside first, so a crash
    /// leaves the old database or the new one, never a mix). Returns how many txs were cut.
    /// Blocking; needs a tokio runtime.
    pub fn rewind(
        self: &Arc<Self>,
        name: &str,
        keep: TxId,
        divergence: serde_json::Value,
    ) -> Result<u64, CatalogError> {
        let _change = self
            .change
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = self.get(name)?;
        let head = old.ledger.state().tx_id;
        if keep >= head {
            return Ok(0);
        }
        let discarded = old
            .ledger
            .records(keep + 1, head, usize::MAX)?
            .into_iter()
            .enumerate()
            .map(|(i, r)| serde_json::json!({"tx_id": keep + 1 + i as u64, "record_hex": crate::integrity::hex::encode(&r)}))
            .collect::<Vec<_>>();
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let evidence = serde_json::json!({
            "format": "chainlog-rewind-v1",
            "database": name,
            "uuid": old.uuid,
            "fork_after_tx": keep,
            "discarded": discarded,
            "divergence": divergence,
        });
        let db_dir = self.dir.join("db");
        let building = db_dir.join(format!("{REWOUND_PREFIX}{name}-{}", new_uuid()));
        let rt = tokio::runtime::Handle::current();
        {
            let new = Ledger::open(&building, old.settings.options())?;
            let mut from = 1;
            while from <= keep {
                let batch = old.ledger.records(from, keep, 32 << 20)?;
                let n = batch.len() as u64;
                let (_, failed) = rt.block_on(new.apply_records(batch));
                if let Some(e) = failed {
                    let _ = new.close();
                    let _ = fs::remove_dir_all(&building);
                    return Err(e.into());
                }
                from += n;
            }
            new.close()?;
        }
        let bytes = serde_json::to_vec_pretty(&evidence).map_err(|e| CatalogError::File {
            path: building.clone(),
            reason: e.to_string(),
        })?;
        fs::replace(
            &building.join(format!("rewound-{ms}.json")),
            &bytes,
            fs::FILE_MODE,
        )?;
        write_identity(&building, &old.uuid)?;
        // Evidence of earlier divergences and rewinds goes along.
        for p in fs::entries(old.ledger.dir())? {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if (n.starts_with("rewound-") || n.starts_with("divergence")) && n.ends_with(".json") {
                let _ = fs::rename(&p, &building.join(&n));
            }
        }
        old.ledger.close()?;
        let dir = db_dir.join(name);
        let trash = db_dir.join(format!("{TRASH_PREFIX}{name}-{}", new_uuid()));
        fs::rename(&dir, &trash)?;
        fs::rename(&building, &dir)?;
        let ledger = Ledger::open(&dir, old.settings.options())?;
        let db = Arc::new(Database {
            name: old.name.clone(),
            uuid: old.uuid.clone(),
            settings: old.settings.clone(),
            ledger: Arc::new(ledger),
            hub: old.hub.clone(),
        });
        self.install(name, db)?;
        if let Err(e) = fs::remove_dir_all(&trash) {
            tracing::warn!(path = %trash.display(), error = %e, "could not remove the rewound database's old data; it goes at the next start");
        }
        Ok(head - keep)
    }

    /// Replaces `name`'s entry, keeping its ledger and hub, with a new identity.
    pub(crate) fn adopt_uuid(&self, name: &str, uuid: &str) -> Result<(), CatalogError> {
        let _change = self
            .change
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = self.get(name)?;
        let db = Arc::new(Database {
            name: old.name.clone(),
            uuid: uuid.to_string(),
            settings: old.settings.clone(),
            ledger: old.ledger.clone(),
            hub: old.hub.clone(),
        });
        write_identity(old.ledger.dir(), uuid)?;
        self.install(name, db)?;
        tracing::info!(database = %name, uuid, "replica took its primary's identity");
        Ok(())
    }

    /// Records `db` under `name` in the catalog file, then makes it visible. Callers hold
    /// `change`.
    fn install(&self, name: &str, db: Arc<Database>) -> Result<(), CatalogError> {
        let mut next = self
            .dbs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        next.insert(name.to_string(), db);
        self.persist(&next)?;
        *self
            .dbs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
        Ok(())
    }

    /// Records what changed in the databases (`dbs` and the unavailable ones) in the system
    /// database, and their secrets in `secrets.json`. Nothing on a replica server, whose
    /// catalog is the primary's.
    fn persist(&self, dbs: &BTreeMap<String, Arc<Database>>) -> Result<(), CatalogError> {
        if self.replica.is_some() {
            return Ok(());
        }
        let mut all: BTreeMap<String, (String, Settings)> = self
            .unavailable
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .map(|u| (u.name.clone(), (u.uuid.clone(), u.settings.clone())))
            .collect();
        all.extend(
            dbs.iter()
                .map(|(n, d)| (n.clone(), (d.uuid.clone(), d.settings.clone()))),
        );
        all.remove(SYSTEM_DATABASE);
        let mut secrets = Secrets::default();
        let mut records = BTreeMap::new();
        for (name, (uuid, settings)) in all {
            let (public, s) = system::split(&settings);
            if s != system::DatabaseSecrets::default() {
                secrets.databases.insert(name.clone(), s);
            }
            records.insert(
                name,
                DatabaseRecord {
                    uuid,
                    settings: public,
                },
            );
        }
        let json: BTreeMap<String, String> = records
            .iter()
            .map(|(n, r)| (n.clone(), record_json(r)))
            .collect();
        let mut recorded = self
            .recorded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut changes: Vec<system::Change<'_>> = records
            .iter()
            .filter(|(n, _)| recorded.0.get(*n) != json.get(*n))
            .map(|(n, r)| system::Change::Database(n, Some(r)))
            .collect();
        changes.extend(
            recorded
                .0
                .keys()
                .filter(|n| !records.contains_key(*n))
                .map(|n| system::Change::Database(n, None)),
        );
        // Secrets first: were the record then lost, they would only be unused.
        if secrets != recorded.1 {
            system::write_secrets(&self.dir, &secrets)?;
        }
        system::write(self.system_ledger()?.as_ref(), &changes)?;
        *recorded = (json, secrets);
        Ok(())
    }

    pub fn get(&self, name: &str) -> Result<Arc<Database>, CatalogError> {
        let dbs = self
            .dbs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(db) = dbs.get(name) {
            return Ok(db.clone());
        }
        match self
            .unavailable
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
        {
            Some(u) => Err(CatalogError::Unavailable {
                name: name.to_string(),
                error: u.error.clone(),
            }),
            None => Err(CatalogError::NotFound(name.to_string())),
        }
    }

    pub fn list(&self) -> Vec<Arc<Database>> {
        let dbs = self
            .dbs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        dbs.values().cloned().collect()
    }

    pub fn create(
        self: &Arc<Self>,
        name: &str,
        settings: Settings,
    ) -> Result<Arc<Database>, CatalogError> {
        self.check_primary()?;
        check_name(name)?;
        settings.validate()?;
        let _change = self
            .change
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !matches!(self.get(name), Err(CatalogError::NotFound(_))) {
            return Err(CatalogError::Exists(name.to_string()));
        }
        let dir = self.dir.join("db").join(name);
        if dir.exists() {
            // Left by a create that failed before the catalog recorded it.
            fs::remove_dir_all(&dir)?;
        }
        let ledger = Ledger::open(&dir, settings.options())?;
        let uuid = new_uuid();
        write_identity(&dir, &uuid)?;
        let db = Arc::new(Database {
            name: name.to_string(),
            uuid,
            settings,
            ledger: Arc::new(ledger),
            hub: Arc::default(),
        });
        self.install(name, db.clone())?;
        self.apply_replication(&db);
        Ok(db)
    }

    /// Applies new settings by reopening the database's ledger; requests in flight on the old
    /// one finish or fail with UNAVAILABLE.
    pub fn update(
        self: &Arc<Self>,
        name: &str,
        update: &Settings,
    ) -> Result<Arc<Database>, CatalogError> {
        self.update_with_epoch(name, update, 0)
    }

    /// [`Catalog::update`]; a promotion it makes starts epoch `epoch` if that is above the
    /// next one (the failover coordinator's, fenced by etcd's revision).
    pub fn update_with_epoch(
        self: &Arc<Self>,
        name: &str,
        update: &Settings,
        epoch: u64,
    ) -> Result<Arc<Database>, CatalogError> {
        self.check_primary()?;
        if name == SYSTEM_DATABASE {
            return Err(CatalogError::SystemDatabase);
        }
        let _change = self
            .change
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = self.get(name)?;
        let settings = old.settings.merged(update)?;
        settings.validate()?;
        old.hub.stop_replicator();
        // Storage options need the ledger reopened; replication settings alone do not.
        let ledger = if settings.options() == old.settings.options() {
            old.ledger.clone()
        } else {
            old.ledger.close()?;
            Arc::new(Ledger::open(
                self.dir.join("db").join(name),
                settings.options(),
            )?)
        };
        let promoted = old.settings.replication.is_replica() && !settings.replication.is_replica();
        let repointed = settings.replication.is_replica();
        let db = Arc::new(Database {
            name: old.name.clone(),
            uuid: old.uuid.clone(),
            settings,
            ledger,
            hub: old.hub.clone(),
        });
        self.install(name, db.clone())?;
        tracing::info!(database = %name, "database settings updated");
        drop(_change);
        if repointed {
            // A fenced former primary that now follows the newer one is no longer stale.
            db.hub.unfence_in(db.ledger.dir());
        }
        if promoted {
            self.promote(&db, &old.settings.replication, epoch)?;
        }
        self.apply_replication(&db);
        Ok(db)
    }

    /// A replica just made primary: starts the next epoch (its marker tx records it in the
    /// chain, so the former primary's txs after this point are refused everywhere), lifts any
    /// fence, and tells the former primary (`former`), if it had one, so that it fences
    /// itself at once.
    fn promote(
        &self,
        db: &Database,
        former: &ReplicationSettings,
        at_least: u64,
    ) -> Result<(), CatalogError> {
        let epoch = (db.ledger.epoch() + 1).max(at_least);
        let marker = db.ledger.start_epoch(epoch)?;
        db.hub.unfence_in(db.ledger.dir());
        tracing::warn!(database = %db.name, epoch, at_tx = marker.id, "promoted to primary: a new epoch starts");
        let Some(host) = former.primary_host.clone().filter(|h| !h.is_empty()) else {
            return Ok(());
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return Ok(());
        };
        let config = replicator_config(former, &host, &db.name);
        let advertise = self.advertise.get().cloned().unwrap_or_default();
        let (state, uuid) = (db.ledger.state(), db.uuid.clone());
        rt.spawn(crate::replication::replicator::tell_former_primary(
            config, epoch, advertise, uuid, state,
        ));
        Ok(())
    }

    /// Refuses a change of the catalog on a replica server.
    fn check_primary(&self) -> Result<(), CatalogError> {
        match &self.replica {
            Some(r) => Err(CatalogError::ReplicaServer {
                primary: r.primary(),
            }),
            None => Ok(()),
        }
    }

    pub fn stop_replicators(&self) {
        for db in self.list() {
            db.hub.stop_replicator();
        }
    }

    /// Stops the replicators and closes every ledger: checkpoint and fsync.
    /// Stops the replicators and closes every ledger: checkpoint and fsync. Returns the
    /// databases whose close failed (their writes had failed earlier, or the final
    /// checkpoint did), each logged.
    pub fn close(&self) -> Vec<String> {
        let mut failed = Vec::new();
        for db in self.list() {
            db.hub.stop_replicator();
            if let Err(e) = db.ledger.close() {
                tracing::error!(database = %db.name, error = %e, "close failed");
                failed.push(db.name.clone());
            }
        }
        failed
    }
}

/// How a replicator (or a promoted database telling its former primary) reaches the primary
/// that `r` names at `host`.
fn replicator_config(
    r: &ReplicationSettings,
    host: &str,
    replica_name: &str,
) -> crate::replication::replicator::ReplicatorConfig {
    let tls = r
        .primary_tls_ca_pem
        .as_ref()
        .map(|ca| crate::client::ClientTls {
            ca_pem: Some(ca.clone().into_bytes()),
            identity_pem: r
                .primary_tls_cert_pem
                .clone()
                .zip(r.primary_tls_key_pem.as_ref())
                .map(|(c, k)| (c.into_bytes(), k.expose_secret().as_bytes().to_vec())),
            domain: None,
        });
    crate::replication::replicator::ReplicatorConfig {
        primary_url: format!(
            "{}://{host}:{}",
            if tls.is_some() { "https" } else { "http" },
            r.primary_port.unwrap_or(3322)
        ),
        primary_database: r
            .primary_database
            .clone()
            .unwrap_or_else(|| super::DEFAULT_DATABASE.into()),
        username: r.primary_username.clone().unwrap_or_default(),
        password: r
            .primary_password
            .clone()
            .unwrap_or_else(|| SecretString::from("")),
        tls,
        replica_name: replica_name.to_string(),
        allow_tx_discarding: r.allow_tx_discarding == Some(true),
        primary_public_key: r.primary_public_key.clone(),
        cosign_key: None,
    }
}

fn record_json(r: &DatabaseRecord) -> String {
    serde_json::to_string(r).unwrap_or_default()
}

/// Names of the directories under `db/` that hold a refreshed or rewound replica's old data.
/// Directories being removed (a refreshed replica's old data, a deleted database): any left
/// by a crash are removed at the next start.
const TRASH_PREFIX: &str = ".refreshed-";

/// Why an unloaded database is unavailable.
pub const UNLOADED: &str = "unloaded (LoadDatabase, or the next start, loads it again)";
/// Names of the directories under `db/` where a rewound replica is built:
/// `.rewound-<name>-<uuid>`. Complete once the old one was renamed aside.
const REWOUND_PREFIX: &str = ".rewound-";

/// Removes what refreshes and rewinds left behind (a crash between their renames and the
/// removal), and finishes a rewind whose last rename a crash stopped: a built database whose
/// old directory is already gone takes its place.
fn remove_trash(db_dir: &Path) -> Result<(), CatalogError> {
    for path in fs::entries(db_dir)? {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with(TRASH_PREFIX) {
            fs::remove_dir_all(&path)?;
        } else if let Some(rest) = name.strip_prefix(REWOUND_PREFIX) {
            // `<name>-<uuid>`: a uuid is 36 characters.
            let db = rest
                .get(..rest.len().saturating_sub(37))
                .unwrap_or_default();
            let target = db_dir.join(db);
            if db.is_empty() || target.exists() {
                fs::remove_dir_all(&path)?;
            } else {
                tracing::warn!(database = %db, "finishing a rewind a crash interrupted");
                fs::rename(&path, &target)?;
            }
        }
    }
    Ok(())
}

/// The file in a replica database's directory that pins its primary's public key (hex).
pub const PRIMARY_KEY_FILE: &str = "PRIMARY_KEY";

/// A replica database as its replicator sees it.
struct LocalReplica {
    catalog: Arc<Catalog>,
    name: String,
}

impl crate::replication::replicator::Local for LocalReplica {
    fn ledger(&self) -> Option<Arc<Ledger>> {
        self.catalog.get(&self.name).ok().map(|d| d.ledger.clone())
    }

    fn uuid(&self) -> String {
        self.catalog
            .get(&self.name)
            .map(|d| d.uuid.clone())
            .unwrap_or_default()
    }

    fn record_divergence(&self, evidence: &serde_json::Value) -> Result<(), String> {
        let db = self.catalog.get(&self.name).map_err(|e| e.to_string())?;
        let path = db
            .ledger
            .dir()
            .join(crate::replication::evidence::FILE_NAME);
        let bytes = serde_json::to_vec_pretty(evidence).map_err(|e| e.to_string())?;
        fs::replace(&path, &bytes, fs::FILE_MODE).map_err(|e| e.to_string())
    }

    fn adopt_uuid(&self, uuid: &str) -> Result<(), String> {
        self.catalog
            .adopt_uuid(&self.name, uuid)
            .map_err(|e| e.to_string())
    }

    fn pinned_key(&self) -> Option<String> {
        let db = self.catalog.get(&self.name).ok()?;
        let b = fs::read(&db.ledger.dir().join(PRIMARY_KEY_FILE)).ok()??;
        Some(String::from_utf8_lossy(&b).trim().to_string())
    }

    fn pin_key(&self, key: &str) -> Result<(), String> {
        let db = self.catalog.get(&self.name).map_err(|e| e.to_string())?;
        fs::replace(
            &db.ledger.dir().join(PRIMARY_KEY_FILE),
            format!("{key}\n").as_bytes(),
            fs::FILE_MODE,
        )
        .map_err(|e| e.to_string())
    }

    fn rewind(&self, keep: TxId, divergence: serde_json::Value) -> Result<u64, String> {
        self.catalog
            .rewind(&self.name, keep, divergence)
            .map_err(|e| e.to_string())
    }
}

impl From<crate::fs::FsError> for CatalogError {
    fn from(e: crate::fs::FsError) -> CatalogError {
        CatalogError::Storage(e.into())
    }
}
