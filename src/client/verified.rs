//! Verified reads and writes: every answer is checked against the last trusted state of its
//! database, which is then advanced and saved (temp file, fsync, rename).

use super::{Client, ClientError, Result};
use crate::integrity::{
    self, entry_digest, value_hash, Digest, EntryMeta, EntryProof, TxId, TxProof, VerifyError,
};
use crate::wire::{self, digest, digests, required};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokio::sync::Mutex;

/// The state a client trusts for one database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedState {
    /// The database's identity.
    pub uuid: String,
    /// The last tx of the state.
    pub tx_id: TxId,
    /// Its Alh, as hex.
    pub alh: String,
}

/// An answer that does not prove what it claims against the trusted state: evidence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("database {database}: {reason} (trusted state {trusted:?}, server claims tx {claimed_tx} with Alh {claimed_alh})")]
pub struct TamperError {
    /// The database the answer was for.
    pub database: String,
    /// The state the client trusted when it asked.
    pub trusted: Option<TrustedState>,
    /// The tx of the state the server claimed.
    pub claimed_tx: TxId,
    /// The Alh of the state the server claimed.
    pub claimed_alh: Digest,
    /// What does not verify.
    pub reason: TamperReason,
}

/// What about an answer does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TamperReason {
    /// A proof does not verify.
    #[error("proof does not verify: {0}")]
    Proof(#[from] VerifyError),
    /// The answer is another database's.
    #[error("the database identity changed from {trusted} to {claimed}")]
    OtherDatabase {
        /// The identity trusted.
        trusted: String,
        /// The identity the answer carries.
        claimed: String,
    },
    /// The answer's state is older than the trusted one.
    #[error("the server's state is older than the trusted one")]
    Rollback,
    /// The state's signature does not verify with the server's key.
    #[error("the state signature does not verify with the server's key")]
    Signature,
    /// The entries do not hash to the tx's entries root.
    #[error("the entries returned do not hash to the tx's entries root")]
    Entries,
    /// The answer is about another key or tx than asked.
    #[error("the answer is for another key or tx than asked")]
    WrongAnswer,
    /// The server found its own stored data failing its checks (DATA_LOSS): what it holds no
    /// longer proves itself, so the answer cannot be verified.
    #[error("the server reports stored data failing its integrity checks: {0}")]
    ServerCorruption(String),
}

/// A DATA_LOSS answer to a verified call is tamper evidence too: the server's own checks of
/// what it stored failed.
fn check_status(db: &str, trusted: Option<TrustedState>, e: tonic::Status) -> ClientError {
    if e.code() == tonic::Code::DataLoss {
        return ClientError::Tamper(Box::new(TamperError {
            database: db.to_string(),
            trusted,
            claimed_tx: 0,
            claimed_alh: Digest::ZERO,
            reason: TamperReason::ServerCorruption(e.message().to_string()),
        }));
    }
    e.into()
}

/// Tamper evidence against the state an answer claims.
fn tamper(
    db: &str,
    trusted: Option<TrustedState>,
    claimed: &wire::State,
    reason: TamperReason,
) -> ClientError {
    ClientError::Tamper(Box::new(TamperError {
        database: db.to_string(),
        trusted,
        claimed_tx: claimed.tx_id,
        claimed_alh: Digest::from_slice_lossy(&claimed.alh),
        reason,
    }))
}

/// A value read and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedEntry {
    /// The key read.
    pub key: Vec<u8>,
    /// Its value.
    pub value: Vec<u8>,
    /// The tx that wrote it.
    pub tx: TxId,
    /// The state it was verified in (now trusted).
    pub state_tx: TxId,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    /// Keyed by `<server address>/<database>`.
    databases: BTreeMap<String, TrustedState>,
}

/// A [`Client`] whose verified calls check every proof and keep the trusted states in a file.
pub struct VerifiedClient {
    client: Client,
    path: PathBuf,
    states: Mutex<StateFile>,
    /// If set, every state must carry a valid signature by this key; otherwise the first
    /// state seen for a database is trusted on first use.
    server_key: Option<ed25519_dalek::VerifyingKey>,
}

