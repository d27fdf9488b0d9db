//! Projects, pipelines and jobs through the admin API, with GitLab's REST shapes
//! (`API::Entities::Project`, `Ci::Pipeline`, `Ci::Job`), so python-gitlab works unchanged.

use actix_web::{get, post, put, web, HttpRequest, HttpResponse};
use chrono::NaiveDateTime;
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::api::admin::audit::record_admin_action;
use crate::api::admin::page_of;
use crate::api::format_time;
use crate::api::params::{params_of, Check, FromParams, Params, Validated};
use crate::api::runner::payload::slug;
use crate::auth::AdminAuth;
use crate::db::enums::JobStatus;
use crate::db::models::ci_minutes::month_start;
use crate::db::models::project::ProjectChanges;
use crate::db::models::{now, CiMinutesUsage, Job, NewProject, Pipeline, Project, Runner};
use crate::error::{ApiError, ApiResult};
use crate::service::pipelines::{NewPipelineRequest, PipelineVariable};
use crate::AppState;

fn time(t: &Option<NaiveDateTime>) -> Value {
    t.as_ref().map_or(Value::Null, |t| json!(format_time(t)))
}

fn duration(start: &Option<NaiveDateTime>, end: &Option<NaiveDateTime>) -> Value {
    match (start, end) {
        (Some(s), Some(e)) => json!((*e - *s).num_milliseconds() as f64 / 1000.0),
        (Some(s), None) => json!((now() - *s).num_milliseconds() as f64 / 1000.0),
        _ => Value::Null,
    }
}

pub fn project_json(p: &Project, base: &str) -> Value {
    let web_url = format!("{base}/{}", p.path_with_namespace());
    json!({
        "id": p.id,
        "name": p.name,
        "path": p.path,
        "name_with_namespace": p.name_with_namespace(),
        "path_with_namespace": p.path_with_namespace(),
        "description": p.description,
        "default_branch": p.default_branch,
        "visibility": "private",
        // Where git reaches the project's repository through Runway (`git_http`).
        "http_url_to_repo": format!("{web_url}.git"),
        // Runway's: the upstream it mirrors (or the local repository it reads).
        "repository_url": p.repository_url,
        "web_url": web_url,
        "namespace": { "id": 1, "name": p.namespace_path, "path": p.namespace_path, "kind": "group", "full_path": p.namespace_path },
        "shared_runners_enabled": p.shared_runners_enabled,
        "build_timeout": p.build_timeout,
        "shared_runners_minutes_limit": p.shared_runners_minutes_limit,
        // Runway's: seconds between timed pulls of the upstream (null: the instance's
        // `RUNWAY_MIRROR_INTERVAL`; 0: only when asked), and the last timed pull.
        "mirror_interval": p.mirror_interval,
        "mirror_last_update_at": time(&p.mirror_pulled_at),
        // Pipelines created longer ago are deleted (null: the instance's
        // `RUNWAY_DELETE_PIPELINES_AFTER`, if set).
        "ci_delete_pipelines_in_seconds": p.ci_delete_pipelines_in_seconds,
        "protected_branches": serde_json::from_str::<Value>(&p.protected_branches).unwrap_or(json!([])),
        "created_at": format_time(&p.created_at),
        "last_activity_at": format_time(&p.updated_at),
    })
}

pub fn pipeline_json(p: &Pipeline, project: &Project, base: &str) -> Value {
    json!({
        "id": p.id,
        "iid": p.id,
        "project_id": p.project_id,
        "sha": p.sha,
        "ref": p.ref_,
        "status": p.status,
        "source": p.source,
        "name": p.name,
        "before_sha": p.before_sha,
        "tag": p.tag,
        "yaml_errors": p.yaml_errors,
        // Runway's: false for a pipeline of a project without a repository, whose jobs
        // run without sources (`GIT_STRATEGY: none`).
        "has_sources": p.has_sources,
        "created_at": format_time(&p.created_at),
        "updated_at": format_time(&p.updated_at),
        "started_at": time(&p.started_at),
        "finished_at": time(&p.finished_at),
        "committed_at": null,
        "duration": duration(&p.started_at, &p.finished_at).as_f64().map(|d| d.round() as i64),
        "queued_duration": null,
        "coverage": null,
        "web_url": format!("{base}/{}/-/pipelines/{}", project.path_with_namespace(), p.id),
        "user": user_json(base),
        "detailed_status": { "text": p.status, "label": p.status, "group": p.status },
    })
}

