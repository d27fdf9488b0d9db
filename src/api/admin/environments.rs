//! Environments and deployments, as GitLab's `lib/api/environments.rb` and
//! `lib/api/deployments.rb` serve them: a project's environments (made by jobs, or here)
//! with their last deployment, stopping one (its `on_stop` job runs), and the deployments.

use actix_web::{delete, get, post, put, web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::api::admin::audit::record_admin_action;
use crate::api::admin::page_of;
use crate::api::admin::pipelines::jobs_json;
use crate::api::admin::projects::find_project;
use crate::api::params::{params_of, Check, FromParams, Params, Validated};
use crate::api::{format_time, path_id};
use crate::auth::AdminAuth;
use crate::db::models::environment::{Deployment, DeploymentList, Environment, EnvironmentChanges};
use crate::db::models::{now, Job, Project};
use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// `Entities::EnvironmentBasic`.
fn environment_basic(e: &Environment) -> Value {
    json!({
        "id": e.id,
        "name": e.name,
        "slug": e.slug,
        "external_url": e.external_url,
        "created_at": format_time(&e.created_at),
        "updated_at": format_time(&e.updated_at),
    })
}

/// `Entities::Deployment`: its environment and its job (`deployable`).
async fn deployment_json(
    state: &AppState,
    project: &Project,
    d: &Deployment,
    environment: &Environment,
) -> ApiResult<Value> {
    let job = {
        let mut db = state.db.read().await?;
        Job::find(&mut db.conn(), d.job_id).await?
    };
    let deployable = match job {
        Some(job) => jobs_json(state, project, std::slice::from_ref(&job))
            .await?
            .pop()
            .unwrap_or(Value::Null),
        None => Value::Null,
    };
    let base = &state.settings.external_url;
    Ok(json!({
        "id": d.id,
        "iid": d.iid,
        "ref": d.ref_,
        "sha": d.sha,
        "status": d.status,
        "created_at": format_time(&d.created_at),
        "updated_at": format_time(&d.updated_at),
        "finished_at": d.finished_at.as_ref().map(format_time),
        "user": { "id": 1, "username": "root", "name": "Administrator", "state": "active", "web_url": format!("{base}/root") },
        "environment": environment_basic(environment),
        "deployable": deployable,
    }))
}

/// `Entities::Environment`: the basics, its state, tier, auto-stop time and last
/// deployment.
async fn environment_json(
    state: &AppState,
    project: &Project,
    e: &Environment,
) -> ApiResult<Value> {
    let last = {
        let mut db = state.db.read().await?;
        Deployment::last_of(&mut db.conn(), e.id, false).await?
    };
    let mut value = environment_basic(e);
    value["description"] = json!(e.description);
    value["state"] = json!(e.state);
    value["tier"] = json!(e.tier);
    value["auto_stop_at"] = json!(e.auto_stop_at.as_ref().map(format_time));
    value["project"] =
        json!({ "id": project.id, "path_with_namespace": project.path_with_namespace() });
    value["last_deployment"] = match last {
        Some(d) => deployment_json(state, project, &d, e).await?,
        None => Value::Null,
    };
    Ok(value)
}

async fn find_environment(
    state: &AppState,
    project: &Project,
    raw: &str,
) -> ApiResult<Environment> {
    let id = path_id(raw, "environment_id")?;
    let mut db = state.db.read().await?;
    Environment::find(&mut db.conn(), project.id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("Environment"))
}

/// Params of the environments list.
struct ListEnvironments {
    name: Option<String>,
    search: Option<String>,
    states: Option<String>,
}

impl FromParams for ListEnvironments {
    fn from_params(params: &Params) -> ApiResult<Self> {
        let mut c = Check::new(params);
        let p = ListEnvironments {
            name: c.str("name"),
            search: c.str("search"),
            states: c.one_of("states", |s| {
                ["available", "stopping", "stopped"]
                    .contains(&s)
                    .then(|| s.to_string())
            }),
        };
        c.exclusive("name", "search");
        c.finish()?;
        Ok(p)
    }
}

/// A project's environments (`name`, `search` and `states` filter them).
#[utoipa::path(tag = "environments", operation_id = "list_environments", params(("id" = String, Path)),
    security(("private_token" = [])),
    responses((status = 200, description = "environments, each with its last deployment"), (status = 404, description = "no such project")))]
