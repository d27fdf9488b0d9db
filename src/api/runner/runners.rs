//! `/api/v4/runners…` ‹lib/api/ci/runner.rb›: register, verify, unregister, reset token,
//! router discovery.

use actix_web::http::header;
use actix_web::{delete, get, post, web, HttpRequest, HttpResponse};
use chrono::NaiveDateTime;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::api::params::{Check, FromParams, Params, Validated};
use crate::api::{no_content, serialize_time_opt};
use crate::auth::tokens::TokenDigest;
use crate::auth::{NoHeartbeat, RunnerAuth, RunnerHeaderAuth};
use crate::db::enums::{AccessLevel, FlagScope, RegistrationType, RunnerType};
use crate::db::models::{FeatureFlag, Project};
use crate::error::{ApiError, ApiResult};
use crate::service::runners::RunnerSettings;
use crate::AppState;

/// Flag that turns router discovery on (`job_router_enabled?`).
pub const JOB_ROUTER_FLAG: &str = "job_router";

/// `{id, token, token_expires_at}` (`Entities::Ci::RunnerRegistrationDetails`).
#[derive(Debug, Serialize, ToSchema)]
pub struct RunnerRegistrationDetails {
    pub id: i64,
    pub token: String,
    #[serde(serialize_with = "serialize_time_opt")]
    #[schema(value_type = Option<String>, example = "2026-12-01T10:00:00.000Z")]
    pub token_expires_at: Option<NaiveDateTime>,
}

/// `{token, token_expires_at}` (`Entities::Ci::ResetTokenResult`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ResetTokenResult {
    pub token: String,
    #[serde(serialize_with = "serialize_time_opt")]
    #[schema(value_type = Option<String>)]
    pub token_expires_at: Option<NaiveDateTime>,
}

/// `{server_url}` (`Entities::Ci::JobRouter::DiscoveryInformation`).
#[derive(Debug, Serialize, ToSchema)]
pub struct DiscoveryInformation {
    pub server_url: String,
}

/// Params of `POST /runners`. JSON, form or query; `tag_list` as an array or a
/// comma-separated string.
#[derive(Debug, ToSchema)]
#[schema(example = json!({
    "token": "the RUNWAY_REGISTRATION_TOKEN",
    "description": "my runner",
    "tag_list": "docker,linux",
    "run_untagged": true,
    "info": { "name": "gitlab-runner", "version": "19.4.0", "executor": "shell" }
}))]
pub struct RegisterParams {
    /// The registration token.
    pub token: String,
    pub description: Option<String>,
    pub maintenance_note: Option<String>,
    /// Deprecated alias of `maintenance_note`.
    pub maintainer_note: Option<String>,
    /// `{name, version, revision, platform, architecture, …}`; `name` is kept on the runner.
    #[schema(value_type = Option<Object>)]
    pub info: Option<Map<String, Value>>,
    /// Deprecated; `paused = !active`.
    pub active: Option<bool>,
    pub paused: Option<bool>,
    pub locked: Option<bool>,
    pub access_level: Option<AccessLevel>,
    pub run_untagged: Option<bool>,
    pub tag_list: Option<Vec<String>>,
    /// Seconds, at least 600.
    pub maximum_timeout: Option<i64>,
}

impl FromParams for RegisterParams {
    fn from_params(params: &Params) -> ApiResult<Self> {
        // Checked in the order `runner.rb` declares them: Grape reports errors in that order.
        let mut c = Check::new(params);
        let token = c.required_str("token");
        let description = c.str_max("description", 1024);
        let maintenance_note = c.str_max("maintenance_note", 1024);
        let maintainer_note = c.str_max("maintainer_note", 1024);
        let info = c.object("info");
        let active = c.bool("active");
        let paused = c.bool("paused");
        let locked = c.bool("locked");
        let run_untagged = c.bool("run_untagged");
        let tag_list = c.tags("tag_list");
        let access_level = c.one_of("access_level", AccessLevel::parse);
        let maximum_timeout = c.int("maximum_timeout").flatten();
        c.exclusive("maintainer_note", "maintenance_note");
        c.exclusive("active", "paused");
        c.finish()?;
        Ok(RegisterParams {
            token,
            description,
            maintenance_note,
            maintainer_note,
            info,
            active,
            paused,
            locked,
            access_level,
            run_untagged,
            tag_list,
            maximum_timeout,
        })
    }
}

/// Params carrying just the runner token.
#[derive(Debug, ToSchema)]
#[schema(example = json!({ "token": "glrt-t1_paste-your-runner-token" }))]
pub struct TokenParams {
    /// The runner authentication token.
    pub token: String,
}