fn user_json(base: &str) -> Value {
    json!({ "id": 1, "username": "root", "name": "Administrator", "state": "active", "web_url": format!("{base}/root") })
}

pub fn job_json(
    j: &Job,
    pipeline: &Pipeline,
    project: &Project,
    runner: Option<&Runner>,
    base: &str,
) -> Value {
    let mut value = json!({
        "id": j.id,
        "status": j.status,
        "stage": j.stage,
        "name": j.name,
        "ref": pipeline.ref_,
        "tag": pipeline.tag,
        "coverage": null,
        "allow_failure": j.allow_failure,
        "created_at": format_time(&j.created_at),
        "started_at": time(&j.started_at),
        "finished_at": time(&j.finished_at),
        "erased_at": time(&j.erased_at),
        "duration": duration(&j.started_at, &j.finished_at),
        "queued_duration": j.queued_at.map(|q| (j.started_at.unwrap_or_else(now) - q).num_milliseconds() as f64 / 1000.0),
        "user": user_json(base),
        "commit": { "id": pipeline.sha, "short_id": pipeline.sha.chars().take(8).collect::<String>(), "title": "" },
        "pipeline": {
            "id": pipeline.id, "iid": pipeline.id, "project_id": pipeline.project_id, "sha": pipeline.sha,
            "ref": pipeline.ref_, "status": pipeline.status, "source": pipeline.source,
            "created_at": format_time(&pipeline.created_at), "updated_at": format_time(&pipeline.updated_at),
            "web_url": format!("{base}/{}/-/pipelines/{}", project.path_with_namespace(), pipeline.id),
        },
        "web_url": format!("{base}/{}/-/jobs/{}", project.path_with_namespace(), j.id),
        "project": { "ci_job_token_scope_enabled": false },
        "artifacts": [],
        "artifacts_expire_at": null,
        "tag_list": j.tags(),
        "when": j.when_,
        "retried": j.retried,
        "exit_code": j.exit_code,
        "runner": runner.map(|r| json!({
            "id": r.id, "description": r.description, "active": !r.paused, "paused": r.paused,
            "is_shared": r.runner_type == crate::db::enums::RunnerType::Instance,
            "runner_type": r.runner_type, "name": r.name,
        })),
    });
    if j.status == JobStatus::Failed {
        value["failure_reason"] = json!(j.failure_reason);
    }
    // Runway: the job's environment (GitLab shows it through its deployments).
    if let Some(env) = j.spec().environment {
        value["environment"] =
            json!({ "name": env.name, "url": env.url, "action": env.action, "tier": env.tier });
    }
    value
}

/// Params of `POST /projects`.
#[derive(Debug, ToSchema)]
pub struct CreateProjectParams {
    pub name: Option<String>,
    pub path: Option<String>,
    /// Namespace path (default `root`).
    pub namespace: Option<String>,
    pub description: Option<String>,
    /// The URL runners clone (shown as `http_url_to_repo`): a path, `file://` or http(s).
    pub repository_url: Option<String>,
    pub default_branch: Option<String>,
    /// Branches protected besides the default branch.
    pub protected_branches: Option<Vec<String>>,
    pub build_timeout: Option<i64>,
    pub shared_runners_enabled: Option<bool>,
    /// Minutes a month the project may run on instance runners; 0 or absent: no limit.
    pub shared_runners_minutes_limit: Option<i64>,
    /// Runway: seconds between timed pulls of `repository_url` (0: only when asked,
    /// absent: the instance's `RUNWAY_MIRROR_INTERVAL`).
    pub mirror_interval: Option<i64>,
    /// Pipelines created longer ago are deleted with their jobs, logs and artifacts
    /// (between a day and a year; absent: the instance's `RUNWAY_DELETE_PIPELINES_AFTER`).
    pub ci_delete_pipelines_in_seconds: Option<i64>,
}

