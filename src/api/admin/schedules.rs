//! Pipeline schedules through the admin API, as GitLab's
//! `lib/api/ci/pipeline_schedules.rb`: the schedules of a project, their variables, `play`
//! and the pipelines they started ([`crate::service::schedules`] runs them).

use actix_web::{delete, get, post, put, web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::api::admin::audit::record_admin_action;
use crate::api::admin::page_of;
use crate::api::admin::projects::{find_project, pipeline_json};
use crate::api::params::{params_of, Check, FromParams, Params, Validated};
use crate::api::{format_time, path_id};
use crate::auth::AdminAuth;
use crate::db::models::{now, Pipeline, PipelineSchedule, Project, ScheduleFields};
use crate::error::{ApiError, ApiResult};
use crate::service::schedules::{self, ScheduleVariable};
use crate::AppState;

fn owner(base: &str) -> Value {
    json!({ "id": 1, "username": "root", "name": "Administrator", "state": "active", "web_url": format!("{base}/root") })
}

/// `Entities::Ci::PipelineSchedule`; with `details`, `PipelineScheduleDetails` (the last
/// pipeline and the variables).
async fn schedule_json(
    state: &AppState,
    project: &Project,
    s: &PipelineSchedule,
    details: bool,
) -> ApiResult<Value> {
    let base = &state.settings.external_url;
    let mut shown = json!({
        "id": s.id,
        "description": s.description,
        "ref": s.ref_,
        "cron": s.cron,
        "cron_timezone": s.cron_timezone,
        "next_run_at": format_time(&s.next_run_at),
        "active": s.active,
        "created_at": format_time(&s.created_at),
        "updated_at": format_time(&s.updated_at),
        "owner": owner(base),
    });
    if details {
        let last = match s.last_pipeline_id {
            Some(id) => {
                let mut db = state.db.read().await?;
                Pipeline::find(&mut db.conn(), id).await?
            }
            None => None,
        };
        shown["last_pipeline"] = last.map_or(Value::Null, |p| {
            let full = pipeline_json(&p, project, base);
            json!({ "id": p.id, "iid": p.id, "project_id": p.project_id, "sha": p.sha, "ref": p.ref_,
                    "status": p.status, "source": p.source, "web_url": full["web_url"],
                    "created_at": full["created_at"], "updated_at": full["updated_at"] })
        });
        shown["variables"] = json!(schedules::variables(s));
    }
    Ok(shown)
}

async fn find_schedule(
    state: &AppState,
    project: &Project,
    raw: &str,
) -> ApiResult<PipelineSchedule> {
    let id = path_id(raw, "pipeline_schedule_id")?;
    let mut db = state.db.read().await?;
    PipelineSchedule::find(&mut db.conn(), project.id, id)
        .await?
        .ok_or_else(schedules::not_found)
}

/// Params of a create (description, ref and cron required) or an update.
#[derive(Debug, ToSchema)]
pub struct ScheduleParams {
    pub description: Option<String>,
    /// Branch or tag (`main`, or `refs/heads/main`).
    #[schema(rename = "ref")]
    pub ref_: Option<String>,
    /// Five fields (`0 2 * * *`) or a nickname (`@daily`).
    pub cron: Option<String>,
    /// IANA time zone (default `UTC`).
    pub cron_timezone: Option<String>,
    /// Default true.
    pub active: Option<bool>,
}

impl FromParams for ScheduleParams {
    fn from_params(params: &Params) -> ApiResult<Self> {
        let mut c = Check::new(params);
        let p = ScheduleParams {
            description: c.str_max("description", 255),
            ref_: c.str_max("ref", 255),
            cron: c.str_max("cron", 255),
            cron_timezone: c.str_max("cron_timezone", 255),
            active: c.bool("active"),
        };
        c.finish()?;
        Ok(p)
    }
}

/// GitLab's model validations (`CronValidator`, `CronTimezoneValidator`, presence), and
/// the next run time.
fn checked(fields: &mut ScheduleFields) -> ApiResult<()> {
    let mut errors: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    if fields.description.trim().is_empty() {
        errors
            .entry("description")
            .or_default()
            .push("can't be blank");
    }
    if fields.ref_.trim().is_empty() {
        errors.entry("ref").or_default().push("can't be blank");
    }
    if !schedules::known_timezone(&fields.cron_timezone) {
        errors
            .entry("cron_timezone")
            .or_default()
            .push(" is invalid syntax");
    }
    match schedules::next_run(&fields.cron, &fields.cron_timezone, now()) {
        Some(next) => fields.next_run_at = next,
        None if schedules::known_timezone(&fields.cron_timezone) => {
            errors.entry("cron").or_default().push(" is invalid syntax")
        }
        None => {}
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(json!(errors)))
    }
}

