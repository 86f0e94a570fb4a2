//! The Rust SDK: [`Client`] for every call of the API, and [`VerifiedClient`], which checks
//! every verified answer against the last state it trusts, with the same `integrity`
//! functions the server proves with, and keeps that state in a file.
//!
//! Depends on `integrity` and `wire` only, never on the storage engine; the state file is
//! replaced through the `fs` layer like every file chainlog writes.
#![deny(missing_docs)]

mod stream;
mod verified;
mod write_stream;

pub use verified::{
    read_trusted_states, CosignedState, TamperError, TamperReason, TrustedState, VerifiedClient,
    VerifiedEntry, VerifiedRead,
};
pub use write_stream::{PendingWrite, WriteStream};

use crate::integrity;
use crate::wire::{
    self, auth_client, data_client, databases_client, replication_client, users_client,
};
use std::sync::{Arc, RwLock};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

/// Why an SDK call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address does not parse as a URL.
    #[error("invalid address {0:?}")]
    Address(String),
    /// The connection (or its TLS handshake) failed; the message says what failed (refused,
    /// unreachable, timed out, a certificate not trusted, a client certificate required…).
    #[error("cannot connect to {addr}: {cause}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// What failed, from the innermost error out.
        cause: String,
    },
    /// The server answered with an error status (its [`wire::Reason`] tells conditions apart).
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] Status),
    /// The answer does not decode into what it should carry.
    #[error("malformed answer: {0}")]
    Wire(#[from] wire::WireError),
    /// A verified answer does not prove itself against the trusted state: evidence.
    #[error("verification failed: {0}")]
    Tamper(Box<TamperError>),
    /// The trusted-state file cannot be read or written.
    #[error("state file {path}: {reason}")]
    StateFile {
        /// The file.
        path: std::path::PathBuf,
        /// What failed.
        reason: String,
    },
    /// A request that cannot be made as asked (a reference or a sorted-set member that does
    /// not encode); nothing was sent.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Reading a value to send, or writing one received, failed.
    #[error("{0}")]
    Io(String),
    /// A call that needs a session was made before [`Client::login`].
    #[error("not logged in")]
    NotLoggedIn,
    /// Fewer of the trusted witnesses cosigned a state than asked for.
    #[error("only {have} of the {needed} witnesses asked for cosigned a state of this database")]
    NotCosigned {
        /// Witnesses whose cosignature verified.
        have: usize,
        /// How many were asked for.
        needed: usize,
    },
}

/// The SDK's result type.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// How long a connection and a call may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP connect and the TLS handshake. Default 10 s.
    pub connect: std::time::Duration,
    /// Each unary call, from sending to the whole answer (`None`: no limit; streams are never
    /// limited). Default none.
    pub request: Option<std::time::Duration>,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: std::time::Duration::from_secs(10),
            request: None,
        }
    }
}

/// What a connection failure was, in words: the innermost cause, with a hint for the common
/// ones (the transport's own message is "transport error").
fn describe_connect_error(addr: &str, e: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = Vec::new();
    let mut io_kind = None;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            io_kind.get_or_insert(io.kind());
        }
        let text = err.to_string();
        if !chain.iter().any(|c: &String| c.contains(&text)) {
            chain.push(text);
        }
        cur = err.source();
    }
    let detail = chain
        .iter()
        .rev()
        .find(|c| *c != "transport error")
        .cloned()
        .unwrap_or_else(|| "transport error".into());
    let lower = chain.join(" ").to_lowercase();
    let hint = if lower.contains("timeout expired")
        || lower.contains("timed out")
        || lower.contains("deadline")
    {
        "no answer in time: is the host up, and does the port speak gRPC? (--connect-timeout, --timeout)"
    } else if lower.contains("unknownissuer")
        || lower.contains("unknown issuer")
        || lower.contains("badsignature")
        || lower.contains("invalid peer certificate")
    {
        "the server's certificate is not signed by a CA given with --tls-ca"
    } else if lower.contains("notvalidforname") || lower.contains("not valid for name") {
        "the server's certificate does not name this host"
    } else if lower.contains("certexpired")
        || lower.contains("certificate expired")
        || lower.contains("notvalidyet")
    {
        "the server's certificate has expired (or is not yet valid)"
    } else if lower.contains("certificate required") || lower.contains("certificaterequired") {
        "the server requires a client certificate: give --tls-cert and --tls-key"
    } else if lower.contains("invalidcontenttype")
        || lower.contains("corrupt message")
        || lower.contains("invalid content type")
    {
        "the server did not answer with TLS: use an http:// address for a plain server"
    } else if lower.contains("frame with invalid size")
        || lower.contains("invalid http version")
        || lower.contains("connection reset") && addr.starts_with("http://")
    {
        "the port may speak TLS: use an https:// address with --tls-ca"
    } else {
        match io_kind {
            Some(std::io::ErrorKind::ConnectionRefused) => {
                "connection refused: is chainlogd running and listening on that port?"
            }
            Some(std::io::ErrorKind::HostUnreachable | std::io::ErrorKind::NetworkUnreachable) => {
                "no route to the host"
            }
            Some(std::io::ErrorKind::TimedOut) => "timed out: is the host up, and the port open?",
            Some(std::io::ErrorKind::ConnectionReset) => "the server closed the connection",
            _ => "",
        }
    };
    if hint.is_empty() {
        detail
    } else {
        format!("{hint} ({detail})")
    }
}