impl FromParams for CreateProjectParams {
    fn from_params(params: &Params) -> ApiResult<Self> {
        let mut c = Check::new(params);
        let p = CreateProjectParams {
            name: c.str_max("name", 255),
            path: c.str_max("path", 255),
            namespace: c.str_max("namespace", 255),
            description: c.str_max("description", 2000),
            repository_url: c.str_max("repository_url", 2048),
            default_branch: c.str_max("default_branch", 255),
            protected_branches: c.tags("protected_branches"),
            build_timeout: c.int("build_timeout").flatten(),
            shared_runners_enabled: c.bool("shared_runners_enabled"),
            shared_runners_minutes_limit: c.int("shared_runners_minutes_limit").flatten(),
            mirror_interval: c.int("mirror_interval").flatten(),
            ci_delete_pipelines_in_seconds: c.int("ci_delete_pipelines_in_seconds").flatten(),
        };
        c.finish()?;
        if p.name.is_none() && p.path.is_none() {
            return Err(ApiError::InvalidParams(
                "name, path are missing, at least one parameter must be provided".into(),
            ));
        }
        Ok(p)
    }
}

/// Create a project.
#[utoipa::path(tag = "projects", operation_id = "create_project",
    request_body(content = CreateProjectParams, content_type = "application/json"),
    security(("private_token" = [])),
    responses((status = 201, description = "the project"), (status = 400, description = "invalid params or path taken"),
              (status = 401, description = "no or wrong admin token")))]
#[post("/projects")]
pub async fn create_project(
    _admin: AdminAuth,
    params: Validated<CreateProjectParams>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let p = params.0;
    let name = p.name.clone().or(p.path.clone()).unwrap_or_default();
    let path = p.path.clone().unwrap_or_else(|| slug(&name));
    let namespace = p.namespace.clone().unwrap_or_else(|| "root".into());
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && !s.starts_with(['-', '.'])
    };
    if !valid(&path) || !namespace.split('/').all(valid) {
        return Err(ApiError::validation(
            "path",
            "can contain only letters, digits, '_', '-' and '.'. Cannot start with '-' or '.'",
        ));
    }
    check_limits(p.build_timeout, p.shared_runners_minutes_limit)?;
    check_mirror_interval(p.mirror_interval)?;
    check_retention(p.ci_delete_pipelines_in_seconds)?;
    check_repository_url(&state, p.repository_url.as_deref())?;
    let at = now();
    let mut db = state.db.write().await?;
    let mut conn = db.conn();
    if Project::find_by_path(&mut conn, &namespace, &path)
        .await?
        .is_some()
    {
        return Err(ApiError::Validation(
            json!({ "name": ["has already been taken"], "path": ["has already been taken"] }),
        ));
    }
    let project = Project::create(
        &mut conn,
        NewProject {
            name: &name,
            path: &path,
            namespace_path: &namespace,
            description: p.description.as_deref(),
            repository_url: p.repository_url.as_deref(),
            default_branch: p.default_branch.as_deref().unwrap_or("main"),
            protected_branches: json!(p.protected_branches.unwrap_or_default()).to_string(),
            build_timeout: p.build_timeout.unwrap_or(3600) as i32,
            shared_runners_enabled: p.shared_runners_enabled.unwrap_or(true),
            created_at: at,
            updated_at: at,
            shared_runners_minutes_limit: p.shared_runners_minutes_limit.map(|m| m as i32),
            mirror_interval: p.mirror_interval.map(|m| m as i32),
            ci_delete_pipelines_in_seconds: p.ci_delete_pipelines_in_seconds.map(|s| s as i32),
        },
    )
    .await?;
    drop(db);
    let details = json!({ "path_with_namespace": project.path_with_namespace() });
    record_admin_action(&state, "project_created", "project", project.id, details).await;
    Ok(HttpResponse::Created().json(project_json(&project, &state.settings.external_url)))
}

/// A `repository_url` git may read with the configured schemes ([`crate::service::repos::check_url`]).
fn check_repository_url(state: &AppState, url: Option<&str>) -> ApiResult<()> {
    match url.filter(|u| !u.is_empty()) {
        Some(url) => state
            .repositories
            .check_url(url)
            .map_err(|e| ApiError::validation("repository_url", e)),
        None => Ok(()),
    }
}

