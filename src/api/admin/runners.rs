//! Admin runner API: `POST /user/runners`, `GET /runners/all`, `GET|PUT|DELETE /runners/:id`,
//! with GitLab's runner JSON (`API::Entities::Ci::Runner` / `RunnerDetails`).

use std::collections::HashMap;

use actix_web::{delete, get, post, put, web, HttpRequest, HttpResponse};
use chrono::{NaiveDateTime, TimeDelta};
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::admin::{page_of, Page};
use crate::api::params::{params_of, Check, FromParams, Params, Validated};
use crate::api::runner::runners::RunnerRegistrationDetails;
use crate::api::{no_content, path_id, serialize_time, serialize_time_opt};
use crate::auth::AdminAuth;
use crate::db::enums::{AccessLevel, RegistrationType, RunnerType};
use crate::db::models::{now, Project, Runner, RunnerChanges, RunnerFilter, RunnerManager};
use crate::error::{ApiError, ApiResult};
use crate::service::runners::RunnerSettings;
use crate::AppState;

/// `Ci::Runner::ONLINE_CONTACT_TIMEOUT`.
const ONLINE_CONTACT_TIMEOUT: TimeDelta = TimeDelta::hours(2);
/// `Ci::Runner::STALE_TIMEOUT`.
const STALE_TIMEOUT: TimeDelta = TimeDelta::days(7);

/// `online`, `offline`, `stale` or `never_contacted`, from `contacted_at` as GitLab derives it.
pub fn runner_status(runner: &Runner, at: NaiveDateTime) -> &'static str {
    contact_status(runner.contacted_at, runner.created_at, at)
}

/// The status of a runner or runner manager from its contacts (`Ci::HasRunnerStatus`).
fn contact_status(
    contacted_at: Option<NaiveDateTime>,
    created_at: NaiveDateTime,
    at: NaiveDateTime,
) -> &'static str {
    let last = contacted_at.map_or(created_at, |c| c.max(created_at));
    if last <= at - STALE_TIMEOUT {
        "stale"
    } else if contacted_at.is_none() {
        "never_contacted"
    } else if contacted_at.is_some_and(|c| c > at - ONLINE_CONTACT_TIMEOUT) {
        "online"
    } else {
        "offline"
    }
}

fn is_online(runner: &Runner, at: NaiveDateTime) -> bool {
    runner_status(runner, at) == "online"
}

/// A runner in a list (`API::Entities::Ci::Runner`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiRunner {
    pub id: i64,
    pub description: String,
    pub ip_address: Option<String>,
    pub active: bool,
    pub paused: bool,
    pub is_shared: bool,
    #[schema(value_type = String, example = "instance_type")]
    pub runner_type: RunnerType,
    pub name: Option<String>,
    pub online: bool,
    #[schema(example = "online")]
    pub status: String,
}

/// A project a runner is assigned to.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiRunnerProject {
    pub id: i64,
    pub name: String,
    pub name_with_namespace: String,
    pub path: String,
    pub path_with_namespace: String,
}

/// One runner in full (`API::Entities::Ci::RunnerDetails`); machine facts come from its
/// most recently contacted manager.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiRunnerDetails {
    #[serde(flatten)]
    pub runner: ApiRunner,
    pub tag_list: Vec<String>,
    pub run_untagged: bool,
    pub locked: bool,
    pub maximum_timeout: Option<i32>,
    #[schema(value_type = String)]
    pub access_level: AccessLevel,
    pub version: Option<String>,
    pub revision: Option<String>,
    pub platform: Option<String>,
    pub architecture: Option<String>,
    #[serde(serialize_with = "serialize_time_opt")]
    #[schema(value_type = Option<String>)]
    pub contacted_at: Option<NaiveDateTime>,
    pub maintenance_note: Option<String>,
    #[serde(serialize_with = "serialize_time")]
    #[schema(value_type = String)]
    pub created_at: NaiveDateTime,
    pub projects: Vec<ApiRunnerProject>,
    pub groups: Vec<serde_json::Value>,
}

