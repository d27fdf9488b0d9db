//! Guards: GitLab's `API::Ci::Helpers::Runner` helpers as actix extractors, so each
//! handler's signature says how it authenticates (DESIGN §3).
//!
//! Put a guard *after* the route's `Validated<…>` params: GitLab validates params (400)
//! before it authenticates (403), and a guard that heartbeats must not write for a request
//! that fails validation.

use std::marker::PhantomData;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use futures_util::future::LocalBoxFuture;

use crate::api::params::params_of;
use crate::auth::tokens::TokenDigest;
use crate::db::models::{Runner, RunnerManager};
use crate::error::{ApiError, ApiResult};
use crate::service::runners::{manager_heartbeat, LEGACY_SYSTEM_XID};
use crate::AppState;

/// Longest `system_id` GitLab stores (`ci_runner_machines.system_xid`).
const MAX_SYSTEM_XID: usize = 64;

/// Marker: the guard heartbeats the runner and its manager.
pub struct Heartbeat;
/// Marker: the guard only authenticates (no heartbeat, no manager row).
pub struct NoHeartbeat;

pub trait HeartbeatMode {
    const HEARTBEAT: bool;
}
impl HeartbeatMode for Heartbeat {
    const HEARTBEAT: bool = true;
}
impl HeartbeatMode for NoHeartbeat {
    const HEARTBEAT: bool = false;
}

fn state(req: &HttpRequest) -> ApiResult<web::Data<AppState>> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("application state missing")))
}

/// `authenticate_runner!` ‹lib/api/ci/helpers/runner.rb›: the runner token from the `token`
/// param (body, form or query). With [`Heartbeat`] it also records the contact of the
/// runner and of the runner manager named by `system_id` (`<legacy>` when absent), with
/// the manager info from `info` and the client's IP, as `verify`, `reset_authentication_token`
/// and `jobs/request` do. With [`NoHeartbeat`] it writes nothing (`DELETE /runners…`).
/// The runner is memoised in the request extensions (`current_runner`).
pub struct RunnerAuth<H = Heartbeat> {
    pub runner: Arc<Runner>,
    pub manager: Option<RunnerManager>,
    _mode: PhantomData<H>,
}

impl<H: HeartbeatMode + 'static> FromRequest for RunnerAuth<H> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = state(&req)?;
            let params = params_of(&req)?;
            let token = params
                .text("token")
                .ok_or_else(|| ApiError::InvalidParams("token is missing".into()))?;
            let runner = state.runners.authenticate(&token).await?;
            let manager = if H::HEARTBEAT {
                let system_xid = params.text("system_id").unwrap_or_default();
                let system_xid = if system_xid.is_empty() {
                    LEGACY_SYSTEM_XID.to_string()
                } else if system_xid.chars().count() > MAX_SYSTEM_XID {
                    return Err(ApiError::InvalidParams("system_id is invalid".into()));
                } else {
                    system_xid
                };
                let info = params.get("info").and_then(|v| v.as_object());
                let ip = req.peer_addr().map(|a| a.ip().to_string());
                let beat = manager_heartbeat(info, ip);
                Some(
                    state
                        .runners
                        .heartbeat(&runner, &system_xid, beat, false)
                        .await?,
                )
            } else {
                None
            };
            req.extensions_mut().insert(runner.clone());
            Ok(RunnerAuth {
                runner,
                manager,
                _mode: PhantomData,
            })
        })
    }
}

/// `authenticate_runner_from_header!`: the runner token from the `Runner-Token` header only
/// (router discovery); 403 when it is missing or unknown. No heartbeat.
pub struct RunnerHeaderAuth {
    pub runner: Arc<Runner>,
}

/// The header newer runners send with every runner-token request (`RUNNER_TOKEN_HEADER`).
pub const RUNNER_TOKEN_HEADER: &str = "Runner-Token";

impl FromRequest for RunnerHeaderAuth {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = state(&req)?;
            let token = req
                .headers()
                .get(RUNNER_TOKEN_HEADER)
                .and_then(|v| v.to_str().ok())
                .ok_or(ApiError::Forbidden(None))?;
            let runner = state.runners.authenticate(token).await?;
            req.extensions_mut().insert(runner.clone());
            Ok(RunnerHeaderAuth { runner })
        })
    }
}

/// The admin of the admin API: `PRIVATE-TOKEN` header, `Authorization: Bearer`, or the
/// `private_token` param, as GitLab accepts a personal access token. 401 otherwise.
pub struct AdminAuth;

impl FromRequest for AdminAuth {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(admin(req))
    }
}

fn admin(req: &HttpRequest) -> ApiResult<AdminAuth> {
    let state = state(req)?;
    let headers = req.headers();
    let header_token = headers
        .get("PRIVATE-TOKEN")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            headers
                .get(actix_web::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_string)
        });
    let token = match header_token {
        Some(token) => token,
        None => params_of(req)?
            .text("private_token")
            .ok_or(ApiError::Unauthorized)?,
    };
    if TokenDigest::of(token.trim()).matches(&state.admin_digest) {
        Ok(AdminAuth)
    } else {
        Err(ApiError::Unauthorized)
    }
}
