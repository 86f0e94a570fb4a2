//! The gRPC services: decode the request, check the caller, call the ledger, encode the
//! answer. No logic of their own beyond that.

use super::auth::{AuthError, Permission};
use super::catalog::{CatalogError, Database, Settings};
use super::error::{blocking, offload, status_of};
use super::ServerState;
use crate::index::Order;
use crate::integrity::{signing, Digest, TxId};
use crate::ledger::{KeyValue, LedgerError, NewEntry};
use crate::proto::{
    self, auth_server, data_server, databases_server, replication_server, users_server,
};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::{Request, Response, Status};

/// Txs streamed to a replica or an export.
type TxStream = tokio_stream::wrappers::ReceiverStream<Result<proto::FollowResponse, Status>>;

/// Most results one History or Scan call returns.
pub const PAGE_LIMIT_MAX: u32 = 1000;
/// Longest a Get may wait for a tx.
pub const WAIT_MS_MAX: u64 = 60_000;

fn auth_status(e: AuthError) -> Status {
    match e {
        AuthError::BadCredentials | AuthError::NoSession => Status::unauthenticated(e.to_string()),
        AuthError::Denied { .. } | AuthError::NotSuperuser => {
            Status::permission_denied(e.to_string())
        }
        AuthError::Exists(_) => Status::already_exists(e.to_string()),
        AuthError::NotFound(_) => Status::not_found(e.to_string()),
        AuthError::InvalidName | AuthError::WeakPassword => Status::invalid_argument(e.to_string()),
        AuthError::File { .. } | AuthError::Storage(_) => {
            tracing::error!(error = %e, "user store failure");
            Status::internal(e.to_string())
        }
    }
}

fn catalog_status(e: CatalogError) -> Status {
    match e {
        CatalogError::NotFound(_) => Status::not_found(e.to_string()),
        CatalogError::Exists(_) => Status::already_exists(e.to_string()),
        CatalogError::InvalidName(_) => Status::invalid_argument(e.to_string()),
        CatalogError::NotReplica(_) => Status::failed_precondition(e.to_string()),
        CatalogError::Ledger(e) => status_of(e),
        CatalogError::File { .. } | CatalogError::Storage(_) => {
            tracing::error!(error = %e, "catalog failure");
            Status::internal(e.to_string())
        }
    }
}

fn bearer<T>(req: &Request<T>) -> Result<&str, Status> {
    req.metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| Status::unauthenticated("missing `authorization: Bearer <token>`"))
}

fn permission_of(p: i32) -> Result<Option<Permission>, Status> {
    match proto::Permission::try_from(p) {
        Ok(proto::Permission::Unspecified) => Ok(None),
        Ok(proto::Permission::Read) => Ok(Some(Permission::Read)),
        Ok(proto::Permission::Readwrite) => Ok(Some(Permission::ReadWrite)),
        Ok(proto::Permission::Admin) => Ok(Some(Permission::Admin)),
        Err(_) => Err(Status::invalid_argument(format!("unknown permission {p}"))),
    }
}

fn permission_wire(p: Permission) -> proto::Permission {
    match p {
        Permission::Read => proto::Permission::Read,
        Permission::ReadWrite => proto::Permission::Readwrite,
        Permission::Admin => proto::Permission::Admin,
    }
}

