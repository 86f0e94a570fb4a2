//! The gRPC services, one file each: decode the request, check the caller, call the catalog,
//! the ledger or replication, encode the answer. Policy lives below them; errors go through
//! the one mapping in [`super::status`].

mod auth;
mod data;
mod databases;
mod kv;
mod replication;
mod stream;
mod users;
mod write_stream;

use super::auth::Permission;
use super::catalog::Database;
use super::{status, ServerState};
use crate::integrity::map::Latest;
use crate::integrity::{signing, Digest, TxId};
use crate::ledger::LedgerError;
use crate::wire;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tonic::{Request, Status};

/// What every service holds: the server's shared state.
#[derive(Clone)]
pub(crate) struct Service {
    pub state: Arc<ServerState>,
}

pub(super) fn bearer<T>(req: &Request<T>) -> Result<&str, Status> {
    req.metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| Status::unauthenticated("missing `authorization: Bearer <token>`"))
}

impl Service {
    /// The caller, who must be a superuser.
    fn superuser<T>(&self, req: &Request<T>) -> Result<String, Status> {
        let caller = self.caller(req)?;
        self.state
            .auth
            .require_superuser(&caller)
            .map_err(status::auth)?;
        Ok(caller)
    }

    /// The user behind the call's token.
    fn caller<T>(&self, req: &Request<T>) -> Result<String, Status> {
        self.state.auth.session(bearer(req)?).map_err(status::auth)
    }

    /// The database named by a call, after checking the caller may act on it.
    fn database<T>(
        &self,
        req: &Request<T>,
        name: &str,
        needed: Permission,
    ) -> Result<Arc<Database>, Status> {
        self.database_for(&self.caller(req)?, name, needed)
    }

    /// Database `name`, after checking that `user` may act on it.
    fn database_for(
        &self,
        user: &str,
        name: &str,
        needed: Permission,
    ) -> Result<Arc<Database>, Status> {
        self.state
            .auth
            .require(user, name, needed)
            .map_err(status::auth)?;
        self.state.catalog.get(name).map_err(status::catalog)
    }

    /// [`Service::database`] for a write: replicas refuse writes.
    fn writable<T>(&self, req: &Request<T>, name: &str) -> Result<Arc<Database>, Status> {
        self.database(req, name, Permission::ReadWrite)?;
        self.state.catalog.writable(name).map_err(status::catalog)
    }

    /// The state of `db` at tx `tx_id`, signed when the server has a key.
    fn state_wire(&self, db: &Database, tx_id: TxId, alh: &Digest) -> wire::State {
        self.state_wire_of(&db.name, &db.uuid, tx_id, alh)
    }

    /// [`Service::state_wire`] of the database `name` with identity `uuid`.
    fn state_wire_of(&self, name: &str, uuid: &str, tx_id: TxId, alh: &Digest) -> wire::State {
        let mut s = wire::State {
            database: name.to_string(),
            uuid: uuid.to_string(),
            tx_id,
            alh: alh.0.to_vec(),
            ..wire::State::default()
        };
        if let Some(key) = &self.state.signing_key {
            s.timestamp_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            s.signature = signing::sign_state(key, uuid, tx_id, alh, s.timestamp_ms).to_vec();
            s.public_key = key.verifying_key().to_bytes().to_vec();
        }
        s
    }

    /// The checkpoint signer of `db`'s follow streams, when the server signs states.
    fn signer(&self, db: &Database) -> Option<crate::replication::primary::Signer> {
        self.state.signing_key.as_ref()?;
        let (this, db) = (self.clone(), (db.name.clone(), db.uuid.clone()));
        Some(Arc::new(move |tx: TxId, alh: &Digest| {
            this.state_wire_of(&db.0, &db.1, tx, alh)
        }))
    }

    fn info(&self, db: &Database) -> wire::DatabaseInfo {
        let st = db.ledger.state();
        wire::DatabaseInfo {
            name: db.name.clone(),
            uuid: db.uuid.clone(),
            settings: Some(super::convert::settings_wire(&db.settings)),
            state: Some(self.state_wire(db, st.tx_id, &st.alh)),
            unavailable: String::new(),
        }
    }

    fn unavailable_info(u: &super::catalog::Unavailable) -> wire::DatabaseInfo {
        wire::DatabaseInfo {
            name: u.name.clone(),
            uuid: u.uuid.clone(),
            settings: Some(super::convert::settings_wire(&u.settings)),
            state: None,
            unavailable: u.error.clone(),
        }
    }

