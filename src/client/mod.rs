//! The Rust SDK: [`Client`] for every call of the API, and [`VerifiedClient`], which checks
//! every verified answer against the last state it trusts, with the same `integrity`
//! functions the server proves with, and keeps that state in a file.
//!
//! Never touches `storage`: the state file is written here, with its own atomic replace.

mod verified;

pub use verified::{TamperError, TrustedState, VerifiedClient, VerifiedEntry};

use crate::wire::{
    self, auth_client, data_client, databases_client, replication_client, users_client,
};
use std::sync::{Arc, RwLock};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid address {0:?}")]
    Address(String),
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] Status),
    #[error("malformed answer: {0}")]
    Wire(#[from] wire::WireError),
    #[error("verification failed: {0}")]
    Tamper(Box<TamperError>),
    #[error("state file {path}: {reason}")]
    StateFile {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("not logged in")]
    NotLoggedIn,
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// TLS for the connection: the CA that signed the server's certificate (else the system's
/// roots are not used: give one), and a client certificate for mutual TLS.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    pub ca_pem: Option<Vec<u8>>,
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

    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn bearer(&self) -> Bearer {
        Bearer(self.token.clone())
    }

    pub fn auth(&self) -> auth_client::AuthClient<Authed> {
        auth_client::AuthClient::with_interceptor(self.channel.clone(), self.bearer())
    }

    pub fn users(&self) -> users_client::UsersClient<Authed> {
        users_client::UsersClient::with_interceptor(self.channel.clone(), self.bearer())
    }

    pub fn databases(&self) -> databases_client::DatabasesClient<Authed> {
        databases_client::DatabasesClient::with_interceptor(self.channel.clone(), self.bearer())
    }

    /// The data service, with message limits that fit the largest transaction.
    pub fn data(&self) -> data_client::DataClient<Authed> {
        data_client::DataClient::with_interceptor(self.channel.clone(), self.bearer())
            .max_decoding_message_size(wire::MESSAGE_BYTES_MAX)
            .max_encoding_message_size(wire::MESSAGE_BYTES_MAX)
    }

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

    pub async fn history(&self, req: wire::HistoryRequest) -> Result<Vec<wire::Entry>> {
        Ok(self.data().history(req).await?.into_inner().entries)
    }

    pub async fn scan(&self, req: wire::ScanRequest) -> Result<Vec<wire::Entry>> {
        Ok(self.data().scan(req).await?.into_inner().entries)
    }

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

    pub async fn current_state(&self, db: &str) -> Result<wire::State> {
        Ok(self
            .data()
            .current_state(wire::CurrentStateRequest {
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