fn api_runner(runner: &Runner, manager: Option<&RunnerManager>, at: NaiveDateTime) -> ApiRunner {
    ApiRunner {
        id: runner.id,
        description: runner.description.clone(),
        ip_address: manager.and_then(|m| m.ip_address.clone()),
        active: !runner.paused,
        paused: runner.paused,
        is_shared: runner.runner_type == RunnerType::Instance,
        runner_type: runner.runner_type,
        name: runner.name.clone(),
        online: is_online(runner, at),
        status: runner_status(runner, at).to_string(),
    }
}

async fn details(state: &AppState, runner: Runner) -> ApiResult<ApiRunnerDetails> {
    let mut db = state.db.read().await?;
    let mut conn = db.conn();
    let manager = RunnerManager::latest_for_runners(&mut conn, &[runner.id])
        .await?
        .pop();
    let projects = Project::for_runner(&mut conn, runner.id).await?;
    let at = now();
    Ok(ApiRunnerDetails {
        runner: api_runner(&runner, manager.as_ref(), at),
        tag_list: runner.tags(),
        run_untagged: runner.run_untagged,
        locked: runner.locked,
        maximum_timeout: runner.maximum_timeout,
        access_level: runner.access_level,
        version: manager.as_ref().and_then(|m| m.version.clone()),
        revision: manager.as_ref().and_then(|m| m.revision.clone()),
        platform: manager.as_ref().and_then(|m| m.platform.clone()),
        architecture: manager.as_ref().and_then(|m| m.architecture.clone()),
        contacted_at: runner.contacted_at,
        maintenance_note: runner.maintenance_note.clone(),
        created_at: runner.created_at,
        projects: projects
            .iter()
            .map(|p| ApiRunnerProject {
                id: p.id,
                name: p.name.clone(),
                name_with_namespace: p.name_with_namespace(),
                path: p.path.clone(),
                path_with_namespace: p.path_with_namespace(),
            })
            .collect(),
        groups: Vec::new(),
    })
}

/// Runners as the API lists them, each with its latest manager's facts.
async fn api_runners(
    conn: &mut crate::db::Conn<'_>,
    runners: &[Runner],
) -> ApiResult<Vec<ApiRunner>> {
    let ids: Vec<i64> = runners.iter().map(|r| r.id).collect();
    let managers: HashMap<i64, RunnerManager> = RunnerManager::latest_for_runners(conn, &ids)
        .await?
        .into_iter()
        .map(|m| (m.runner_id, m))
        .collect();
    let at = now();
    Ok(runners
        .iter()
        .map(|r| api_runner(r, managers.get(&r.id), at))
        .collect())
}

async fn find_runner(state: &AppState, raw_id: &str) -> ApiResult<Runner> {
    let id = path_id(raw_id, "id")?;
    let mut db = state.db.read().await?;
    let found = Runner::find(&mut db.conn(), id).await?;
    found.ok_or_else(|| ApiError::not_found("Runner"))
}

/// Params of `POST /user/runners`.
#[derive(Debug, ToSchema)]
pub struct CreateRunnerParams {
    #[schema(value_type = String, example = "instance_type")]
    pub runner_type: RunnerType,
    /// Required for `project_type`.
    pub project_id: Option<i64>,
    pub description: Option<String>,
    pub maintenance_note: Option<String>,
    pub paused: Option<bool>,
    pub locked: Option<bool>,
    pub run_untagged: Option<bool>,
    pub tag_list: Option<Vec<String>>,
    #[schema(value_type = Option<String>)]
    pub access_level: Option<AccessLevel>,
    pub maximum_timeout: Option<i64>,
}