    /// The verified read of `key` as of tx `at_tx` (0: the current state): its latest
    /// version then (a delete included) or none, as the key map proves, with everything that
    /// ties it to the current state. The version comes from the map alone, not the index.
    fn verifiable_entry(
        &self,
        db: &Database,
        key: &[u8],
        at_tx: TxId,
        trusted: TxId,
        streamed: bool,
    ) -> Result<wire::VerifiableEntry, LedgerError> {
        let ledger = &db.ledger;
        if key.is_empty() {
            return Err(LedgerError::EmptyKey { index: 0 });
        }
        if key.len() > crate::ledger::KEY_BYTES_MAX {
            return Err(LedgerError::KeyTooLong {
                index: 0,
                len: key.len(),
                max: crate::ledger::KEY_BYTES_MAX,
            });
        }
        let now = ledger.state();
        if now.tx_id == 0 {
            // The empty database: the empty map proves every key absent.
            return Ok(wire::VerifiableEntry {
                tx: Some(wire::VerifiableTx {
                    state: Some(self.state_wire(db, 0, &now.alh)),
                    ..wire::VerifiableTx::default()
                }),
                latest: Some(wire::MapProof::default()),
                ..wire::VerifiableEntry::default()
            });
        }
        let at = if at_tx == 0 {
            now.tx_id
        } else {
            at_tx.min(now.tx_id)
        };
        let (latest, proof) = ledger.latest_proof(key, at)?;
        let mut out = wire::VerifiableEntry {
            latest: Some((&proof).into()),
            ..wire::VerifiableEntry::default()
        };
        let proven_tx = match latest {
            Latest::Version(leaf) => {
                // A streamed read proves the entry without reading its value (a reference's
                // value, which names its target, is always sent).
                let (entry, p) = match streamed {
                    true => match ledger.entry_proof_without_value(leaf.tx_id, key)? {
                        (e, _) if e.meta.reference => ledger.entry_proof(leaf.tx_id, key)?,
                        found => found,
                    },
                    false => ledger.entry_proof(leaf.tx_id, key)?,
                };
                if entry.digest() != leaf.entry_digest || entry.meta.deleted != leaf.deleted {
                    // The chain's map root commits to a version the log does not hold.
                    return Err(LedgerError::Damaged {
                        path: ledger.dir().join("map"),
                        offset: 0,
                        reason: crate::ledger::Damage::MapNode,
                    });
                }
                // A streamed value's bytes follow the proof; its hash stands for it here.
                let streamed =
                    streamed && !entry.dropped && !entry.meta.deleted && !entry.meta.reference;
                out.entry = Some(wire::Entry {
                    key: entry.key,
                    value: if streamed { Vec::new() } else { entry.value },
                    tx: leaf.tx_id,
                    deleted: entry.meta.deleted,
                    metadata: wire::metadata_wire(entry.meta),
                    referenced_by: None,
                    value_truncated: entry.dropped,
                    value_hash: if entry.dropped || streamed {
                        entry.value_hash.0.to_vec()
                    } else {
                        Vec::new()
                    },
                    value_streamed: streamed,
                });
                out.entry_index = p.index;
                out.entry_path = p.path.iter().map(|d| d.0.to_vec()).collect();
                leaf.tx_id
            }
            Latest::Absent => at,
        };
        let vt = self.verifiable_tx(db, proven_tx, trusted, false)?;
        let state_tx = vt.state.as_ref().map_or(now.tx_id, |s| s.tx_id);
        let at_proof = ledger.tx_proof(at, state_tx)?;
        out.at = Some((&at_proof.tx).into());
        out.at_inclusion = at_proof.path.iter().map(|d| d.0.to_vec()).collect();
        out.tx = Some(vt);
        Ok(out)
    }

    /// Everything to verify tx `id` against the client's trusted state, proven in the current
    /// state.
    fn verifiable_tx(
        &self,
        db: &Database,
        id: TxId,
        trusted: TxId,
        with_entries: bool,
    ) -> Result<wire::VerifiableTx, LedgerError> {
        let ledger = &db.ledger;
        let now = ledger.state();
        let proof = ledger.tx_proof(id, now.tx_id)?;
        let entries = if with_entries {
            super::convert::tx_wire(ledger.tx(id)?).entries
        } else {
            Vec::new()
        };
        let extension = if trusted > 0 && trusted < now.tx_id {
            Some(wire::StateProof::from(
                &ledger.state_proof(trusted, now.tx_id)?,
            ))
        } else {
            None
        };
        Ok(wire::VerifiableTx {
            tx: Some(wire::Tx {
                header: Some((&proof.tx).into()),
                entries,
            }),
            state_header: Some((&proof.state).into()),
            tx_inclusion: proof.path.iter().map(|d| d.0.to_vec()).collect(),
            extension,
            state: Some(self.state_wire(db, now.tx_id, &now.alh)),
        })
    }
}
