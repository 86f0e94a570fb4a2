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
        let peer = crate::server::conn::peer_of(&req);
        let r = req.into_inner();
        let user = r.user.clone();
        let state = self.state.clone();
        let (token, expires) =
            match offload(move || state.auth.login(&r.user, &r.password), status::auth).await {
                Ok(t) => t,
                Err(s) => {
                    tracing::info!(%user, %peer, code = ?s.code(), "login refused");
                    return Err(s);
                }
            };
        tracing::debug!(%user, %peer, "logged in");
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
        let user = self.caller(&req)?;
        self.state.auth.logout(bearer(&req)?);
        tracing::debug!(%user, "logged out");
        Ok(Response::new(wire::LogoutResponse {}))
    }
}