impl FromParams for CreateRunnerParams {
    fn from_params(params: &Params) -> ApiResult<Self> {
        let mut c = Check::new(params);
        let runner_type = if params.get("runner_type").is_none() {
            c.required_str("runner_type");
            None
        } else {
            c.one_of("runner_type", RunnerType::parse)
        };
        let project_id = c.int("project_id").flatten();
        let description = c.str_max("description", 1024);
        let maintenance_note = c.str_max("maintenance_note", 1024);
        let paused = c.bool("paused");
        let locked = c.bool("locked");
        let run_untagged = c.bool("run_untagged");
        let tag_list = c.tags("tag_list");
        let access_level = c.one_of("access_level", AccessLevel::parse);
        let maximum_timeout = c.int("maximum_timeout").flatten();
        c.finish()?;
        let runner_type = runner_type.unwrap_or(RunnerType::Instance);
        match runner_type {
            RunnerType::Project if project_id.is_none() => {
                return Err(ApiError::bad_request("project_id is required for project_type runners"))
            }
            RunnerType::Group => {
                return Err(ApiError::bad_request(
                    "group_type runners are not supported: Runway has no groups; use instance_type or project_type",
                ))
            }
            _ => {}
        }
        Ok(CreateRunnerParams {
            runner_type,
            project_id: if runner_type == RunnerType::Project {
                project_id
            } else {
                None
            },
            description,
            maintenance_note,
            paused,
            locked,
            run_untagged,
            tag_list,
            access_level,
            maximum_timeout,
        })
    }
}

/// Create a runner and get its `glrt-` authentication token (shown once).
#[utoipa::path(
    tag = "admin runners",
    operation_id = "create_runner",
    request_body(content = CreateRunnerParams, content_type = "application/json"),
    security(("private_token" = [])),
    responses(
        (status = 201, body = RunnerRegistrationDetails),
        (status = 400, description = "invalid params"),
        (status = 401, description = "no or wrong admin token"),
        (status = 404, description = "project not found"),
    )
)]
#[post("/user/runners")]
pub async fn create_runner(
    _admin: AdminAuth,
    params: Validated<CreateRunnerParams>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let p = params.0;
    let settings = RunnerSettings {
        runner_type: p.runner_type,
        name: None,
        description: p.description.unwrap_or_default(),
        maintenance_note: p.maintenance_note,
        tags: p.tag_list.unwrap_or_default(),
        run_untagged: p.run_untagged.unwrap_or(true),
        locked: p.locked.unwrap_or(false),
        paused: p.paused.unwrap_or(false),
        access_level: p.access_level.unwrap_or(AccessLevel::NotProtected),
        maximum_timeout: p.maximum_timeout,
        project_id: p.project_id,
    };
    let created = state
        .runners
        .create(settings, RegistrationType::AuthenticatedUser)
        .await?;
    let details = serde_json::json!({
        "runner_type": created.runner.runner_type, "description": created.runner.description,
    });
    super::audit::record_admin_action(
        &state,
        "runner_created",
        "runner",
        created.runner.id,
        details,
    )
    .await;
    Ok(HttpResponse::Created().json(RunnerRegistrationDetails {
        id: created.runner.id,
        token: created.token,
        token_expires_at: created.runner.token_expires_at,
    }))
}

/// All runners, filtered by `type`, `paused`, `status`, `tag_list`; paginated.
#[utoipa::path(
    tag = "admin runners",
    operation_id = "list_runners",
    params(
        ("type" = Option<String>, Query, description = "instance_type, group_type or project_type"),
        ("paused" = Option<bool>, Query),
        ("status" = Option<String>, Query, description = "online, offline, stale or never_contacted"),
        ("tag_list" = Option<String>, Query, description = "comma-separated; runners with all of them"),
        ("page" = Option<i64>, Query), ("per_page" = Option<i64>, Query),
    ),
    security(("private_token" = [])),
    responses((status = 200, body = Vec<ApiRunner>), (status = 401, description = "no or wrong admin token"))
)]
#[get("/runners/all")]
pub async fn list_runners(
    _admin: AdminAuth,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let params = params_of(&req)?;
    let mut c = Check::new(&params);
    let filter = RunnerFilter {
        runner_type: c.one_of("type", RunnerType::parse),
        paused: c.bool("paused"),
        tags: c.tags("tag_list").unwrap_or_default(),
    };
    let status = c.one_of("status", |s| {
        ["online", "offline", "stale", "never_contacted"]
            .contains(&s)
            .then(|| s.to_string())
    });
    c.finish()?;
    let page: Page = page_of(&params)?;
    let mut db = state.db.read().await?;
    let mut conn = db.conn();
    let runners = Runner::list(&mut conn, &filter, None).await?;
    let items: Vec<ApiRunner> = api_runners(&mut conn, &runners)
        .await?
        .into_iter()
        .filter(|r| status.as_ref().is_none_or(|s| *s == r.status))
        .collect();
    Ok(page.respond(&req, items))
}

