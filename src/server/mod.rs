//! `chainlogd`: many databases behind one gRPC endpoint, with users and permissions.
//!
//! - [`catalog`]: the databases, their identities and settings, their ledgers.
//! - [`auth`]: users (Argon2id), per-database permissions, session tokens.
//! - [`system`]: the system database, where both are recorded (and replicated).
//! - `service`: the tonic services, one file each: adapters over the two above.
//! - [`status`]: the one mapping from domain errors to gRPC statuses.
//! - `convert`: wire <-> server and ledger types.
//! - `metrics`: the metrics listener (Prometheus, health, readiness) and the request metrics.
//!
//! [`serve`] takes a bound listener and a shutdown future, so tests run the server in-process
//! or as the real binary alike.

pub mod auth;
pub mod catalog;
pub mod conn;
mod convert;
pub mod ha;
mod metrics;
pub mod retention;
mod service;
pub mod settings;
pub mod status;
pub mod system;

pub use metrics::{serve_metrics, Metrics};

use crate::fs;
use crate::wire::{
    auth_server, data_server, databases_server, replication_server, users_server,
    MESSAGE_BYTES_MAX, REQUEST_BYTES_MAX,
};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Default address of the gRPC endpoint.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3322";
/// The database every server has.
pub const DEFAULT_DATABASE: &str = "defaultdb";
/// Default lifetime of a session token.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Catalog(#[from] catalog::CatalogError),
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("closing failed for {}: their last writes failed (see the log); recovery at the next start replays them", .0.join(", "))]
    Close(Vec<String>),
}

/// TLS for the gRPC endpoint (rustls): PEM certificate chain and key, and, for mutual TLS, the
/// CA whose certificates clients must present.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub client_ca_pem: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Default `./data`.
    pub data_dir: PathBuf,
    /// The first superuser's name, default [`auth::ADMIN_USER`]. Used only at first start.
    pub admin_user: String,
    /// The first admin's password; random (and written to `<data-dir>/admin-password`) if
    /// `None`. Used only at first start.
    pub admin_password: Option<secrecy::SecretString>,
    /// Set: this whole server replicates another (its users and databases).
    pub replica: Option<catalog::ServerReplica>,
    /// States are signed when set.
    pub signing_key: Option<ed25519_dalek::SigningKey>,
    pub tls: Option<TlsConfig>,
    /// Default 24 hours.
    pub token_ttl: Duration,
    /// After a shutdown signal, how long requests in flight get to finish before their
    /// connections are dropped. Default [`DRAIN_DEFAULT`].
    pub drain: Duration,
    /// Handshake and idle limits of connections.
    pub limits: conn::Limits,
}

/// Default [`ServerConfig::drain`].
pub const DRAIN_DEFAULT: Duration = Duration::from_secs(5);

impl ServerConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> ServerConfig {
        ServerConfig {
            data_dir: data_dir.into(),
            admin_user: auth::ADMIN_USER.to_string(),
            admin_password: None,
            replica: None,
            signing_key: None,
            tls: None,
            token_ttl: DEFAULT_TOKEN_TTL,
            drain: DRAIN_DEFAULT,
            limits: conn::Limits::default(),
        }
    }
}

/// What the services share.
pub struct ServerState {
    pub catalog: Arc<catalog::Catalog>,
    pub auth: auth::Auth,
    pub signing_key: Option<ed25519_dalek::SigningKey>,
    /// Set when the server shuts down: ends the follow streams, which would otherwise keep
    /// their connections, and the shutdown, open forever.
    pub stopping: tokio::sync::watch::Sender<bool>,
    /// Set while the gRPC endpoint accepts requests (`/readyz`).
    pub ready: std::sync::atomic::AtomicBool,
    /// What `/metrics` exposes.
    pub metrics: Arc<Metrics>,
    /// When the server started (ServerInfo).
    pub started: std::time::SystemTime,
}