/// A month at most between two timed pulls; 0 turns the timer off for the project.
fn check_mirror_interval(interval: Option<i64>) -> ApiResult<()> {
    if interval.is_some_and(|i| !(0..=2_592_000).contains(&i)) {
        return Err(ApiError::validation(
            "mirror_interval",
            "must be between 0 and 2592000 seconds",
        ));
    }
    Ok(())
}

/// GitLab's bounds for `ci_delete_pipelines_in_seconds` (`ProjectCiCdSetting`): a day to a
/// year (the default `ci_delete_pipelines_in_seconds_limit`).
fn check_retention(seconds: Option<i64>) -> ApiResult<()> {
    const ONE_YEAR: i64 = 365 * crate::config::ONE_DAY_SECONDS;
    if seconds.is_some_and(|s| !(crate::config::ONE_DAY_SECONDS..=ONE_YEAR).contains(&s)) {
        return Err(ApiError::validation(
            "ci_delete_pipelines_in_seconds",
            "must be between 1 day and 1 year",
        ));
    }
    Ok(())
}

/// GitLab's bounds: a job timeout between 10 minutes and a month; a quota not negative.
fn check_limits(build_timeout: Option<i64>, minutes_limit: Option<i64>) -> ApiResult<()> {
    if build_timeout.is_some_and(|t| !(600..=2_592_000).contains(&t)) {
        return Err(ApiError::validation(
            "build_timeout",
            "needs to be between 10 minutes and 1 month",
        ));
    }
    if minutes_limit.is_some_and(|m| !(0..=i64::from(i32::MAX)).contains(&m)) {
        return Err(ApiError::validation(
            "shared_runners_minutes_limit",
            "must be greater than or equal to 0",
        ));
    }
    Ok(())
}

/// Params of `PUT /projects/:id`: what is given changes, the rest stays.
#[derive(Debug, ToSchema)]
pub struct UpdateProjectParams {
    pub name: Option<String>,
    pub description: Option<String>,
    pub repository_url: Option<String>,
    pub default_branch: Option<String>,
    /// Branches protected besides the default branch.
    pub protected_branches: Option<Vec<String>>,
    pub build_timeout: Option<i64>,
    pub shared_runners_enabled: Option<bool>,
    /// Minutes a month on instance runners; 0 or null: no limit.
    #[schema(nullable)]
    pub shared_runners_minutes_limit: Option<i64>,
    /// Runway: the secret of the push webhook (`POST /projects/:id/hooks/push`); empty:
    /// the hook is off. Never shown again.
    pub push_hook_secret: Option<String>,
    /// Runway: seconds between timed pulls of `repository_url` (0: only when asked; empty:
    /// the instance's `RUNWAY_MIRROR_INTERVAL`).
    #[schema(nullable)]
    pub mirror_interval: Option<Option<i64>>,
    /// Pipelines created longer ago are deleted with their jobs, logs and artifacts
    /// (between a day and a year; null: the instance's `RUNWAY_DELETE_PIPELINES_AFTER`).
    #[schema(nullable)]
    pub ci_delete_pipelines_in_seconds: Option<Option<i64>>,
}

impl FromParams for UpdateProjectParams {
    fn from_params(params: &Params) -> ApiResult<Self> {
        let mut c = Check::new(params);
        let p = UpdateProjectParams {
            name: c.str_max("name", 255),
            description: c.str_max("description", 2000),
            repository_url: c.str_max("repository_url", 2048),
            default_branch: c.str_max("default_branch", 255),
            protected_branches: c.tags("protected_branches"),
            build_timeout: c.int("build_timeout").flatten(),
            shared_runners_enabled: c.bool("shared_runners_enabled"),
            // null clears the limit as 0 does.
            shared_runners_minutes_limit: c
                .int("shared_runners_minutes_limit")
                .map(|m| m.unwrap_or(0)),
            push_hook_secret: c.str_max("push_hook_secret", 255),
            mirror_interval: c.int("mirror_interval"),
            ci_delete_pipelines_in_seconds: c.clearable_int("ci_delete_pipelines_in_seconds"),
        };
        c.finish()?;
        if p.name.as_deref() == Some("") || p.default_branch.as_deref() == Some("") {
            return Err(ApiError::InvalidParams(
                "name, default_branch are empty".into(),
            ));
        }
        Ok(p)
    }
}