/// One runner in full.
#[utoipa::path(
    tag = "admin runners",
    operation_id = "get_runner",
    params(("id" = i64, Path)),
    security(("private_token" = [])),
    responses(
        (status = 200, body = ApiRunnerDetails),
        (status = 401, description = "no or wrong admin token"),
        (status = 404, description = "no such runner"),
    )
)]
#[get("/runners/{id}")]
pub async fn get_runner(
    _admin: AdminAuth,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let runner = find_runner(&state, &id).await?;
    Ok(HttpResponse::Ok().json(details(&state, runner).await?))
}

/// One machine of a runner (`API::Entities::Ci::RunnerManager`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiRunnerManager {
    pub id: i64,
    pub system_id: String,
    pub version: Option<String>,
    pub revision: Option<String>,
    pub platform: Option<String>,
    pub architecture: Option<String>,
    #[serde(serialize_with = "serialize_time")]
    #[schema(value_type = String)]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "serialize_time_opt")]
    #[schema(value_type = Option<String>)]
    pub contacted_at: Option<NaiveDateTime>,
    pub ip_address: Option<String>,
    #[schema(example = "online")]
    pub status: &'static str,
}

/// A runner's managers: the machines that ran it (GitLab's `GET /runners/:id/managers`).
#[utoipa::path(
    tag = "admin runners",
    operation_id = "list_runner_managers",
    params(("id" = i64, Path)),
    security(("private_token" = [])),
    responses(
        (status = 200, body = Vec<ApiRunnerManager>),
        (status = 401, description = "no or wrong admin token"),
        (status = 404, description = "no such runner"),
    )
)]
#[get("/runners/{id}/managers")]
pub async fn list_runner_managers(
    _admin: AdminAuth,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let runner = find_runner(&state, &id).await?;
    let managers = state.runners.managers_of(runner.id).await?;
    let at = now();
    let items: Vec<ApiRunnerManager> = managers
        .into_iter()
        .map(|m| ApiRunnerManager {
            status: contact_status(m.contacted_at, m.created_at, at),
            id: m.id,
            system_id: m.system_xid,
            version: m.version,
            revision: m.revision,
            platform: m.platform,
            architecture: m.architecture,
            created_at: m.created_at,
            contacted_at: m.contacted_at,
            ip_address: m.ip_address,
        })
        .collect();
    Ok(HttpResponse::Ok().json(items))
}

/// Params of `PUT /runners/:id`; absent params leave the runner as it is.
#[derive(Debug, Default, ToSchema)]
pub struct UpdateRunnerParams {
    pub description: Option<String>,
    pub active: Option<bool>,
    pub paused: Option<bool>,
    pub tag_list: Option<Vec<String>>,
    pub run_untagged: Option<bool>,
    pub locked: Option<bool>,
    #[schema(value_type = Option<String>)]
    pub access_level: Option<AccessLevel>,
    /// Seconds (at least 600); empty to clear.
    pub maximum_timeout: Option<Option<i64>>,
    pub maintenance_note: Option<String>,
}

impl FromParams for UpdateRunnerParams {
    fn from_params(params: &Params) -> ApiResult<Self> {
        let mut c = Check::new(params);
        let p = UpdateRunnerParams {
            description: c.str_max("description", 1024),
            active: c.bool("active"),
            paused: c.bool("paused"),
            tag_list: c.tags("tag_list"),
            run_untagged: c.bool("run_untagged"),
            locked: c.bool("locked"),
            access_level: c.one_of("access_level", AccessLevel::parse),
            maximum_timeout: c.int("maximum_timeout"),
            maintenance_note: c.str_max("maintenance_note", 1024),
        };
        c.exclusive("active", "paused");
        c.finish()?;
        Ok(p)
    }
}

