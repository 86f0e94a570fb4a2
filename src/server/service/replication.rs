//! `Replication`: the follow stream, export and push of txs, and replication status.

use super::Service;
use crate::replication::{primary, replicator, ReplicationError};
use crate::server::auth::Permission;
use crate::server::catalog::{Database, Role};
use crate::server::convert::{replica_state_wire, role_wire};
use crate::server::status::{self, offload};
use crate::wire::{self, replication_server};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

type Sent = Result<wire::FollowResponse, ReplicationError>;
/// Txs streamed to a replica or an export, each failure mapped to its status.
type TxStream = tokio_stream::adapters::Map<
    tokio_stream::wrappers::ReceiverStream<Sent>,
    fn(Sent) -> Result<wire::FollowResponse, Status>,
>;

fn to_status(r: Sent) -> Result<wire::FollowResponse, Status> {
    r.map_err(status::replication)
}

impl Service {
    /// The check a long-lived stream runs again on every change to users, grants and
    /// sessions: the caller's token still opens a session, and its user still has `needed`
    /// on `database`.
    fn authority(&self, token: &str, database: &str, needed: Permission) -> primary::Authority {
        let (state, token, database) =
            (self.state.clone(), token.to_string(), database.to_string());
        let changes = state.auth.subscribe_changes();
        primary::Authority {
            check: Box::new(move || {
                let user =
                    state
                        .auth
                        .session(&token)
                        .map_err(|e| ReplicationError::Unauthorized {
                            unauthenticated: true,
                            message: e.to_string(),
                        })?;
                state.auth.require(&user, &database, needed).map_err(|e| {
                    ReplicationError::Unauthorized {
                        unauthenticated: false,
                        message: e.to_string(),
                    }
                })
            }),
            changes,
        }
    }

    /// Checks `hello`'s position in `db` and starts streaming txs after it: to a replica
    /// (with `inbound`, its acknowledgements) or to an export; the stream ends as soon as
    /// `authority` fails.
    async fn stream_txs(
        &self,
        db: &Database,
        hello: wire::FollowHello,
        peer: String,
        inbound: Option<tonic::Streaming<wire::FollowRequest>>,
        until_head: bool,
        authority: primary::Authority,
    ) -> Result<TxStream, Status> {
        let (ledger, name, uuid, h, hub) = (
            db.ledger.clone(),
            db.name.clone(),
            db.uuid.clone(),
            hello.clone(),
            db.hub.clone(),
        );
        offload(
            move || {
                primary::check_hello(&ledger, &hub, &name, &h)?;
                primary::check_position(&ledger, &name, &uuid, &h)
            },
            status::replication,
        )
        .await?;
        tracing::info!(database = %db.name, replica = %hello.replica, %peer, from_tx = hello.tx_id, "streaming txs");
        let rx = primary::serve(
            primary::Follow {
                ledger: db.ledger.clone(),
                uuid: db.uuid.clone(),
                hub: db.hub.clone(),
                hello,
                peer,
                prefetch_batches: primary::prefetch_batches(
                    db.settings.replication.prefetch_tx_buffer_size,
                ),
                stopping: self.state.stopping.subscribe(),
                until_head,
                authority,
                signer: self.signer(db),
            },
            inbound,
        );
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx).map(to_status as fn(Sent) -> _))
    }
}

#[tonic::async_trait]
impl replication_server::Replication for Service {
    type FollowStream = TxStream;