/// A project's pipeline schedules (`scope`: `active` or `inactive`).
#[utoipa::path(tag = "pipeline schedules", operation_id = "list_pipeline_schedules",
    params(("id" = String, Path), ("scope" = Option<String>, Query, description = "`active` or `inactive`")),
    security(("private_token" = [])),
    responses((status = 200, description = "the schedules"), (status = 404, description = "no such project")))]
#[get("/projects/{id}/pipeline_schedules")]
pub async fn list_schedules(
    _admin: AdminAuth,
    id: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let project = find_project(&state, &id).await?;
    let params = params_of(&req)?;
    let page = page_of(&params)?;
    let mut c = Check::new(&params);
    let scope = c.one_of("scope", |s| match s {
        "active" => Some(true),
        "inactive" => Some(false),
        _ => None,
    });
    c.finish()?;
    let listed = {
        let mut db = state.db.read().await?;
        PipelineSchedule::for_project(&mut db.conn(), project.id).await?
    };
    let mut items = Vec::new();
    for s in listed
        .iter()
        .filter(|s| scope.is_none_or(|active| s.active == active))
    {
        items.push(schedule_json(&state, &project, s, false).await?);
    }
    Ok(page.respond(&req, items))
}

/// One schedule, with its last pipeline and its variables.
#[utoipa::path(tag = "pipeline schedules", operation_id = "get_pipeline_schedule",
    params(("id" = String, Path), ("pipeline_schedule_id" = i64, Path)), security(("private_token" = [])),
    responses((status = 200, description = "the schedule"), (status = 404, description = "no such schedule")))]
#[get("/projects/{id}/pipeline_schedules/{pipeline_schedule_id}")]
pub async fn get_schedule(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, schedule_id) = path.into_inner();
    let project = find_project(&state, &id).await?;
    let schedule = find_schedule(&state, &project, &schedule_id).await?;
    Ok(HttpResponse::Ok().json(schedule_json(&state, &project, &schedule, true).await?))
}

/// The pipelines a schedule started.
#[utoipa::path(tag = "pipeline schedules", operation_id = "list_pipeline_schedule_pipelines",
    params(("id" = String, Path), ("pipeline_schedule_id" = i64, Path)), security(("private_token" = [])),
    responses((status = 200, description = "the pipelines"), (status = 404, description = "no such schedule")))]
#[get("/projects/{id}/pipeline_schedules/{pipeline_schedule_id}/pipelines")]
pub async fn schedule_pipelines(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, schedule_id) = path.into_inner();
    let project = find_project(&state, &id).await?;
    let schedule = find_schedule(&state, &project, &schedule_id).await?;
    let page = page_of(&params_of(&req)?)?;
    let (pipelines, counted) = {
        let mut db = state.db.read().await?;
        let (offset, fetch) = (page.offset(), page.fetch());
        let pipelines =
            Pipeline::listed_for_schedule(&mut db.conn(), schedule.id, offset, fetch).await?;
        (
            pipelines,
            Pipeline::count_for_schedule(&mut db.conn(), schedule.id, super::COUNT_UP_TO).await?,
        )
    };
    let base = &state.settings.external_url;
    let items: Vec<Value> = pipelines
        .iter()
        .map(|p| pipeline_json(p, &project, base))
        .collect();
    Ok(page.respond_rows(&req, counted, items))
}