/// Change a runner's settings.
#[utoipa::path(
    tag = "admin runners",
    operation_id = "update_runner",
    params(("id" = i64, Path)),
    request_body(content = Option<UpdateRunnerParams>, content_type = "application/json", description = "the settings to change (none: nothing changes)"),
    security(("private_token" = [])),
    responses(
        (status = 200, body = ApiRunnerDetails),
        (status = 400, description = "invalid params"),
        (status = 401, description = "no or wrong admin token"),
        (status = 404, description = "no such runner"),
    )
)]
#[put("/runners/{id}")]
pub async fn update_runner(
    _admin: AdminAuth,
    id: web::Path<String>,
    params: Validated<UpdateRunnerParams>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let current = find_runner(&state, &id).await?;
    let p = params.0;
    let changes = RunnerChanges {
        description: p.description,
        maintenance_note: p.maintenance_note.map(Some),
        tag_list: p.tag_list.map(|t| serde_json::json!(t).to_string()),
        run_untagged: p.run_untagged,
        locked: p.locked,
        paused: p.paused.or(p.active.map(|a| !a)),
        access_level: p.access_level,
        maximum_timeout: p
            .maximum_timeout
            .map(|t| t.map(|t| t.clamp(0, i64::from(i32::MAX)) as i32)),
        updated_at: None,
    };
    // What was asked to change, for the audit event (tokens never are).
    let asked: serde_json::Map<String, serde_json::Value> = [
        ("description", serde_json::json!(changes.description)),
        (
            "tag_list",
            serde_json::json!(changes
                .tag_list
                .as_deref()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())),
        ),
        ("run_untagged", serde_json::json!(changes.run_untagged)),
        ("locked", serde_json::json!(changes.locked)),
        ("paused", serde_json::json!(changes.paused)),
        ("access_level", serde_json::json!(changes.access_level)),
        (
            "maximum_timeout",
            serde_json::json!(changes.maximum_timeout),
        ),
    ]
    .into_iter()
    .filter(|(_, value)| !value.is_null())
    .map(|(key, value)| (key.to_string(), value))
    .collect();
    let updated = state.runners.update(&current, changes).await?;
    let asked = serde_json::Value::Object(asked);
    super::audit::record_admin_action(&state, "runner_updated", "runner", updated.id, asked).await;
    Ok(HttpResponse::Ok().json(details(&state, updated).await?))
}

/// Delete a runner.
#[utoipa::path(
    tag = "admin runners",
    operation_id = "delete_runner_by_id",
    params(("id" = i64, Path)),
    security(("private_token" = [])),
    responses(
        (status = 204, description = "deleted"),
        (status = 401, description = "no or wrong admin token"),
        (status = 404, description = "no such runner"),
    )
)]
#[delete("/runners/{id}")]
pub async fn delete_runner_by_id(
    _admin: AdminAuth,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let runner = find_runner(&state, &id).await?;
    state.runners.delete(runner.id).await?;
    let details = serde_json::json!({ "description": runner.description });
    super::audit::record_admin_action(&state, "runner_deleted", "runner", runner.id, details).await;
    Ok(no_content())
}

/// The runners a project's jobs may use (GitLab's `GET /projects/:id/runners`): its own
/// project runners, and the instance runners when it allows them; `type` to filter.
#[utoipa::path(tag = "admin runners", operation_id = "list_project_runners",
    params(("id" = String, Path), ("type" = Option<String>, Query, description = "instance_type or project_type")),
    security(("private_token" = [])),
    responses((status = 200, body = Vec<ApiRunner>), (status = 404, description = "no such project")))]
#[get("/projects/{id}/runners")]
pub async fn list_project_runners(
    _admin: AdminAuth,
    id: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let project = crate::api::admin::projects::find_project(&state, &id).await?;
    let params = params_of(&req)?;
    let mut c = Check::new(&params);
    let kind = c.one_of("type", RunnerType::parse);
    c.finish()?;
    let page: Page = page_of(&params)?;
    let mut db = state.db.read().await?;
    let mut conn = db.conn();
    let mut runners = Runner::list(&mut conn, &RunnerFilter::default(), Some(project.id)).await?;
    if project.shared_runners_enabled {
        let instance = RunnerFilter {
            runner_type: Some(RunnerType::Instance),
            ..Default::default()
        };
        runners.extend(Runner::list(&mut conn, &instance, None).await?);
    }
    runners.retain(|r| kind.is_none_or(|k| r.runner_type == k));
    runners.sort_by_key(|r| r.id);
    let items = api_runners(&mut conn, &runners).await?;
    Ok(page.respond(&req, items))
}