/// Change a project's settings, its CI minutes quota among them.
#[utoipa::path(tag = "projects", operation_id = "update_project", params(("id" = String, Path, description = "id or URL-encoded path")),
    request_body(content = UpdateProjectParams, content_type = "application/json"),
    security(("private_token" = [])),
    responses((status = 200, description = "the project"), (status = 400, description = "invalid params"),
              (status = 404, description = "no such project")))]
#[put("/projects/{id}")]
pub async fn update_project(
    _admin: AdminAuth,
    id: web::Path<String>,
    params: Validated<UpdateProjectParams>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let project = find_project(&state, &id).await?;
    let p = params.0;
    check_limits(p.build_timeout, p.shared_runners_minutes_limit)?;
    check_repository_url(&state, p.repository_url.as_deref())?;
    check_mirror_interval(p.mirror_interval.flatten())?;
    check_retention(p.ci_delete_pipelines_in_seconds.flatten())?;
    let changes = ProjectChanges {
        name: p.name.clone(),
        description: p.description.clone().map(Some),
        repository_url: p.repository_url.clone().map(Some),
        default_branch: p.default_branch.clone(),
        protected_branches: p.protected_branches.as_ref().map(|b| json!(b).to_string()),
        build_timeout: p.build_timeout.map(|t| t as i32),
        shared_runners_enabled: p.shared_runners_enabled,
        shared_runners_minutes_limit: p.shared_runners_minutes_limit.map(|m| Some(m as i32)),
        push_hook_secret: p
            .push_hook_secret
            .clone()
            .map(|s| Some(s).filter(|s| !s.is_empty())),
        mirror_interval: p.mirror_interval.map(|m| m.map(|m| m as i32)),
        ci_delete_pipelines_in_seconds: p
            .ci_delete_pipelines_in_seconds
            .map(|s| s.map(|s| s as i32)),
        updated_at: Some(now()),
    };
    let project = {
        let mut db = state.db.write().await?;
        Project::update(&mut db.conn(), project.id, &changes)
            .await?
            .ok_or_else(|| ApiError::not_found("Project"))?
    };
    state.dispatcher.project_changed(project.id);
    let details = json!({
        "build_timeout": p.build_timeout,
        "shared_runners_enabled": p.shared_runners_enabled,
        "shared_runners_minutes_limit": p.shared_runners_minutes_limit,
        "default_branch": p.default_branch,
        "mirror_interval": p.mirror_interval,
        "ci_delete_pipelines_in_seconds": p.ci_delete_pipelines_in_seconds,
    });
    record_admin_action(&state, "project_updated", "project", project.id, details).await;
    Ok(HttpResponse::Ok().json(project_json(&project, &state.settings.external_url)))
}

/// A project's CI minutes by month (newest first) and by runner: running time and the
/// minutes counted against the quota (instance runners, cost factor 1; own runners free).
#[utoipa::path(tag = "projects", operation_id = "get_project_ci_minutes", params(("id" = String, Path, description = "id or URL-encoded path")),
    security(("private_token" = [])),
    responses((status = 200, description = "usage by month: `{month, minutes, shared_runners_duration, duration, jobs, runners:[…]}`"),
              (status = 404, description = "no such project")))]
#[get("/projects/{id}/ci_minutes_usage")]
pub async fn ci_minutes_usage(
    _admin: AdminAuth,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let project = find_project(&state, &id).await?;
    let rows = {
        let mut db = state.db.read().await?;
        CiMinutesUsage::of_project(&mut db.conn(), project.id).await?
    };
    Ok(HttpResponse::Ok().json(usage_by_month(&project, &rows)))
}

