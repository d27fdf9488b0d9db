//! Pipeline trigger tokens, as GitLab's `lib/api/ci/triggers.rb`: the admin manages a
//! project's tokens (`/projects/:id/triggers`), and anyone holding one starts a pipeline
//! (`POST /projects/:id/trigger/pipeline`, source `trigger`) without the admin token.

use actix_web::{delete, get, post, put, web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::api::admin::audit::record_admin_action;
use crate::api::admin::page_of;
use crate::api::admin::projects::{
    find_project, inputs_param, pipeline_json, pipeline_request, CreatePipelineParams,
};
use crate::api::params::{params_of, Check, FromParams, Params, Validated};
use crate::api::{format_time, path_id};
use crate::auth::tokens::{NewToken, TokenDigest};
use crate::auth::AdminAuth;
use crate::db::models::{now, PipelineTrigger, Project};
use crate::error::{ApiError, ApiResult};
use crate::service::pipelines::PipelineVariable;
use crate::AppState;

/// GitLab's trigger token prefix.
pub const TRIGGER_TOKEN_PREFIX: &str = "glptt-";

/// `Entities::Trigger`: the token in full (the admin owns every trigger).
fn trigger_json(state: &AppState, t: &PipelineTrigger, base: &str) -> Value {
    let token = state.secrets.open(&t.token).unwrap_or_default();
    json!({
        "id": t.id,
        "token": token,
        "description": t.description,
        "created_at": format_time(&t.created_at),
        "updated_at": format_time(&t.updated_at),
        "last_used": t.last_used.as_ref().map(format_time),
        "expires_at": null,
        "owner": { "id": 1, "username": "root", "name": "Administrator", "state": "active", "web_url": format!("{base}/root") },
    })
}

async fn find_trigger(
    state: &AppState,
    project: &Project,
    raw: &str,
) -> ApiResult<PipelineTrigger> {
    let id = path_id(raw, "trigger_id")?;
    let mut db = state.db.read().await?;
    PipelineTrigger::find(&mut db.conn(), project.id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("Trigger"))
}

/// Params of a create or an update.
#[derive(Debug, ToSchema)]
pub struct TriggerParams {
    /// What the token is for.
    pub description: Option<String>,
}

impl FromParams for TriggerParams {
    fn from_params(params: &Params) -> ApiResult<Self> {
        let mut c = Check::new(params);
        let p = TriggerParams {
            description: c.str_max("description", 255),
        };
        c.finish()?;
        Ok(p)
    }
}

/// A project's trigger tokens.
#[utoipa::path(tag = "triggers", operation_id = "list_triggers", params(("id" = String, Path)),
    security(("private_token" = [])),
    responses((status = 200, description = "`[{id, token, description, created_at, updated_at, last_used, owner}]`"),
              (status = 404, description = "no such project")))]
#[get("/projects/{id}/triggers")]
pub async fn list_triggers(
    _admin: AdminAuth,
    id: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let project = find_project(&state, &id).await?;
    let page = page_of(&params_of(&req)?)?;
    let triggers = {
        let mut db = state.db.read().await?;
        PipelineTrigger::for_project(&mut db.conn(), project.id).await?
    };
    let base = &state.settings.external_url;
    let items: Vec<Value> = triggers
        .iter()
        .map(|t| trigger_json(&state, t, base))
        .collect();
    Ok(page.respond(&req, items))
}

/// One trigger token.
#[utoipa::path(tag = "triggers", operation_id = "get_trigger", params(("id" = String, Path), ("trigger_id" = i64, Path)),
    security(("private_token" = [])),
    responses((status = 200, description = "the trigger"), (status = 404, description = "no such trigger")))]
#[get("/projects/{id}/triggers/{trigger_id}")]
pub async fn get_trigger(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, trigger_id) = path.into_inner();
    let project = find_project(&state, &id).await?;
    let trigger = find_trigger(&state, &project, &trigger_id).await?;
    Ok(HttpResponse::Ok().json(trigger_json(&state, &trigger, &state.settings.external_url)))
}

/// Make a trigger token (`glptt-…`).
#[utoipa::path(tag = "triggers", operation_id = "create_trigger", params(("id" = String, Path)),
    request_body(content = TriggerParams, content_type = "application/json", example = json!({ "description": "nightly from Jenkins" })),
    security(("private_token" = [])),
    responses((status = 201, description = "the trigger, with its token"), (status = 400, description = "description is missing"),
              (status = 404, description = "no such project")))]