fn settings_of(s: Option<&proto::DatabaseSettings>) -> Result<Settings, Status> {
    let Some(s) = s else {
        return Ok(Settings::default());
    };
    let buffered = match s.durability.map(proto::Durability::try_from) {
        None | Some(Ok(proto::Durability::Unspecified)) => None,
        Some(Ok(proto::Durability::Synced)) => Some(false),
        Some(Ok(proto::Durability::Buffered)) => Some(true),
        Some(Err(_)) => return Err(Status::invalid_argument("unknown durability")),
    };
    let replication = match &s.replication {
        None => Default::default(),
        Some(r) => super::catalog::ReplicationSettings {
            is_replica: r.is_replica,
            primary_host: r.primary_host.clone(),
            primary_port: r
                .primary_port
                .map(|p| {
                    u16::try_from(p)
                        .map_err(|_| Status::invalid_argument("primary port above 65535"))
                })
                .transpose()?,
            primary_database: r.primary_database.clone(),
            primary_username: r.primary_username.clone(),
            primary_password: r.primary_password.clone(),
            sync_acks: r.sync_acks,
            sync_timeout_ms: r.sync_timeout_ms,
            prefetch_tx_buffer_size: r.prefetch_tx_buffer_size,
            primary_tls_ca_file: r.primary_tls_ca_file.clone(),
            primary_tls_cert_file: r.primary_tls_cert_file.clone(),
            primary_tls_key_file: r.primary_tls_key_file.clone(),
        },
    };
    Ok(Settings {
        buffered,
        segment_bytes_max: s.segment_bytes_max,
        checkpoint_txs: s.checkpoint_txs,
        replication,
    })
}

fn settings_wire(s: &Settings) -> proto::DatabaseSettings {
    let o = s.options();
    proto::DatabaseSettings {
        durability: Some(if s.buffered == Some(true) {
            proto::Durability::Buffered
        } else {
            proto::Durability::Synced
        } as i32),
        segment_bytes_max: Some(o.segment_bytes_max),
        checkpoint_txs: Some(o.checkpoint_txs),
        replication: Some(replication_wire(&s.replication)),
    }
}

/// Replication settings as the API shows them: never the password.
fn replication_wire(r: &super::catalog::ReplicationSettings) -> proto::ReplicationSettings {
    proto::ReplicationSettings {
        is_replica: Some(r.is_replica()),
        primary_host: r.primary_host.clone(),
        primary_port: r.primary_port.map(u32::from),
        primary_database: r.primary_database.clone(),
        primary_username: r.primary_username.clone(),
        primary_password: None,
        sync_acks: r.sync_acks,
        sync_timeout_ms: r.sync_timeout_ms,
        prefetch_tx_buffer_size: r.prefetch_tx_buffer_size,
        primary_tls_ca_file: r.primary_tls_ca_file.clone(),
        primary_tls_cert_file: r.primary_tls_cert_file.clone(),
        primary_tls_key_file: r.primary_tls_key_file.clone(),
        primary_password_set: r.primary_password.is_some(),
    }
}

fn entry_wire(kv: KeyValue) -> proto::Entry {
    proto::Entry {
        key: kv.key,
        value: kv.value,
        tx: kv.tx,
        deleted: false,
    }
}

#[derive(Clone)]
pub(crate) struct Service {
    pub state: Arc<ServerState>,
}

impl Service {
    /// The caller, who must be a superuser.
    fn superuser<T>(&self, req: &Request<T>) -> Result<String, Status> {
        let caller = self.caller(req)?;
        self.state
            .auth
            .require_superuser(&caller)
            .map_err(auth_status)?;
        Ok(caller)
    }

    /// The user behind the call's token.
    fn caller<T>(&self, req: &Request<T>) -> Result<String, Status> {
        self.state.auth.session(bearer(req)?).map_err(auth_status)
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
            .map_err(auth_status)?;
        self.state.catalog.get(name).map_err(catalog_status)
    }