/// Sums usage rows (oldest first) by month, and in each month by runner.
fn usage_by_month(project: &Project, rows: &[CiMinutesUsage]) -> Value {
    use std::collections::BTreeMap;
    #[derive(Default)]
    struct Sum {
        jobs: u64,
        duration: f64,
        minutes: f64,
    }
    impl Sum {
        fn add(&mut self, row: &CiMinutesUsage) {
            self.jobs += 1;
            self.duration += row.duration_seconds;
            self.minutes += row.minutes;
        }
    }
    #[derive(Default)]
    struct Month {
        total: Sum,
        /// Seconds on runners that count against the quota.
        shared: f64,
        runners: BTreeMap<i64, (String, Sum)>,
    }
    let mut months: BTreeMap<chrono::NaiveDateTime, Month> = BTreeMap::new();
    for row in rows {
        let month = months.entry(month_start(row.finished_at)).or_default();
        month.total.add(row);
        if row.cost_factor > 0.0 {
            month.shared += row.duration_seconds;
        }
        month
            .runners
            .entry(row.runner_id)
            .or_insert_with(|| (row.runner_type.to_string(), Sum::default()))
            .1
            .add(row);
    }
    let limit = project.minutes_limit();
    let items: Vec<Value> = months
        .into_iter()
        .rev()
        .map(|(start, month)| {
            json!({
                "month": start.format("%B").to_string(),
                "month_iso8601": start.format("%Y-%m-%d").to_string(),
                "minutes": month.total.minutes,
                "shared_runners_duration": month.shared,
                "duration": month.total.duration,
                "jobs": month.total.jobs,
                "shared_runners_minutes_limit": limit,
                "runners": month.runners.into_iter().map(|(id, (runner_type, sum))| json!({
                    "runner_id": id, "runner_type": runner_type, "jobs": sum.jobs,
                    "duration": sum.duration, "minutes": sum.minutes,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!(items)
}

/// A project by id or URL-encoded `namespace/path`.
pub async fn find_project(state: &AppState, raw: &str) -> ApiResult<Project> {
    let mut db = state.db.read().await?;
    let mut conn = db.conn();
    let found = match raw.parse::<i64>() {
        Ok(id) => Project::find(&mut conn, id).await?,
        Err(_) => {
            let decoded = raw.replace("%2F", "/").replace("%2f", "/");
            Project::find_by_full_path(&mut conn, &decoded).await?
        }
    };
    found.ok_or_else(|| ApiError::not_found("Project"))
}

/// All projects.
#[utoipa::path(tag = "projects", operation_id = "list_projects", security(("private_token" = [])),
    responses((status = 200, description = "projects"), (status = 401, description = "no or wrong admin token")))]
#[get("/projects")]
pub async fn list_projects(
    _admin: AdminAuth,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let page = page_of(&params_of(&req)?)?;
    let mut db = state.db.read().await?;
    let projects = Project::all(&mut db.conn()).await?;
    let items: Vec<Value> = projects
        .iter()
        .map(|p| project_json(p, &state.settings.external_url))
        .collect();
    Ok(page.respond(&req, items))
}

/// One project.
#[utoipa::path(tag = "projects", operation_id = "get_project", params(("id" = String, Path, description = "id or URL-encoded path")),
    security(("private_token" = [])),
    responses((status = 200, description = "the project"), (status = 404, description = "no such project")))]
#[get("/projects/{id}")]
pub async fn get_project(
    _admin: AdminAuth,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let project = find_project(&state, &id).await?;
    Ok(HttpResponse::Ok().json(project_json(&project, &state.settings.external_url)))
}

/// Params of `POST /projects/:id/pipeline`.
#[derive(Debug, ToSchema)]
pub struct CreatePipelineParams {
    /// Branch or tag name.
    #[schema(rename = "ref")]
    pub ref_: String,
    pub sha: Option<String>,
    /// `[{key, value, variable_type}]`.
    pub variables: Vec<PipelineVariable>,
    /// Runway: the `.gitlab-ci.yml` text of this pipeline.
    pub ci_config: Option<String>,
    /// Values for the configuration's `spec:inputs` (GitLab 17.10+): `{name: value}`.
    #[schema(value_type = Option<Object>)]
    pub inputs: Option<serde_yaml_ng::Mapping>,
}

impl FromParams for CreatePipelineParams {
    fn from_params(params: &Params) -> ApiResult<Self> {
        let mut c = Check::new(params);
        let ref_ = c.required_str("ref");
        let sha = c.str_max("sha", 64);
        let ci_config = c.str("ci_config");
        let variables = match params.get("variables") {
            None => Some(Vec::new()),
            Some(Value::Array(items)) => items.iter().map(pipeline_variable).collect(),
            Some(_) => None,
        };
        let variables = variables.unwrap_or_else(|| {
            c.invalid("variables");
            Vec::new()
        });
        // A pipeline variable is never masked (GitLab's have no such attribute; masking
        // belongs to CI/CD variables): `masked: true` is refused rather than dropped, so
        // nobody believes a secret sent this way stays out of job logs.
        let masked = |v: &Value| {
            !matches!(
                v.get("masked"),
                None | Some(Value::Null | Value::Bool(false))
            )
        };
        if let Some(Value::Array(items)) = params.get("variables") {
            if items.iter().any(masked) {
                c.error("variables masked is not supported: pipeline variables are never masked");
            }
        }
        let inputs = inputs_param(&mut c, params);
        c.finish()?;
        Ok(CreatePipelineParams {
            ref_,
            sha,
            variables,
            ci_config,
            inputs,
        })
    }
}

/// `optional :inputs, type: Hash`: JSON values keep their types.
pub fn inputs_param(c: &mut Check<'_>, params: &Params) -> Option<serde_yaml_ng::Mapping> {
    match params.get("inputs") {
        None | Some(Value::Null) => None,
        Some(value @ Value::Object(_)) => match serde_yaml_ng::to_value(value) {
            Ok(serde_yaml_ng::Value::Mapping(inputs)) => Some(inputs),
            _ => {
                c.invalid("inputs");
                None
            }
        },
        Some(_) => {
            c.invalid("inputs");
            None
        }
    }
}

/// One `{key, value, variable_type}` entry; `None` when it is not one.
fn pipeline_variable(v: &Value) -> Option<PipelineVariable> {
    let key = v.get("key")?.as_str()?.to_string();
    let value = match v.get("value") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        None | Some(Value::Null) => String::new(),
        _ => return None,
    };
    Some(PipelineVariable { key, value })
}

/// The pipeline `p` asks for, its sha and configuration resolved: from `ci_config` (Runway)
/// or from the repository's `.gitlab-ci.yml` at the ref. `source` is GitLab's pipeline
/// source (`api`, `web`).
pub async fn pipeline_request(
    state: &AppState,
    project: &Project,
    p: CreatePipelineParams,
    source: &str,
) -> ApiResult<NewPipelineRequest> {
    let (sha, tag, ci_config, files) = match p.ci_config {
        // Runway's extension: the configuration comes with the request. The jobs still
        // check out the ref's commit of the project's repository (or the given sha);
        // only a project without a repository gets a sha made from the configuration
        // (its jobs run without sources).
        Some(ci_config) => match state
            .repositories
            .commit(project, &p.ref_, p.sha.as_deref())
            .await?
        {
            Some((sha, tag, files)) => (sha, tag, ci_config, Some(files)),
            None => {
                let sha = p.sha.unwrap_or_else(|| {
                    let seed = format!("{}\n{}\n{ci_config}", project.id, p.ref_);
                    crate::auth::tokens::TokenDigest::of(&seed).to_hex()[..40].to_string()
                });
                (sha, false, ci_config, None)
            }
        },
        // As GitLab: `.gitlab-ci.yml` of the commit the ref (or sha) names.
        None => {
            let resolved = state
                .repositories
                .read_config(project, &p.ref_, p.sha.as_deref())
                .await?;
            (
                resolved.sha,
                resolved.tag,
                resolved.ci_config,
                Some(resolved.files),
            )
        }
    };
    Ok(NewPipelineRequest {
        ref_: p.ref_,
        sha,
        tag,
        variables: p.variables,
        ci_config,
        source: source.into(),
        files,
        inputs: p.inputs,
        before_sha: crate::service::pipelines::ZERO_SHA.into(),
        save_on_errors: false,
        schedule_id: None,
        parent_bridge_id: None,
    })
}

/// Create a pipeline at `ref`: from `ci_config` (Runway) or the repository's `.gitlab-ci.yml`.
#[utoipa::path(tag = "pipelines", operation_id = "create_pipeline", params(("id" = String, Path)),
    request_body(content = CreatePipelineParams, content_type = "application/json"),
    security(("private_token" = [])),
    responses((status = 201, description = "the pipeline"),
              (status = 400, description = "invalid params, or the configuration is refused: {\"message\":{\"base\":[…]}}"),
              (status = 404, description = "no such project")))]
