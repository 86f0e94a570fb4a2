//! `Users`: create and list users, passwords, grants.

use super::Service;
use crate::server::auth::Permission;
use crate::server::catalog::CatalogError;
use crate::server::convert::{permission_of, user_wire};
use crate::server::status::{self, offload};
use crate::wire::{self, users_server};
use tonic::{Request, Response, Status};

#[tonic::async_trait]
impl users_server::Users for Service {
    async fn create_user(
        &self,
        req: Request<wire::CreateUserRequest>,
    ) -> Result<Response<wire::User>, Status> {
        let caller = self.superuser(&req)?;
        let r = req.into_inner();
        let state = self.state.clone();
        let name = r.name.clone();
        offload(
            move || state.auth.create(&r.name, &r.password, r.superuser),
            status::auth,
        )
        .await?;
        tracing::info!(user = %name, by = %caller, "user created");
        let u = self.state.auth.get(&name).map_err(status::auth)?;
        Ok(Response::new(user_wire(name, &u)))
    }

    async fn list_users(
        &self,
        req: Request<wire::ListUsersRequest>,
    ) -> Result<Response<wire::ListUsersResponse>, Status> {
        self.superuser(&req)?;
        let users = self
            .state
            .auth
            .list()
            .into_iter()
            .map(|(n, u)| user_wire(n, &u))
            .collect();
        Ok(Response::new(wire::ListUsersResponse { users }))
    }

    async fn change_password(
        &self,
        req: Request<wire::ChangePasswordRequest>,
    ) -> Result<Response<wire::ChangePasswordResponse>, Status> {
        let caller = self.caller(&req)?;
        let r = req.into_inner();
        let state = self.state.clone();
        let (user, by) = (r.name.clone(), caller.clone());
        offload(
            move || {
                state
                    .auth
                    .change_password(&caller, &r.name, &r.old_password, &r.new_password)
            },
            status::auth,
        )
        .await?;
        tracing::info!(%user, %by, "password changed; the user's sessions ended");
        Ok(Response::new(wire::ChangePasswordResponse {}))
    }

    async fn grant(
        &self,
        req: Request<wire::GrantRequest>,
    ) -> Result<Response<wire::User>, Status> {
        let caller = self.caller(&req)?;
        let r = req.into_inner();
        self.state
            .auth
            .require(&caller, &r.database, Permission::Admin)
            .map_err(status::auth)?;
        // A grant on an unavailable database is kept for when it is back.
        match self.state.catalog.get(&r.database) {
            Ok(_) | Err(CatalogError::Unavailable { .. }) => {}
            Err(e) => return Err(status::catalog(e)),
        }
        let Some(p) = permission_of(r.permission)? else {
            return Err(Status::invalid_argument(
                "a grant needs a permission: read, readwrite or admin",
            ));
        };
        let u = self
            .state
            .auth
            .grant(&r.user, &r.database, Some(p))
            .map_err(status::auth)?;
        tracing::info!(user = %r.user, database = %r.database, permission = ?p, by = %caller, "permission granted");
        Ok(Response::new(user_wire(r.user, &u)))
    }

    async fn revoke(
        &self,
        req: Request<wire::RevokeRequest>,
    ) -> Result<Response<wire::User>, Status> {
        let caller = self.caller(&req)?;
        let r = req.into_inner();
        self.state
            .auth
            .require(&caller, &r.database, Permission::Admin)
            .map_err(status::auth)?;
        let u = self
            .state
            .auth
            .grant(&r.user, &r.database, None)
            .map_err(status::auth)?;
        tracing::info!(user = %r.user, database = %r.database, by = %caller, "permission revoked");
        Ok(Response::new(user_wire(r.user, &u)))
    }

    async fn set_active_user(
        &self,
        req: Request<wire::SetActiveUserRequest>,
    ) -> Result<Response<wire::User>, Status> {
        let caller = self.superuser(&req)?;
        let r = req.into_inner();
        let state = self.state.clone();
        let (name, by) = (r.name.clone(), caller.clone());
        let u = offload(
            move || state.auth.set_active(&caller, &r.name, r.active),
            status::auth,
        )
        .await?;
        if r.active {
            tracing::info!(user = %name, %by, "user activated");
        } else {
            tracing::info!(user = %name, %by, "user deactivated; its sessions ended");
        }
        Ok(Response::new(user_wire(name, &u)))
    }

    async fn delete_user(
        &self,
        req: Request<wire::DeleteUserRequest>,
    ) -> Result<Response<wire::DeleteUserResponse>, Status> {
        let caller = self.superuser(&req)?;
        let r = req.into_inner();
        let state = self.state.clone();
        let (name, by) = (r.name.clone(), caller.clone());
        offload(move || state.auth.delete(&caller, &r.name), status::auth).await?;
        tracing::info!(user = %name, %by, "user deleted; its sessions ended");
        Ok(Response::new(wire::DeleteUserResponse {}))
    }

    async fn set_superuser(
        &self,
        req: Request<wire::SetSuperuserRequest>,
    ) -> Result<Response<wire::User>, Status> {
        let caller = self.superuser(&req)?;
        let r = req.into_inner();
        let state = self.state.clone();
        let (name, by) = (r.name.clone(), caller.clone());
        let u = offload(
            move || state.auth.set_superuser(&caller, &r.name, r.superuser),
            status::auth,
        )
        .await?;
        tracing::info!(user = %name, %by, superuser = r.superuser, "superuser changed");
        Ok(Response::new(user_wire(name, &u)))
    }
}
