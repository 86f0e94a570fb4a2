//! Verified reads and writes: every answer is checked against the last trusted state of its
//! database, which is then advanced and saved (through `fs::replace`: temp file, fsync,
//! rename).
//!
//! The client never moves backwards and never trusts an unverified field. Every state it
//! receives, `CurrentState`'s included, is checked in the same order ([`VerifiedClient`]'s
//! `check_state`): the database it names, the signature (when the server's key is known), the
//! identity against the trusted one, then its position: older than the trusted state is a
//! rollback; the same tx must carry the same Alh; a newer one must come with a proof that it
//! extends the trusted one. A proof part missing or malformed is tamper evidence, as is a
//! DATA_LOSS answer.

use super::{Client, ClientError, Result};
use crate::client::Put;
use crate::integrity::map::{Latest, MapProof};
use crate::integrity::{self, entry_digest, Digest, EntryProof, TxId, TxProof, VerifyError};
use crate::wire::{self, WireError};
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
    /// Its epoch (its tx's header's): answers from an older epoch come from a primary that
    /// was replaced, and are refused. 0 in state files from before epochs.
    #[serde(default)]
    pub epoch: u64,
}

impl std::fmt::Display for TrustedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tx {} with Alh {} of database {}",
            self.tx_id, self.alh, self.uuid
        )
    }
}

/// An answer that does not prove what it claims against the trusted state: evidence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("database {database}: {reason} (trusted: {}; the server claims tx {claimed_tx} with Alh {claimed_alh})", trusted.as_ref().map_or_else(|| "nothing yet".to_string(), ToString::to_string))]
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
    /// A proof part the answer must carry is missing or malformed.
    #[error("the answer's proof is incomplete: {0}")]
    Incomplete(WireError),
    /// The answer is another database's.
    #[error("the database identity changed from {trusted} to {claimed}")]
    OtherDatabase {
        /// The identity trusted.
        trusted: String,
        /// The identity the answer carries.
        claimed: String,
    },
    /// The answer's state names another database than the one asked about.
    #[error("the state is of database {claimed:?}, not of the one asked about")]
    WrongDatabase {
        /// The database the state names.
        claimed: String,
    },
    /// The answer's state is older than the trusted one.
    #[error("the server's state is older than the trusted one (a rollback)")]
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
    /// The key map proves another latest version than the entry the answer shows (an older
    /// version replayed, a delete hidden, a version that is not the key's).
    #[error("the entry returned is not the key's latest version as the key map proves it")]
    NotLatest,
    /// A streamed value does not hash to the value hash its proven entry takes.
    #[error("the streamed value does not hash to the value hash of the proven entry")]
    ValueHash,
    /// The answer says the key has no version, but does not prove it (a hidden key).
    #[error("the server says the key has no version but does not prove it")]
    UnprovenAbsence,
    /// The answer's state is from an older epoch than the trusted one: it comes from a
    /// primary that a promotion replaced (a fork or a stale server).
    #[error("the server's state is in epoch {claimed}, older than the trusted state's epoch {trusted}: it comes from a primary that was replaced")]
    StaleEpoch {
        /// The trusted state's epoch.
        trusted: u64,
        /// The answer's.
        claimed: u64,
    },
    /// A witness cosigned a state the trusted history does not hold: the primary showed
    /// different histories to different replicas.
    #[error("witness {witness} cosigned tx {tx} with Alh {alh}, which is not a state of the trusted history")]
    ForkedWitness {
        /// The witness's key (hex).
        witness: String,
        /// The tx it cosigned.
        tx: TxId,
        /// The Alh it cosigned.
        alh: Digest,
    },
    /// The answer is as of another tx than asked.
    #[error("the answer is as of tx {answered}, not tx {asked}")]
    WrongTx {
        /// The tx asked about.
        asked: TxId,
        /// The tx the answer is as of.
        answered: TxId,
    },
}

/// A state that replicas vouch for: `k` witnesses (replicas whose keys the client trusts)
/// each cosigned this state or a later one of the same history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignedState {
    /// The state: tx id and Alh (hex), of the trusted database.
    pub tx_id: TxId,
    /// Its Alh, as hex.
    pub alh: String,
    /// The witnesses (public keys, hex) that cosigned it or a later state.
    pub witnesses: Vec<String>,
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
    /// Its expiry time (seconds since the Unix epoch), if it has one.
    pub expires_at: Option<u64>,
    /// The state it was verified in (now trusted).
    pub state_tx: TxId,
}

/// Most verified writes [`VerifiedClient::write_all`] keeps in flight (the server's window).
const WRITE_WINDOW: usize = 1024;

/// The data client a verified write calls with.
type DataClient = wire::data_client::DataClient<crate::client::Authed>;
/// A verified write's call in flight.
type WriteCall = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = std::result::Result<tonic::Response<wire::VerifiableTx>, tonic::Status>,
            > + Send,
    >,
>;

/// What a verified read proved about a key as of one tx: its latest version then, or that it
/// had none. Every variant is proven against the state now trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifiedRead {
    /// The key's latest version is this value.
    Value(VerifiedEntry),
    /// The key's latest version is a delete.
    Deleted {
        /// The tx that deleted it.
        tx: TxId,
        /// The tx the read is as of.
        at_tx: TxId,
        /// The state it was verified in (now trusted).
        state_tx: TxId,
    },
    /// The key's latest version is proven, but its value was dropped (a truncation on the
    /// server, or a digest-only replica): only its hash is left.
    Truncated {
        /// The tx that wrote it.
        tx: TxId,
        /// The tx the read is as of.
        at_tx: TxId,
        /// The state it was verified in (now trusted).
        state_tx: TxId,
    },
    /// The key's latest version is proven, and has expired by this machine's clock: the key
    /// reads as absent.
    Expired {
        /// The tx that wrote it.
        tx: TxId,
        /// When it expired (seconds since the Unix epoch).
        expires_at: u64,
        /// The tx the read is as of.
        at_tx: TxId,
        /// The state it was verified in (now trusted).
        state_tx: TxId,
    },
    /// The key's latest version is a reference (SetReference): proven, and followed to the
    /// referenced key's version, itself proven.
    Reference {
        /// The reference's key (the key read).
        key: Vec<u8>,
        /// The tx that wrote the reference.
        tx: TxId,
        /// The key it names.
        referenced_key: Vec<u8>,
        /// The tx it is bound to (0: unbound).
        bound_tx: TxId,
        /// The tx the read is as of.
        at_tx: TxId,
        /// The state it was verified in (now trusted).
        state_tx: TxId,
        /// The referenced key's version: as of `bound_tx` when bound, else as of `at_tx`.
        /// `None` only inside the client, before it is followed.
        target: Option<Box<VerifiedRead>>,
    },
    /// The key had never been written.
    Absent {
        /// The tx the read is as of (0: the empty database).
        at_tx: TxId,
        /// The state it was verified in (now trusted).
        state_tx: TxId,
    },
}