#[get("/projects/{id}/environments")]
pub async fn list_environments(
    _admin: AdminAuth,
    id: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let project = find_project(&state, &id).await?;
    let params = params_of(&req)?;
    let page = page_of(&params)?;
    let filter = ListEnvironments::from_params(&params)?;
    let environments = {
        let mut db = state.db.read().await?;
        Environment::for_project(&mut db.conn(), project.id).await?
    };
    let mut shown = Vec::new();
    for e in environments.iter().filter(|e| {
        filter.name.as_ref().is_none_or(|n| *n == e.name)
            && filter
                .search
                .as_ref()
                .is_none_or(|s| e.name.contains(s.as_str()))
            && filter.states.as_ref().is_none_or(|s| *s == e.state)
    }) {
        shown.push(environment_json(&state, &project, e).await?);
    }
    Ok(page.respond(&req, shown))
}

/// One environment.
#[utoipa::path(tag = "environments", operation_id = "get_environment",
    params(("id" = String, Path), ("environment_id" = i64, Path)), security(("private_token" = [])),
    responses((status = 200, description = "the environment"), (status = 404, description = "no such environment")))]
#[get("/projects/{id}/environments/{environment_id}")]
pub async fn get_environment(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, environment_id) = path.into_inner();
    let project = find_project(&state, &id).await?;
    let environment = find_environment(&state, &project, &environment_id).await?;
    Ok(HttpResponse::Ok().json(environment_json(&state, &project, &environment).await?))
}

/// Params of a create or an update.
#[derive(Debug, ToSchema)]
pub struct EnvironmentParams {
    /// The name (a create only).
    pub name: Option<String>,
    pub external_url: Option<String>,
    /// `production`, `staging`, `testing`, `development` or `other`.
    pub tier: Option<String>,
    pub description: Option<String>,
}

impl FromParams for EnvironmentParams {
    fn from_params(params: &Params) -> ApiResult<Self> {
        let mut c = Check::new(params);
        let p = EnvironmentParams {
            name: c.str_max("name", 255),
            external_url: c.str_max("external_url", 255),
            tier: c.one_of("tier", |t| {
                crate::ci::environment::TIERS
                    .contains(&t)
                    .then(|| t.to_string())
            }),
            description: c.str_max("description", 10_000),
        };
        c.finish()?;
        Ok(p)
    }
}

/// Make an environment.
#[utoipa::path(tag = "environments", operation_id = "create_environment", params(("id" = String, Path)),
    request_body(content = EnvironmentParams, content_type = "application/json", example = json!({ "name": "staging", "external_url": "https://staging.example.com" })),
    security(("private_token" = [])),
    responses((status = 201, description = "the environment"), (status = 400, description = "name missing, invalid or taken"),
              (status = 404, description = "no such project")))]
#[post("/projects/{id}/environments")]
pub async fn create_environment(
    params: Validated<EnvironmentParams>,
    _admin: AdminAuth,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let project = find_project(&state, &id).await?;
    let p = params.0;
    let Some(name) = p.name else {
        return Err(ApiError::InvalidParams("name is missing".into()));
    };
    // GitLab's name rule; a name with `$` is refused too (a job's would be expanded).
    if !crate::ci::environment::valid_name(&name) || name.contains('$') {
        return Err(ApiError::Validation(json!({ "name": [
            "can contain only letters, digits, '-', '_', '/', '$', '{', '}', '.', and spaces, but it cannot start or end with '/'"
        ] })));
    }
    let tier = p
        .tier
        .unwrap_or_else(|| crate::ci::environment::guess_tier(&name).to_string());
    let created = {
        let mut db = state.db.write().await?;
        Environment::create(
            &mut db.conn(),
            project.id,
            &name,
            &tier,
            p.external_url.as_deref(),
            p.description.as_deref(),
            now(),
        )
        .await?
    };
    if created == 0 {
        return Err(ApiError::Validation(
            json!({ "name": ["has already been taken"] }),
        ));
    }
    let environment = {
        let mut db = state.db.read().await?;
        Environment::find_by_name(&mut db.conn(), project.id, &name)
            .await?
            .ok_or(ApiError::Conflict)?
    };
    record_admin_action(
        &state,
        "environment_created",
        "Environment",
        environment.id,
        json!({ "project_id": project.id, "name": name }),
    )
    .await;
    Ok(HttpResponse::Created().json(environment_json(&state, &project, &environment).await?))
}