/// Make a schedule.
#[utoipa::path(tag = "pipeline schedules", operation_id = "create_pipeline_schedule", params(("id" = String, Path)),
    request_body(content = ScheduleParams, content_type = "application/json",
        example = json!({ "description": "nightly", "ref": "main", "cron": "0 2 * * *", "cron_timezone": "Europe/Berlin" })),
    security(("private_token" = [])),
    responses((status = 201, description = "the schedule"), (status = 400, description = "invalid"),
              (status = 404, description = "no such project")))]
#[post("/projects/{id}/pipeline_schedules")]
pub async fn create_schedule(
    params: Validated<ScheduleParams>,
    _admin: AdminAuth,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let p = params.0;
    crate::api::params::require(&[
        ("description", p.description.is_none()),
        ("ref", p.ref_.is_none()),
        ("cron", p.cron.is_none()),
    ])?;
    let project = find_project(&state, &id).await?;
    let at = now();
    let mut fields = ScheduleFields {
        project_id: project.id,
        description: p.description.unwrap_or_default(),
        ref_: p.ref_.unwrap_or_default(),
        cron: p.cron.unwrap_or_default(),
        cron_timezone: p.cron_timezone.unwrap_or_else(|| "UTC".into()),
        next_run_at: at,
        active: p.active.unwrap_or(true),
        variables: "[]".into(),
        updated_at: at,
    };
    checked(&mut fields)?;
    let schedule = {
        let mut db = state.db.write().await?;
        PipelineSchedule::create(&mut db.conn(), &fields).await?
    };
    let details = json!({ "project_id": project.id, "ref": schedule.ref_, "cron": schedule.cron });
    record_admin_action(
        &state,
        "pipeline_schedule_created",
        "pipeline_schedule",
        schedule.id,
        details,
    )
    .await;
    Ok(HttpResponse::Created().json(schedule_json(&state, &project, &schedule, true).await?))
}

/// Change a schedule.
#[utoipa::path(tag = "pipeline schedules", operation_id = "update_pipeline_schedule",
    params(("id" = String, Path), ("pipeline_schedule_id" = i64, Path)),
    request_body(content = ScheduleParams, content_type = "application/json"), security(("private_token" = [])),
    responses((status = 200, description = "the schedule"), (status = 400, description = "invalid"),
              (status = 404, description = "no such schedule")))]
#[put("/projects/{id}/pipeline_schedules/{pipeline_schedule_id}")]
pub async fn update_schedule(
    params: Validated<ScheduleParams>,
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, schedule_id) = path.into_inner();
    let project = find_project(&state, &id).await?;
    let old = find_schedule(&state, &project, &schedule_id).await?;
    let p = params.0;
    let mut fields = ScheduleFields {
        project_id: project.id,
        description: p.description.unwrap_or(old.description),
        ref_: p.ref_.unwrap_or(old.ref_),
        cron: p.cron.unwrap_or(old.cron),
        cron_timezone: p.cron_timezone.unwrap_or(old.cron_timezone),
        next_run_at: old.next_run_at,
        active: p.active.unwrap_or(old.active),
        variables: old.variables,
        updated_at: now(),
    };
    checked(&mut fields)?;
    let schedule = {
        let mut db = state.db.write().await?;
        PipelineSchedule::update(&mut db.conn(), old.id, &fields).await?
    };
    Ok(HttpResponse::Ok().json(schedule_json(&state, &project, &schedule, true).await?))
}

/// Take ownership of a schedule (Runway has one user, who owns them all).
#[utoipa::path(tag = "pipeline schedules", operation_id = "take_pipeline_schedule_ownership",
    params(("id" = String, Path), ("pipeline_schedule_id" = i64, Path)), security(("private_token" = [])),
    responses((status = 200, description = "the schedule"), (status = 404, description = "no such schedule")))]