#[post("/projects/{id}/triggers")]
pub async fn create_trigger(
    params: Validated<TriggerParams>,
    _admin: AdminAuth,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let project = find_project(&state, &id).await?;
    let Some(description) = params.0.description else {
        return Err(ApiError::InvalidParams("description is missing".into()));
    };
    let token = NewToken::generate(TRIGGER_TOKEN_PREFIX);
    let trigger = {
        let mut db = state.db.write().await?;
        PipelineTrigger::create(
            &mut db.conn(),
            project.id,
            &description,
            token.digest.as_bytes(),
            &state.secrets.seal(&token.token),
            now(),
        )
        .await?
    };
    let details = json!({ "project_id": project.id, "description": description });
    record_admin_action(&state, "trigger_created", "trigger", trigger.id, details).await;
    Ok(HttpResponse::Created().json(trigger_json(&state, &trigger, &state.settings.external_url)))
}

/// Change a trigger token's description.
#[utoipa::path(tag = "triggers", operation_id = "update_trigger", params(("id" = String, Path), ("trigger_id" = i64, Path)),
    request_body(content = TriggerParams, content_type = "application/json"),
    security(("private_token" = [])),
    responses((status = 200, description = "the trigger"), (status = 404, description = "no such trigger")))]
#[put("/projects/{id}/triggers/{trigger_id}")]
pub async fn update_trigger(
    params: Validated<TriggerParams>,
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, trigger_id) = path.into_inner();
    let project = find_project(&state, &id).await?;
    let trigger = find_trigger(&state, &project, &trigger_id).await?;
    let description = params.0.description.unwrap_or(trigger.description);
    let trigger = {
        let mut db = state.db.write().await?;
        PipelineTrigger::set_description(&mut db.conn(), trigger.id, &description, now()).await?
    };
    Ok(HttpResponse::Ok().json(trigger_json(&state, &trigger, &state.settings.external_url)))
}

/// Delete a trigger token: it starts nothing any more.
#[utoipa::path(tag = "triggers", operation_id = "delete_trigger", params(("id" = String, Path), ("trigger_id" = i64, Path)),
    security(("private_token" = [])),
    responses((status = 204, description = "deleted"), (status = 404, description = "no such trigger")))]
#[delete("/projects/{id}/triggers/{trigger_id}")]
pub async fn delete_trigger(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, trigger_id) = path.into_inner();
    let project = find_project(&state, &id).await?;
    let trigger = find_trigger(&state, &project, &trigger_id).await?;
    {
        let mut db = state.db.write().await?;
        PipelineTrigger::delete(&mut db.conn(), trigger.id).await?;
    }
    record_admin_action(
        &state,
        "trigger_deleted",
        "trigger",
        trigger.id,
        json!({ "project_id": project.id }),
    )
    .await;
    Ok(HttpResponse::NoContent().finish())
}

/// Params of `POST /projects/:id/trigger/pipeline`.
#[derive(Debug, ToSchema)]
pub struct TriggerPipelineParams {
    /// The trigger token.
    pub token: String,
    /// Branch or tag (in the path for `/ref/:ref/trigger/pipeline`).
    #[schema(rename = "ref")]
    pub ref_: String,
    /// `{KEY: value}` (form: `variables[KEY]=value`): the pipeline's variables.
    #[schema(value_type = Option<Object>)]
    pub variables: Vec<PipelineVariable>,
    /// Values for the configuration's `spec:inputs`.
    #[schema(value_type = Option<Object>)]
    pub inputs: Option<serde_yaml_ng::Mapping>,
}

impl FromParams for TriggerPipelineParams {
    fn from_params(params: &Params) -> ApiResult<Self> {
        let mut c = Check::new(params);
        let token = c.required_str("token");
        let ref_ = c.required_str("ref");
        // `optional :variables, type: Hash`: string values (numbers as their text).
        let variables = match c.object("variables") {
            None => Vec::new(),
            Some(map) => map
                .into_iter()
                .filter_map(|(key, value)| {
                    let value = match value {
                        Value::String(s) => s,
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        _ => {
                            c.error(format!("variables[{key}] is invalid"));
                            return None;
                        }
                    };
                    Some(PipelineVariable { key, value })
                })
                .collect(),
        };
        let inputs = inputs_param(&mut c, params);
        c.finish()?;
        Ok(TriggerPipelineParams {
            token,
            ref_,
            variables,
            inputs,
        })
    }
}