fn state_file_error(path: &Path, e: impl std::fmt::Display) -> ClientError {
    ClientError::StateFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

impl VerifiedClient {
    /// Wraps `client`, loading trusted states from `state_file` (created when first saved).
    pub fn new(
        client: Client,
        state_file: impl Into<PathBuf>,
        server_key: Option<ed25519_dalek::VerifyingKey>,
    ) -> Result<VerifiedClient> {
        let path = state_file.into();
        let states = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| state_file_error(&path, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StateFile::default(),
            Err(e) => return Err(state_file_error(&path, e)),
        };
        Ok(VerifiedClient {
            client,
            path,
            states: Mutex::new(states),
            server_key,
        })
    }

    /// The client it verifies the answers of.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn slot(&self, db: &str) -> String {
        format!("{}/{db}", self.client.addr())
    }

    /// The state trusted for `db`, if any.
    pub async fn trusted(&self, db: &str) -> Option<TrustedState> {
        self.states
            .lock()
            .await
            .databases
            .get(&self.slot(db))
            .cloned()
    }

    /// Checks `vt` (tx `vt.tx` in state `vt.state`, which extends the trusted state), then
    /// trusts `vt.state`. Returns the tx header.
    async fn accept(&self, db: &str, vt: &wire::VerifiableTx) -> Result<integrity::TxHeader> {
        let mut states = self.states.lock().await;
        let slot = self.slot(db);
        let trusted = states.databases.get(&slot).cloned();
        let state = required("state", &vt.state)?;
        let claimed_alh = digest("state.alh", &state.alh)?;
        let tamper = |reason| tamper(db, trusted.clone(), state, reason);
        if let Some(key) = &self.server_key {
            if !integrity::signing::verify_state(
                key,
                &state.uuid,
                state.tx_id,
                &claimed_alh,
                state.timestamp_ms,
                &state.signature,
            ) {
                return Err(tamper(TamperReason::Signature));
            }
        }
        let tx: integrity::TxHeader =
            required("tx.header", &required("tx", &vt.tx)?.header)?.try_into()?;
        let proof = TxProof {
            tx,
            state: required("state_header", &vt.state_header)?.try_into()?,
            path: digests("tx_inclusion", &vt.tx_inclusion)?,
        };
        proof
            .verify(state.tx_id, &claimed_alh)
            .map_err(|e| tamper(e.into()))?;
        if let Some(t) = &trusted {
            if t.uuid != state.uuid {
                return Err(tamper(TamperReason::OtherDatabase {
                    trusted: t.uuid.clone(),
                    claimed: state.uuid.clone(),
                }));
            }
            let trusted_alh =
                Digest::from_hex(&t.alh).ok_or_else(|| state_file_error(&self.path, "bad Alh"))?;
            if state.tx_id < t.tx_id {
                return Err(tamper(TamperReason::Rollback));
            }
            if state.tx_id == t.tx_id {
                if claimed_alh != trusted_alh {
                    return Err(tamper(
                        VerifyError::AlhMismatch {
                            id: t.tx_id,
                            expected: trusted_alh,
                            computed: claimed_alh,
                        }
                        .into(),
                    ));
                }
            } else {
                let ext: integrity::StateProof =
                    required("extension", &vt.extension)?.try_into()?;
                ext.verify(t.tx_id, &trusted_alh, state.tx_id, &claimed_alh)
                    .map_err(|e| tamper(e.into()))?;
            }
        }
        states.databases.insert(
            slot,
            TrustedState {
                uuid: state.uuid.clone(),
                tx_id: state.tx_id,
                alh: claimed_alh.to_hex(),
            },
        );
        let bytes =
            serde_json::to_vec_pretty(&*states).map_err(|e| state_file_error(&self.path, e))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::fs::create_dir_all(dir).map_err(|e| state_file_error(&self.path, e))?;
        }
        crate::fs::replace(&self.path, &bytes, crate::fs::PRIVATE_MODE)
            .map_err(|e| state_file_error(&self.path, e))?;
        Ok(proof.tx)
    }

    async fn trusted_tx(&self, db: &str) -> TxId {
        self.trusted(db).await.map_or(0, |t| t.tx_id)
    }

    /// Reads `key` (as of tx `at_tx`, 0 for the latest) and verifies it.
    pub async fn get(&self, db: &str, key: &[u8], at_tx: TxId) -> Result<VerifiedEntry> {
        let trusted_tx_id = self.trusted_tx(db).await;
        let ve = self
            .client
            .data()
            .verifiable_get(wire::VerifiableGetRequest {
                database: db.to_string(),
                key: key.to_vec(),
                at_tx,
                trusted_tx_id,
            })
            .await
            .map_err(|e| check_status(db, None, e))?
            .into_inner();
        let vt = required("tx", &ve.tx)?;
        let entry = required("entry", &ve.entry)?.clone();
        let header: integrity::TxHeader =
            required("tx.header", &required("tx", &vt.tx)?.header)?.try_into()?;
        let state = required("state", &vt.state)?;
        // A malformed Alh is a wire error, not tamper evidence.
        digest("state.alh", &state.alh)?;
        let tamper = |reason| tamper(db, None, state, reason);
        if entry.key != key || entry.tx != header.id || entry.deleted {
            return Err(tamper(TamperReason::WrongAnswer));
        }
        let proof = EntryProof {
            index: ve.entry_index,
            entry_count: header.entry_count,
            path: digests("entry_path", &ve.entry_path)?,
        };
        let d = entry_digest(&entry.key, EntryMeta::default(), &value_hash(&entry.value));
        proof.verify(&d, &header).map_err(|e| tamper(e.into()))?;
        let h = self.accept(db, vt).await?;
        Ok(VerifiedEntry {
            key: entry.key,
            value: entry.value,
            tx: h.id,
            state_tx: state.tx_id,
        })
    }

    /// Commits `entries`, then verifies that the tx the server made holds exactly them and is
    /// in a state that extends the trusted one.
    pub async fn set(
        &self,
        db: &str,
        entries: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<integrity::TxHeader> {
        let trusted_tx_id = self.trusted_tx(db).await;
        let digests_sent: Vec<Digest> = entries
            .iter()
            .map(|(k, v)| entry_digest(k, EntryMeta::default(), &value_hash(v)))
            .collect();
        let vt = self
            .client
            .data()
            .verifiable_set(wire::VerifiableSetRequest {
                database: db.to_string(),
                entries: entries
                    .into_iter()
                    .map(|(key, value)| wire::KeyValue { key, value })
                    .collect(),
                trusted_tx_id,
            })
            .await
            .map_err(|e| check_status(db, None, e))?
            .into_inner();
        let header: integrity::TxHeader =
            required("tx.header", &required("tx", &vt.tx)?.header)?.try_into()?;
        if integrity::tx::entries_root(&digests_sent) != header.entries_root {
            let state = required("state", &vt.state)?;
            return Err(tamper(
                db,
                self.trusted(db).await,
                state,
                TamperReason::Entries,
            ));
        }
        self.accept(db, &vt).await
    }

    /// Reads tx `id` with its entries and verifies all of it.
    pub async fn tx(&self, db: &str, id: TxId) -> Result<(integrity::TxHeader, Vec<wire::Entry>)> {
        let trusted_tx_id = self.trusted_tx(db).await;
        let vt = self
            .client
            .data()
            .verifiable_tx_by_id(wire::VerifiableTxByIdRequest {
                database: db.to_string(),
                id,
                trusted_tx_id,
            })
            .await
            .map_err(|e| check_status(db, None, e))?
            .into_inner();
        let tx = required("tx", &vt.tx)?;
        let header: integrity::TxHeader = required("tx.header", &tx.header)?.try_into()?;
        let digests: Vec<Digest> = tx
            .entries
            .iter()
            .map(|e| {
                entry_digest(
                    &e.key,
                    EntryMeta { deleted: e.deleted },
                    &value_hash(&e.value),
                )
            })
            .collect();
        let state = required("state", &vt.state)?;
        if header.id != id {
            return Err(tamper(db, None, state, TamperReason::WrongAnswer));
        }
        if integrity::tx::entries_root(&digests) != header.entries_root
            || digests.len() != header.entry_count as usize
        {
            return Err(tamper(db, None, state, TamperReason::Entries));
        }
        let h = self.accept(db, &vt).await?;
        Ok((h, tx.entries.clone()))
    }

    /// Fetches the current state and verifies it extends the trusted one (then trusts it).
    pub async fn state(&self, db: &str) -> Result<TrustedState> {
        // A verified read of the newest tx carries the current state and its proofs.
        let current = self.client.current_state(db).await?;
        if current.tx_id == 0 {
            return Ok(TrustedState {
                uuid: current.uuid,
                tx_id: 0,
                alh: Digest::ZERO.to_hex(),
            });
        }
        let trusted_tx_id = self.trusted_tx(db).await;
        let vt = self
            .client
            .data()
            .verifiable_tx_by_id(wire::VerifiableTxByIdRequest {
                database: db.to_string(),
                id: current.tx_id,
                trusted_tx_id,
            })
            .await
            .map_err(|e| check_status(db, None, e))?
            .into_inner();
        self.accept(db, &vt).await?;
        self.trusted(db).await.ok_or(ClientError::NotLoggedIn)
    }
}
