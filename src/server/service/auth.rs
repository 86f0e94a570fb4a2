//! `Auth`: login and logout.

use super::{bearer, Service};
use crate::server::status::{self, offload};
use crate::wire::{self, auth_server};
use std::time::UNIX_EPOCH;
use tonic::{Request, Response, Status};

#[tonic::async_trait]
impl auth_server::Auth for Service {
    async fn login(
        &self,
        req: Request<wire::LoginRequest>,
    ) -> Result<Response<wire::LoginResponse>, Status> {
        let r = req.into_inner();
        let state = self.state.clone();
        let (token, expires) =
            offload(move || state.auth.login(&r.user, &r.password), status::auth).await?;
        let expires_at_ms = expires
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Ok(Response::new(wire::LoginResponse {
            token,
            expires_at_ms,
        }))
    }

    async fn logout(
        &self,
        req: Request<wire::LogoutRequest>,
    ) -> Result<Response<wire::LogoutResponse>, Status> {
        self.caller(&req)?;
        self.state.auth.logout(bearer(&req)?);
        Ok(Response::new(wire::LogoutResponse {}))
    }
}
