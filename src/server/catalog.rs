//! The databases a server holds: their names, identities and settings (persisted in
//! `<data-dir>/catalog.json`), and their open ledgers (in `<data-dir>/db/<name>/`).

use crate::ledger::{Durability, Ledger, LedgerError, Options};
use crate::storage::{fs, StorageError};
use serde::{Deserialize, Serialize};
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
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Settings a database is created or updated with; `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffered: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_bytes_max: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_txs: Option<u64>,
}

impl Settings {
    pub fn merged(&self, update: &Settings) -> Settings {
        Settings {
            buffered: update.buffered.or(self.buffered),
            segment_bytes_max: update.segment_bytes_max.or(self.segment_bytes_max),
            checkpoint_txs: update.checkpoint_txs.or(self.checkpoint_txs),
        }
    }

    pub fn options(&self) -> Options {
        let d = Options::default();
        Options {
            durability: if self.buffered == Some(true) {
                Durability::Buffered
            } else {
                Durability::Synced
            },
            segment_bytes_max: self.segment_bytes_max.unwrap_or(d.segment_bytes_max),
            checkpoint_txs: self.checkpoint_txs.unwrap_or(d.checkpoint_txs),
            ..d
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    uuid: String,
    settings: Settings,
}

/// One open database.
#[derive(Debug)]
pub struct Database {
    pub name: String,
    pub uuid: String,
    pub settings: Settings,
    pub ledger: Arc<Ledger>,
}

pub struct Catalog {
    dir: PathBuf,
    dbs: RwLock<BTreeMap<String, Arc<Database>>>,
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

/// A random version 4 UUID, as text.
pub fn new_uuid() -> String {
    let mut b = [0u8; 16];
    crate::server::auth::random_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

impl Catalog {
    /// Opens every database listed in `<dir>/catalog.json`.
    pub fn open(dir: &Path) -> Result<Catalog, CatalogError> {
        fs::create_dir_all(&dir.join("db"))?;
        let path = dir.join("catalog.json");
        let records: BTreeMap<String, Record> = match fs::read(&path)? {
            Some(b) => serde_json::from_slice(&b).map_err(|e| CatalogError::File {
                path: path.clone(),
                reason: e.to_string(),
            })?,
            None => BTreeMap::new(),
        };
        let mut dbs = BTreeMap::new();
        for (name, r) in records {
            let ledger = Ledger::open(dir.join("db").join(&name), r.settings.options())?;
            let report = ledger.recovery();
            if report.replayed_txs > 0 || report.truncated.is_some() {
                tracing::info!(database = %name, replayed = report.replayed_txs, truncated = ?report.truncated, "recovered");
            }
            dbs.insert(
                name.clone(),
                Arc::new(Database {
                    name,
                    uuid: r.uuid,
                    settings: r.settings,
                    ledger: Arc::new(ledger),
                }),
            );
        }
        Ok(Catalog {
            dir: dir.to_path_buf(),
            dbs: RwLock::new(dbs),
            change: std::sync::Mutex::new(()),
        })
    }

    fn persist(&self, dbs: &BTreeMap<String, Arc<Database>>) -> Result<(), CatalogError> {
        let records: BTreeMap<&String, Record> = dbs
            .iter()
            .map(|(n, d)| {
                (
                    n,
                    Record {
                        uuid: d.uuid.clone(),
                        settings: d.settings.clone(),
                    },
                )
            })
            .collect();
        let bytes = serde_json::to_vec_pretty(&records).map_err(|e| CatalogError::File {
            path: self.dir.join("catalog.json"),
            reason: e.to_string(),
        })?;
        fs::atomic_write(&self.dir.join("catalog.json"), &bytes)?;
        Ok(())
    }

    pub fn get(&self, name: &str) -> Result<Arc<Database>, CatalogError> {
        let dbs = self
            .dbs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        dbs.get(name)
            .cloned()
            .ok_or_else(|| CatalogError::NotFound(name.to_string()))
    }

    pub fn list(&self) -> Vec<Arc<Database>> {
        let dbs = self
            .dbs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        dbs.values().cloned().collect()
    }

    pub fn create(&self, name: &str, settings: Settings) -> Result<Arc<Database>, CatalogError> {
        check_name(name)?;
        settings.options().validate()?;
        let _change = self
            .change
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.get(name).is_ok() {
            return Err(CatalogError::Exists(name.to_string()));
        }
        let dir = self.dir.join("db").join(name);
        if dir.exists() {
            // Left by a create that failed before the catalog recorded it.
            std::fs::remove_dir_all(&dir).map_err(|e| StorageError::io(&dir, e))?;
        }
        let ledger = Ledger::open(&dir, settings.options())?;
        let db = Arc::new(Database {
            name: name.to_string(),
            uuid: new_uuid(),
            settings,
            ledger: Arc::new(ledger),
        });
        let mut next = self
            .dbs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        next.insert(name.to_string(), db.clone());
        self.persist(&next)?;
        *self
            .dbs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
        tracing::info!(database = %name, uuid = %db.uuid, "database created");
        Ok(db)
    }

    /// Applies new settings by reopening the database's ledger; requests in flight on the old
    /// one finish or fail with UNAVAILABLE.
    pub fn update(&self, name: &str, update: &Settings) -> Result<Arc<Database>, CatalogError> {
        let _change = self
            .change
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = self.get(name)?;
        let settings = old.settings.merged(update);
        settings.options().validate()?;
        old.ledger.close()?;
        let ledger = Ledger::open(self.dir.join("db").join(name), settings.options())?;
        let db = Arc::new(Database {
            name: old.name.clone(),
            uuid: old.uuid.clone(),
            settings,
            ledger: Arc::new(ledger),
        });
        let mut next = self
            .dbs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        next.insert(name.to_string(), db.clone());
        self.persist(&next)?;
        *self
            .dbs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
        tracing::info!(database = %name, "database settings updated");
        Ok(db)
    }

    /// Closes every ledger: checkpoint and fsync.
    pub fn close(&self) {
        for db in self.list() {
            if let Err(e) = db.ledger.close() {
                tracing::error!(database = %db.name, error = %e, "close failed");
            }
        }
    }
}