impl VerifiedRead {
    /// The value, if the key has one.
    pub fn value(self) -> Option<VerifiedEntry> {
        match self {
            VerifiedRead::Value(e) => Some(e),
            _ => None,
        }
    }
}

/// The trusted-state file's content: `{"databases": {"<identity>": state}, "names":
/// {"<server address>/<database>": "<identity>"}}`. States are kept per database identity,
/// so that every spelling of a server's address (`localhost`, `127.0.0.1`, a DNS name) and
/// every copy of a database (a replica, a restored backup) is checked against the one state
/// the client trusts for that database.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    /// Keyed by the database's identity (older files: by `<server address>/<database>`,
    /// moved at load).
    databases: BTreeMap<String, TrustedState>,
    /// Which identity each `<server address>/<database>` answered with.
    #[serde(default)]
    names: BTreeMap<String, String>,
}

impl StateFile {
    /// Moves states keyed by name (files from before identities) under their identity.
    fn normalize(mut self) -> StateFile {
        let legacy: Vec<String> = self
            .databases
            .iter()
            .filter(|(k, v)| **k != v.uuid)
            .map(|(k, _)| k.clone())
            .collect();
        for k in legacy {
            if let Some(v) = self.databases.remove(&k) {
                self.names.insert(k, v.uuid.clone());
                self.keep_newer(v);
            }
        }
        self
    }

    /// Trusts `s` for its identity unless a newer state of it is trusted already.
    fn keep_newer(&mut self, s: TrustedState) -> TrustedState {
        match self.databases.get(&s.uuid) {
            Some(d) if d.tx_id > s.tx_id => d.clone(),
            _ => {
                self.databases.insert(s.uuid.clone(), s.clone());
                s
            }
        }
    }

    /// The state trusted for a name, through its identity.
    fn lookup(&self, slot: &str) -> Option<TrustedState> {
        self.names
            .get(slot)
            .and_then(|u| self.databases.get(u))
            .cloned()
    }
}

/// The states a state file trusts, keyed by database identity: for an auditor checking a
/// data directory against them (`chainlog verify --state-file`).
pub fn read_trusted_states(path: &Path) -> Result<BTreeMap<String, TrustedState>> {
    Ok(load(path)?.databases)
}

fn load(path: &Path) -> Result<StateFile> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice::<StateFile>(&b)
            .map(StateFile::normalize)
            .map_err(|e| state_file_error(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StateFile::default()),
        Err(e) => Err(state_file_error(path, e)),
    }
}

/// A [`Client`] whose verified calls check every proof and keep the trusted states in a file.
pub struct VerifiedClient {
    client: Client,
    path: PathBuf,
    states: Mutex<StateFile>,
    /// If set, every state must carry a valid signature by this key; otherwise the first
    /// state seen for a database is trusted on first use.
    server_key: Option<ed25519_dalek::VerifyingKey>,
    /// While set (a verified write stream), states trusted are kept in memory and saved once
    /// at its end ([`VerifiedClient::flush`]), not each time.
    defer_saves: std::sync::atomic::AtomicBool,
    /// States trusted while saves were deferred, by slot.
    unsaved: std::sync::Mutex<BTreeMap<String, TrustedState>>,
}

fn state_file_error(path: &Path, e: impl std::fmt::Display) -> ClientError {
    ClientError::StateFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Gathers what a check needs to report tamper evidence for one database.
struct Evidence<'a> {
    database: &'a str,
    trusted: Option<TrustedState>,
    claimed_tx: TxId,
    claimed_alh: Digest,
}

impl Evidence<'_> {
    fn of(&self, reason: TamperReason) -> ClientError {
        ClientError::Tamper(Box::new(TamperError {
            database: self.database.to_string(),
            trusted: self.trusted.clone(),
            claimed_tx: self.claimed_tx,
            claimed_alh: self.claimed_alh,
            reason,
        }))
    }

    /// A proof part the answer must carry: missing or malformed is evidence.
    fn need<T>(&self, part: std::result::Result<T, WireError>) -> Result<T> {
        part.map_err(|e| self.of(TamperReason::Incomplete(e)))
    }

    /// A DATA_LOSS answer to a verified call is evidence too: the server's own checks of what
    /// it stored failed.
    fn status(&self, e: tonic::Status) -> ClientError {
        if e.code() == tonic::Code::DataLoss {
            return self.of(TamperReason::ServerCorruption(e.message().to_string()));
        }
        e.into()
    }
}

fn header(
    h: &Option<wire::TxHeader>,
    field: &'static str,
) -> std::result::Result<integrity::TxHeader, WireError> {
    wire::required(field, h)?.try_into()
}

impl VerifiedClient {
    /// Wraps `client`, loading trusted states from `state_file` (created when first saved).
    pub fn new(
        client: Client,
        state_file: impl Into<PathBuf>,
        server_key: Option<ed25519_dalek::VerifyingKey>,
    ) -> Result<VerifiedClient> {
        let path = state_file.into();
        let states = load(&path)?;
        Ok(VerifiedClient {
            client,
            path,
            states: Mutex::new(states),
            server_key,
            defer_saves: std::sync::atomic::AtomicBool::new(false),
            unsaved: std::sync::Mutex::new(BTreeMap::new()),
        })
    }