#[post("/projects/{id}/pipeline_schedules/{pipeline_schedule_id}/take_ownership")]
pub async fn take_ownership(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, schedule_id) = path.into_inner();
    let project = find_project(&state, &id).await?;
    let schedule = find_schedule(&state, &project, &schedule_id).await?;
    Ok(HttpResponse::Ok().json(schedule_json(&state, &project, &schedule, true).await?))
}

/// Delete a schedule.
#[utoipa::path(tag = "pipeline schedules", operation_id = "delete_pipeline_schedule",
    params(("id" = String, Path), ("pipeline_schedule_id" = i64, Path)), security(("private_token" = [])),
    responses((status = 204, description = "deleted"), (status = 404, description = "no such schedule")))]
#[delete("/projects/{id}/pipeline_schedules/{pipeline_schedule_id}")]
pub async fn delete_schedule(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, schedule_id) = path.into_inner();
    let project = find_project(&state, &id).await?;
    let schedule = find_schedule(&state, &project, &schedule_id).await?;
    {
        let mut db = state.db.write().await?;
        PipelineSchedule::delete(&mut db.conn(), schedule.id).await?;
    }
    record_admin_action(
        &state,
        "pipeline_schedule_deleted",
        "pipeline_schedule",
        schedule.id,
        json!({ "project_id": project.id }),
    )
    .await;
    Ok(HttpResponse::NoContent().finish())
}

/// Run a schedule now, in the background as GitLab's worker does: 201 at once.
#[utoipa::path(tag = "pipeline schedules", operation_id = "play_pipeline_schedule",
    params(("id" = String, Path), ("pipeline_schedule_id" = i64, Path)), security(("private_token" = [])),
    responses((status = 201, description = "`{\"message\":\"201 Created\"}`: the pipeline is being created"),
              (status = 404, description = "no such schedule")))]
#[post("/projects/{id}/pipeline_schedules/{pipeline_schedule_id}/play")]
pub async fn play_schedule(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, schedule_id) = path.into_inner();
    let project = find_project(&state, &id).await?;
    let schedule = find_schedule(&state, &project, &schedule_id).await?;
    let state = state.clone();
    tokio::spawn(async move {
        if let Err(e) = schedules::run(&state, &project, &schedule).await {
            tracing::info!(schedule_id = schedule.id, error = %e, "the played schedule's pipeline was refused");
        }
    });
    Ok(HttpResponse::Created().json(json!({ "message": "201 Created" })))
}

/// Params of a schedule variable.
#[derive(Debug, ToSchema)]
pub struct ScheduleVariableParams {
    pub key: Option<String>,
    pub value: Option<String>,
    /// `env_var` (default) or `file`.
    pub variable_type: Option<String>,
}

impl FromParams for ScheduleVariableParams {
    fn from_params(params: &Params) -> ApiResult<Self> {
        let mut c = Check::new(params);
        let p = ScheduleVariableParams {
            key: c.str_max("key", 255),
            value: c.str_max("value", 10_000),
            variable_type: c.one_of("variable_type", |t| {
                ["env_var", "file"].contains(&t).then(|| t.to_string())
            }),
        };
        c.finish()?;
        Ok(p)
    }
}

/// Writes the schedule's variables back.
async fn save_variables(
    state: &AppState,
    schedule: &PipelineSchedule,
    variables: &[ScheduleVariable],
) -> ApiResult<()> {
    let json = serde_json::to_string(variables).unwrap_or_else(|_| "[]".into());
    let mut db = state.db.write().await?;
    PipelineSchedule::set_variables(&mut db.conn(), schedule.id, &json, now()).await?;
    Ok(())
}

/// Add a variable to a schedule: its pipelines get it, above the project's.
#[utoipa::path(tag = "pipeline schedules", operation_id = "create_pipeline_schedule_variable",
    params(("id" = String, Path), ("pipeline_schedule_id" = i64, Path)),
    request_body(content = ScheduleVariableParams, content_type = "application/json"), security(("private_token" = [])),
    responses((status = 201, description = "`{variable_type, key, value}`"), (status = 400, description = "invalid or taken"),
              (status = 404, description = "no such schedule")))]