    /// Checks `hello`'s position in `db` and starts streaming txs after it: to a replica
    /// (with `inbound`, its acknowledgements) or to an export.
    async fn stream_txs(
        &self,
        db: &Database,
        hello: proto::FollowHello,
        peer: String,
        inbound: Option<tonic::Streaming<proto::FollowRequest>>,
        until_head: bool,
    ) -> Result<TxStream, Status> {
        use crate::replication::primary;
        let (ledger, uuid, h) = (db.ledger.clone(), db.uuid.clone(), hello.clone());
        offload(move || primary::check_position(&ledger, &uuid, &h), |s| s).await?;
        tracing::info!(database = %db.name, replica = %hello.replica, %peer, from_tx = hello.tx_id, "streaming txs");
        let prefetch = db
            .settings
            .replication
            .prefetch_tx_buffer_size
            .map_or(primary::PREFETCH_BATCHES_DEFAULT, |n| {
                (n as usize).div_ceil(primary::BATCH_TXS_MAX).max(1)
            });
        let rx = primary::serve(
            primary::Follow {
                ledger: db.ledger.clone(),
                uuid: db.uuid.clone(),
                hub: db.hub.clone(),
                hello,
                peer,
                prefetch_batches: prefetch,
                stopping: self.state.stopping.subscribe(),
                until_head,
            },
            inbound,
        );
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
    }

    /// [`Service::database`] for a write: replicas refuse writes.
    fn writable<T>(&self, req: &Request<T>, name: &str) -> Result<Arc<Database>, Status> {
        let db = self.database(req, name, Permission::ReadWrite)?;
        if db.settings.replication.is_replica() {
            return Err(Status::failed_precondition(format!(
                "database {name} is a replica (of {}); write to its primary",
                db.settings.replication.primary()
            )));
        }
        Ok(db)
    }