    /// The client it verifies the answers of.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn slot(&self, db: &str) -> String {
        format!("{}/{db}", self.client.addr())
    }

    /// The state trusted for `db`, if any. A name this client has not used yet is first
    /// asked for its identity (an unverified `CurrentState`): if the file trusts a state of
    /// that identity (the same database under another address spelling, or a copy of it),
    /// that state is the one every answer must extend.
    pub async fn trusted(&self, db: &str) -> Option<TrustedState> {
        let slot = self.slot(db);
        {
            let states = self.states.lock().await;
            if states.names.contains_key(&slot) || states.databases.is_empty() {
                return states.lookup(&slot);
            }
        }
        let uuid = self.client.current_state(db).await.ok()?.uuid;
        let mut states = self.states.lock().await;
        if states.databases.contains_key(&uuid) {
            states.names.insert(slot.clone(), uuid);
        }
        states.lookup(&slot)
    }

    fn evidence<'a>(&self, db: &'a str, trusted: Option<TrustedState>) -> Evidence<'a> {
        Evidence {
            database: db,
            trusted,
            claimed_tx: 0,
            claimed_alh: Digest::ZERO,
        }
    }

    /// Checks a state the server gave for `db` against the trusted one, in order: the
    /// database it names, its signature (with a server key), its identity, its position.
    /// Returns its Alh, and whether it is newer than the trusted state (then a proof that it
    /// extends the trusted state is needed).
    fn check_state(&self, ev: &mut Evidence<'_>, state: &wire::State) -> Result<(Digest, bool)> {
        ev.claimed_tx = state.tx_id;
        let alh = ev.need(wire::digest("state.alh", &state.alh))?;
        ev.claimed_alh = alh;
        if state.database != ev.database {
            return Err(ev.of(TamperReason::WrongDatabase {
                claimed: state.database.clone(),
            }));
        }
        if let Some(key) = &self.server_key {
            if !integrity::signing::verify_state(
                key,
                &state.uuid,
                state.tx_id,
                &alh,
                state.timestamp_ms,
                &state.signature,
            ) {
                return Err(ev.of(TamperReason::Signature));
            }
        }
        let Some(t) = ev.trusted.clone() else {
            return Ok((alh, false));
        };
        if t.uuid != state.uuid {
            return Err(ev.of(TamperReason::OtherDatabase {
                trusted: t.uuid.clone(),
                claimed: state.uuid.clone(),
            }));
        }
        let trusted_alh =
            Digest::from_hex(&t.alh).ok_or_else(|| state_file_error(&self.path, "bad Alh"))?;
        if state.tx_id < t.tx_id {
            return Err(ev.of(TamperReason::Rollback));
        }
        if state.tx_id == t.tx_id && alh != trusted_alh {
            return Err(ev.of(VerifyError::AlhMismatch {
                id: t.tx_id,
                expected: trusted_alh,
                computed: alh,
            }
            .into()));
        }
        Ok((alh, state.tx_id > t.tx_id))
    }

    /// Checks `vt` (tx `vt.tx` in state `vt.state`, which extends the trusted state), then
    /// trusts `vt.state`. Returns the tx header.
    async fn accept(&self, db: &str, vt: &wire::VerifiableTx) -> Result<integrity::TxHeader> {
        self.accept_with(db, vt, |_, _| Ok(())).await
    }

    /// [`VerifiedClient::accept`], with `more` checked against the verified state (its header
    /// and Alh) before the state is trusted.
    async fn accept_with(
        &self,
        db: &str,
        vt: &wire::VerifiableTx,
        more: impl FnOnce(&Evidence<'_>, &TxProof) -> Result<()>,
    ) -> Result<integrity::TxHeader> {
        let mut states = self.states.lock().await;
        let slot = self.slot(db);
        let mut ev = self.evidence(db, states.lookup(&slot));
        let state = ev.need(wire::required("state", &vt.state))?;
        let (alh, newer) = self.check_state(&mut ev, state)?;
        let tx =
            ev.need(wire::required("tx", &vt.tx).and_then(|t| header(&t.header, "tx.header")))?;
        let proof = TxProof {
            tx,
            state: ev.need(header(&vt.state_header, "state_header"))?,
            path: ev.need(wire::digests("tx_inclusion", &vt.tx_inclusion))?,
        };
        proof
            .verify(state.tx_id, &alh)
            .map_err(|e| ev.of(e.into()))?;
        // The state's header is proven now: an older epoch than the trusted one is a
        // replaced primary's, whatever else the answer proves.
        if let Some(t) = &ev.trusted {
            if proof.state.epoch < t.epoch {
                return Err(ev.of(TamperReason::StaleEpoch {
                    trusted: t.epoch,
                    claimed: proof.state.epoch,
                }));
            }
        }
        if newer {
            if let Some(t) = &ev.trusted {
                let ext: integrity::StateProof = ev
                    .need(wire::required("extension", &vt.extension).and_then(TryInto::try_into))?;
                let trusted_alh = Digest::from_hex(&t.alh)
                    .ok_or_else(|| state_file_error(&self.path, "bad Alh"))?;
                ext.verify(t.tx_id, &trusted_alh, state.tx_id, &alh)
                    .map_err(|e| ev.of(e.into()))?;
            }
        }
        more(&ev, &proof)?;
        self.trust(&mut states, slot, state, &alh, proof.state.epoch)?;
        Ok(proof.tx)
    }

    /// Trusts `state` (verified, with Alh `alh`) for `slot` and saves the state file.
    fn trust(
        &self,
        states: &mut StateFile,
        slot: String,
        state: &wire::State,
        alh: &Digest,
        epoch: u64,
    ) -> Result<()> {
        let ours = TrustedState {
            uuid: state.uuid.clone(),
            tx_id: state.tx_id,
            alh: alh.to_hex(),
            epoch,
        };
        // Trusted already (a read in the state of the last one): nothing to save.
        if states.lookup(&slot).as_ref() == Some(&ours) {
            return Ok(());
        }
        states.names.insert(slot.clone(), ours.uuid.clone());
        states.keep_newer(ours.clone());
        if self.defer_saves.load(std::sync::atomic::Ordering::Relaxed) {
            self.unsaved
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(slot, ours);
            return Ok(());
        }
        self.save(states, slot, ours)
    }

    /// Saves `ours` as the state of `slot` in the file, under its lock, merged with what
    /// other processes saved meanwhile.
    fn save(&self, states: &mut StateFile, slot: String, ours: TrustedState) -> Result<()> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::fs::create_dir_all(dir).map_err(|e| state_file_error(&self.path, e))?;
        }
        // Other processes share the file: under its lock, read it again and change only this
        // slot, keeping a newer state another command trusted meanwhile (both were verified
        // to extend what the file held; the newer one extends the older).
        let _lock = self.lock_file()?;
        let mut on_disk = load(&self.path)?;
        on_disk.names.insert(slot, ours.uuid.clone());
        let keep = on_disk.keep_newer(ours);
        states.databases.insert(keep.uuid.clone(), keep);
        let bytes =
            serde_json::to_vec_pretty(&on_disk).map_err(|e| state_file_error(&self.path, e))?;
        crate::fs::replace(&self.path, &bytes, crate::fs::PRIVATE_MODE)
            .map_err(|e| state_file_error(&self.path, e))
    }

    /// Saves the states trusted while saves were deferred.
    async fn flush(&self) -> Result<()> {
        let unsaved = std::mem::take(
            &mut *self
                .unsaved
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let mut states = self.states.lock().await;
        for (slot, ours) in unsaved {
            self.save(&mut states, slot, ours)?;
        }
        Ok(())
    }

    /// Writes each of `txs` as its own tx on one WriteStream, pipelined (up to the server's
    /// window in flight), and verifies every answer as [`VerifiedClient::set_entries`] does:
    /// the tx holds exactly the entries sent, in a state that extends the one before. The
    /// states are trusted in order as they verify and saved to the state file once, at the
    /// end. A write the server refused is an `Err` in its place; an answer that does not
    /// verify stops everything (tamper evidence).
    pub async fn write_all(
        &self,
        db: &str,
        txs: Vec<Vec<Put>>,
    ) -> Result<Vec<Result<integrity::TxHeader>>> {
        let trusted = self.trusted(db).await;
        let first = wire::WriteRequest {
            database: db.to_string(),
            verify: true,
            trusted_tx_id: trusted.as_ref().map_or(0, |t| t.tx_id),
            known_epoch: trusted.as_ref().map_or(0, |t| t.epoch),
            entries: Vec::new(),
        };
        let mut stream = self.client.open_write_stream(first).await?;
        self.defer_saves
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let written = async {
            let mut pending = std::collections::VecDeque::new();
            let mut out = Vec::with_capacity(txs.len());
            for puts in txs {
                let digests: Vec<Digest> = puts.iter().map(Put::digest).collect();
                pending.push_back((stream.send(puts).await?, digests));
                if pending.len() >= WRITE_WINDOW {
                    if let Some((p, d)) = pending.pop_front() {
                        out.push(self.verified_answer(db, p, d).await?);
                    }
                }
            }
            drop(stream);
            while let Some((p, d)) = pending.pop_front() {
                out.push(self.verified_answer(db, p, d).await?);
            }
            Ok(out)
        }
        .await;
        self.defer_saves
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.flush().await?;
        written
    }

    /// One answer of a verified write stream: `Ok(Err(..))` for a write the server refused.
    async fn verified_answer(
        &self,
        db: &str,
        pending: crate::client::PendingWrite,
        digests: Vec<Digest>,
    ) -> Result<Result<integrity::TxHeader>> {
        let r = pending.response().await?;
        if r.code != 0 || r.header.is_none() {
            return Ok(Err(ClientError::Status(
                crate::client::write_stream::refusal(&r),
            )));
        }
        let ev = self.evidence(db, self.trusted(db).await);
        let vt = ev
            .need(wire::required("verifiable", &r.verifiable))?
            .clone();
        self.check_written(db, ev, &digests, vt).await.map(Ok)
    }

    /// Holds `<state file>.lock` while the file is read, changed and replaced: other
    /// processes share it.
    fn lock_file(&self) -> Result<crate::fs::FileLock> {
        let mut lock_path = self.path.clone().into_os_string();
        lock_path.push(".lock");
        crate::fs::FileLock::exclusive(std::path::Path::new(&lock_path))
            .map_err(|e| state_file_error(&self.path, e))
    }

    /// Forgets the trusted state of `db` (all databases of this server with `None`), in the
    /// file too: the next verified call trusts what the server then shows, as on first use.
    /// For an operator who knows why the old state no longer verifies (a database restored
    /// from an older backup, say). Returns the states forgotten.
    pub async fn forget(&self, db: Option<&str>) -> Result<Vec<(String, TrustedState)>> {
        let mut states = self.states.lock().await;
        let _lock = self.lock_file()?;
        let mut on_disk = load(&self.path)?;
        let prefix = format!("{}/", self.client.addr());
        let chosen: Vec<String> = on_disk
            .names
            .keys()
            .filter(|k| match db {
                Some(d) => **k == self.slot(d),
                None => k.starts_with(&prefix),
            })
            .cloned()
            .collect();
        let mut gone = Vec::new();
        for k in chosen {
            // The identity's state goes, with every name that refers to it.
            if let Some(uuid) = on_disk.names.get(&k).cloned() {
                if let Some(s) = on_disk.databases.remove(&uuid) {
                    gone.push((k.clone(), s));
                }
                on_disk.names.retain(|_, u| *u != uuid);
                states.databases.remove(&uuid);
                states.names.retain(|_, u| *u != uuid);
            }
        }
        let bytes =
            serde_json::to_vec_pretty(&on_disk).map_err(|e| state_file_error(&self.path, e))?;
        crate::fs::replace(&self.path, &bytes, crate::fs::PRIVATE_MODE)
            .map_err(|e| state_file_error(&self.path, e))?;
        Ok(gone)
    }

    /// Reads `key`'s latest version as of tx `at_tx` (0: as of the state the server answers
    /// with) and verifies it, absence included: the entry is in its tx, the tx and tx
    /// `at_tx` are in the state, the state extends the trusted one, and the key map in tx
    /// `at_tx`'s header proves the entry is the key's latest version then, or that the key
    /// had none. An answer that shows another version, or none without proof, is tamper
    /// evidence.
    pub async fn get(&self, db: &str, key: &[u8], at_tx: TxId) -> Result<VerifiedRead> {
        let read = self.read_key(db, key, at_tx).await?;
        self.follow(db, read).await
    }

    /// A read of a reference, with the referenced key read and verified as of the tx the
    /// reference is bound to, else as of the tx the reference was read as of. A reference
    /// never names another (the server refuses to write one), so one step is all.
    async fn follow(&self, db: &str, read: VerifiedRead) -> Result<VerifiedRead> {
        let VerifiedRead::Reference {
            key,
            tx,
            referenced_key,
            bound_tx,
            at_tx,
            state_tx,
            target: None,
        } = read
        else {
            return Ok(read);
        };
        let as_of = if bound_tx == 0 { at_tx } else { bound_tx };
        let target = Box::pin(self.read_key(db, &referenced_key, as_of)).await?;
        Ok(VerifiedRead::Reference {
            key,
            tx,
            referenced_key,
            bound_tx,
            at_tx,
            state_tx,
            target: Some(Box::new(target)),
        })
    }

    /// [`VerifiedClient::get`] without following a reference.
    async fn read_key(&self, db: &str, key: &[u8], at_tx: TxId) -> Result<VerifiedRead> {
        let trusted = self.trusted(db).await;
        let trusted_tx_id = trusted.as_ref().map_or(0, |t| t.tx_id);
        let known_epoch = trusted.as_ref().map_or(0, |t| t.epoch);
        let ev = self.evidence(db, trusted);
        let ve = match self
            .client
            .data()
            .verifiable_get(wire::VerifiableGetRequest {
                database: db.to_string(),
                key: key.to_vec(),
                at_tx,
                trusted_tx_id,
                known_epoch,
            })
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) if super::is_key_not_found(&s) => {
                return Err(ev.of(TamperReason::UnprovenAbsence));
            }
            Err(s) => return Err(ev.status(s)),
        };
        self.verify_read(db, ev, &ve, key, at_tx, false).await
    }

    /// Reads the latest values of `keys` in one call (`VerifiableGetAll`), all as of one tx
    /// (the state the server answers with), each verified exactly as [`VerifiedClient::get`]
    /// verifies one; the answers come in the order of `keys`. An answer missing a key, or
    /// with keys out of order, is tamper evidence.
    pub async fn get_all(&self, db: &str, keys: &[Vec<u8>]) -> Result<Vec<VerifiedRead>> {
        let trusted = self.trusted(db).await;
        let ev = self.evidence(db, trusted.clone());
        let answer = self
            .client
            .data()
            .verifiable_get_all(wire::VerifiableGetAllRequest {
                database: db.to_string(),
                keys: keys.to_vec(),
                trusted_tx_id: trusted.as_ref().map_or(0, |t| t.tx_id),
                known_epoch: trusted.as_ref().map_or(0, |t| t.epoch),
            })
            .await
            .map_err(|e| ev.status(e))?
            .into_inner();
        if answer.entries.len() != keys.len() {
            return Err(ev.of(TamperReason::WrongAnswer));
        }
        // Every key is read as of one tx: the first answer's, which every other must share
        // (a later answer may come in a newer state, which must extend the trusted one).
        let at = answer
            .entries
            .first()
            .and_then(|e| e.at.as_ref())
            .map_or(0, |h| h.id);
        let mut out = Vec::with_capacity(keys.len());
        for (key, ve) in keys.iter().zip(&answer.entries) {
            let ev = self.evidence(db, self.trusted(db).await);
            let read = self.verify_read(db, ev, ve, key, at, false).await?;
            out.push(self.follow(db, read).await?);
        }
        Ok(out)
    }

    /// Verifies one answer of a verified read of `key` as of `at_tx`, then trusts its state.
    async fn verify_read(
        &self,
        db: &str,
        ev: Evidence<'_>,
        ve: &wire::VerifiableEntry,
        key: &[u8],
        at_tx: TxId,
        streamed: bool,
    ) -> Result<VerifiedRead> {
        let vt = ev.need(wire::required("tx", &ve.tx))?;
        let proof: MapProof =
            ev.need(wire::required("latest", &ve.latest).and_then(TryInto::try_into))?;
        let state = ev.need(wire::required("tx.state", &vt.state))?;
        if state.tx_id == 0 {
            return self.empty_read(db, state, &proof, key).await;
        }
        let at = ev.need(header(&ve.at, "at"))?;
        let at_inclusion = ev.need(wire::digests("at_inclusion", &ve.at_inclusion))?;
        let asked = if at_tx == 0 {
            state.tx_id
        } else {
            at_tx.min(state.tx_id)
        };
        if at.id != asked {
            return Err(ev.of(TamperReason::WrongTx {
                asked,
                answered: at.id,
            }));
        }
        let latest = proof
            .verify(&at.map_root, key)
            .map_err(|e| ev.of(e.into()))?;
        let entry = ve.entry.clone();
        let (entry_index, entry_path) = (ve.entry_index, ve.entry_path.clone());
        let read = match (&latest, &entry) {
            (Latest::Absent, None) => None,
            (Latest::Version(leaf), Some(e)) => {
                let meta = ev.need(wire::entry_meta(e))?;
                // A streamed value's bytes come after the proof, and only where asked for.
                let vh = if streamed && e.value_streamed {
                    wire::streamed_value_hash(e)
                } else {
                    wire::entry_value_hash(e)
                };
                let d = entry_digest(&e.key, meta, &ev.need(vh)?);
                if e.key != key
                    || meta.not_indexed
                    || e.tx != leaf.tx_id
                    || e.deleted != leaf.deleted
                    || d != leaf.entry_digest
                    || leaf.tx_id > at.id
                {
                    return Err(ev.of(TamperReason::NotLatest));
                }
                Some((e.clone(), d, meta))
            }
            (Latest::Version(_), None) => return Err(ev.of(TamperReason::UnprovenAbsence)),
            (Latest::Absent, Some(_)) => return Err(ev.of(TamperReason::NotLatest)),
        };
        let h = self
            .accept_with(db, vt, |ev, p| {
                // Tx `at` is in the same state as the tx proven.
                TxProof {
                    tx: at,
                    state: p.state,
                    path: at_inclusion,
                }
                .verify(p.state.id, &p.state.alh())
                .map_err(|e| ev.of(e.into()))?;
                match &read {
                    Some((e, d, _)) => {
                        if p.tx.id != e.tx {
                            return Err(ev.of(TamperReason::WrongAnswer));
                        }
                        EntryProof {
                            index: entry_index,
                            entry_count: p.tx.entry_count,
                            path: ev.need(wire::digests("entry_path", &entry_path))?,
                        }
                        .verify(d, &p.tx)
                        .map_err(|e| ev.of(e.into()))
                    }
                    None => Ok(()),
                }
            })
            .await?;
        let state_tx = state.tx_id;
        Ok(match read {
            None => VerifiedRead::Absent {
                at_tx: at.id,
                state_tx,
            },
            Some((e, _, _)) if e.deleted => VerifiedRead::Deleted {
                tx: h.id,
                at_tx: at.id,
                state_tx,
            },
            // Judged by this machine's clock: the proven expiry time is the server's to keep,
            // not to decide.
            Some((_, _, meta)) if meta.expired_at(now_secs()) => VerifiedRead::Expired {
                tx: h.id,
                expires_at: meta.expires_at.unwrap_or(0),
                at_tx: at.id,
                state_tx,
            },
            Some((e, _, _)) if e.value_truncated => VerifiedRead::Truncated {
                tx: h.id,
                at_tx: at.id,
                state_tx,
            },
            Some((e, _, meta)) if meta.reference => {
                let Some((target, bound)) = integrity::kv::parse_reference(&e.value) else {
                    return Err(self.evidence(db, None).of(TamperReason::WrongAnswer));
                };
                VerifiedRead::Reference {
                    key: e.key.clone(),
                    tx: h.id,
                    referenced_key: target.to_vec(),
                    bound_tx: bound,
                    at_tx: at.id,
                    state_tx,
                    target: None,
                }
            }
            Some((e, _, meta)) => VerifiedRead::Value(VerifiedEntry {
                key: e.key,
                value: e.value,
                tx: h.id,
                expires_at: meta.expires_at,
                state_tx,
            }),
        })
    }

    /// A read answered with the empty state (tx 0): trusted only when nothing newer is, and
    /// the empty map proves every key absent.
    async fn empty_read(
        &self,
        db: &str,
        state: &wire::State,
        proof: &MapProof,
        key: &[u8],
    ) -> Result<VerifiedRead> {
        let mut states = self.states.lock().await;
        let slot = self.slot(db);
        let mut ev = self.evidence(db, states.lookup(&slot));
        let (alh, _) = self.check_state(&mut ev, state)?;
        if alh != integrity::ALH_GENESIS {
            return Err(ev.of(TamperReason::WrongAnswer));
        }
        if proof
            .verify(&integrity::map::MAP_EMPTY, key)
            .map_err(|e| ev.of(e.into()))?
            != Latest::Absent
        {
            return Err(ev.of(TamperReason::NotLatest));
        }
        if ev.trusted.is_none() {
            self.trust(&mut states, slot, state, &alh, 1)?;
        }
        Ok(VerifiedRead::Absent {
            at_tx: 0,
            state_tx: 0,
        })
    }

    /// Commits `entries`, then verifies that the tx the server made holds exactly them and is
    /// in a state that extends the trusted one.
    pub async fn set(
        &self,
        db: &str,
        entries: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<integrity::TxHeader> {
        self.set_entries(db, entries.into_iter().map(Put::from).collect())
            .await
    }

    /// [`VerifiedClient::set`] of entries with their metadata: the tx must hold exactly
    /// them, metadata included (it enters each entry's digest).
    pub async fn set_entries(&self, db: &str, entries: Vec<Put>) -> Result<integrity::TxHeader> {
        let digests: Vec<Digest> = entries.iter().map(Put::digest).collect();
        let entries: Vec<wire::KeyValue> = entries.into_iter().map(Put::into_wire).collect();
        let db_name = db.to_string();
        self.verified_write(db, digests, move |mut data, trusted_tx_id, known_epoch| {
            Box::pin(async move {
                data.verifiable_set(wire::VerifiableSetRequest {
                    database: db_name,
                    entries,
                    trusted_tx_id,
                    known_epoch,
                })
                .await
            })
        })
        .await
    }

    /// Makes `key` a reference to `referenced_key` (SetReference; bound to its version as of
    /// `at_tx`, 0: unbound), then verifies that the tx holds exactly that reference.
    pub async fn set_reference(
        &self,
        db: &str,
        key: &[u8],
        referenced_key: &[u8],
        at_tx: TxId,
    ) -> Result<integrity::TxHeader> {
        let value = integrity::kv::reference_value(referenced_key, at_tx)
            .map_err(|e| ClientError::Invalid(e.to_string()))?;
        let digest = entry_digest(
            key,
            integrity::EntryMeta::REFERENCE,
            &integrity::value_hash(&value),
        );
        let request = crate::client::reference_request(db, key, referenced_key, at_tx);
        self.verified_write(
            db,
            vec![digest],
            move |mut data, trusted_tx_id, known_epoch| {
                Box::pin(async move {
                    data.verifiable_set_reference(wire::VerifiableReferenceRequest {
                        request: Some(request),
                        trusted_tx_id,
                        known_epoch,
                    })
                    .await
                })
            },
        )
        .await
    }

    /// Adds `key` to the sorted set `set` with `score` (ZAdd; bound to its version as of
    /// `at_tx`, 0: unbound), then verifies that the tx holds exactly that member.
    pub async fn zadd(
        &self,
        db: &str,
        set: &[u8],
        score: f64,
        key: &[u8],
        at_tx: TxId,
    ) -> Result<integrity::TxHeader> {
        let member = integrity::kv::zset_key(set, score, key, at_tx)
            .map_err(|e| ClientError::Invalid(e.to_string()))?;
        let digest = entry_digest(
            &member,
            integrity::EntryMeta::default(),
            &integrity::value_hash(b""),
        );
        let request = crate::client::zadd_request(db, set, score, key, at_tx);
        self.verified_write(
            db,
            vec![digest],
            move |mut data, trusted_tx_id, known_epoch| {
                Box::pin(async move {
                    data.verifiable_z_add(wire::VerifiableZAddRequest {
                        request: Some(request),
                        trusted_tx_id,
                        known_epoch,
                    })
                    .await
                })
            },
        )
        .await
    }

    /// A verified write: `call` sends it (given the trusted tx id and epoch); the tx it made
    /// must hold exactly the entries of `digests`, in a state that extends the trusted one.
    async fn verified_write(
        &self,
        db: &str,
        digests_sent: Vec<Digest>,
        call: impl FnOnce(DataClient, TxId, u64) -> WriteCall,
    ) -> Result<integrity::TxHeader> {
        let trusted = self.trusted(db).await;
        let trusted_tx_id = trusted.as_ref().map_or(0, |t| t.tx_id);
        let known_epoch = trusted.as_ref().map_or(0, |t| t.epoch);
        let ev = self.evidence(db, trusted);
        let vt = call(self.client.data(), trusted_tx_id, known_epoch)
            .await
            .map_err(|e| ev.status(e))?
            .into_inner();
        self.check_written(db, ev, &digests_sent, vt).await
    }

    /// A verified write's answer: the tx must hold exactly the entries of `digests_sent`, in
    /// a state that extends the trusted one.
    async fn check_written(
        &self,
        db: &str,
        ev: Evidence<'_>,
        digests_sent: &[Digest],
        vt: wire::VerifiableTx,
    ) -> Result<integrity::TxHeader> {
        let header =
            ev.need(wire::required("tx", &vt.tx).and_then(|t| header(&t.header, "tx.header")))?;
        if integrity::tx::entries_root(digests_sent) != header.entries_root
            || header.entry_count as usize != digests_sent.len()
        {
            return Err(ev.of(TamperReason::Entries));
        }
        self.accept(db, &vt).await
    }

    /// Writes `len` bytes read from `value` as the value of `key` (VerifiableStreamSet), a
    /// chunk at a time, hashing them as they go; then verifies that the tx holds exactly that
    /// entry, in a state that extends the trusted one.
    pub async fn stream_set(
        &self,
        db: &str,
        key: &[u8],
        meta: integrity::EntryMeta,
        value: impl std::io::Read + Send + 'static,
        len: u64,
    ) -> Result<integrity::TxHeader> {
        let trusted = self.trusted(db).await;
        let mut h = crate::client::stream::header(db, key, meta, len);
        h.trusted_tx_id = trusted.as_ref().map_or(0, |t| t.tx_id);
        h.known_epoch = trusted.as_ref().map_or(0, |t| t.epoch);
        let ev = self.evidence(db, trusted);
        let (chunks, done) = crate::client::stream::chunks(h, value);
        let answer = self.client.data().verifiable_stream_set(chunks).await;
        let vh = crate::client::stream::value_read(done).await?;
        let vt = answer.map_err(|e| ev.status(e))?.into_inner();
        let vh = vh.ok_or_else(|| ClientError::Invalid("the value was not read whole".into()))?;
        let digest = entry_digest(key, meta, &vh);
        self.check_written(db, ev, &[digest], vt).await
    }

    /// Reads the value of `key` as of `at_tx` (0: the state answered) into `out` a chunk at
    /// a time (VerifiableStreamGet): the entry is proven first, as [`VerifiedClient::get`]
    /// proves it, then the chunks must hash to its proven value hash (else tamper evidence;
    /// `out` then holds bytes that are not the value, so write to a temporary file). A
    /// [`VerifiedRead::Value`] carries an empty `value`: the value went to `out`. A reference
    /// is followed to its target, streamed the same way.
    pub async fn stream_get(
        &self,
        db: &str,
        key: &[u8],
        at_tx: TxId,
        out: &mut (impl std::io::Write + Send),
    ) -> Result<VerifiedRead> {
        let trusted = self.trusted(db).await;
        let ev = self.evidence(db, trusted.clone());
        let answer = self
            .client
            .data()
            .verifiable_stream_get(wire::VerifiableGetRequest {
                database: db.to_string(),
                key: key.to_vec(),
                at_tx,
                trusted_tx_id: trusted.as_ref().map_or(0, |t| t.tx_id),
                known_epoch: trusted.as_ref().map_or(0, |t| t.epoch),
            })
            .await;
        let mut stream = match answer {
            Ok(s) => s.into_inner(),
            Err(s) if super::is_key_not_found(&s) => {
                return Err(ev.of(TamperReason::UnprovenAbsence));
            }
            Err(s) => return Err(ev.status(s)),
        };
        let first = stream
            .message()
            .await
            .map_err(|s| ev.status(s))?
            .and_then(|m| m.verifiable);
        let ve = ev.need(wire::required("verifiable", &first))?.clone();
        let proven_hash = ve
            .entry
            .as_ref()
            .filter(|e| e.value_streamed)
            .map(wire::streamed_value_hash)
            .transpose()
            .map_err(|e| ev.of(TamperReason::Incomplete(e)))?;
        let read = self.verify_read(db, ev, &ve, key, at_tx, true).await?;
        match read {
            VerifiedRead::Value(e) => {
                let ev = self.evidence(db, self.trusted(db).await);
                let got = crate::client::stream::copy_chunks(&mut stream, out).await?;
                if Some(got) != proven_hash {
                    return Err(ev.of(TamperReason::ValueHash));
                }
                Ok(VerifiedRead::Value(e))
            }
            VerifiedRead::Reference {
                key: rkey,
                tx,
                referenced_key,
                bound_tx,
                at_tx,
                state_tx,
                target: None,
            } => {
                let as_of = if bound_tx == 0 { at_tx } else { bound_tx };
                let target = Box::pin(self.stream_get(db, &referenced_key, as_of, out)).await?;
                Ok(VerifiedRead::Reference {
                    key: rkey,
                    tx,
                    referenced_key,
                    bound_tx,
                    at_tx,
                    state_tx,
                    target: Some(Box::new(target)),
                })
            }
            other => Ok(other),
        }
    }

    /// Reads tx `id` with its entries and verifies all of it: the returned entries carry the
    /// tx id verified, whatever the answer said.
    pub async fn tx(&self, db: &str, id: TxId) -> Result<(integrity::TxHeader, Vec<wire::Entry>)> {
        let trusted = self.trusted(db).await;
        let trusted_tx_id = trusted.as_ref().map_or(0, |t| t.tx_id);
        let known_epoch = trusted.as_ref().map_or(0, |t| t.epoch);
        let ev = self.evidence(db, trusted);
        let vt = self
            .client
            .data()
            .verifiable_tx_by_id(wire::VerifiableTxByIdRequest {
                database: db.to_string(),
                id,
                trusted_tx_id,
                known_epoch,
            })
            .await
            .map_err(|e| ev.status(e))?
            .into_inner();
        let tx = ev.need(wire::required("tx", &vt.tx))?;
        let header = ev.need(header(&tx.header, "tx.header"))?;
        if header.id != id || tx.entries.iter().any(|e| e.tx != id) {
            return Err(ev.of(TamperReason::WrongAnswer));
        }
        let digests: Vec<Digest> = tx
            .entries
            .iter()
            .map(|e| {
                let vh = ev.need(wire::entry_value_hash(e))?;
                Ok(entry_digest(&e.key, ev.need(wire::entry_meta(e))?, &vh))
            })
            .collect::<Result<_>>()?;
        if integrity::tx::entries_root(&digests) != header.entries_root
            || digests.len() != header.entry_count as usize
        {
            return Err(ev.of(TamperReason::Entries));
        }
        let h = self.accept(db, &vt).await?;
        Ok((h, tx.entries.clone()))
    }

    /// Fetches the current state and verifies it, then trusts it: it must be this database's,
    /// signed when a server key is known, no older than the trusted state (tx 0 after a
    /// non-zero state is a rollback), and proven to extend it.
    pub async fn state(&self, db: &str) -> Result<TrustedState> {
        let trusted = self.trusted(db).await;
        let mut ev = self.evidence(db, trusted.clone());
        let current = self
            .client
            .data()
            .current_state(wire::CurrentStateRequest {
                database: db.to_string(),
            })
            .await
            .map_err(|e| ev.status(e))?
            .into_inner();
        let (alh, _) = self.check_state(&mut ev, &current)?;
        if current.tx_id == 0 {
            // The empty state: nothing to prove, nothing newer to trust.
            return Ok(trusted.unwrap_or(TrustedState {
                uuid: current.uuid,
                tx_id: 0,
                alh: Digest::ZERO.to_hex(),
                epoch: 1,
            }));
        }
        // A verified read of the state's own tx proves its header hashes to its Alh, and
        // carries the proof that it extends the trusted state.
        let vt = self
            .client
            .data()
            .verifiable_tx_by_id(wire::VerifiableTxByIdRequest {
                database: db.to_string(),
                id: current.tx_id,
                trusted_tx_id: trusted.as_ref().map_or(0, |t| t.tx_id),
                known_epoch: trusted.as_ref().map_or(0, |t| t.epoch),
            })
            .await
            .map_err(|e| ev.status(e))?
            .into_inner();
        let h = self.accept(db, &vt).await?;
        if h.id != current.tx_id || h.alh() != alh {
            return Err(ev.of(TamperReason::WrongAnswer));
        }
        self.trusted(db).await.ok_or(ClientError::NotLoggedIn)
    }

    /// A state of `db` that at least `k` of the `witnesses` (replicas' public keys the
    /// client trusts) cosigned: the current state is verified and trusted first (as
    /// [`VerifiedClient::state`]); then each witness's newest cosignature must verify with
    /// its key and be a state of that same history (a consistency proof either way); the
    /// answer is the newest state that `k` of them cosigned, or a later one. A witness that
    /// cosigned another history is tamper evidence (a primary showing different histories to
    /// different replicas); fewer than `k` is [`ClientError::NotCosigned`].
    pub async fn cosigned_state(
        &self,
        db: &str,
        k: usize,
        witnesses: &[ed25519_dalek::VerifyingKey],
    ) -> Result<CosignedState> {
        let trusted = self.state(db).await?;
        let trusted_alh = Digest::from_hex(&trusted.alh)
            .ok_or_else(|| state_file_error(&self.path, "bad Alh"))?;
        let mut ev = self.evidence(db, Some(trusted.clone()));
        ev.claimed_tx = trusted.tx_id;
        ev.claimed_alh = trusted_alh;
        let mut valid: Vec<(TxId, Digest, String)> = Vec::new();
        for s in self.client.cosignatures(db).await? {
            let Some(w) = witnesses
                .iter()
                .find(|w| w.to_bytes()[..] == s.public_key[..])
            else {
                continue;
            };
            let alh = Digest::from_slice_lossy(&s.alh);
            if s.uuid != trusted.uuid
                || !integrity::signing::verify_state(
                    w,
                    &s.uuid,
                    s.tx_id,
                    &alh,
                    s.timestamp_ms,
                    &s.signature,
                )
            {
                continue;
            }
            let key = integrity::hex::encode(&s.public_key);
            let (old, old_alh, new, new_alh) = if s.tx_id <= trusted.tx_id {
                (s.tx_id, alh, trusted.tx_id, trusted_alh)
            } else {
                (trusted.tx_id, trusted_alh, s.tx_id, alh)
            };
            let holds = if old == new {
                old_alh == new_alh
            } else if old == 0 {
                true
            } else {
                let p = self
                    .client
                    .data()
                    .consistency_proof(wire::ConsistencyProofRequest {
                        database: db.to_string(),
                        old_tx_id: old,
                        new_tx_id: new,
                    })
                    .await
                    .map_err(|e| ev.status(e))?
                    .into_inner();
                let p: integrity::StateProof = ev.need((&p).try_into())?;
                p.verify(old, &old_alh, new, &new_alh).is_ok()
            };
            if !holds {
                return Err(ev.of(TamperReason::ForkedWitness {
                    witness: key,
                    tx: s.tx_id,
                    alh,
                }));
            }
            valid.push((s.tx_id, alh, key));
        }
        valid.sort_by_key(|v| std::cmp::Reverse(v.0));
        if k == 0 || valid.len() < k {
            return Err(ClientError::NotCosigned {
                have: valid.len(),
                needed: k,
            });
        }
        let (tx_id, alh, _) = valid[k - 1].clone();
        Ok(CosignedState {
            tx_id,
            alh: alh.to_hex(),
            witnesses: valid[..k].iter().map(|v| v.2.clone()).collect(),
        })
    }
}

/// Seconds since the Unix epoch by this machine's clock (0 before it): what expiry times are
/// judged against.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