#[post("/projects/{id}/pipeline_schedules/{pipeline_schedule_id}/variables")]
pub async fn create_schedule_variable(
    params: Validated<ScheduleVariableParams>,
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let p = params.0;
    crate::api::params::require(&[("key", p.key.is_none()), ("value", p.value.is_none())])?;
    let (key, value) = (p.key.unwrap_or_default(), p.value.unwrap_or_default());
    let (id, schedule_id) = path.into_inner();
    let project = find_project(&state, &id).await?;
    let schedule = find_schedule(&state, &project, &schedule_id).await?;
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(ApiError::validation(
            "key",
            "can contain only letters, digits and '_'.",
        ));
    }
    let mut variables = schedules::variables(&schedule);
    if variables.iter().any(|v| v.key == key) {
        return Err(ApiError::validation(
            "key",
            format!("({key}) has already been taken"),
        ));
    }
    let variable = ScheduleVariable {
        key,
        value,
        variable_type: p.variable_type.unwrap_or_else(|| "env_var".into()),
    };
    variables.push(variable.clone());
    save_variables(&state, &schedule, &variables).await?;
    Ok(HttpResponse::Created().json(variable))
}

/// Change a schedule variable.
#[utoipa::path(tag = "pipeline schedules", operation_id = "update_pipeline_schedule_variable",
    params(("id" = String, Path), ("pipeline_schedule_id" = i64, Path), ("key" = String, Path)),
    request_body(content = ScheduleVariableParams, content_type = "application/json"), security(("private_token" = [])),
    responses((status = 200, description = "the variable"), (status = 404, description = "no such variable")))]
#[put("/projects/{id}/pipeline_schedules/{pipeline_schedule_id}/variables/{key}")]
pub async fn update_schedule_variable(
    params: Validated<ScheduleVariableParams>,
    _admin: AdminAuth,
    path: web::Path<(String, String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, schedule_id, key) = path.into_inner();
    let project = find_project(&state, &id).await?;
    let schedule = find_schedule(&state, &project, &schedule_id).await?;
    let mut variables = schedules::variables(&schedule);
    let variable = variables
        .iter_mut()
        .find(|v| v.key == key)
        .ok_or_else(|| ApiError::not_found("Pipeline Schedule Variable"))?;
    let p = params.0;
    if let Some(value) = p.value {
        variable.value = value;
    }
    if let Some(kind) = p.variable_type {
        variable.variable_type = kind;
    }
    let variable = variable.clone();
    save_variables(&state, &schedule, &variables).await?;
    Ok(HttpResponse::Ok().json(variable))
}

/// Delete a schedule variable: 202 with what it was, as GitLab.
#[utoipa::path(tag = "pipeline schedules", operation_id = "delete_pipeline_schedule_variable",
    params(("id" = String, Path), ("pipeline_schedule_id" = i64, Path), ("key" = String, Path)), security(("private_token" = [])),
    responses((status = 202, description = "the deleted variable"), (status = 404, description = "no such variable")))]
#[delete("/projects/{id}/pipeline_schedules/{pipeline_schedule_id}/variables/{key}")]
pub async fn delete_schedule_variable(
    _admin: AdminAuth,
    path: web::Path<(String, String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, schedule_id, key) = path.into_inner();
    let project = find_project(&state, &id).await?;
    let schedule = find_schedule(&state, &project, &schedule_id).await?;
    let mut variables = schedules::variables(&schedule);
    let at = variables
        .iter()
        .position(|v| v.key == key)
        .ok_or_else(|| ApiError::not_found("Pipeline Schedule Variable"))?;
    let removed = variables.remove(at);
    save_variables(&state, &schedule, &variables).await?;
    Ok(HttpResponse::Accepted().json(removed))
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(list_schedules)
        .service(get_schedule)
        .service(schedule_pipelines)
        .service(create_schedule)
        .service(update_schedule)
        .service(take_ownership)
        .service(delete_schedule)
        .service(play_schedule)
        .service(create_schedule_variable)
        .service(update_schedule_variable)
        .service(delete_schedule_variable);
}
