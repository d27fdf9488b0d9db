//! `/api/v4/jobs…` ‹lib/api/ci/runner.rb›: request a job, update its state.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{patch, post, put, web, HttpMessage, HttpRequest, HttpResponse};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::api::params::{Check, FromParams, Params, Validated};
use crate::api::runner::payload::{self, JobPayload, PayloadContext};
use crate::auth::{JobAuth, LogAppend, Polling, RunnerAuth};
use crate::db::enums::JobStatus;
use crate::db::models::Appended;
use crate::error::{ApiError, ApiResult, JOB_STATUS_HEADER};
use crate::queue::Polled;
use crate::service::pipelines::JobOutcome;
use crate::AppState;

pub const LAST_UPDATE_HEADER: &str = "X-GitLab-Last-Update";
pub const TRACE_UPDATE_INTERVAL_HEADER: &str = "X-GitLab-Trace-Update-Interval";

/// The path of the job request, answered by [`answer_known_poll`] outside the router.
pub const JOB_REQUEST_PATH: &str = "/api/v4/jobs/request";

/// A job request's raw body, read by [`answer_known_poll`] and handed on with the request,
/// for [`request_job`] to remember what it came to.
#[derive(Clone)]
pub struct PollBody(pub bytes::Bytes);

/// The poll was held by [`answer_known_poll`] and woken: it searches at once, even if the
/// version it carries is still current (a wave passed on does not move it). With when its
/// hold ends ([`crate::queue::Queue::hold_deadline`]): a search that finds nothing holds
/// it again until then.
#[derive(Clone, Copy)]
pub struct Woken(Option<tokio::time::Instant>);

/// The route pattern of a request answered before routing (for metrics and logs).
#[derive(Clone, Copy)]
pub struct AnsweredRoute(pub &'static str);

/// Middleware before routing: a job request whose exact body the server answered lately
/// (same runner, manager and `info`, nothing to write) and whose `last_update` is current
/// is answered here — held until the queue moves or the hold ends, then 204 — without
/// parsing it again, as GitLab's Workhorse answers such polls before Rails. Everything else
/// — and a poll whose hold sees the queue move — goes the whole way, with its body intact.
/// The checks the whole path makes first are made here too, refusing the same way: runner
/// backoff (left to the whole path), the address ban and the `runner_jobs_request_api`
/// limit.
pub async fn answer_known_poll(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody + 'static>>, actix_web::Error> {
    let candidate = req.method() == actix_web::http::Method::POST
        && req.path() == JOB_REQUEST_PATH
        && req
            .headers()
            .get(actix_web::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("application/json"));
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let (true, Some(state)) = (candidate, state) else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let body = bytes::Bytes::from(
        crate::api::params::read_limited(req.take_payload(), state.settings.max_body_bytes).await?,
    );
    let ip = req.peer_addr().map(|a| a.ip());
    let answer = |req: ServiceRequest, response: HttpResponse| {
        req.extensions_mut().insert(AnsweredRoute(JOB_REQUEST_PATH));
        Ok(req.into_response(response).map_into_right_body())
    };
    if let Some(poll) = state.runners.recall_poll(&body, ip) {
        let queue = &state.queue;
        // As the whole path answers a paused runner: at once, nothing to pick.
        let hold = !poll.runner.paused;
        let early = !hold || poll.last_update.as_deref() == Some(queue.current().as_str());
        if early && !state.backoff.active().await {
            // The whole path's checks, in its order, refusing the same way.
            let checked = state.limits.check_address(ip).and_then(|()| {
                let limit = crate::service::limits::Limit::JobsRequest;
                state.limits.check_digest(limit, &poll.token)
            });
            if let Err(refused) = checked {
                return answer(req, actix_web::ResponseError::error_response(&refused));
            }
            let deadline = queue.hold_deadline();
            let moved = match poll.last_update.as_deref() {
                Some(seen) if hold => queue.wait_for_change(seen, deadline).await,
                _ => false,
            };
            if !moved {
                state.metrics.poll_answered_early();
                let response = HttpResponse::NoContent()
                    .insert_header((LAST_UPDATE_HEADER, queue.current()))
                    .finish();
                return answer(req, response);
            }
            req.extensions_mut().insert(Woken(deadline));
        }
    }
    req.extensions_mut().insert(PollBody(body.clone()));
    req.set_payload(actix_web::dev::Payload::from(body));
    Ok(next.call(req).await?.map_into_left_body())
}

/// Params of `POST /jobs/request`.
#[derive(Debug, ToSchema)]
#[schema(example = json!({
    "token": "glrt-t1_paste-your-runner-token",
    "system_id": "s_0123456789ab",
    "info": { "name": "gitlab-runner", "version": "19.4.0", "executor": "shell", "features": { "variables": true, "artifacts": true, "upload_multiple_artifacts": true, "trace_checksum": true, "trace_size": true, "cancelable": true, "return_exit_code": true, "refspecs": true, "masking": true } }
}))]
pub struct JobRequestParams {
    pub token: String,
    pub system_id: Option<String>,
    /// The last `X-GitLab-Last-Update` the runner saw.
    pub last_update: Option<String>,
    /// `{name, version, revision, platform, architecture, executor, features, config, labels}`.
    #[schema(value_type = Option<Object>)]
    pub info: Option<Map<String, Value>>,
    #[schema(value_type = Option<Object>)]
    pub session: Option<Map<String, Value>>,
}