#[post("/projects/{id}/pipeline")]
pub async fn create_pipeline(
    _admin: AdminAuth,
    id: web::Path<String>,
    params: Validated<CreatePipelineParams>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    // By id, the project as the polls keep it (a change on this instance or a notified
    // one is read at once): pushes and scripts create pipelines fast, and the read is a
    // round trip before the first job can be picked up.
    let project = match id.parse::<i64>() {
        Ok(project_id) => state
            .queue
            .project(&state.db, project_id)
            .await?
            .ok_or_else(|| ApiError::not_found("Project"))?,
        Err(_) => std::sync::Arc::new(find_project(&state, &id).await?),
    };
    let request = pipeline_request(&state, &project, params.0, "api").await?;
    let pipeline = state.pipelines.create(&project, request).await?;
    let details = json!({ "project_id": project.id, "ref": pipeline.ref_, "sha": pipeline.sha });
    record_admin_action(&state, "pipeline_created", "pipeline", pipeline.id, details).await;
    Ok(HttpResponse::Created().json(pipeline_json(
        &pipeline,
        &project,
        &state.settings.external_url,
    )))
}

/// Pull a mirrored project's upstream now (GitLab's endpoint): a pipeline starts for
/// each branch or tag head that moved since the last pull.
#[utoipa::path(tag = "projects", operation_id = "pull_mirror", params(("id" = String, Path)),
    security(("private_token" = [])),
    responses((status = 200, description = "`{pipelines}`: how many started"),
              (status = 400, description = "The project is not mirrored"), (status = 404, description = "no such project")))]