    /// Waits until `sync_acks` replicas hold tx `id`, if the database asks for it.
    async fn await_acks(db: &Database, id: TxId) -> Result<(), Status> {
        let r = &db.settings.replication;
        let Some(needed) = r.sync_acks.filter(|k| *k > 0).map(|k| k as usize) else {
            return Ok(());
        };
        let timeout = Duration::from_millis(
            r.sync_timeout_ms
                .unwrap_or(super::catalog::SYNC_TIMEOUT_MS_DEFAULT),
        );
        let mut acks = db.hub.subscribe_acks();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let have = db.hub.acked(id);
            if have >= needed {
                return Ok(());
            }
            let changed = tokio::time::timeout_at(deadline, acks.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                return Err(Status::unavailable(format!(
                    "tx {id} is durable on the primary but not yet replicated: {have} of {needed} replicas acknowledged it within {} ms",
                    timeout.as_millis()
                )));
            }
        }
    }

    /// The state of `db` at tx `tx_id`, signed when the server has a key.
    fn state_wire(&self, db: &Database, tx_id: TxId, alh: &Digest) -> proto::State {
        let mut s = proto::State {
            database: db.name.clone(),
            uuid: db.uuid.clone(),
            tx_id,
            alh: alh.0.to_vec(),
            ..proto::State::default()
        };
        if let Some(key) = &self.state.signing_key {
            s.timestamp_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            s.signature = signing::sign_state(key, &db.uuid, tx_id, alh, s.timestamp_ms).to_vec();
            s.public_key = key.verifying_key().to_bytes().to_vec();
        }
        s
    }

    fn info(&self, db: &Database) -> proto::DatabaseInfo {
        let st = db.ledger.state();
        proto::DatabaseInfo {
            name: db.name.clone(),
            uuid: db.uuid.clone(),
            settings: Some(settings_wire(&db.settings)),
            state: Some(self.state_wire(db, st.tx_id, &st.alh)),
        }
    }

    /// Everything to verify tx `id` against the client's trusted state, proven in the current
    /// state.
    fn verifiable_tx(
        &self,
        db: &Database,
        id: TxId,
        trusted: TxId,
        with_entries: bool,
    ) -> Result<proto::VerifiableTx, LedgerError> {
        let ledger = &db.ledger;
        let now = ledger.state();
        let proof = ledger.tx_proof(id, now.tx_id)?;
        let entries = if with_entries {
            proto::Tx::from(ledger.tx(id)?).entries
        } else {
            Vec::new()
        };
        let extension = if trusted > 0 && trusted < now.tx_id {
            Some(proto::StateProof::from(
                &ledger.state_proof(trusted, now.tx_id)?,
            ))
        } else {
            None
        };
        Ok(proto::VerifiableTx {
            tx: Some(proto::Tx {
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

#[tonic::async_trait]
impl auth_server::Auth for Service {
    async fn login(
        &self,
        req: Request<proto::LoginRequest>,
    ) -> Result<Response<proto::LoginResponse>, Status> {
        let r = req.into_inner();
        let state = self.state.clone();
        let (token, expires) =
            offload(move || state.auth.login(&r.user, &r.password), auth_status).await?;
        let expires_at_ms = expires
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Ok(Response::new(proto::LoginResponse {
            token,
            expires_at_ms,
        }))
    }

    async fn logout(
        &self,
        req: Request<proto::LogoutRequest>,
    ) -> Result<Response<proto::LogoutResponse>, Status> {
        self.caller(&req)?;
        self.state.auth.logout(bearer(&req)?);
        Ok(Response::new(proto::LogoutResponse {}))
    }
}

fn user_wire(name: String, u: &super::auth::UserRecord) -> proto::User {
    proto::User {
        name,
        superuser: u.superuser,
        grants: u
            .grants
            .iter()
            .map(|(d, p)| proto::DatabaseGrant {
                database: d.clone(),
                permission: permission_wire(*p) as i32,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl users_server::Users for Service {
    async fn create_user(
        &self,
        req: Request<proto::CreateUserRequest>,
    ) -> Result<Response<proto::User>, Status> {
        let caller = self.superuser(&req)?;
        let r = req.into_inner();
        let state = self.state.clone();
        let name = r.name.clone();
        offload(
            move || state.auth.create(&r.name, &r.password, r.superuser),
            auth_status,
        )
        .await?;
        tracing::info!(user = %name, by = %caller, "user created");
        let u = self.state.auth.get(&name).map_err(auth_status)?;
        Ok(Response::new(user_wire(name, &u)))
    }

    async fn list_users(
        &self,
        req: Request<proto::ListUsersRequest>,
    ) -> Result<Response<proto::ListUsersResponse>, Status> {
        self.superuser(&req)?;
        let users = self
            .state
            .auth
            .list()
            .into_iter()
            .map(|(n, u)| user_wire(n, &u))
            .collect();
        Ok(Response::new(proto::ListUsersResponse { users }))
    }

    async fn change_password(
        &self,
        req: Request<proto::ChangePasswordRequest>,
    ) -> Result<Response<proto::ChangePasswordResponse>, Status> {
        let caller = self.caller(&req)?;
        let r = req.into_inner();
        let state = self.state.clone();
        offload(
            move || {
                state
                    .auth
                    .change_password(&caller, &r.name, &r.old_password, &r.new_password)
            },
            auth_status,
        )
        .await?;
        Ok(Response::new(proto::ChangePasswordResponse {}))
    }

    async fn grant(
        &self,
        req: Request<proto::GrantRequest>,
    ) -> Result<Response<proto::User>, Status> {
        let caller = self.caller(&req)?;
        let r = req.into_inner();
        self.state
            .auth
            .require(&caller, &r.database, Permission::Admin)
            .map_err(auth_status)?;
        self.state
            .catalog
            .get(&r.database)
            .map_err(catalog_status)?;
        let Some(p) = permission_of(r.permission)? else {
            return Err(Status::invalid_argument(
                "a grant needs a permission: read, readwrite or admin",
            ));
        };
        let u = self
            .state
            .auth
            .grant(&r.user, &r.database, Some(p))
            .map_err(auth_status)?;
        tracing::info!(user = %r.user, database = %r.database, permission = ?p, by = %caller, "permission granted");
        Ok(Response::new(user_wire(r.user, &u)))
    }

    async fn revoke(
        &self,
        req: Request<proto::RevokeRequest>,
    ) -> Result<Response<proto::User>, Status> {
        let caller = self.caller(&req)?;
        let r = req.into_inner();
        self.state
            .auth
            .require(&caller, &r.database, Permission::Admin)
            .map_err(auth_status)?;
        let u = self
            .state
            .auth
            .grant(&r.user, &r.database, None)
            .map_err(auth_status)?;
        tracing::info!(user = %r.user, database = %r.database, by = %caller, "permission revoked");
        Ok(Response::new(user_wire(r.user, &u)))
    }
}

#[tonic::async_trait]
impl databases_server::Databases for Service {
    async fn create_database(
        &self,
        req: Request<proto::CreateDatabaseRequest>,
    ) -> Result<Response<proto::DatabaseInfo>, Status> {
        self.superuser(&req)?;
        let r = req.into_inner();
        let settings = settings_of(r.settings.as_ref())?;
        let state = self.state.clone();
        let db = offload(
            move || state.catalog.create(&r.name, settings),
            catalog_status,
        )
        .await?;
        Ok(Response::new(self.info(&db)))
    }

    async fn list_databases(
        &self,
        req: Request<proto::ListDatabasesRequest>,
    ) -> Result<Response<proto::ListDatabasesResponse>, Status> {
        let caller = self.caller(&req)?;
        let databases = self
            .state
            .catalog
            .list()
            .iter()
            .filter(|db| self.state.auth.permission(&caller, &db.name).is_some())
            .map(|db| self.info(db))
            .collect();
        Ok(Response::new(proto::ListDatabasesResponse { databases }))
    }

    async fn update_database(
        &self,
        req: Request<proto::UpdateDatabaseRequest>,
    ) -> Result<Response<proto::DatabaseInfo>, Status> {
        let r = req.get_ref();
        self.database(&req, &r.name, Permission::Admin)?;
        let r = req.into_inner();
        let settings = settings_of(r.settings.as_ref())?;
        let state = self.state.clone();
        let db = offload(
            move || state.catalog.update(&r.name, &settings),
            catalog_status,
        )
        .await?;
        Ok(Response::new(self.info(&db)))
    }

    async fn refresh_database(
        &self,
        req: Request<proto::RefreshDatabaseRequest>,
    ) -> Result<Response<proto::DatabaseInfo>, Status> {
        let caller = self.caller(&req)?;
        let name = req.into_inner().name;
        self.database_for(&caller, &name, Permission::Admin)?;
        let state = self.state.clone();
        let db = offload(move || state.catalog.refresh(&name), catalog_status).await?;
        tracing::info!(database = %db.name, by = %caller, "database refreshed");
        Ok(Response::new(self.info(&db)))
    }
}

/// NOT_FOUND for an absent key, told apart from an absent database by the `chainlog-reason`
/// metadata (clients match on that, never on the message).
pub(crate) fn key_not_found() -> Status {
    let mut m = tonic::metadata::MetadataMap::new();
    m.insert(REASON, KEY_NOT_FOUND.parse().expect("ASCII"));
    Status::with_metadata(tonic::Code::NotFound, "key not found", m)
}

/// Metadata key naming the reason of an error, in snake case.
pub const REASON: &str = "chainlog-reason";
pub const KEY_NOT_FOUND: &str = "key_not_found";

fn limit_of(limit: u32) -> usize {
    (if limit == 0 {
        PAGE_LIMIT_MAX
    } else {
        limit.min(PAGE_LIMIT_MAX)
    }) as usize
}

fn order_of(desc: bool) -> Order {
    if desc {
        Order::Desc
    } else {
        Order::Asc
    }
}

#[tonic::async_trait]
impl data_server::Data for Service {
    async fn set(
        &self,
        req: Request<proto::SetRequest>,
    ) -> Result<Response<proto::TxHeader>, Status> {
        let db = self.writable(&req, &req.get_ref().database)?;
        let entries = req
            .into_inner()
            .entries
            .into_iter()
            .map(|kv| NewEntry::put(kv.key, kv.value))
            .collect();
        let h = db.ledger.commit_async(entries).await.map_err(status_of)?;
        Self::await_acks(&db, h.id).await?;
        Ok(Response::new((&h).into()))
    }

    async fn get(&self, req: Request<proto::GetRequest>) -> Result<Response<proto::Entry>, Status> {
        let db = self.database(&req, &req.get_ref().database, Permission::Read)?;
        let r = req.into_inner();
        let kv = blocking(move || {
            if r.since_tx > 0
                && !db.ledger.wait_for(
                    r.since_tx,
                    Duration::from_millis(r.wait_ms.min(WAIT_MS_MAX)),
                )
            {
                return Err(LedgerError::TxNotFound {
                    id: r.since_tx,
                    last: db.ledger.state().tx_id,
                });
            }
            let at = if r.at_tx == 0 { TxId::MAX } else { r.at_tx };
            db.ledger.get_at(&r.key, at)
        })
        .await?;
        let kv = kv.ok_or_else(key_not_found)?;
        Ok(Response::new(entry_wire(kv)))
    }

    async fn delete(
        &self,
        req: Request<proto::DeleteRequest>,
    ) -> Result<Response<proto::TxHeader>, Status> {
        let db = self.writable(&req, &req.get_ref().database)?;
        let keys = req.into_inner().keys;
        let d = db.clone();
        let h = blocking(move || {
            d.ledger
                .delete(&keys.iter().map(Vec::as_slice).collect::<Vec<_>>())
        })
        .await?;
        Self::await_acks(&db, h.id).await?;
        Ok(Response::new((&h).into()))
    }

    async fn history(
        &self,
        req: Request<proto::HistoryRequest>,
    ) -> Result<Response<proto::HistoryResponse>, Status> {
        let db = self.database(&req, &req.get_ref().database, Permission::Read)?;
        let r = req.into_inner();
        let key = r.key.clone();
        let versions = blocking(move || {
            db.ledger
                .history(&r.key, r.offset, limit_of(r.limit), order_of(r.desc))
        })
        .await?;
        let entries = versions
            .into_iter()
            .map(|v| proto::Entry {
                key: key.clone(),
                value: v.value,
                tx: v.tx,
                deleted: v.deleted,
            })
            .collect();
        Ok(Response::new(proto::HistoryResponse { entries }))
    }

    async fn scan(
        &self,
        req: Request<proto::ScanRequest>,
    ) -> Result<Response<proto::ScanResponse>, Status> {
        let db = self.database(&req, &req.get_ref().database, Permission::Read)?;
        let r = req.into_inner();
        let found = blocking(move || {
            let after = if r.after.is_empty() {
                None
            } else {
                Some(r.after.as_slice())
            };
            let at = if r.at_tx == 0 { TxId::MAX } else { r.at_tx };
            db.ledger
                .scan(&r.prefix, after, limit_of(r.limit), order_of(r.desc), at)
        })
        .await?;
        Ok(Response::new(proto::ScanResponse {
            entries: found.into_iter().map(entry_wire).collect(),
        }))
    }

    async fn tx_by_id(
        &self,
        req: Request<proto::TxByIdRequest>,
    ) -> Result<Response<proto::Tx>, Status> {
        let db = self.database(&req, &req.get_ref().database, Permission::Read)?;
        let id = req.get_ref().id;
        let tx = blocking(move || db.ledger.tx(id)).await?;
        Ok(Response::new(tx.into()))
    }

    async fn verifiable_set(
        &self,
        req: Request<proto::VerifiableSetRequest>,
    ) -> Result<Response<proto::VerifiableTx>, Status> {
        let db = self.writable(&req, &req.get_ref().database)?;
        let r = req.into_inner();
        let entries = r
            .entries
            .into_iter()
            .map(|kv| NewEntry::put(kv.key, kv.value))
            .collect();
        let h = db.ledger.commit_async(entries).await.map_err(status_of)?;
        Self::await_acks(&db, h.id).await?;
        let this = self.clone();
        let v = blocking(move || this.verifiable_tx(&db, h.id, r.trusted_tx_id, false)).await?;
        Ok(Response::new(v))
    }

    async fn verifiable_get(
        &self,
        req: Request<proto::VerifiableGetRequest>,
    ) -> Result<Response<proto::VerifiableEntry>, Status> {
        let db = self.database(&req, &req.get_ref().database, Permission::Read)?;
        let r = req.into_inner();
        let this = self.clone();
        let v = blocking(move || {
            let now = db.ledger.state();
            let at = if r.at_tx == 0 {
                now.tx_id
            } else {
                r.at_tx.min(now.tx_id)
            };
            let kv = db
                .ledger
                .get_at(&r.key, at)?
                .ok_or(LedgerError::KeyNotFound)?;
            let (entry, proof) = db.ledger.entry_proof(kv.tx, &r.key)?;
            let tx = this.verifiable_tx(&db, kv.tx, r.trusted_tx_id, false)?;
            Ok(proto::VerifiableEntry {
                entry: Some(proto::Entry {
                    key: entry.key,
                    value: entry.value,
                    tx: kv.tx,
                    deleted: entry.meta.deleted,
                }),
                entry_index: proof.index,
                entry_path: proof.path.iter().map(|d| d.0.to_vec()).collect(),
                tx: Some(tx),
            })
        })
        .await?;
        Ok(Response::new(v))
    }

    async fn verifiable_tx_by_id(
        &self,
        req: Request<proto::VerifiableTxByIdRequest>,
    ) -> Result<Response<proto::VerifiableTx>, Status> {
        let db = self.database(&req, &req.get_ref().database, Permission::Read)?;
        let r = req.into_inner();
        let this = self.clone();
        let v = blocking(move || this.verifiable_tx(&db, r.id, r.trusted_tx_id, true)).await?;
        Ok(Response::new(v))
    }

    async fn consistency_proof(
        &self,
        req: Request<proto::ConsistencyProofRequest>,
    ) -> Result<Response<proto::StateProof>, Status> {
        let db = self.database(&req, &req.get_ref().database, Permission::Read)?;
        let r = req.into_inner();
        let p = blocking(move || db.ledger.state_proof(r.old_tx_id, r.new_tx_id)).await?;
        Ok(Response::new((&p).into()))
    }

    async fn current_state(
        &self,
        req: Request<proto::CurrentStateRequest>,
    ) -> Result<Response<proto::State>, Status> {
        let db = self.database(&req, &req.get_ref().database, Permission::Read)?;
        let st = db.ledger.state();
        Ok(Response::new(self.state_wire(&db, st.tx_id, &st.alh)))
    }
}

#[tonic::async_trait]
impl replication_server::Replication for Service {
    type FollowStream = TxStream;

    async fn follow(
        &self,
        req: Request<tonic::Streaming<proto::FollowRequest>>,
    ) -> Result<Response<Self::FollowStream>, Status> {
        let user = self.caller(&req)?;
        let peer = req.remote_addr().map(|a| a.to_string()).unwrap_or_default();
        let mut inbound = req.into_inner();
        let hello = match inbound.message().await? {
            Some(proto::FollowRequest {
                msg: Some(proto::follow_request::Msg::Hello(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "a follow stream starts with a hello",
                ))
            }
        };
        let db = self.database_for(&user, &hello.database, Permission::Read)?;
        let stream = self
            .stream_txs(&db, hello, peer, Some(inbound), false)
            .await?;
        Ok(Response::new(stream))
    }

    type ExportTxStream = TxStream;

    async fn export_tx(
        &self,
        req: Request<proto::ExportTxRequest>,
    ) -> Result<Response<Self::ExportTxStream>, Status> {
        let peer = req.remote_addr().map(|a| a.to_string()).unwrap_or_default();
        let db = self.database(&req, &req.get_ref().database, Permission::Read)?;
        let r = req.into_inner();
        let hello = proto::FollowHello {
            database: r.database,
            expected_uuid: r.expected_uuid,
            tx_id: r.tx_id,
            alh: r.alh,
            replica: format!("export to {peer}"),
        };
        let stream = self.stream_txs(&db, hello, peer, None, !r.follow).await?;
        Ok(Response::new(stream))
    }

    async fn replicate_tx(
        &self,
        req: Request<tonic::Streaming<proto::ReplicateTxRequest>>,
    ) -> Result<Response<proto::State>, Status> {
        use crate::replication::{refuse, REASON_OTHER_DATABASE};
        let user = self.caller(&req)?;
        let mut inbound = req.into_inner();
        let first = inbound.message().await?.ok_or_else(|| {
            Status::invalid_argument("a replicate stream starts with a message naming the database")
        })?;
        let name = first.database.clone();
        let mut db = self.database_for(&user, &name, Permission::ReadWrite)?;
        let r = &db.settings.replication;
        if !r.is_replica() {
            return Err(Status::failed_precondition(format!(
                "database {name} is not a replica: create it with --replication-is-replica to take replicated txs"
            )));
        }
        if r.primary_host.as_deref().is_some_and(|h| !h.is_empty()) {
            return Err(Status::failed_precondition(format!(
                "database {name} replicates from its primary {}; ReplicateTx serves replicas with no primary host",
                r.primary()
            )));
        }
        let source = first.source_uuid.clone();
        if !source.is_empty() && source != db.uuid {
            if db.ledger.state().tx_id > 0 {
                return Err(refuse(
                    REASON_OTHER_DATABASE,
                    format!(
                        "database {name} holds a copy of {}, the source is {source}",
                        db.uuid
                    ),
                ));
            }
            let (state, n) = (self.state.clone(), name.clone());
            db = offload(
                move || {
                    state.catalog.adopt_uuid(&n, &source)?;
                    state.catalog.get(&n)
                },
                catalog_status,
            )
            .await?;
        }
        let mut next = Some(first);
        while let Some(msg) = next {
            crate::replication::replicator::apply_pushed(&db.ledger, &db.name, msg.txs).await?;
            next = inbound.message().await?;
        }
        let st = db.ledger.state();
        Ok(Response::new(self.state_wire(&db, st.tx_id, &st.alh)))
    }

    async fn replication_status(
        &self,
        req: Request<proto::ReplicationStatusRequest>,
    ) -> Result<Response<proto::ReplicationStatusResponse>, Status> {
        let db = self.database(&req, &req.get_ref().database, Permission::Read)?;
        let head = db.ledger.state().tx_id;
        let replicas = db
            .hub
            .followers()
            .into_iter()
            .map(|f| proto::ReplicaLink {
                replica: f.replica,
                peer: f.peer,
                acked_tx_id: f.acked,
                lag_txs: head.saturating_sub(f.acked),
            })
            .collect();
        let mut r = proto::ReplicationStatusResponse {
            database: db.name.clone(),
            role: if db.settings.replication.is_replica() {
                "replica"
            } else {
                "primary"
            }
            .into(),
            last_applied_tx_id: head,
            replicas,
            ..Default::default()
        };
        let settings = &db.settings.replication;
        if settings.is_replica() {
            // A replica with no primary host runs no replicator: an external one feeds it.
            if settings
                .primary_host
                .as_deref()
                .is_some_and(|h| !h.is_empty())
            {
                r.primary = settings.primary();
            }
            r.state = "stopped".into();
        }
        if let Some(s) = db.hub.status() {
            r.primary = s.primary.clone();
            r.state = s.state.as_str().into();
            r.primary_head_tx_id = s.primary_head.max(head);
            r.lag_txs = r.primary_head_tx_id.saturating_sub(head);
            r.lag_ms = if r.lag_txs == 0 { 0 } else { s.lag_ms() };
            r.last_error = s.last_error.clone().unwrap_or_default();
            if let Some((local, remote)) = &s.diverged {
                r.diverged_local = local.as_ref().map(Into::into);
                r.diverged_remote = Some(remote.into());
            }
        }
        Ok(Response::new(r))
    }
}
