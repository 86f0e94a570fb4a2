//! The Rust SDK: [`Client`] for every call of the API, and [`VerifiedClient`], which checks
//! every verified answer against the last state it trusts, with the same `integrity`
//! functions the server proves with, and keeps that state in a file.
//!
//! Depends on `integrity` and `wire` only, never on the storage engine; the state file is
//! replaced through the `fs` layer like every file chainlog writes.
#![deny(missing_docs)]

mod verified;

pub use verified::{
    read_trusted_states, CosignedState, TamperError, TamperReason, TrustedState, VerifiedClient,
    VerifiedEntry, VerifiedRead,
};

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
    /// The connection (or its TLS handshake) failed.
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
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

type Authed = InterceptedService<Channel, Bearer>;

/// A connection to a chainlog server. Cheap to clone; clones share the session.
#[derive(Clone)]
pub struct Client {
    addr: String,
    channel: Channel,
    token: Arc<RwLock<Option<String>>>,
}

impl Client {
    /// Connects to `addr` (`http://host:port`, or `https://` with `tls`).
    pub async fn connect(addr: &str, tls: Option<ClientTls>) -> Result<Client> {
        let mut ep = Endpoint::from_shared(addr.to_string())
            .map_err(|_| ClientError::Address(addr.to_string()))?;
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
            ep = ep.tls_config(cfg)?;
        }
        let channel = ep.connect().await?;
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
            .max_encoding_message_size(wire::MESSAGE_BYTES_MAX)
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
        let entries = entries
            .into_iter()
            .map(|(key, value)| wire::KeyValue { key, value })
            .collect();
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
