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
use crate::db::enums::JobStatus;
use crate::db::models::{Job, Runner, RunnerManager};
use crate::error::{ApiError, ApiResult};
use crate::service::limits::Limit;
use crate::service::runners::{manager_heartbeat, LEGACY_SYSTEM_XID};
use crate::AppState;

/// Longest `system_id` GitLab stores (`ci_runner_machines.system_xid`).
const MAX_SYSTEM_XID: usize = 64;

/// Marker: the guard heartbeats the runner and its manager.
pub struct Heartbeat;
/// Marker: the guard only authenticates (no heartbeat, no manager row).
pub struct NoHeartbeat;

/// Marker: heartbeat as a job request does, which also finishes the runner's and the
/// manager's creation (`creation_state = finished`).
pub struct Polling;

/// Marker for a log append: heartbeat, and the job may be the one the job's last append
/// here left ([`crate::service::traces::Traces::recent`]) instead of a fresh read — the
/// append itself checks in the database that the job is still the token's and running.
pub struct LogAppend;

pub trait HeartbeatMode {
    const HEARTBEAT: bool;
    const FINISH_CREATION: bool = false;
    const RECENT_JOB: bool = false;
}
impl HeartbeatMode for Heartbeat {
    const HEARTBEAT: bool = true;
}
impl HeartbeatMode for NoHeartbeat {
    const HEARTBEAT: bool = false;
}
impl HeartbeatMode for LogAppend {
    const HEARTBEAT: bool = true;
    const RECENT_JOB: bool = true;
}
impl HeartbeatMode for Polling {
    const HEARTBEAT: bool = true;
    const FINISH_CREATION: bool = true;
}

/// The client's address (the TCP peer; put a proxy's real-IP handling in front if needed).
pub fn peer_ip(req: &HttpRequest) -> Option<std::net::IpAddr> {
    req.peer_addr().map(|a| a.ip())
}

/// Runs an authentication with the app state: refused at once (429) for an address over
/// the failed-authentication limit, and a wrong or unknown token counts against its address.
fn guarded<T, F, Fut>(req: &HttpRequest, authenticate: F) -> LocalBoxFuture<'static, ApiResult<T>>
where
    T: 'static,
    F: FnOnce(HttpRequest, web::Data<AppState>) -> Fut + 'static,
    Fut: std::future::Future<Output = ApiResult<T>> + 'static,
{
    let req = req.clone();
    Box::pin(async move {
        let state = state(&req)?;
        let ip = peer_ip(&req);
        state.limits.check_address(ip)?;
        let result = authenticate(req, state.clone()).await;
        count_failure(&state, ip, &result);
        result
    })
}

/// A wrong or unknown token (401, or 403 without a reason) counts against its address.
fn count_failure<T>(state: &AppState, ip: Option<std::net::IpAddr>, result: &ApiResult<T>) {
    if let Err(ApiError::Unauthorized | ApiError::Forbidden(None)) = result {
        state.limits.authentication_failed(ip);
    }
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
    /// Shared with the manager cache: a held poll keeps a pointer, not a copy.
    pub manager: Option<Arc<RunnerManager>>,
    _mode: PhantomData<H>,
}

impl<H: HeartbeatMode + 'static> FromRequest for RunnerAuth<H> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        guarded(req, |req, state| async move {
            let params = params_of(&req)?;
            let token = params
                .text("token")
                .ok_or_else(|| ApiError::InvalidParams("token is missing".into()))?;
            if H::FINISH_CREATION {
                // `POST /jobs/request` (the only polling route): GitLab's
                // `runner_jobs_request_api` limit, before authentication.
                state.limits.check(Limit::JobsRequest, &token)?;
            }
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
                        .heartbeat(&runner, &system_xid, beat, H::FINISH_CREATION)
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
        guarded(req, |req, state| async move {
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
        let checked = state(req).and_then(|state| {
            let ip = peer_ip(req);
            state.limits.check_address(ip)?;
            let result = admin(req, &state);
            count_failure(&state, ip, &result);
            result
        });
        std::future::ready(checked)
    }
}

