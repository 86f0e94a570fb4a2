//! The system database, `systemdb`: the server's users (names, Argon2id password hashes,
//! superuser flags, grants) and its databases (names, identities, settings), kept as records
//! in a chainlog ledger of its own, so they are hash-chained, verifiable and replicated like
//! any database's (docs/format.md, "Data directory"; docs/replication.md, "A whole server").
//!
//! Records, one key each, JSON values:
//!
//! ```text
//! user/<name>       {"password": PHC string, "superuser": bool, "grants": {database: permission}}
//! database/<name>   {"uuid": ..., "settings": {...}}
//! ```
//!
//! A user or database removed is a delete of its key. Secrets are never in it: a replica
//! database's password to its primary and its TLS key are kept in `<data-dir>/secrets.json`
//! (mode 0600), the one place they are written.
//!
//! Servers before the system database kept the same in `users.json` and `catalog.json`;
//! [`migrate`] moves them into it at the first start, once.

use super::auth::UserRecord;
use super::settings::Settings;
use crate::fs;
use crate::ledger::{Ledger, LedgerError, NewEntry, Order};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use crate::wire::SYSTEM_DATABASE;
/// Where secrets are kept, in the data directory.
pub const SECRETS_FILE: &str = "secrets.json";
const USER_PREFIX: &str = "user/";
const DATABASE_PREFIX: &str = "database/";
/// Records read per scan.
const PAGE: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("systemdb record {key:?} does not decode: {reason}")]
    Record { key: String, reason: String },
}

/// A database as the system database records it: no secret in it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatabaseRecord {
    pub uuid: String,
    pub settings: Settings,
}

/// What the system database holds.
#[derive(Debug, Default, Clone)]
pub struct Content {
    pub users: BTreeMap<String, UserRecord>,
    pub databases: BTreeMap<String, DatabaseRecord>,
}

/// One change to record.
pub enum Change<'a> {
    User(&'a str, Option<&'a UserRecord>),
    Database(&'a str, Option<&'a DatabaseRecord>),
}