/// What failed, when a call's status comes from the connection rather than the server (a
/// TLS alert after the handshake, a reset, a closed connection): `None` for the server's own
/// answers.
pub fn transport_failure(status: &Status) -> Option<String> {
    if let Some(source) = std::error::Error::source(status) {
        return Some(describe_connect_error("", source));
    }
    (status.code() == tonic::Code::Cancelled && status.message().contains("operation was cancel"))
        .then(|| {
            "the connection closed before the answer (a server that requires a client certificate: give --tls-cert and --tls-key; or a server shutting down)".to_string()
        })
}

/// One entry to write, with its metadata (proto `KVMetadata`; docs/format.md, "Entry
/// metadata").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    /// The key (1 to 1024 bytes).
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// Its metadata (`deleted` is never set on a put).
    pub meta: integrity::EntryMeta,
}

impl Put {
    /// An ordinary entry: indexed, never expires.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Put {
        Put {
            key: key.into(),
            value: value.into(),
            meta: integrity::EntryMeta::default(),
        }
    }

    /// Expires at `expires_at` (seconds since the Unix epoch): reads by key treat it as
    /// absent from then on.
    #[must_use]
    pub fn expiring_at(mut self, expires_at: u64) -> Put {
        self.meta.expires_at = Some(expires_at);
        self
    }

    /// Left out of the key index: in its tx and its proofs, never read by key.
    #[must_use]
    pub fn not_indexed(mut self) -> Put {
        self.meta.not_indexed = true;
        self
    }

    /// The digest the entry will have in its tx.
    pub fn digest(&self) -> integrity::Digest {
        integrity::entry_digest(&self.key, self.meta, &integrity::value_hash(&self.value))
    }

    /// The entry as `SetRequest` carries it.
    pub fn into_wire(self) -> wire::KeyValue {
        wire::KeyValue {
            key: self.key,
            value: self.value,
            metadata: wire::metadata_wire(self.meta),
        }
    }
}

impl From<(Vec<u8>, Vec<u8>)> for Put {
    fn from((key, value): (Vec<u8>, Vec<u8>)) -> Put {
        Put::new(key, value)
    }
}

/// TLS for the connection: the CA that signed the server's certificate (else the system's
/// roots are not used: give one), and a client certificate for mutual TLS.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// PEM of the CA that signed the server's certificate.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM certificate chain and key presented to a server that requires mutual TLS.
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// The name to check the server's certificate against; the host of the address if unset.
    pub domain: Option<String>,
}
/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(Arc<RwLock<Option<String>>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let token = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(t) = token {
            let v = format!("Bearer {t}")
                .parse()
                .map_err(|_| Status::internal("token is not ASCII"))?;
            req.metadata_mut().insert("authorization", v);
        }
        Ok(req)
    }
}

pub(crate) type Authed = InterceptedService<Channel, Bearer>;

/// A connection to a chainlog server. Cheap to clone; clones share the session.
#[derive(Clone)]
pub struct Client {
    addr: String,
    channel: Channel,
    token: Arc<RwLock<Option<String>>>,
}

impl Client {
    /// Connects to `addr` (`http://host:port`, or `https://` with `tls`), with the default
    /// [`Timeouts`].
    pub async fn connect(addr: &str, tls: Option<ClientTls>) -> Result<Client> {
        Client::connect_with(addr, tls, Timeouts::default()).await
    }