/// Start a pipeline with a trigger token (no admin token): source `trigger`, the
/// variables given above the project's.
#[utoipa::path(tag = "triggers", operation_id = "trigger_pipeline", params(("id" = String, Path)),
    request_body(content = TriggerPipelineParams, content_type = "application/json",
        example = json!({ "token": "glptt-paste-the-trigger-token", "ref": "main", "variables": { "DEPLOY": "yes" } })),
    responses((status = 201, description = "the pipeline"),
              (status = 400, description = "invalid params, or the configuration is refused"),
              (status = 404, description = "no such project, or not its trigger token")))]
#[post("/projects/{id}/trigger/pipeline")]
pub async fn trigger_pipeline(
    params: Validated<TriggerPipelineParams>,
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    triggered(&state, &req, &id, params.0).await
}

/// Params of the webhook form, whose ref is in the path.
#[derive(Debug)]
pub struct TokenParams(TriggerPipelineParams);

impl FromParams for TokenParams {
    fn from_params(params: &Params) -> ApiResult<Self> {
        let mut params = params.clone();
        // The ref comes from the path; anything given as a param is ignored.
        params.0.insert("ref".into(), Value::String(String::new()));
        TriggerPipelineParams::from_params(&params).map(TokenParams)
    }
}

/// The webhook form of a trigger (`?token=…`, a forge's webhook URL): as
/// `POST /projects/:id/trigger/pipeline` with the ref from the path.
#[utoipa::path(tag = "triggers", operation_id = "trigger_pipeline_by_ref",
    params(("id" = String, Path), ("ref" = String, Path), ("token" = String, Query, description = "the trigger token")),
    responses((status = 201, description = "the pipeline"), (status = 404, description = "no such project, or not its trigger token")))]
#[post("/projects/{id}/ref/{ref}/trigger/pipeline")]
pub async fn trigger_pipeline_by_ref(
    params: Validated<TokenParams>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, ref_) = path.into_inner();
    let mut p = params.0 .0;
    p.ref_ = ref_;
    triggered(&state, &req, &id, p).await
}

/// `Ci::PipelineTriggerService`: the project's token (else 404, counted as a failed
/// authentication), then a pipeline as the API makes one, with source `trigger`.
async fn triggered(
    state: &AppState,
    req: &HttpRequest,
    id: &str,
    p: TriggerPipelineParams,
) -> ApiResult<HttpResponse> {
    let ip = crate::auth::guards::peer_ip(req);
    state.limits.check_address(ip)?;
    let project = find_project(state, id).await?;
    let digest = TokenDigest::of(p.token.trim());
    let trigger = {
        let mut db = state.db.read().await?;
        PipelineTrigger::find_by_digest(&mut db.conn(), project.id, digest.as_bytes()).await?
    };
    let Some(trigger) = trigger else {
        state.limits.authentication_failed(ip);
        return Err(ApiError::NotFound(None));
    };
    let request = CreatePipelineParams {
        ref_: p.ref_,
        sha: None,
        variables: p.variables,
        ci_config: None,
        inputs: p.inputs,
    };
    let request = pipeline_request(state, &project, request, "trigger").await?;
    let pipeline = state.pipelines.create(&project, request).await?;
    {
        let mut db = state.db.write().await?;
        PipelineTrigger::used(&mut db.conn(), trigger.id, now()).await?;
    }
    let details =
        json!({ "project_id": project.id, "trigger_id": trigger.id, "ref": pipeline.ref_ });
    record_admin_action(
        state,
        "pipeline_triggered",
        "pipeline",
        pipeline.id,
        details,
    )
    .await;
    Ok(HttpResponse::Created().json(pipeline_json(
        &pipeline,
        &project,
        &state.settings.external_url,
    )))
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(list_triggers)
        .service(get_trigger)
        .service(create_trigger)
        .service(update_trigger)
        .service(delete_trigger)
        .service(trigger_pipeline)
        .service(trigger_pipeline_by_ref);
}