impl FromParams for TokenParams {
    fn from_params(params: &Params) -> ApiResult<Self> {
        let mut c = Check::new(params);
        let token = c.required_str("token");
        c.finish()?;
        Ok(TokenParams { token })
    }
}

/// Params of `POST /runners/verify`.
#[derive(Debug, ToSchema)]
#[schema(example = json!({ "token": "glrt-t1_paste-your-runner-token", "system_id": "s_0123456789ab" }))]
pub struct VerifyParams {
    pub token: String,
    /// The machine's id (`s_…`/`r_…`); `<legacy>` when absent.
    pub system_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub info: Option<Map<String, Value>>,
}

impl FromParams for VerifyParams {
    fn from_params(params: &Params) -> ApiResult<Self> {
        let mut c = Check::new(params);
        let token = c.required_str("token");
        let system_id = c.str("system_id");
        let info = c.object("info");
        c.finish()?;
        Ok(VerifyParams {
            token,
            system_id,
            info,
        })
    }
}

/// Params of `DELETE /runners/managers`.
#[derive(Debug, ToSchema)]
#[schema(example = json!({ "token": "glrt-t1_paste-your-runner-token", "system_id": "s_0123456789ab" }))]
pub struct ManagerParams {
    pub token: String,
    pub system_id: String,
}

impl FromParams for ManagerParams {
    fn from_params(params: &Params) -> ApiResult<Self> {
        let mut c = Check::new(params);
        let token = c.required_str("token");
        let system_id = c.required_str("system_id");
        c.finish()?;
        Ok(ManagerParams { token, system_id })
    }
}

/// Register a runner with a legacy registration token.
#[utoipa::path(
    tag = "runners",
    operation_id = "register_runner",
    request_body(content = RegisterParams, content_type = "application/json"),
    security(("registration_token" = [])),
    responses(
        (status = 201, body = RunnerRegistrationDetails),
        (status = 400, description = "missing or invalid params"),
        (status = 403, description = "invalid registration token"),
    )
)]
#[post("/runners")]
pub async fn register_runner(
    req: actix_web::HttpRequest,
    params: Validated<RegisterParams>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let p = params.0;
    let ip = crate::auth::guards::peer_ip(&req);
    state.limits.check_address(ip)?;
    // ‹register_runner_service.rb›: a token that matches no registration token.
    let valid = state
        .registration_digest
        .is_some_and(|d| d.matches(&TokenDigest::of(&p.token)));
    if !valid {
        state.limits.authentication_failed(ip);
        return Err(ApiError::forbidden("invalid token supplied"));
    }
    let settings = RunnerSettings {
        runner_type: RunnerType::Instance,
        name: p
            .info
            .as_ref()
            .and_then(|i| i.get("name"))
            .and_then(Value::as_str)
            .map(|n| n.chars().take(256).collect()),
        description: p.description.unwrap_or_default(),
        maintenance_note: p.maintenance_note.or(p.maintainer_note),
        tags: p.tag_list.unwrap_or_default(),
        run_untagged: p.run_untagged.unwrap_or(true),
        locked: p.locked.unwrap_or(false),
        paused: p.paused.or(p.active.map(|a| !a)).unwrap_or(false),
        access_level: p.access_level.unwrap_or(AccessLevel::NotProtected),
        maximum_timeout: p.maximum_timeout,
        project_id: None,
    };
    let created = state
        .runners
        .create(settings, RegistrationType::RegistrationToken)
        .await?;
    Ok(HttpResponse::Created().json(RunnerRegistrationDetails {
        id: created.runner.id,
        token: created.token,
        token_expires_at: created.runner.token_expires_at,
    }))
}

/// Verify a runner token; heartbeats the runner and its manager.
#[utoipa::path(
    tag = "runners",
    operation_id = "verify_runner",
    request_body(content = VerifyParams, content_type = "application/json"),
    security(("runner_token" = [])),
    responses(
        (status = 200, body = RunnerRegistrationDetails),
        (status = 400, description = "token missing"),
        (status = 403, description = "unknown or expired token"),
    )
)]
#[post("/runners/verify")]
pub async fn verify_runner(
    params: Validated<VerifyParams>,
    auth: RunnerAuth,
) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(RunnerRegistrationDetails {
        id: auth.runner.id,
        token: params.0.token,
        token_expires_at: auth.runner.token_expires_at,
    }))
}