impl FromParams for JobRequestParams {
    fn from_params(params: &Params) -> ApiResult<Self> {
        let mut c = Check::new(params);
        let p = JobRequestParams {
            token: c.required_str("token"),
            system_id: c.str("system_id"),
            last_update: c.str("last_update"),
            info: c.object("info"),
            session: c.object("session"),
        };
        c.finish()?;
        Ok(p)
    }
}

/// Ask for a job. 201 with the job, or 204 with `X-GitLab-Last-Update`; a poll whose
/// `last_update` is current is held until a job for it arrives or the hold ends.
#[utoipa::path(
    tag = "jobs",
    operation_id = "request_job",
    request_body(content = JobRequestParams, content_type = "application/json"),
    security(("runner_token" = [])),
    responses(
        (status = 201, body = JobPayload, description = "a job for this runner"),
        (status = 204, description = "no job", headers(("X-GitLab-Last-Update" = String, description = "queue version to send back as last_update"))),
        (status = 400, description = "token missing"),
        (status = 403, description = "unknown or expired runner token"),
    )
)]
#[post("/jobs/request")]
pub async fn request_job(
    params: Validated<JobRequestParams>,
    auth: RunnerAuth<Polling>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    // A poll may be held for long: keep only what the search needs, not the parsed body
    // (the request's copy of the params and the raw body included).
    req.extensions_mut().remove::<Params>();
    let body = req.extensions_mut().remove::<PollBody>();
    let woken = req.extensions_mut().remove::<Woken>();
    let ip = req.peer_addr().map(|a| a.ip());
    drop(req);
    let manager = auth.manager.as_ref().ok_or(ApiError::Forbidden(None))?;
    let JobRequestParams {
        token,
        last_update,
        info,
        ..
    } = params.0;
    if let Some(PollBody(body)) = body {
        state.runners.remember_poll(
            &body,
            ip,
            &token,
            &auth.runner,
            manager,
            last_update.as_deref(),
        );
    }
    let features = match info.and_then(|mut info| info.remove("features")) {
        Some(Value::Object(features)) => features,
        _ => Map::new(),
    };
    let queue = &state.queue;
    // When the poll's hold ends: where it was held before routing, if it was.
    let deadline = match woken {
        Some(Woken(deadline)) => deadline,
        None => queue.hold_deadline(),
    };
    // A runner that sends the version it saw long-polls: a search that finds nothing holds
    // its poll (below). Held already and woken: it searches at once, whatever version it
    // carries.
    let long_polls = woken.is_some() || last_update.is_some();
    let mut seen = last_update.filter(|_| woken.is_none());
    let mut runner = auth.runner;
    loop {
        // A poll whose version is current is held until the queue moves or it is woken.
        if let Some(version) = seen.take().filter(|v| *v == queue.current()) {
            if runner.paused || !queue.wait_for_change(&version, deadline).await {
                return Ok(no_job(queue.current()));
            }
            // The runner as it is now: it may have been paused, retagged or given other
            // projects while the poll was held (what woke it, maybe). GitLab's Workhorse
            // hands a woken poll to Rails, which authenticates it again. Boxed: inline, every
            // held poll would carry room for the read through its hold.
            runner = Box::pin(state.runners.authenticate(&token)).await?;
        }
        // Boxed, as the read above: the search's state lives only while it runs.
        match Box::pin(
            state
                .dispatcher
                .request(&runner, manager, &features, deadline),
        )
        .await?
        {
            Polled::Assigned(assignment) => {
                if assignment.job.runner_manager_id != Some(manager.id) {
                    state.runners.manager_gone(manager);
                }
                if let Some(queued_at) = assignment.job.queued_at {
                    let waited = (crate::db::models::now() - queued_at)
                        .to_std()
                        .unwrap_or_default();
                    state.metrics.picked_up(waited);
                }
                let ctx = PayloadContext {
                    external_url: &state.settings.external_url,
                    secrets: &state.secrets,
                    id_tokens: &state.id_tokens,
                };
                let body = payload::build(&assignment, &runner, &ctx);
                return Ok(HttpResponse::Created().json(body));
            }
            // Nothing found (another runner took the job first, only jobs it cannot run
            // wait, or none): a long-polling runner's poll is held on the version read
            // before the search, until its hold ends, as its next poll would be. GitLab
            // answers 204 here, after which a runner waits for its next `check_interval`
            // tick (3 s by default) before it polls again, and a job arriving meanwhile
            // waits for it. A poll without a version (a runner's first) learns it at once.
            Polled::Empty {
                last_update,
                searched,
            } => {
                if long_polls && searched && deadline.is_some() && !queue.closing() {
                    seen = Some(last_update);
                    continue;
                }
                return Ok(no_job(last_update));
            }
        }
    }
}