#[post("/projects/{id}/mirror/pull")]
pub async fn pull_mirror(
    _admin: AdminAuth,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let project = find_project(&state, &id).await?;
    let started = crate::service::pushes::pull(&state, &project).await?;
    Ok(HttpResponse::Ok().json(json!({ "pipelines": started })))
}

/// The push webhook of a mirrored project (GitHub, Gitea and GitLab send it when the
/// upstream gets a push): signed with the project's `push_hook_secret` — GitHub's and
/// Gitea's `X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body>`, or GitLab's
/// `X-Gitlab-Token: <secret>` — it pulls the upstream as `mirror/pull` does. Anything else
/// is refused (401) and fetches nothing.
#[utoipa::path(tag = "projects", operation_id = "push_hook", params(("id" = String, Path)),
    request_body(content = String, description = "the forge's push event (only its signature is read)"),
    responses((status = 200, description = "`{pipelines}`: how many started"),
              (status = 401, description = "no valid signature"), (status = 404, description = "no such project")))]
#[post("/projects/{id}/hooks/push")]
pub async fn push_hook(
    req: actix_web::HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let ip = crate::auth::guards::peer_ip(&req);
    state.limits.check_address(ip)?;
    let project = find_project(&state, &id).await?;
    let signed = project
        .push_hook_secret
        .as_deref()
        .is_some_and(|secret| push_hook_signed(&req, &body, secret));
    if !signed {
        state.limits.authentication_failed(ip);
        return Err(ApiError::Unauthorized);
    }
    let started = crate::service::pushes::pull(&state, &project).await?;
    Ok(HttpResponse::Ok().json(json!({ "pipelines": started })))
}

/// Whether the request carries the secret: GitLab's token, or a GitHub/Gitea HMAC of the
/// body — compared in constant time.
fn push_hook_signed(req: &actix_web::HttpRequest, body: &[u8], secret: &str) -> bool {
    use hmac::Mac;
    use subtle::ConstantTimeEq;
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    if let Some(token) = header("X-Gitlab-Token") {
        return token.as_bytes().ct_eq(secret.as_bytes()).into();
    }
    let Some(signature) = header("X-Hub-Signature-256").and_then(|s| s.strip_prefix("sha256="))
    else {
        return false;
    };
    let Ok(given) = hex::decode(signature) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(create_project)
        .service(pull_mirror)
        .service(push_hook)
        .service(list_projects)
        .service(get_project)
        .service(update_project)
        .service(ci_minutes_usage)
        .service(create_pipeline);
}