/// Delete (unregister) the runner owning the token.
#[utoipa::path(
    tag = "runners",
    operation_id = "delete_runner",
    request_body(content = TokenParams, content_type = "application/json"),
    security(("runner_token" = [])),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, description = "token missing"),
        (status = 403, description = "unknown or expired token"),
        (status = 412, description = "If-Unmodified-Since is older than the runner's last change"),
    )
)]
#[delete("/runners")]
pub async fn delete_runner(
    _params: Validated<TokenParams>,
    auth: RunnerAuth<NoHeartbeat>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    check_unmodified_since(&req, auth.runner.updated_at)?;
    state.runners.delete(auth.runner.id).await?;
    Ok(no_content())
}

/// Delete one runner manager (one machine) of the runner owning the token.
#[utoipa::path(
    tag = "runners",
    operation_id = "delete_runner_manager",
    request_body(content = ManagerParams, content_type = "application/json"),
    security(("runner_token" = [])),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, description = "token or system_id missing"),
        (status = 403, description = "unknown or expired token"),
        (status = 404, description = "no manager with that system_id"),
        (status = 412, description = "If-Unmodified-Since is older than the manager's last change"),
    )
)]
#[delete("/runners/managers")]
pub async fn delete_runner_manager(
    params: Validated<ManagerParams>,
    auth: RunnerAuth<NoHeartbeat>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let not_found = || ApiError::not_found("Runner manager not found");
    // `destroy_conditionally!(current_runner_manager)`, as for the runner itself.
    let manager = state
        .runners
        .manager(auth.runner.id, &params.0.system_id)
        .await?
        .ok_or_else(not_found)?;
    check_unmodified_since(&req, manager.updated_at)?;
    if state
        .runners
        .delete_manager(auth.runner.id, &params.0.system_id)
        .await?
    {
        Ok(no_content())
    } else {
        Err(not_found())
    }
}

/// Rotate the runner's token; the old one stops working.
#[utoipa::path(
    tag = "runners",
    operation_id = "reset_runner_token",
    request_body(content = TokenParams, content_type = "application/json"),
    security(("runner_token" = [])),
    responses(
        (status = 201, body = ResetTokenResult),
        (status = 400, description = "token missing"),
        (status = 403, description = "unknown or expired token"),
    )
)]
#[post("/runners/reset_authentication_token")]
pub async fn reset_runner_token(
    _params: Validated<TokenParams>,
    auth: RunnerAuth,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let reset = state.runners.reset_token(&auth.runner).await?;
    Ok(HttpResponse::Created().json(ResetTokenResult {
        token: reset.token,
        token_expires_at: reset.runner.token_expires_at,
    }))
}

/// Where the job router is; 501 unless the `job_router` flag is on for this runner.
#[utoipa::path(
    tag = "runners",
    operation_id = "discover_job_router",
    security(("runner_token_header" = [])),
    responses(
        (status = 200, body = DiscoveryInformation),
        (status = 403, description = "missing or unknown Runner-Token"),
        (status = 501, description = "no job router for this runner"),
    )
)]
#[get("/runners/router/discovery")]
pub async fn discover_job_router(
    auth: RunnerHeaderAuth,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let runner = &auth.runner;
    let mut db = state.db.read().await?;
    let mut conn = db.conn();
    // Flipper actors: the runner itself and, for project runners, their namespaces.
    let mut scopes = vec![(FlagScope::Runner, runner.id.to_string())];
    if runner.runner_type == RunnerType::Project {
        for project in Project::for_runner(&mut conn, runner.id).await? {
            scopes.push((FlagScope::Namespace, project.namespace_path));
        }
    }
    if !FeatureFlag::enabled_for(&mut conn, JOB_ROUTER_FLAG, &scopes).await? {
        return Err(ApiError::NotImplemented(
            "Job Router is not available. Please contact your administrator.".into(),
        ));
    }
    let server_url = state
        .settings
        .job_router_url
        .clone()
        .unwrap_or_else(|| state.settings.external_url.replacen("http", "ws", 1));
    Ok(HttpResponse::Ok().json(DiscoveryInformation { server_url }))
}

/// `check_unmodified_since!` (via `destroy_conditionally!`): 412 when the client's copy
/// (`If-Unmodified-Since`, an HTTP date) is older than the last change, to the second.
fn check_unmodified_since(req: &HttpRequest, updated_at: NaiveDateTime) -> ApiResult<()> {
    let Some(value) = req.headers().get(header::IF_UNMODIFIED_SINCE) else {
        return Ok(());
    };
    let Some(since) = value
        .to_str()
        .ok()
        .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
    else {
        return Ok(()); // GitLab ignores a date it cannot parse.
    };
    if since.timestamp() < updated_at.and_utc().timestamp() {
        return Err(ApiError::PreconditionFailed);
    }
    Ok(())
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(register_runner)
        .service(verify_runner)
        .service(delete_runner_manager)
        .service(delete_runner)
        .service(reset_runner_token)
        .service(discover_job_router);
}
