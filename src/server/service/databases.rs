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
        self.superuser(&req)?;
        let r = req.into_inner();
        let settings = settings_of(r.settings.as_ref())?;
        let state = self.state.clone();
        let db = offload(
            move || state.catalog.create(&r.name, settings),
            status::catalog,
        )
        .await?;
        Ok(Response::new(self.info(&db)))
    }

    async fn list_databases(
        &self,
        req: Request<wire::ListDatabasesRequest>,
    ) -> Result<Response<wire::ListDatabasesResponse>, Status> {
        let caller = self.caller(&req)?;
        let databases = self
            .state
            .catalog
            .list()
            .iter()
            .filter(|db| self.state.auth.permission(&caller, &db.name).is_some())
            .map(|db| self.info(db))
            .collect();
        Ok(Response::new(wire::ListDatabasesResponse { databases }))
    }

    async fn update_database(
        &self,
        req: Request<wire::UpdateDatabaseRequest>,
    ) -> Result<Response<wire::DatabaseInfo>, Status> {
        let r = req.get_ref();
        self.database(&req, &r.name, Permission::Admin)?;
        let r = req.into_inner();
        let settings = settings_of(r.settings.as_ref())?;
        let state = self.state.clone();
        let db = offload(
            move || state.catalog.update(&r.name, &settings),
            status::catalog,
        )
        .await?;
        Ok(Response::new(self.info(&db)))
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