/// No job for the poll: 204 with the queue's version to send back as `last_update`.
fn no_job(last_update: String) -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header((LAST_UPDATE_HEADER, last_update))
        .finish()
}

/// Params of `PUT /jobs/:id`.
#[derive(Debug, ToSchema)]
#[schema(example = json!({
    "token": "glcbt-64_paste-the-job-token",
    "state": "success",
    "checksum": "crc32:0a1b2c3d",
    "output": { "checksum": "crc32:0a1b2c3d", "bytesize": 6 },
    "exit_code": 0
}))]
pub struct UpdateJobParams {
    /// The job token (required as a param; the header alone is not enough).
    pub token: String,
    /// `running`, `success` or `failed`.
    pub state: Option<String>,
    pub failure_reason: Option<String>,
    pub exit_code: Option<i64>,
    /// Deprecated form of `output.checksum`.
    pub checksum: Option<String>,
    /// `{checksum, bytesize}` of the log as the runner sent it.
    #[schema(value_type = Option<Object>)]
    pub output: Option<Map<String, Value>>,
}

impl FromParams for UpdateJobParams {
    fn from_params(params: &Params) -> ApiResult<Self> {
        let mut c = Check::new(params);
        let p = UpdateJobParams {
            token: c.required_str("token"),
            state: c.str("state"),
            failure_reason: c.str("failure_reason"),
            exit_code: c.int("exit_code").flatten(),
            checksum: c.str("checksum"),
            output: c.object("output"),
        };
        c.finish()?;
        Ok(p)
    }
}

fn job_response(status: StatusCode, job_status: JobStatus, interval: Option<u64>) -> HttpResponse {
    let mut response = HttpResponse::build(status);
    response.insert_header((JOB_STATUS_HEADER, job_status.as_str()));
    if let Some(seconds) = interval {
        response.insert_header((TRACE_UPDATE_INTERVAL_HEADER, seconds.to_string()));
    }
    // GitLab's body is the status code as text; the runner does not read it.
    response
        .content_type("text/plain")
        .body(status.as_u16().to_string())
}