    /// [`Client::connect`] with `timeouts`.
    pub async fn connect_with(
        addr: &str,
        tls: Option<ClientTls>,
        timeouts: Timeouts,
    ) -> Result<Client> {
        let connect_error = |e: tonic::transport::Error| ClientError::Connect {
            addr: addr.to_string(),
            cause: describe_connect_error(addr, &e),
        };
        let mut ep = Endpoint::from_shared(addr.to_string())
            .map_err(|_| ClientError::Address(addr.to_string()))?
            .connect_timeout(timeouts.connect);
        if let Some(t) = timeouts.request {
            ep = ep.timeout(t);
        }
        if let Some(t) = tls {
            let mut cfg = tonic::transport::ClientTlsConfig::new();
            if let Some(ca) = &t.ca_pem {
                cfg = cfg.ca_certificate(tonic::transport::Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &t.identity_pem {
                cfg = cfg.identity(tonic::transport::Identity::from_pem(cert, key));
            }
            if let Some(d) = &t.domain {
                cfg = cfg.domain_name(d.clone());
            }
            ep = ep.tls_config(cfg).map_err(connect_error)?;
        }
        // The connect timeout covers the TCP connect; the handshakes after it are bounded
        // by the same time here.
        let channel = match tokio::time::timeout(timeouts.connect * 2, ep.connect()).await {
            Ok(c) => c.map_err(connect_error)?,
            Err(_) => {
                return Err(ClientError::Connect {
                    addr: addr.to_string(),
                    cause: format!(
                        "no answer within {:?}: is the host up, and does the port speak gRPC?",
                        timeouts.connect * 2
                    ),
                })
            }
        };
        Ok(Client {
            addr: addr.to_string(),
            channel,
            token: Arc::new(RwLock::new(None)),
        })
    }

    /// The address this client connected to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn bearer(&self) -> Bearer {
        Bearer(self.token.clone())
    }

    /// The raw `Auth` service stub (prefer [`Client::login`] and [`Client::logout`]).
    pub fn auth(&self) -> auth_client::AuthClient<Authed> {
        auth_client::AuthClient::with_interceptor(self.channel.clone(), self.bearer())
    }

    /// The raw `Users` service stub (prefer the typed calls below).
    pub fn users(&self) -> users_client::UsersClient<Authed> {
        users_client::UsersClient::with_interceptor(self.channel.clone(), self.bearer())
    }

    /// The raw `Databases` service stub (prefer the typed calls below).
    pub fn databases(&self) -> databases_client::DatabasesClient<Authed> {
        databases_client::DatabasesClient::with_interceptor(self.channel.clone(), self.bearer())
    }

    /// The raw `Data` service stub, with message limits that fit the largest transaction.
    pub fn data(&self) -> data_client::DataClient<Authed> {
        data_client::DataClient::with_interceptor(self.channel.clone(), self.bearer())
            .max_decoding_message_size(wire::MESSAGE_BYTES_MAX)
            .max_encoding_message_size(wire::REQUEST_BYTES_MAX)
    }

    /// The raw `Replication` service stub (follow, export and push streams), with message
    /// limits that fit the largest transaction.
    pub fn replication(&self) -> replication_client::ReplicationClient<Authed> {
        replication_client::ReplicationClient::with_interceptor(self.channel.clone(), self.bearer())
            .max_decoding_message_size(wire::MESSAGE_BYTES_MAX)
            .max_encoding_message_size(wire::MESSAGE_BYTES_MAX)
    }

    /// Logs in; later calls carry the session token.
    pub async fn login(&self, user: &str, password: &str) -> Result<wire::LoginResponse> {
        let r = self
            .auth()
            .login(wire::LoginRequest {
                user: user.to_string(),
                password: password.to_string(),
            })
            .await?
            .into_inner();
        *self
            .token
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(r.token.clone());
        Ok(r)
    }

    /// The session token, after [`Client::login`] (to keep and give to
    /// [`Client::use_token`] later, as `chainlog login` does).
    pub fn token(&self) -> Option<String> {
        self.token
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Uses a session token from an earlier login instead of logging in.
    pub fn use_token(&self, token: String) {
        *self
            .token
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(token);
    }

    /// Revokes the session token; later calls are unauthenticated.
    pub async fn logout(&self) -> Result<()> {
        self.auth().logout(wire::LogoutRequest {}).await?;
        *self
            .token
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        Ok(())
    }

    /// Commits `entries` (key, value) in one transaction.
    pub async fn set(&self, db: &str, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<wire::TxHeader> {
        self.set_entries(db, entries.into_iter().map(Put::from).collect())
            .await
    }

    /// Commits `entries`, each with its metadata (expiry, left out of the index), in one
    /// transaction.
    pub async fn set_entries(&self, db: &str, entries: Vec<Put>) -> Result<wire::TxHeader> {
        let entries = entries.into_iter().map(Put::into_wire).collect();
        Ok(self
            .data()
            .set(wire::SetRequest {
                database: db.to_string(),
                entries,
            })
            .await?
            .into_inner())
    }

    /// The latest value of `key`; `None` if absent or deleted.
    pub async fn get(&self, db: &str, key: &[u8]) -> Result<Option<wire::Entry>> {
        self.get_with(wire::GetRequest {
            database: db.to_string(),
            key: key.to_vec(),
            ..Default::default()
        })
        .await
    }

    /// A Get with every option (as of a tx, or after waiting for one).
    pub async fn get_with(&self, req: wire::GetRequest) -> Result<Option<wire::Entry>> {
        match self.data().get(req).await {
            Ok(r) => Ok(Some(r.into_inner())),
            Err(s) if is_key_not_found(&s) => Ok(None),
            Err(s) => Err(s.into()),
        }
    }

    /// Logically deletes `keys` in one transaction (each must be live).
    pub async fn delete(&self, db: &str, keys: Vec<Vec<u8>>) -> Result<wire::TxHeader> {
        Ok(self
            .data()
            .delete(wire::DeleteRequest {
                database: db.to_string(),
                keys,
            })
            .await?
            .into_inner())
    }

    /// Versions of a key, deletes included (paged by offset and limit).
    pub async fn history(&self, req: wire::HistoryRequest) -> Result<Vec<wire::Entry>> {
        Ok(self.data().history(req).await?.into_inner().entries)
    }

    /// Live keys under a prefix (paged by `after` and limit).
    pub async fn scan(&self, req: wire::ScanRequest) -> Result<Vec<wire::Entry>> {
        Ok(self.data().scan(req).await?.into_inner().entries)
    }

    /// Tx `id` with its entries, unverified (see [`VerifiedClient::tx`]).
    pub async fn tx(&self, db: &str, id: u64) -> Result<wire::Tx> {
        Ok(self
            .data()
            .tx_by_id(wire::TxByIdRequest {
                database: db.to_string(),
                id,
            })
            .await?
            .into_inner())
    }

    /// The database's current state as the server claims it, unverified (see
    /// [`VerifiedClient::state`]).
    pub async fn current_state(&self, db: &str) -> Result<wire::State> {
        Ok(self
            .data()
            .current_state(wire::CurrentStateRequest {
                database: db.to_string(),
            })
            .await?
            .into_inner())
    }

    /// Creates database `name` (superuser). Unset settings take their defaults.
    pub async fn create_database(
        &self,
        name: &str,
        settings: wire::DatabaseSettings,
    ) -> Result<wire::DatabaseInfo> {
        Ok(self
            .databases()
            .create_database(wire::CreateDatabaseRequest {
                name: name.to_string(),
                settings: Some(settings),
            })
            .await?
            .into_inner())
    }

    /// The databases the caller has a permission on (all, for a superuser).
    pub async fn list_databases(&self) -> Result<Vec<wire::DatabaseInfo>> {
        Ok(self
            .databases()
            .list_databases(wire::ListDatabasesRequest {})
            .await?
            .into_inner()
            .databases)
    }

    /// Changes the settings of database `name` that `settings` sets (admin of it); applied
    /// without a restart.
    pub async fn update_database(
        &self,
        name: &str,
        settings: wire::DatabaseSettings,
    ) -> Result<wire::DatabaseInfo> {
        Ok(self
            .databases()
            .update_database(wire::UpdateDatabaseRequest {
                name: name.to_string(),
                settings: Some(settings),
            })
            .await?
            .into_inner())
    }

    /// One tx of puts and deletes, committed only if every precondition holds (see
    /// `ExecAll` in the proto): compare-and-set with
    /// `KeyNotModifiedAfterTx { key, tx_id }`.
    pub async fn exec_all(
        &self,
        db: &str,
        operations: Vec<wire::Op>,
        preconditions: Vec<wire::Precondition>,
    ) -> Result<wire::TxHeader> {
        Ok(self
            .data()
            .exec_all(wire::ExecAllRequest {
                database: db.to_string(),
                operations,
                preconditions,
            })
            .await?
            .into_inner())
    }

    /// Makes `key` a reference to `referenced_key` (bound to its version as of `at_tx`; 0:
    /// unbound): reads of `key` answer with the referenced key's version.
    pub async fn set_reference(
        &self,
        db: &str,
        key: &[u8],
        referenced_key: &[u8],
        at_tx: u64,
    ) -> Result<wire::TxHeader> {
        Ok(self
            .data()
            .set_reference(reference_request(db, key, referenced_key, at_tx))
            .await?
            .into_inner())
    }

    /// Adds `key` to the sorted set `set` with `score` (bound to its version as of `at_tx`;
    /// 0: unbound).
    pub async fn zadd(
        &self,
        db: &str,
        set: &[u8],
        score: f64,
        key: &[u8],
        at_tx: u64,
    ) -> Result<wire::TxHeader> {
        Ok(self
            .data()
            .z_add(zadd_request(db, set, score, key, at_tx))
            .await?
            .into_inner())
    }

    /// Members of a sorted set by score (see `ZScanRequest` for the fields).
    pub async fn zscan(&self, req: wire::ZScanRequest) -> Result<wire::ZScanResponse> {
        Ok(self.data().z_scan(req).await?.into_inner())
    }

    /// The latest values of `keys`, all as of one tx (`at_tx`, 0: the last).
    pub async fn get_all(
        &self,
        db: &str,
        keys: Vec<Vec<u8>>,
        at_tx: u64,
    ) -> Result<wire::GetAllResponse> {
        Ok(self
            .data()
            .get_all(wire::GetAllRequest {
                database: db.to_string(),
                keys,
                at_tx,
            })
            .await?
            .into_inner())
    }

    /// Txs with their entries from `initial_tx` on (or down, with `desc`).
    pub async fn tx_scan(&self, req: wire::TxScanRequest) -> Result<Vec<wire::Tx>> {
        Ok(self.data().tx_scan(req).await?.into_inner().txs)
    }

    /// Live keys under `prefix` as of `at_tx` (0: latest).
    pub async fn count(&self, db: &str, prefix: &[u8], at_tx: u64) -> Result<wire::CountResponse> {
        Ok(self
            .data()
            .count(wire::CountRequest {
                database: db.to_string(),
                prefix: prefix.to_vec(),
                at_tx,
            })
            .await?
            .into_inner())
    }

    /// Deletes database `name` and its files (superuser); `force` even while replicas
    /// follow it.
    pub async fn delete_database(&self, name: &str, force: bool) -> Result<()> {
        self.databases()
            .delete_database(wire::DeleteDatabaseRequest {
                name: name.to_string(),
                force,
            })
            .await?;
        Ok(())
    }

    /// Closes database `name` until [`Client::load_database`] (superuser).
    pub async fn unload_database(&self, name: &str) -> Result<wire::DatabaseInfo> {
        Ok(self
            .databases()
            .unload_database(wire::UnloadDatabaseRequest {
                name: name.to_string(),
            })
            .await?
            .into_inner())
    }

    /// Opens an unloaded database again (superuser).
    pub async fn load_database(&self, name: &str) -> Result<wire::DatabaseInfo> {
        Ok(self
            .databases()
            .load_database(wire::LoadDatabaseRequest {
                name: name.to_string(),
            })
            .await?
            .into_inner())
    }

    /// The server's version, uptime and role.
    pub async fn server_info(&self) -> Result<wire::ServerInfoResponse> {
        Ok(self
            .databases()
            .server_info(wire::ServerInfoRequest {})
            .await?
            .into_inner())
    }

    /// Deactivates (`active` false) or reactivates user `name` (superuser).
    pub async fn set_active_user(&self, name: &str, active: bool) -> Result<wire::User> {
        Ok(self
            .users()
            .set_active_user(wire::SetActiveUserRequest {
                name: name.to_string(),
                active,
            })
            .await?
            .into_inner())
    }

    /// Deletes user `name` (superuser).
    pub async fn delete_user(&self, name: &str) -> Result<()> {
        self.users()
            .delete_user(wire::DeleteUserRequest {
                name: name.to_string(),
            })
            .await?;
        Ok(())
    }

    /// Makes user `name` a superuser or demotes it (superuser).
    pub async fn set_superuser(&self, name: &str, superuser: bool) -> Result<wire::User> {
        Ok(self
            .users()
            .set_superuser(wire::SetSuperuserRequest {
                name: name.to_string(),
                superuser,
            })
            .await?
            .into_inner())
    }

    /// Drops the values of old txs of database `name` (admin of it): see `TruncateDatabase`
    /// in the proto.
    pub async fn truncate_database(
        &self,
        req: wire::TruncateDatabaseRequest,
    ) -> Result<wire::TruncateDatabaseResponse> {
        Ok(self.databases().truncate_database(req).await?.into_inner())
    }

    /// Wipes replica `name`'s data and copies its primary's again (admin of it).
    pub async fn refresh_database(&self, name: &str) -> Result<wire::DatabaseInfo> {
        Ok(self
            .databases()
            .refresh_database(wire::RefreshDatabaseRequest {
                name: name.to_string(),
            })
            .await?
            .into_inner())
    }

    /// Closes and opens database `name` again (admin of it), running recovery: for one whose
    /// writes failed, or one the server lists as unavailable. `accept_tx_loss` (superuser)
    /// lets recovery cut txs the log lost although the derived files show them committed.
    pub async fn reopen_database(
        &self,
        name: &str,
        accept_tx_loss: bool,
    ) -> Result<wire::DatabaseInfo> {
        Ok(self
            .databases()
            .reopen_database(wire::ReopenDatabaseRequest {
                name: name.to_string(),
                accept_tx_loss,
            })
            .await?
            .into_inner())
    }

    /// Creates user `name` (superuser).
    pub async fn create_user(
        &self,
        name: &str,
        password: &str,
        superuser: bool,
    ) -> Result<wire::User> {
        Ok(self
            .users()
            .create_user(wire::CreateUserRequest {
                name: name.to_string(),
                password: password.to_string(),
                superuser,
            })
            .await?
            .into_inner())
    }

    /// Every user with their permissions (superuser).
    pub async fn list_users(&self) -> Result<Vec<wire::User>> {
        Ok(self
            .users()
            .list_users(wire::ListUsersRequest {})
            .await?
            .into_inner()
            .users)
    }

    /// Changes `name`'s password: one's own with the old password, anyone's as superuser.
    pub async fn change_password(&self, name: &str, old: &str, new: &str) -> Result<()> {
        self.users()
            .change_password(wire::ChangePasswordRequest {
                name: name.to_string(),
                old_password: old.to_string(),
                new_password: new.to_string(),
            })
            .await?;
        Ok(())
    }

    /// Grants `user` a permission on database `db` (admin of it), replacing any other.
    pub async fn grant(
        &self,
        user: &str,
        db: &str,
        permission: wire::Permission,
    ) -> Result<wire::User> {
        Ok(self
            .users()
            .grant(wire::GrantRequest {
                user: user.to_string(),
                database: db.to_string(),
                permission: permission as i32,
            })
            .await?
            .into_inner())
    }

    /// Revokes `user`'s permission on database `db` (admin of it).
    pub async fn revoke(&self, user: &str, db: &str) -> Result<wire::User> {
        Ok(self
            .users()
            .revoke(wire::RevokeRequest {
                user: user.to_string(),
                database: db.to_string(),
            })
            .await?
            .into_inner())
    }

    /// The replication state of database `db`: on a replica its replicator, on a primary its
    /// connected replicas.
    /// The newest state each replica with a signing key cosigned for `db`, unchecked
    /// ([`VerifiedClient::cosigned_state`] checks them).
    pub async fn cosignatures(&self, db: &str) -> Result<Vec<wire::State>> {
        Ok(self
            .replication()
            .cosignatures(wire::CosignaturesRequest {
                database: db.to_string(),
            })
            .await?
            .into_inner()
            .cosigned)
    }

    /// The replication state of `db`.
    pub async fn replication_status(&self, db: &str) -> Result<wire::ReplicationStatusResponse> {
        Ok(self
            .replication()
            .replication_status(wire::ReplicationStatusRequest {
                database: db.to_string(),
            })
            .await?
            .into_inner())
    }
}

/// Whether a status says the key is absent (not the database).
pub fn is_key_not_found(s: &Status) -> bool {
    wire::Reason::of(s) == Some(wire::Reason::KeyNotFound)
}

/// A SetReference request.
pub fn reference_request(
    db: &str,
    key: &[u8],
    referenced_key: &[u8],
    at_tx: u64,
) -> wire::ReferenceRequest {
    wire::ReferenceRequest {
        database: db.to_string(),
        key: key.to_vec(),
        referenced_key: referenced_key.to_vec(),
        at_tx,
    }
}

/// A ZAdd request.
pub fn zadd_request(db: &str, set: &[u8], score: f64, key: &[u8], at_tx: u64) -> wire::ZAddRequest {
    wire::ZAddRequest {
        database: db.to_string(),
        set: set.to_vec(),
        score,
        key: key.to_vec(),
        at_tx,
    }
}