/// Opens (creating on first start) the data directory: the system database with the users
/// (the first superuser created) and the databases (`defaultdb` created). On a replica
/// server, users and databases come from the primary instead, and follow it
/// ([`follow_primary`]).
pub fn open(config: &ServerConfig) -> Result<Arc<ServerState>, ServerError> {
    let dir = &config.data_dir;
    fs::create_dir_all(dir)?;
    fs::remove_temps(dir)?;
    let (catalog, content, first_start) = catalog::Catalog::open(dir, config.replica.clone())?;
    let catalog = Arc::new(catalog);
    let store: auth::UserStore = {
        let catalog = catalog.clone();
        Box::new(move |changed: &[(String, Option<auth::UserRecord>)]| {
            catalog.record_users(changed).map_err(|e| match e {
                catalog::CatalogError::ReplicaServer { primary } => {
                    auth::AuthError::ReplicaServer { primary }
                }
                e => auth::AuthError::Store(e.to_string()),
            })
        })
    };
    let auth = auth::Auth::new(content.users.clone(), config.token_ttl, store)?;
    if first_start && config.replica.is_none() {
        let password = match &config.admin_password {
            Some(p) => secrecy::ExposeSecret::expose_secret(p).to_string(),
            None => {
                let p = auth::random_password();
                let path = dir.join("admin-password");
                fs::replace(&path, format!("{p}\n").as_bytes(), fs::PRIVATE_MODE)?;
                tracing::info!(user = %config.admin_user, path = %path.display(), "created the first superuser; its password is in this file (mode 0600)");
                p
            }
        };
        auth.create_first(&config.admin_user, &password)?;
        if config.admin_password.is_some() {
            tracing::info!(user = %config.admin_user, "created the first superuser with the password from CHAINLOG_ADMIN_PASSWORD");
        }
        if catalog.get(DEFAULT_DATABASE).is_err() {
            let db = catalog.create(DEFAULT_DATABASE, catalog::Settings::default())?;
            tracing::info!(database = %db.name, uuid = %db.uuid, "database created at the first start");
        }
    }
    if let Some(r) = &config.replica {
        tracing::info!(primary = %r.primary(), "this server replicates its primary: its users and databases follow the primary's");
    }
    if let Some(k) = &config.signing_key {
        catalog.set_signing_key(k.clone());
    }
    catalog.start_replicators();
    let metrics = Arc::new(Metrics::new(catalog.clone()));
    Ok(Arc::new(ServerState {
        catalog,
        ready: std::sync::atomic::AtomicBool::new(false),
        metrics,
        auth,
        signing_key: config.signing_key.clone(),
        stopping: tokio::sync::watch::Sender::new(false),
        started: std::time::SystemTime::now(),
    }))
}

/// On a replica server, for as long as it runs: each time the system database takes txs from
/// the primary's, reloads the users and takes up the databases the primary has added. Ends
/// when the server stops.
pub async fn follow_primary(state: Arc<ServerState>) {
    if state.catalog.replica_of().is_none() {
        return;
    }
    let mut stopping = state.stopping.subscribe();
    let mut seen = u64::MAX;
    loop {
        let ledger = match state.catalog.system_ledger() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "the system database is not served: users and databases stop following the primary");
                return;
            }
        };
        let mut published = ledger.subscribe();
        let now = *published.borrow_and_update();
        if now != seen {
            let s = state.clone();
            let read = tokio::task::spawn_blocking(move || {
                let content = system::read(&ledger)?;
                s.auth.reload(content.users.clone());
                s.catalog.follow(&content);
                Ok::<_, system::SystemError>(())
            })
            .await;
            match read {
                Ok(Ok(())) => seen = now,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "reading the replicated system database failed")
                }
                Err(e) => {
                    tracing::error!(error = %e, "reading the replicated system database failed")
                }
            }
        }
        tokio::select! {
            _ = published.changed() => {}
            // The ledger is replaced by a refresh or a reopen: look again.
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
    }
}