fn admin(req: &HttpRequest, state: &AppState) -> ApiResult<AdminAuth> {
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

/// The header the runner sends its job token in (`JOB-TOKEN`; Go writes `Job-Token`).
pub const JOB_TOKEN_HEADER: &str = "JOB-TOKEN";

/// A job token from the first of `param_names` present, else the `JOB-TOKEN` header;
/// `None` when absent, empty or too long to be one.
fn job_token(
    req: &HttpRequest,
    params: &crate::api::params::Params,
    param_names: &[&str],
) -> Option<String> {
    param_names
        .iter()
        .find_map(|name| params.text(name))
        .or_else(|| {
            req.headers()
                .get(JOB_TOKEN_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .filter(|t| !t.is_empty() && t.len() <= crate::auth::tokens::MAX_TOKEN_BYTES)
}

/// The route's numeric `:id`, as Grape's `requires :id, type: Integer`.
fn path_job_id(req: &HttpRequest) -> ApiResult<i64> {
    req.match_info()
        .get("id")
        .and_then(|id| id.parse::<i64>().ok())
        .ok_or_else(|| ApiError::InvalidParams("id is invalid".into()))
}

/// Whether a log PATCH continues the job's log where it ends (past its start), with an
/// announced end within the log's limit: the only PATCH a recent job serves (the append
/// then confirms the job in the database), so that anything else the route does — start a
/// debug log, fail the job for a log too large — acts on a job read fresh.
fn continues_log(req: &HttpRequest, job: &Job, max_bytes: u64) -> bool {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let start = header("Content-Range").and_then(crate::api::runner::jobs::content_range_start);
    let len = header("Content-Length").and_then(|v| v.parse::<u64>().ok());
    match (start, len) {
        (Some(start), Some(len)) => {
            start > 0 && start == job.trace_size && (start as u64).saturating_add(len) <= max_bytes
        }
        _ => false,
    }
}

/// `authenticate_job!` ‹lib/api/ci/helpers/runner.rb›: the job named by the path's `:id`,
/// authenticated by its token — the `token` param first, else the `JOB-TOKEN` header. 403
/// when the job does not exist or the token is not its own (deliberately not 404), when it
/// was erased, and — with `Job-Status` — when it is not running or canceling. With
/// [`Heartbeat`] the job's runner and runner manager are heartbeated (the manager with
/// the client's IP only). The job is memoised in the request extensions (`current_job`).
/// With [`LogAppend`] it may be the job as the last append here left it (no read).
pub struct JobAuth<H = Heartbeat> {
    pub job: Job,
    _mode: PhantomData<H>,
}

impl<H: HeartbeatMode + 'static> FromRequest for JobAuth<H> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        guarded(req, |req, state| async move {
            let id = path_job_id(&req)?;
            let params = params_of(&req)?;
            let token = job_token(&req, &params, &["token"]).ok_or(ApiError::Forbidden(None))?;
            // `runner_jobs_patch_trace_api` for the log, `runner_jobs_api` for the rest.
            let limit = if req.path().ends_with("/trace") {
                Limit::Trace
            } else {
                Limit::JobApi
            };
            state.limits.check(limit, &token)?;
            let digest = TokenDigest::of(&token);
            let recent = H::RECENT_JOB
                .then(|| state.traces.recent(id, &digest))
                .flatten()
                .filter(|job| continues_log(&req, job, state.settings.max_trace_bytes));
            let job = match recent {
                Some(job) => job,
                None => {
                    crate::db::inline(async {
                        let mut db = state.db.read().await?;
                        Job::find(&mut db.conn(), id)
                            .await?
                            .ok_or(ApiError::Forbidden(None))
                    })
                    .await?
                }
            };
            if !digest.matches_stored(job.token_digest.as_deref()) {
                return Err(ApiError::Forbidden(None));
            }
            if job.erased_at.is_some() {
                return Err(ApiError::forbidden("Job has been erased!"));
            }
            // Executing, or pending while awaiting the runner's acknowledgement (two-phase
            // commit: `validate_executing_job!` lets those through).
            let awaiting_ack = job.status == JobStatus::Pending && job.ack_deadline.is_some();
            if !matches!(job.status, JobStatus::Running | JobStatus::Canceling) && !awaiting_ack {
                return Err(ApiError::JobNotRunning(job.status));
            }
            if H::HEARTBEAT {
                let ip = req.peer_addr().map(|a| a.ip().to_string());
                state.runners.heartbeat_job(&job, ip).await?;
            }
            tracing::Span::current()
                .record("job_id", job.id)
                .record("project_id", job.project_id);
            if let Some(runner_id) = job.runner_id {
                tracing::Span::current().record("runner_id", runner_id);
            }
            req.extensions_mut().insert(job.clone());
            Ok(JobAuth {
                job,
                _mode: PhantomData,
            })
        })
    }
}