/// Change an environment's URL, tier or description.
#[utoipa::path(tag = "environments", operation_id = "update_environment",
    params(("id" = String, Path), ("environment_id" = i64, Path)),
    request_body(content = EnvironmentParams, content_type = "application/json", example = json!({ "external_url": "https://new.example.com" })),
    security(("private_token" = [])),
    responses((status = 200, description = "the environment"), (status = 404, description = "no such environment")))]
#[put("/projects/{id}/environments/{environment_id}")]
pub async fn update_environment(
    params: Validated<EnvironmentParams>,
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, environment_id) = path.into_inner();
    let project = find_project(&state, &id).await?;
    let environment = find_environment(&state, &project, &environment_id).await?;
    let p = params.0;
    let changes = EnvironmentChanges {
        external_url: p.external_url.map(|u| Some(u).filter(|u| !u.is_empty())),
        tier: p.tier,
        description: p.description.map(Some),
        updated_at: Some(now()),
        ..Default::default()
    };
    {
        let mut db = state.db.write().await?;
        Environment::update(&mut db.conn(), environment.id, &changes).await?;
    }
    let environment = find_environment(&state, &project, &environment_id).await?;
    Ok(HttpResponse::Ok().json(environment_json(&state, &project, &environment).await?))
}

/// Delete a stopped environment (and its deployments).
#[utoipa::path(tag = "environments", operation_id = "delete_environment",
    params(("id" = String, Path), ("environment_id" = i64, Path)), security(("private_token" = [])),
    responses((status = 204, description = "deleted"), (status = 403, description = "the environment is not stopped"),
              (status = 404, description = "no such environment")))]
#[delete("/projects/{id}/environments/{environment_id}")]
pub async fn delete_environment(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, environment_id) = path.into_inner();
    let project = find_project(&state, &id).await?;
    let environment = find_environment(&state, &project, &environment_id).await?;
    // GitLab: only a stopped environment can be deleted.
    if environment.state != "stopped" {
        return Err(ApiError::Forbidden(None));
    }
    {
        let mut db = state.db.write().await?;
        Environment::delete(&mut db.conn(), environment.id).await?;
    }
    record_admin_action(
        &state,
        "environment_deleted",
        "Environment",
        environment.id,
        json!({ "project_id": project.id, "name": environment.name }),
    )
    .await;
    Ok(HttpResponse::NoContent().finish())
}

/// Params of a stop.
struct StopParams {
    force: bool,
}

impl FromParams for StopParams {
    fn from_params(params: &Params) -> ApiResult<Self> {
        let mut c = Check::new(params);
        let p = StopParams {
            force: c.bool("force").unwrap_or(false),
        };
        c.finish()?;
        Ok(p)
    }
}

/// Stop an environment: its `on_stop` job runs and it is `stopping` until that job
/// succeeds; without one, or with `force`, it is stopped at once.
#[utoipa::path(tag = "environments", operation_id = "stop_environment",
    params(("id" = String, Path), ("environment_id" = i64, Path), ("force" = Option<bool>, Query)),
    security(("private_token" = [])),
    responses((status = 200, description = "the environment"), (status = 404, description = "no such environment")))]
#[post("/projects/{id}/environments/{environment_id}/stop")]
pub async fn stop_environment(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, environment_id) = path.into_inner();
    let project = find_project(&state, &id).await?;
    let environment = find_environment(&state, &project, &environment_id).await?;
    let force = StopParams::from_params(&params_of(&req)?)?.force;
    let stopped = state
        .pipelines
        .stop_environment(project.id, environment.id, force)
        .await?;
    record_admin_action(
        &state,
        "environment_stopped",
        "Environment",
        environment.id,
        json!({ "project_id": project.id, "force": force, "state": stopped.state }),
    )
    .await;
    Ok(HttpResponse::Ok().json(environment_json(&state, &project, &stopped).await?))
}

/// Params of the deployments list.
struct ListDeployments {
    environment: Option<String>,
    status: Option<String>,
    order_by: String,
    sort: String,
}