    async fn follow(
        &self,
        req: Request<tonic::Streaming<wire::FollowRequest>>,
    ) -> Result<Response<Self::FollowStream>, Status> {
        let user = self.caller(&req)?;
        let token = super::bearer(&req)?.to_string();
        let peer = crate::server::conn::peer_of(&req);
        let mut inbound = req.into_inner();
        let hello = match inbound.message().await? {
            Some(wire::FollowRequest {
                msg: Some(wire::follow_request::Msg::Hello(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "a follow stream starts with a hello",
                ))
            }
        };
        let db = self.database_for(&user, &hello.database, Permission::Replication)?;
        let authority = self.authority(&token, &hello.database, Permission::Replication);
        let stream = self
            .stream_txs(&db, hello, peer, Some(inbound), false, authority)
            .await?;
        Ok(Response::new(stream))
    }

    type ExportTxStream = TxStream;

    async fn export_tx(
        &self,
        req: Request<wire::ExportTxRequest>,
    ) -> Result<Response<Self::ExportTxStream>, Status> {
        let peer = crate::server::conn::peer_of(&req);
        let token = super::bearer(&req)?.to_string();
        let db = self.database(&req, &req.get_ref().database, Permission::Replication)?;
        let r = req.into_inner();
        let authority = self.authority(&token, &r.database, Permission::Replication);
        let hello = wire::FollowHello {
            protocol_major: wire::PROTOCOL_MAJOR,
            protocol_minor: wire::PROTOCOL_MINOR,
            epoch: r.epoch,
            newer_primary: String::new(),
            features: Vec::new(),
            database: r.database,
            expected_uuid: r.expected_uuid,
            tx_id: r.tx_id,
            alh: r.alh,
            replica: format!("export to {peer}"),
        };
        let stream = self
            .stream_txs(&db, hello, peer, None, !r.follow, authority)
            .await?;
        Ok(Response::new(stream))
    }

    async fn replicate_tx(
        &self,
        req: Request<tonic::Streaming<wire::ReplicateTxRequest>>,
    ) -> Result<Response<wire::State>, Status> {
        let user = self.caller(&req)?;
        let token = super::bearer(&req)?.to_string();
        let mut inbound = req.into_inner();
        let first = inbound.message().await?.ok_or_else(|| {
            Status::invalid_argument("a replicate stream starts with a message naming the database")
        })?;
        let name = first.database.clone();
        self.database_for(&user, &name, Permission::ReadWrite)?;
        let (state, n, source) = (self.state.clone(), name.clone(), first.source_uuid.clone());
        let db = offload(
            move || state.catalog.push_target(&n, &source),
            status::catalog,
        )
        .await?;
        let authority = self.authority(&token, &name, Permission::ReadWrite);
        let mut next = Some(first);
        while let Some(msg) = next {
            (authority.check)().map_err(status::replication)?;
            replicator::apply_pushed(&db.ledger, &db.name, msg.txs)
                .await
                .map_err(status::replication)?;
            next = inbound.message().await?;
        }
        let st = db.ledger.state();
        Ok(Response::new(self.state_wire(&db, st.tx_id, &st.alh)))
    }

    async fn cosignatures(
        &self,
        req: Request<wire::CosignaturesRequest>,
    ) -> Result<Response<wire::CosignaturesResponse>, Status> {
        let db = self.database(&req, &req.get_ref().database, Permission::Read)?;
        Ok(Response::new(wire::CosignaturesResponse {
            cosigned: db.hub.cosignatures(),
        }))
    }

    async fn replication_status(
        &self,
        req: Request<wire::ReplicationStatusRequest>,
    ) -> Result<Response<wire::ReplicationStatusResponse>, Status> {
        let db = self.database(&req, &req.get_ref().database, Permission::Read)?;
        let head = db.ledger.state().tx_id;
        let replicas = db
            .hub
            .followers()
            .into_iter()
            .map(|f| wire::ReplicaLink {
                replica: f.replica,
                peer: f.peer,
                acked_tx_id: f.acked,
                lag_txs: head.saturating_sub(f.acked),
            })
            .collect();
        let settings = &db.settings.replication;
        let role = settings.role();
        let mut r = wire::ReplicationStatusResponse {
            database: db.name.clone(),
            last_applied_tx_id: head,
            replicas,
            ..Default::default()
        };
        r.set_role(role_wire(role));
        r.epoch = db.ledger.epoch();
        r.coordinator = db.hub.coordinator_view().unwrap_or_default();
        r.cosignatures = u32::try_from(db.hub.cosignatures().len()).unwrap_or(u32::MAX);
        if let Some((epoch, newer)) = db.hub.fenced() {
            r.fenced = if newer.is_empty() {
                format!("replaced by epoch {epoch}")
            } else {
                format!("replaced by epoch {epoch}, primary {newer}")
            };
        }
        if role == Role::Replica {
            r.primary = settings.primary();
            r.set_state(wire::ReplicaState::Stopped);
        }
        if let Some(s) = db.hub.status() {
            r.primary = s.primary.clone();
            r.set_state(replica_state_wire(s.state));
            r.primary_head_tx_id = s.primary_head.max(head);
            r.lag_txs = r.primary_head_tx_id.saturating_sub(head);
            r.lag_ms = if r.lag_txs == 0 { 0 } else { s.lag_ms() };
            r.last_error = s.last_error.clone().unwrap_or_default();
            if let Some((tx, ms)) = s.signed_checkpoint {
                r.signed_checkpoint_tx_id = tx;
                r.signed_checkpoint_timestamp_ms = ms;
            }
            r.primary_public_key = s.primary_key.clone().unwrap_or_default();
            if let Some((local, remote)) = &s.diverged {
                r.diverged_local = local.as_ref().map(Into::into);
                r.diverged_remote = Some(remote.into());
            } else if let Some(local) = &s.diverged_local_only {
                r.diverged_local = Some(local.into());
            }
        }
        Ok(Response::new(r))
    }
}