/// The admin (`PRIVATE-TOKEN`), or a running job with its token (`JOB-TOKEN` header or
/// `job_token` param), as GitLab's API accepts a job token where the job's user may act
/// (releases: what `release-cli` and `glab` send from a job). Which project a job may act
/// on is the handler's check ([`AdminOrJobAuth::may_act_on`]).
pub enum AdminOrJobAuth {
    Admin,
    Job(Box<Job>),
}

impl AdminOrJobAuth {
    /// Whether the caller may act on project `project_id`: the admin on any, a job on its
    /// own (GitLab answers 404 for another project, as it does for a project not there).
    pub fn may_act_on(&self, project_id: i64) -> ApiResult<()> {
        match self {
            AdminOrJobAuth::Admin => Ok(()),
            AdminOrJobAuth::Job(job) if job.project_id == project_id => Ok(()),
            AdminOrJobAuth::Job(_) => Err(ApiError::not_found("Project")),
        }
    }

    /// The job acting, if a job is.
    pub fn job(&self) -> Option<&Job> {
        match self {
            AdminOrJobAuth::Job(job) => Some(job),
            AdminOrJobAuth::Admin => None,
        }
    }
}

impl FromRequest for AdminOrJobAuth {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        guarded(req, |req, state| async move {
            let params = params_of(&req)?;
            let Some(token) = job_token(&req, &params, &["job_token"]) else {
                return admin(&req, &state).map(|_| AdminOrJobAuth::Admin);
            };
            state.limits.check(Limit::JobApi, &token)?;
            let mut db = state.db.read().await?;
            let job = crate::db::models::job_by_token_digest(
                &mut db.conn(),
                TokenDigest::of(&token).as_bytes(),
            )
            .await?
            .filter(|j| matches!(j.status, JobStatus::Running | JobStatus::Canceling))
            .ok_or(ApiError::Unauthorized)?;
            Ok(AdminOrJobAuth::Job(Box::new(job)))
        })
    }
}

/// `authenticate_job_via_dependent_job!` ‹lib/api/ci/helpers/runner.rb›, a permission rule,
/// not a dependency check: the caller's job token (`job_token` or `token` param, or the
/// `JOB-TOKEN` header) must belong to a running or canceling job — or one awaiting
/// acknowledgement — (else 401); the target job (`:id`) must exist (else 403) and belong
/// to the caller's project (else 403). The artifact check (404) is the handler's.
pub struct DependentJobAuth {
    /// The job whose token was presented.
    pub caller: Job,
    /// The job whose artifacts are asked for.
    pub target: Job,
}

impl FromRequest for DependentJobAuth {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        guarded(req, |req, state| async move {
            let params = params_of(&req)?;
            let token =
                job_token(&req, &params, &["job_token", "token"]).ok_or(ApiError::Unauthorized)?;
            state.limits.check(Limit::JobApi, &token)?;
            let mut db = state.db.read().await?;
            let mut conn = db.conn();
            let caller = crate::db::models::job_by_token_digest(
                &mut conn,
                TokenDigest::of(&token).as_bytes(),
            )
            .await?
            .filter(|j| {
                matches!(j.status, JobStatus::Running | JobStatus::Canceling)
                    || (j.status == JobStatus::Pending && j.ack_deadline.is_some())
            })
            .ok_or(ApiError::Unauthorized)?;
            let id = path_job_id(&req)?;
            let target = Job::find(&mut conn, id)
                .await?
                .ok_or(ApiError::Forbidden(None))?;
            if target.project_id != caller.project_id {
                return Err(ApiError::Forbidden(None));
            }
            tracing::Span::current()
                .record("job_id", target.id)
                .record("project_id", target.project_id);
            Ok(DependentJobAuth { caller, target })
        })
    }
}