impl FromParams for ListDeployments {
    fn from_params(params: &Params) -> ApiResult<Self> {
        let mut c = Check::new(params);
        let p = ListDeployments {
            environment: c.str("environment"),
            status: c.one_of("status", |s| {
                [
                    "created", "running", "success", "failed", "canceled", "skipped", "blocked",
                ]
                .contains(&s)
                .then(|| s.to_string())
            }),
            order_by: c
                .one_of("order_by", |s| {
                    [
                        "id",
                        "iid",
                        "created_at",
                        "updated_at",
                        "finished_at",
                        "ref",
                    ]
                    .contains(&s)
                    .then(|| s.to_string())
                })
                .unwrap_or_else(|| "id".into()),
            sort: c
                .one_of("sort", |s| {
                    ["asc", "desc"].contains(&s).then(|| s.to_string())
                })
                .unwrap_or_else(|| "asc".into()),
        };
        c.finish()?;
        Ok(p)
    }
}

/// A project's deployments (`environment`, `status`, `order_by` and `sort` as GitLab's).
#[utoipa::path(tag = "environments", operation_id = "list_deployments", params(("id" = String, Path)),
    security(("private_token" = [])),
    responses((status = 200, description = "deployments"), (status = 404, description = "no such project")))]
#[get("/projects/{id}/deployments")]
pub async fn list_deployments(
    _admin: AdminAuth,
    id: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let project = find_project(&state, &id).await?;
    let params = params_of(&req)?;
    let page = page_of(&params)?;
    let filter = ListDeployments::from_params(&params)?;
    let (mut deployments, counted, environments) = {
        let mut db = state.db.read().await?;
        let environments = Environment::for_project(&mut db.conn(), project.id).await?;
        // An environment the project does not have: nothing is listed.
        let environment_id = match &filter.environment {
            Some(name) => match environments.iter().find(|e| e.name == *name) {
                Some(e) => Some(e.id),
                None => return Ok(page.respond_rows(&req, 0, Vec::<Value>::new())),
            },
            None => None,
        };
        let list = DeploymentList {
            environment_id,
            status: filter.status.as_deref(),
            order_by: &filter.order_by,
            descending: filter.sort == "desc",
        };
        let (offset, fetch) = (page.offset(), page.fetch());
        let deployments =
            Deployment::listed_for_project(&mut db.conn(), project.id, &list, offset, fetch)
                .await?;
        let most = super::COUNT_UP_TO;
        let counted =
            Deployment::count_listed_for_project(&mut db.conn(), project.id, &list, most).await?;
        (deployments, counted, environments)
    };
    // Only the page asked for is rendered (each with its job).
    let more = page.cut(&mut deployments);
    let mut shown = Vec::with_capacity(deployments.len());
    for d in &deployments {
        if let Some(e) = environments.iter().find(|e| e.id == d.environment_id) {
            shown.push(deployment_json(&state, &project, d, e).await?);
        }
    }
    Ok(page.respond_listed(&req, counted, more, shown))
}

/// One deployment.
#[utoipa::path(tag = "environments", operation_id = "get_deployment",
    params(("id" = String, Path), ("deployment_id" = i64, Path)), security(("private_token" = [])),
    responses((status = 200, description = "the deployment"), (status = 404, description = "no such deployment")))]
#[get("/projects/{id}/deployments/{deployment_id}")]
pub async fn get_deployment(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, deployment_id) = path.into_inner();
    let project = find_project(&state, &id).await?;
    let deployment_id = path_id(&deployment_id, "deployment_id")?;
    let (deployment, environment) = {
        let mut db = state.db.read().await?;
        let d = Deployment::find(&mut db.conn(), project.id, deployment_id)
            .await?
            .ok_or_else(|| ApiError::not_found("Deployment"))?;
        let e = Environment::find(&mut db.conn(), project.id, d.environment_id)
            .await?
            .ok_or_else(|| ApiError::not_found("Deployment"))?;
        (d, e)
    };
    Ok(
        HttpResponse::Ok()
            .json(deployment_json(&state, &project, &deployment, &environment).await?),
    )
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(list_environments)
        .service(get_environment)
        .service(create_environment)
        .service(update_environment)
        .service(delete_environment)
        .service(stop_environment)
        .service(list_deployments)
        .service(get_deployment);
}