/// Report a job's state: `running` (keep-alive), `success` or `failed`. Answers with the
/// job's status in `Job-Status` (`canceling` asks the runner to cancel gracefully).
#[utoipa::path(
    tag = "jobs",
    operation_id = "update_job",
    params(("id" = i64, Path)),
    request_body(content = UpdateJobParams, content_type = "application/json"),
    security(("job_token" = [])),
    responses(
        (status = 200, description = "state recorded", headers(
            ("Job-Status" = String, description = "the job's status after the update"),
            ("X-GitLab-Trace-Update-Interval" = String, description = "seconds between trace updates"))),
        (status = 400, description = "token missing or state unknown"),
        (status = 403, description = "wrong token, or the job is not running", headers(("Job-Status" = String))),
    )
)]
#[put("/jobs/{id}")]
pub async fn update_job(
    params: Validated<UpdateJobParams>,
    auth: JobAuth,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let p = params.0;
    let job = auth.job;
    let interval = Some(
        state
            .traces
            .update_interval(job.id, state.settings.trace_update_interval)
            .as_secs(),
    );
    if job.status == JobStatus::Pending {
        // Awaiting acknowledgement (two-phase commit): `running` starts the job, `pending`
        // keeps it waiting, anything else is refused and leaves it pending.
        return Ok(match p.state.as_deref() {
            Some("running") => {
                let job = state.pipelines.acknowledge(job.id).await?;
                job_response(StatusCode::OK, job.status, interval)
            }
            Some("pending") => job_response(StatusCode::OK, job.status, None),
            _ => job_response(StatusCode::BAD_REQUEST, job.status, None),
        });
    }
    let checksum = p
        .output
        .as_ref()
        .and_then(|o| o.get("checksum"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .or(p.checksum);
    let bytesize = p
        .output
        .as_ref()
        .and_then(|o| o.get("bytesize"))
        .and_then(Value::as_i64);
    let exit_code = p
        .exit_code
        .map(|c| c.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32);
    let outcome = match p.state.as_deref() {
        Some("running") => return Ok(job_response(StatusCode::OK, job.status, interval)),
        Some("success") => JobOutcome {
            success: true,
            failure_reason: None,
            exit_code: None,
            checksum,
            bytesize,
        },
        Some("failed") => JobOutcome {
            success: false,
            failure_reason: p.failure_reason,
            exit_code,
            checksum,
            bytesize,
        },
        _ => return Ok(job_response(StatusCode::BAD_REQUEST, job.status, None)),
    };
    let job_id = job.id;
    let finished = state.pipelines.finish(job, outcome).await?;
    // `coverage`: read from the log once the job ended, off the request (GitLab's
    // BuildFinishedWorker does it in the background too).
    if let Some(pattern) = finished.spec().coverage {
        let state = state.clone();
        let job_id = finished.id;
        tokio::spawn(async move {
            if let Err(e) = state.artifacts.record_coverage(job_id, &pattern).await {
                tracing::warn!(job_id, error = %e, "reading the job's coverage failed");
            }
        });
    }
    state.traces.forget(job_id);
    Ok(job_response(StatusCode::OK, finished.status, None))
}

/// The start of `Content-Range: <start>-<end>`; GitLab ignores the end (clients disagree
/// on whether it is inclusive) and uses the body's length.
fn range_start(req: &HttpRequest) -> ApiResult<i64> {
    req.headers()
        .get("Content-Range")
        .and_then(|v| v.to_str().ok())
        .and_then(content_range_start)
        .ok_or(ApiError::MissingHeader("Content-Range"))
}

/// The start offset of a `Content-Range` value (`[bytes] <start>-<end>`), if it has one.
pub fn content_range_start(header: &str) -> Option<i64> {
    let start = header
        .trim()
        .trim_start_matches("bytes")
        .trim()
        .split('-')
        .next()
        .unwrap_or("");
    start.parse::<i64>().ok().filter(|s| *s >= 0)
}

/// Append to the job log at `Content-Range`'s start. 202 with `Range: 0-<size>`; 416 with
/// `Range: 0-<stored size>` when the start is not the stored size (the runner resumes
/// from there); 403 + `Job-Status` once the job stopped.
#[utoipa::path(
    tag = "jobs",
    operation_id = "append_trace",
    params(
        ("id" = i64, Path),
        ("debug_trace" = Option<bool>, Query),
        ("Content-Range" = String, Header, description = "`<start>-<end>`; only the start counts", example = "0-14"),
    ),
    request_body(content = String, content_type = "text/plain", example = json!("$ make test\nok\n")),
    security(("job_token" = [])),
    responses(
        (status = 202, description = "appended", headers(
            ("Range" = String, description = "0-<bytes stored>"),
            ("Job-Status" = String),
            ("X-GitLab-Trace-Update-Interval" = String))),
        (status = 400, description = "Content-Range missing"),
        (status = 403, description = "wrong token, job not running, or log too large", headers(("Job-Status" = String))),
        (status = 413, description = "one PATCH too large"),
        (status = 416, description = "start is not the stored size", headers(("Range" = String, description = "0-<bytes stored>"))),
    )
)]
#[patch("/jobs/{id}/trace")]
pub async fn append_trace(
    auth: JobAuth<LogAppend>,
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let job = auth.job;
    let start = range_start(&req)?;
    let expected = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .unwrap_or(0);
    let data = read_body(body, expected, state.settings.max_trace_patch_bytes).await?;
    let end = start + data.len() as i64;
    if end as u64 > state.settings.max_trace_bytes {
        // GitLab drops the job with `trace_size_exceeded` and forbids the write.
        let failed = state
            .pipelines
            .fail_job(job.id, "trace_size_exceeded")
            .await?;
        return Err(ApiError::JobNotRunning(failed.status));
    }
    let debug = crate::api::params::params_of(&req)?
        .text("debug_trace")
        .is_some_and(|v| v == "true" || v == "1");
    if debug && start == 0 && !job.debug_trace {
        state.traces.set_debug(job.id).await?;
    }
    match state.traces.append(&job, start, data).await? {
        Appended::Stored { size, status, .. } => Ok(HttpResponse::Accepted()
            .insert_header((JOB_STATUS_HEADER, status.as_str()))
            .insert_header(("Range", format!("0-{size}")))
            .insert_header((
                TRACE_UPDATE_INTERVAL_HEADER,
                state
                    .traces
                    .update_interval(job.id, state.settings.trace_update_interval)
                    .as_secs()
                    .to_string(),
            ))
            .finish()),
        Appended::Mismatch(size) => Ok(HttpResponse::RangeNotSatisfiable()
            .insert_header(("Range", format!("0-{size}")))
            .insert_header((JOB_STATUS_HEADER, job.status.as_str()))
            .json(serde_json::json!({ "message": "416 Range Not Satisfiable" }))),
        Appended::NotRunning(status) => Err(ApiError::JobNotRunning(status)),
        Appended::NotOwned => Err(ApiError::Forbidden(None)),
    }
}

/// The most room made for a log PATCH before its bytes arrive (a runner sends up to 1 MiB).
const BODY_ROOM: usize = 1 << 20;

/// The whole body, refused with 413 beyond `max` bytes; room for `expected` bytes (the
/// announced length, trusted up to [`BODY_ROOM`]) is made at once.
async fn read_body(mut body: web::Payload, expected: usize, max: usize) -> ApiResult<Vec<u8>> {
    use futures_util::StreamExt;
    let mut data = Vec::with_capacity(expected.min(max).min(BODY_ROOM));
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|_| ApiError::bad_request("request body could not be read"))?;
        if data.len() + chunk.len() > max {
            return Err(ApiError::PayloadTooLarge);
        }
        data.extend_from_slice(&chunk);
    }
    Ok(data)
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(request_job)
        .service(update_job)
        .service(append_trace);
}