/// Params of `POST /projects/:id/runners`.
#[derive(Debug, ToSchema)]
pub struct EnableRunnerParams {
    /// The project runner to assign.
    pub runner_id: i64,
}

impl FromParams for EnableRunnerParams {
    fn from_params(params: &Params) -> ApiResult<Self> {
        let mut c = Check::new(params);
        let runner_id = match c.int("runner_id") {
            Some(Some(id)) => id,
            Some(None) => 0,
            None => {
                c.error("runner_id is missing");
                0
            }
        };
        c.finish()?;
        Ok(EnableRunnerParams { runner_id })
    }
}

/// Assign a project runner to a project too (GitLab's rules: not an instance runner, not
/// a locked one).
#[utoipa::path(tag = "admin runners", operation_id = "enable_project_runner", params(("id" = String, Path)),
    request_body(content = EnableRunnerParams, content_type = "application/json", example = json!({ "runner_id": 7 })),
    security(("private_token" = [])),
    responses((status = 201, body = ApiRunner), (status = 400, description = "already assigned"),
              (status = 403, description = "an instance runner, or a locked one"), (status = 404, description = "no such project or runner")))]
#[post("/projects/{id}/runners")]
pub async fn enable_project_runner(
    params: Validated<EnableRunnerParams>,
    _admin: AdminAuth,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let project = crate::api::admin::projects::find_project(&state, &id).await?;
    let runner = find_runner(&state, &params.0.runner_id.to_string()).await?;
    // `authenticate_enable_runner!`.
    if runner.runner_type == RunnerType::Instance {
        return Err(ApiError::forbidden("Runner is instance type"));
    }
    if runner.locked {
        return Err(ApiError::forbidden("Runner is locked"));
    }
    {
        let mut db = state.db.write().await?;
        let mut conn = db.conn();
        if Project::for_runner(&mut conn, runner.id)
            .await?
            .iter()
            .any(|p| p.id == project.id)
        {
            return Err(ApiError::validation("runner", "has already been taken"));
        }
        Project::assign_runner(&mut conn, runner.id, project.id).await?;
    }
    state.queue.bump_all();
    let details = serde_json::json!({ "project_id": project.id });
    super::audit::record_admin_action(&state, "runner_assigned", "runner", runner.id, details)
        .await;
    Ok(HttpResponse::Created().json(api_runner(&runner, None, now())))
}

/// Take a project runner off a project; not off its last one (delete the runner then).
#[utoipa::path(tag = "admin runners", operation_id = "disable_project_runner",
    params(("id" = String, Path), ("runner_id" = i64, Path)),
    security(("private_token" = [])),
    responses((status = 204, description = "unassigned"), (status = 403, description = "its only project"),
              (status = 404, description = "not assigned to the project")))]
#[delete("/projects/{id}/runners/{runner_id}")]
pub async fn disable_project_runner(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, runner_id) = path.into_inner();
    let project = crate::api::admin::projects::find_project(&state, &id).await?;
    let runner = find_runner(&state, &runner_id).await?;
    let mut db = state.db.write().await?;
    let mut conn = db.conn();
    let projects = Project::for_runner(&mut conn, runner.id).await?;
    if !projects.iter().any(|p| p.id == project.id) {
        return Err(ApiError::not_found("Runner"));
    }
    if projects.len() == 1 {
        return Err(ApiError::forbidden(
            "Only one project associated with the runner. Please remove the runner instead",
        ));
    }
    Project::unassign_runner(&mut conn, runner.id, project.id).await?;
    drop(db);
    let details = serde_json::json!({ "project_id": project.id });
    super::audit::record_admin_action(&state, "runner_unassigned", "runner", runner.id, details)
        .await;
    Ok(no_content())
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(list_project_runners)
        .service(enable_project_runner)
        .service(disable_project_runner)
        .service(create_runner)
        .service(list_runners)
        .service(get_runner)
        .service(list_runner_managers)
        .service(update_runner)
        .service(delete_runner_by_id);
}
