//! Resource groups, as GitLab's `lib/api/ci/resource_groups.rb`: a project's groups (made
//! when a job first names one), the job holding each and the jobs to come, and the
//! process mode that orders them.

use actix_web::{get, put, web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::api::admin::audit::record_admin_action;
use crate::api::admin::page_of;
use crate::api::admin::pipelines::jobs_json;
use crate::api::admin::projects::find_project;
use crate::api::format_time;
use crate::api::params::{params_of, Check, FromParams, Params, Validated};
use crate::auth::AdminAuth;
use crate::db::models::resource_group::{ResourceGroup, PROCESS_MODES};
use crate::db::models::{now, Job, Project};
use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// `Entities::Ci::ResourceGroup`.
fn group_json(g: &ResourceGroup) -> Value {
    json!({
        "id": g.id,
        "key": g.key,
        "process_mode": g.process_mode,
        "created_at": format_time(&g.created_at),
        "updated_at": format_time(&g.updated_at),
    })
}

async fn find_group(state: &AppState, project: &Project, key: &str) -> ApiResult<ResourceGroup> {
    let mut db = state.db.read().await?;
    ResourceGroup::find_by_key(&mut db.conn(), project.id, key)
        .await?
        .ok_or(ApiError::NotFound(None))
}

/// A project's resource groups.
#[utoipa::path(tag = "resource_groups", operation_id = "list_resource_groups", params(("id" = String, Path)),
    security(("private_token" = [])),
    responses((status = 200, description = "`[{id, key, process_mode, created_at, updated_at}]`"),
              (status = 404, description = "no such project")))]
#[get("/projects/{id}/resource_groups")]
pub async fn list_resource_groups(
    _admin: AdminAuth,
    id: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let project = find_project(&state, &id).await?;
    let page = page_of(&params_of(&req)?)?;
    let groups = {
        let mut db = state.db.read().await?;
        ResourceGroup::for_project(&mut db.conn(), project.id).await?
    };
    Ok(page.respond(&req, groups.iter().map(group_json).collect()))
}

/// One resource group, by key.
#[utoipa::path(tag = "resource_groups", operation_id = "get_resource_group",
    params(("id" = String, Path), ("key" = String, Path)), security(("private_token" = [])),
    responses((status = 200, description = "the group"), (status = 404, description = "no such group")))]
#[get("/projects/{id}/resource_groups/{key}")]
pub async fn get_resource_group(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, key) = path.into_inner();
    let project = find_project(&state, &id).await?;
    let group = find_group(&state, &project, &key).await?;
    Ok(HttpResponse::Ok().json(group_json(&group)))
}

/// The job holding the group's resource (`null` when it is free).
#[utoipa::path(tag = "resource_groups", operation_id = "get_resource_group_current_job",
    params(("id" = String, Path), ("key" = String, Path)), security(("private_token" = [])),
    responses((status = 200, description = "the job, or null"), (status = 404, description = "no such group")))]
#[get("/projects/{id}/resource_groups/{key}/current_job")]
pub async fn current_job(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, key) = path.into_inner();
    let project = find_project(&state, &id).await?;
    let group = find_group(&state, &project, &key).await?;
    let holder = match group.holder_job_id {
        None => None,
        Some(job_id) => {
            let mut db = state.db.read().await?;
            Job::find(&mut db.conn(), job_id)
                .await?
                .filter(|j| !j.status.is_complete())
        }
    };
    let Some(holder) = holder else {
        return Ok(HttpResponse::Ok().json(Value::Null));
    };
    let mut shown = jobs_json(&state, &project, std::slice::from_ref(&holder)).await?;
    Ok(HttpResponse::Ok().json(shown.pop().unwrap_or(Value::Null)))
}

/// The jobs waiting for the group's resource, or to come to it, in the order the process
/// mode gives them the resource.
#[utoipa::path(tag = "resource_groups", operation_id = "list_resource_group_upcoming_jobs",
    params(("id" = String, Path), ("key" = String, Path)), security(("private_token" = [])),
    responses((status = 200, description = "jobs"), (status = 404, description = "no such group")))]
#[get("/projects/{id}/resource_groups/{key}/upcoming_jobs")]
pub async fn upcoming_jobs(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, key) = path.into_inner();
    let project = find_project(&state, &id).await?;
    let page = page_of(&params_of(&req)?)?;
    let group = find_group(&state, &project, &key).await?;
    let ids = {
        let mut db = state.db.read().await?;
        crate::service::resource_groups::upcoming(&mut db.conn(), &group).await?
    };
    let mut jobs = Vec::with_capacity(ids.len());
    {
        let mut db = state.db.read().await?;
        for id in ids {
            if let Some(job) = Job::find(&mut db.conn(), id).await? {
                jobs.push(job);
            }
        }
    }
    let shown = jobs_json(&state, &project, &jobs).await?;
    Ok(page.respond(&req, shown))
}

/// Params of `PUT /projects/:id/resource_groups/:key`.
#[derive(Debug, ToSchema)]
pub struct ResourceGroupParams {
    /// `unordered`, `oldest_first`, `newest_first` or `newest_ready_first`.
    pub process_mode: Option<String>,
}

impl FromParams for ResourceGroupParams {
    fn from_params(params: &Params) -> ApiResult<Self> {
        let mut c = Check::new(params);
        let p = ResourceGroupParams {
            process_mode: c.one_of("process_mode", |m| {
                PROCESS_MODES.contains(&m).then(|| m.to_string())
            }),
        };
        c.finish()?;
        Ok(p)
    }
}

/// Change a group's process mode.
#[utoipa::path(tag = "resource_groups", operation_id = "update_resource_group",
    params(("id" = String, Path), ("key" = String, Path)),
    request_body(content = ResourceGroupParams, content_type = "application/json", example = json!({ "process_mode": "oldest_first" })),
    security(("private_token" = [])),
    responses((status = 200, description = "the group"), (status = 400, description = "process_mode does not have a valid value"),
              (status = 404, description = "no such group")))]
#[put("/projects/{id}/resource_groups/{key}")]
pub async fn update_resource_group(
    params: Validated<ResourceGroupParams>,
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, key) = path.into_inner();
    let project = find_project(&state, &id).await?;
    let group = find_group(&state, &project, &key).await?;
    if let Some(mode) = &params.0.process_mode {
        let mut db = state.db.write().await?;
        ResourceGroup::set_process_mode(&mut db.conn(), group.id, mode, now()).await?;
        drop(db);
        record_admin_action(
            &state,
            "resource_group_updated",
            "ResourceGroup",
            group.id,
            json!({ "project_id": project.id, "key": group.key, "process_mode": mode }),
        )
        .await;
        // Another order may give a waiting job the resource now.
        if crate::service::resource_groups::assign(&state.db, &[group.id]).await? {
            state.queue.bump();
        }
    }
    let group = find_group(&state, &project, &key).await?;
    Ok(HttpResponse::Ok().json(group_json(&group)))
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(list_resource_groups)
        .service(get_resource_group)
        .service(current_job)
        .service(upcoming_jobs)
        .service(update_resource_group);
}
