//! `Databases`: create, list, update and refresh databases.

use super::Service;
use crate::server::auth::Permission;
use crate::server::convert::settings_of;
use crate::server::status::{self, offload};
use crate::wire::{self, databases_server};
use tonic::{Request, Response, Status};

#[tonic::async_trait]
impl databases_server::Databases for Service {
    async fn create_database(
        &self,
        req: Request<wire::CreateDatabaseRequest>,
    ) -> Result<Response<wire::DatabaseInfo>, Status> {
        let caller = self.superuser(&req)?;
        let r = req.into_inner();
        let settings = settings_of(r.settings.as_ref())?;
        let described = settings.describe();
        let state = self.state.clone();
        let db = offload(
            move || state.catalog.create(&r.name, settings),
            status::catalog,
        )
        .await?;
        tracing::info!(database = %db.name, uuid = %db.uuid, by = %caller, settings = %described, "database created");
        Ok(Response::new(self.info(&db)))
    }

    async fn list_databases(
        &self,
        req: Request<wire::ListDatabasesRequest>,
    ) -> Result<Response<wire::ListDatabasesResponse>, Status> {
        let caller = self.caller(&req)?;
        let may_see = |name: &str| self.state.auth.permission(&caller, name).is_some();
        let mut databases: Vec<wire::DatabaseInfo> = self
            .state
            .catalog
            .list()
            .iter()
            .filter(|db| may_see(&db.name))
            .map(|db| self.info(db))
            .collect();
        databases.extend(
            self.state
                .catalog
                .unavailable()
                .iter()
                .filter(|u| may_see(&u.name))
                .map(Service::unavailable_info),
        );
        databases.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(wire::ListDatabasesResponse { databases }))
    }

    async fn update_database(
        &self,
        req: Request<wire::UpdateDatabaseRequest>,
    ) -> Result<Response<wire::DatabaseInfo>, Status> {
        let r = req.get_ref();
        let caller = self.caller(&req)?;
        self.state
            .auth
            .require(&caller, &r.name, Permission::Admin)
            .map_err(status::auth)?;
        let r = req.into_inner();
        let settings = settings_of(r.settings.as_ref())?;
        // The replica's connection holds credentials: only a superuser points it somewhere.
        if settings.replication.touches_connection() {
            self.state
                .auth
                .require_superuser(&caller)
                .map_err(status::auth)?;
        }
        let described = settings.describe();
        let state = self.state.clone();
        let db = offload(
            move || state.catalog.update(&r.name, &settings),
            status::catalog,
        )
        .await?;
        tracing::info!(database = %db.name, by = %caller, settings = %described, "database settings updated");
        Ok(Response::new(self.info(&db)))
    }

    async fn reopen_database(
        &self,
        req: Request<wire::ReopenDatabaseRequest>,
    ) -> Result<Response<wire::DatabaseInfo>, Status> {
        let caller = self.caller(&req)?;
        let r = req.into_inner();
        // The permission check cannot go through `database_for`: an unavailable database
        // is what reopening is for.
        self.state
            .auth
            .require(&caller, &r.name, Permission::Admin)
            .map_err(status::auth)?;
        if r.accept_tx_loss {
            self.state
                .auth
                .require_superuser(&caller)
                .map_err(status::auth)?;
        }
        let state = self.state.clone();
        let name = r.name.clone();
        let db = offload(
            move || state.catalog.reopen(&name, r.accept_tx_loss),
            status::catalog,
        )
        .await?;
        tracing::info!(database = %db.name, by = %caller, accept_tx_loss = r.accept_tx_loss, "database reopened");
        Ok(Response::new(self.info(&db)))
    }

    async fn delete_database(
        &self,
        req: Request<wire::DeleteDatabaseRequest>,
    ) -> Result<Response<wire::DeleteDatabaseResponse>, Status> {
        let caller = self.superuser(&req)?;
        let r = req.into_inner();
        let state = self.state.clone();
        let name = r.name.clone();
        offload(
            move || state.catalog.delete(&r.name, r.force),
            status::catalog,
        )
        .await?;
        // A database created later under the same name starts with no grants.
        for (user, u) in self.state.auth.list() {
            if u.grants.contains_key(&name) {
                if let Err(e) = self.state.auth.grant(&user, &name, None) {
                    tracing::warn!(%user, database = %name, error = %e, "could not revoke a grant on the deleted database");
                }
            }
        }
        tracing::info!(database = %name, by = %caller, "database deleted");
        Ok(Response::new(wire::DeleteDatabaseResponse {}))
    }

    async fn unload_database(
        &self,
        req: Request<wire::UnloadDatabaseRequest>,
    ) -> Result<Response<wire::DatabaseInfo>, Status> {
        let caller = self.superuser(&req)?;
        let name = req.into_inner().name;
        let state = self.state.clone();
        let n = name.clone();
        offload(move || state.catalog.unload(&n), status::catalog).await?;
        tracing::info!(database = %name, by = %caller, "database unloaded");
        let info = self
            .state
            .catalog
            .unavailable()
            .into_iter()
            .find(|u| u.name == name)
            .map(|u| wire::DatabaseInfo {
                name: u.name,
                uuid: u.uuid,
                settings: Some(crate::server::convert::settings_wire(&u.settings)),
                state: None,
                unavailable: u.error,
            })
            .unwrap_or_default();
        Ok(Response::new(info))
    }

    async fn load_database(
        &self,
        req: Request<wire::LoadDatabaseRequest>,
    ) -> Result<Response<wire::DatabaseInfo>, Status> {
        let caller = self.superuser(&req)?;
        let name = req.into_inner().name;
        let state = self.state.clone();
        let db = offload(move || state.catalog.load(&name), status::catalog).await?;
        tracing::info!(database = %db.name, by = %caller, "database loaded");
        Ok(Response::new(self.info(&db)))
    }

    async fn server_info(
        &self,
        req: Request<wire::ServerInfoRequest>,
    ) -> Result<Response<wire::ServerInfoResponse>, Status> {
        self.caller(&req)?;
        let ms = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        };
        let started = self.state.started;
        let catalog = &self.state.catalog;
        Ok(Response::new(wire::ServerInfoResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            format_version: u32::from(crate::integrity::FORMAT_VERSION),
            protocol_major: wire::PROTOCOL_MAJOR,
            protocol_minor: wire::PROTOCOL_MINOR,
            started_at_ms: ms(started),
            uptime_ms: ms(std::time::SystemTime::now()).saturating_sub(ms(started)),
            databases: u32::try_from(
                catalog
                    .list()
                    .iter()
                    .filter(|d| d.name != wire::SYSTEM_DATABASE)
                    .count(),
            )
            .unwrap_or(u32::MAX),
            unavailable_databases: u32::try_from(catalog.unavailable().len()).unwrap_or(u32::MAX),
            replicates: catalog
                .replica_of()
                .map(|r| r.primary())
                .unwrap_or_default(),
            public_key: self
                .state
                .signing_key
                .as_ref()
                .map(|k| crate::integrity::hex::encode(k.verifying_key().as_bytes()))
                .unwrap_or_default(),
            build: format!(
                "{}-{} {}",
                std::env::consts::ARCH,
                std::env::consts::OS,
                if cfg!(debug_assertions) {
                    "debug"
                } else {
                    "release"
                }
            ),
        }))
    }

    async fn truncate_database(
        &self,
        req: Request<wire::TruncateDatabaseRequest>,
    ) -> Result<Response<wire::TruncateDatabaseResponse>, Status> {
        let caller = self.caller(&req)?;
        let r = req.into_inner();
        let db = self.database_for(&caller, &r.name, Permission::Admin)?;
        let head = db.ledger.state().tx_id;
        if r.before_tx > head {
            return Err(Status::invalid_argument(format!(
                "before_tx {} is past the database's last tx ({head})",
                r.before_tx
            )));
        }
        if r.before_tx == 0 && r.retention_period_secs == 0 {
            return Err(Status::invalid_argument(
                "give before_tx or retention_period_secs",
            ));
        }
        let state = self.state.clone();
        let name = r.name.clone();
        let (db, t) = offload(
            move || {
                let before = if r.before_tx > 0 {
                    r.before_tx
                } else {
                    let period = std::time::Duration::from_secs(r.retention_period_secs);
                    crate::server::retention::cutoff(&db.ledger, Some(period), None)?
                };
                drop(db);
                state.catalog.truncate(&name, before)
            },
            status::catalog,
        )
        .await?;
        tracing::info!(database = %db.name, by = %caller, values_from_tx = t.values_from_tx,
            segments_rewritten = t.segments_rewritten, bytes_before = t.bytes_before,
            bytes_after = t.bytes_after, "database truncated");
        Ok(Response::new(wire::TruncateDatabaseResponse {
            database: db.name.clone(),
            values_from_tx: t.values_from_tx,
            segments_rewritten: t.segments_rewritten,
            bytes_before: t.bytes_before,
            bytes_after: t.bytes_after,
        }))
    }

    async fn refresh_database(
        &self,
        req: Request<wire::RefreshDatabaseRequest>,
    ) -> Result<Response<wire::DatabaseInfo>, Status> {
        let caller = self.caller(&req)?;
        let name = req.into_inner().name;
        self.database_for(&caller, &name, Permission::Admin)?;
        let state = self.state.clone();
        let db = offload(move || state.catalog.refresh(&name), status::catalog).await?;
        tracing::info!(database = %db.name, by = %caller, "database refreshed");
        Ok(Response::new(self.info(&db)))
    }
}