fn scan_prefix(ledger: &Ledger, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, SystemError> {
    let mut out = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = ledger.scan(
            prefix.as_bytes(),
            after.as_deref(),
            PAGE,
            Order::Asc,
            u64::MAX,
        )?;
        let n = page.len();
        for kv in page {
            let name = String::from_utf8_lossy(&kv.key[prefix.len()..]).into_owned();
            after = Some(kv.key);
            out.push((name, kv.value));
        }
        if n < PAGE {
            return Ok(out);
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    prefix: &str,
    name: &str,
    value: &[u8],
) -> Result<T, SystemError> {
    serde_json::from_slice(value).map_err(|e| SystemError::Record {
        key: format!("{prefix}{name}"),
        reason: e.to_string(),
    })
}

/// Reads the users and databases the system database holds now.
pub fn read(ledger: &Ledger) -> Result<Content, SystemError> {
    let mut c = Content::default();
    for (name, v) in scan_prefix(ledger, USER_PREFIX)? {
        let u = decode(USER_PREFIX, &name, &v)?;
        c.users.insert(name, u);
    }
    for (name, v) in scan_prefix(ledger, DATABASE_PREFIX)? {
        let d = decode(DATABASE_PREFIX, &name, &v)?;
        c.databases.insert(name, d);
    }
    Ok(c)
}

fn json(v: &impl Serialize) -> Vec<u8> {
    // Plain data with string keys: serializing cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// Records `changes` in one tx (nothing if none changes anything). A removal of a record the
/// database does not hold is skipped.
pub fn write(ledger: &Ledger, changes: &[Change<'_>]) -> Result<(), SystemError> {
    let mut entries = Vec::new();
    for c in changes {
        let (key, value) = match c {
            Change::User(n, u) => (format!("{USER_PREFIX}{n}"), u.map(json)),
            Change::Database(n, d) => (format!("{DATABASE_PREFIX}{n}"), d.map(json)),
        };
        let live = ledger.get(key.as_bytes())?;
        match value {
            Some(v) if live.as_ref().is_some_and(|kv| kv.value == v) => {}
            Some(v) => entries.push(NewEntry::put(key, v)),
            None if live.is_some() => entries.push(NewEntry::delete(key)),
            None => {}
        }
    }
    if !entries.is_empty() {
        ledger.commit(entries)?;
    }
    Ok(())
}

/// The secrets of one database, apart from its record.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DatabaseSecrets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_tls_key_pem: Option<String>,
}

/// `secrets.json`: database name -> its secrets.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Secrets {
    #[serde(default)]
    pub databases: BTreeMap<String, DatabaseSecrets>,
}

/// Reads `<dir>/secrets.json` (none yet: no secrets).
pub fn read_secrets(dir: &Path) -> Result<Secrets, SystemError> {
    let path = dir.join(SECRETS_FILE);
    match fs::read(&path) {
        Ok(Some(b)) => serde_json::from_slice(&b).map_err(|e| SystemError::File {
            path,
            reason: e.to_string(),
        }),
        Ok(None) => Ok(Secrets::default()),
        Err(e) => Err(SystemError::File {
            path,
            reason: e.to_string(),
        }),
    }
}

/// Replaces `<dir>/secrets.json` (mode 0600) atomically.
pub fn write_secrets(dir: &Path, s: &Secrets) -> Result<(), SystemError> {
    let path = dir.join(SECRETS_FILE);
    fs::replace(&path, &json(s), fs::PRIVATE_MODE).map_err(|e| SystemError::File {
        path,
        reason: e.to_string(),
    })
}

/// A database's settings split into what the system database records and its secrets.
pub fn split(settings: &Settings) -> (Settings, DatabaseSecrets) {
    let mut public = settings.clone();
    let r = &mut public.replication;
    let secrets = DatabaseSecrets {
        primary_password: r
            .primary_password
            .take()
            .map(|p| p.expose_secret().to_string()),
        primary_tls_key_pem: r
            .primary_tls_key_pem
            .take()
            .map(|k| k.expose_secret().to_string()),
    };
    (public, secrets)
}

/// A database's settings from its record and its secrets.
pub fn join(mut public: Settings, secrets: Option<&DatabaseSecrets>) -> Settings {
    if let Some(s) = secrets {
        let r = &mut public.replication;
        r.primary_password = s.primary_password.clone().map(SecretString::from);
        r.primary_tls_key_pem = s.primary_tls_key_pem.clone().map(SecretString::from);
    }
    public
}

/// What servers before the system database kept: `users.json` and `catalog.json`.
const LEGACY_USERS: &str = "users.json";
const LEGACY_CATALOG: &str = "catalog.json";

/// Whether the data directory `dir` holds the files of a server before the system database.
pub fn has_legacy_files(dir: &Path) -> bool {
    dir.join(LEGACY_USERS).exists() || dir.join(LEGACY_CATALOG).exists()
}

/// A database as an older `catalog.json` listed it (its settings with their secrets).
#[derive(Deserialize)]
struct LegacyRecord {
    uuid: String,
    settings: Settings,
}

/// Moves `users.json` and `catalog.json` into the system database (whose ledger is
/// `system`) and the secrets they hold into `secrets.json`, then removes them. If the system
/// database already holds records (a migration that stopped after its commit), the old
/// files are only removed. Returns whether anything was moved.
pub fn migrate(dir: &Path, system: &Ledger) -> Result<bool, SystemError> {
    if !has_legacy_files(dir) {
        return Ok(false);
    }
    let read_json = |name: &str| -> Result<Option<serde_json::Value>, SystemError> {
        let path = dir.join(name);
        let bytes = fs::read(&path).map_err(|e| SystemError::File {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        bytes
            .map(|b| {
                serde_json::from_slice(&b).map_err(|e| SystemError::File {
                    path,
                    reason: e.to_string(),
                })
            })
            .transpose()
    };
    let already = system.state().tx_id > 0;
    let mut moved = false;
    if !already {
        let users: BTreeMap<String, UserRecord> = match read_json(LEGACY_USERS)? {
            Some(v) => serde_json::from_value(v).map_err(|e| SystemError::File {
                path: dir.join(LEGACY_USERS),
                reason: e.to_string(),
            })?,
            None => BTreeMap::new(),
        };
        let catalog: BTreeMap<String, LegacyRecord> = match read_json(LEGACY_CATALOG)? {
            Some(v) => serde_json::from_value(v).map_err(|e| SystemError::File {
                path: dir.join(LEGACY_CATALOG),
                reason: e.to_string(),
            })?,
            None => BTreeMap::new(),
        };
        let mut secrets = read_secrets(dir)?;
        let mut records = BTreeMap::new();
        for (name, mut r) in catalog {
            if let Err(e) = r.settings.replication.migrate_tls_files() {
                tracing::error!(database = %name, error = %e, "cannot read a TLS file the old catalog names; set the TLS settings again");
            }
            let (public, s) = split(&r.settings);
            if s != DatabaseSecrets::default() {
                secrets.databases.insert(name.clone(), s);
            }
            records.insert(
                name,
                DatabaseRecord {
                    uuid: r.uuid,
                    settings: public,
                },
            );
        }
        // Secrets first: were the commit lost, they would only be unused.
        write_secrets(dir, &secrets)?;
        let mut changes: Vec<Change<'_>> = users
            .iter()
            .map(|(n, u)| Change::User(n, Some(u)))
            .collect();
        changes.extend(records.iter().map(|(n, d)| Change::Database(n, Some(d))));
        write(system, &changes)?;
        tracing::info!(
            users = users.len(),
            databases = records.len(),
            "moved users.json and catalog.json into the system database"
        );
        moved = true;
    }
    for name in [LEGACY_USERS, LEGACY_CATALOG] {
        fs::remove(&dir.join(name)).map_err(|e| SystemError::File {
            path: dir.join(name),
            reason: e.to_string(),
        })?;
    }
    Ok(moved)
}