/// Serves the gRPC API on `listener` until `shutdown` resolves, then stops accepting, ends
/// the follow streams and the synchronous-commit waits, and gives the requests in flight
/// `config.drain` to finish; connections still open after it are dropped. Then every
/// database is closed (checkpoint and fsync): every acknowledged commit is durable whatever
/// the peers do. Fails if a database could not be closed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ServerState>,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let svc = service::Service {
        state: state.clone(),
    };
    // The listener is bound: connections wait in its backlog until the services below run.
    state
        .ready
        .store(true, std::sync::atomic::Ordering::Release);
    let (health_reporter, health) = tonic_health::server::health_reporter();
    set_health(&health_reporter, tonic_health::ServingStatus::Serving).await;
    let reflection_error = |e: tonic_reflection::server::Error| ServerError::Config {
        path: PathBuf::from("proto"),
        reason: e.to_string(),
    };
    // Both versions of reflection: v1alpha is what Python's stock client, Postman and older
    // grpcurl ask for.
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::wire::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(reflection_error)?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::wire::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(reflection_error)?;
    let gzip = tonic::codec::CompressionEncoding::Gzip;
    let mut builder = tonic::transport::Server::builder()
        // A peer that stops answering (frozen, or gone without a FIN) is found by pings.
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT));
    if let Some(t) = &config.tls {
        let mut cfg = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                &t.cert_pem,
                &t.key_pem,
            ))
            .timeout(config.limits.handshake);
        if let Some(ca) = &t.client_ca_pem {
            cfg = cfg.client_ca_root(tonic::transport::Certificate::from_pem(ca));
        }
        builder = builder.tls_config(cfg)?;
    }
    let mut stopping = state.stopping.subscribe();
    if let Ok(a) = listener.local_addr() {
        state.catalog.set_advertise(a.to_string());
    }
    tokio::spawn(follow_primary(state.clone()));
    tokio::spawn(retention::run(
        state.catalog.clone(),
        state.stopping.subscribe(),
    ));
    let serving = builder
        .layer(conn::ConnLayer)
        .layer(metrics::RequestLayer {
            metrics: state.metrics.clone(),
        })
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(auth_server::AuthServer::new(svc.clone()).accept_compressed(gzip))
        .add_service(users_server::UsersServer::new(svc.clone()).accept_compressed(gzip))
        .add_service(databases_server::DatabasesServer::new(svc.clone()).accept_compressed(gzip))
        .add_service(
            replication_server::ReplicationServer::new(svc.clone())
                .accept_compressed(gzip)
                .max_decoding_message_size(MESSAGE_BYTES_MAX)
                .max_encoding_message_size(MESSAGE_BYTES_MAX),
        )
        .add_service(
            data_server::DataServer::new(svc)
                .accept_compressed(gzip)
                .max_decoding_message_size(REQUEST_BYTES_MAX)
                .max_encoding_message_size(MESSAGE_BYTES_MAX),
        )
        .serve_with_incoming_shutdown(conn::accept(listener, config.limits), {
            let state = state.clone();
            async move {
                shutdown.await;
                state
                    .ready
                    .store(false, std::sync::atomic::Ordering::Release);
                set_health(&health_reporter, tonic_health::ServingStatus::NotServing).await;
                // End the follow streams, the synchronous-commit waits and the replicators,
                // or the connections they hold would keep the shutdown waiting.
                state.stopping.send_replace(true);
                state.catalog.stop_replicators();
            }
        });
    let drain = config.drain;
    let result = tokio::select! {
        r = serving => r.map_err(ServerError::from),
        () = async {
            let _ = stopping.wait_for(|s| *s).await;
            tokio::time::sleep(drain).await;
        } => {
            tracing::warn!(drain_ms = drain.as_millis() as u64, "connections still open after the drain deadline are closed");
            Ok(())
        }
    };
    let closing = state.clone();
    let failed = tokio::task::spawn_blocking(move || closing.catalog.close())
        .await
        .unwrap_or_else(|_| vec!["(the close task failed)".to_string()]);
    result?;
    if !failed.is_empty() {
        return Err(ServerError::Close(failed));
    }
    Ok(())
}

/// Sets the health of the whole server ("") and of each of its services to `status`.
async fn set_health(
    reporter: &tonic_health::server::HealthReporter,
    status: tonic_health::ServingStatus,
) {
    for name in [
        "",
        auth_server::SERVICE_NAME,
        users_server::SERVICE_NAME,
        databases_server::SERVICE_NAME,
        replication_server::SERVICE_NAME,
        data_server::SERVICE_NAME,
    ] {
        reporter.set_service_status(name, status).await;
    }
}

/// How often the server pings an HTTP/2 connection, and how long it waits for the answer.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads an Ed25519 signing key: a file holding the 32-byte seed, raw or as 64 hex characters.
pub fn read_signing_key(path: &Path) -> Result<ed25519_dalek::SigningKey, ServerError> {
    let bad = |reason: &str| ServerError::Config {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let bytes = std::fs::read(path).map_err(|e| bad(&e.to_string()))?;
    let text = String::from_utf8_lossy(&bytes);
    let seed: [u8; 32] = if bytes.len() == 32 {
        bytes
            .as_slice()
            .try_into()
            .map_err(|_| bad("not 32 bytes"))?
    } else {
        crate::integrity::Digest::from_hex(text.trim())
            .ok_or_else(|| bad("expected a 32-byte seed, raw or as 64 hex characters"))?
            .0
    };
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}

impl From<crate::fs::FsError> for ServerError {
    fn from(e: crate::fs::FsError) -> ServerError {
        ServerError::Storage(e.into())
    }
}
