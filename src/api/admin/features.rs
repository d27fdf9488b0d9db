//! Feature flags, GitLab's `/features` API reduced to Runway's gates: the whole instance,
//! one runner (`runner=<id>`, a Runway actor) or one namespace (`namespace=<path>`).

use actix_web::{delete, get, post, web, HttpResponse};
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::api::no_content;
use crate::api::params::{Check, FromParams, Params, Validated};
use crate::auth::AdminAuth;
use crate::db::enums::FlagScope;
use crate::db::models::FeatureFlag;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// A flag as GitLab shows it: `state` on/off/conditional and its gates.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiFeature {
    pub name: String,
    #[schema(example = "on")]
    pub state: String,
    #[schema(value_type = Vec<Object>)]
    pub gates: Vec<Value>,
}

fn api_feature(name: &str, gates: &[FeatureFlag]) -> ApiFeature {
    let instance = gates.iter().find(|g| g.scope_type == FlagScope::Instance);
    let actors: Vec<String> = gates
        .iter()
        .filter(|g| g.enabled && g.scope_type != FlagScope::Instance)
        .map(|g| format!("{}:{}", g.scope_type, g.scope_key))
        .collect();
    let on = instance.is_some_and(|g| g.enabled);
    let state = if on {
        "on"
    } else if actors.is_empty() {
        "off"
    } else {
        "conditional"
    };
    let mut json_gates = vec![json!({ "key": "boolean", "value": on })];
    if !actors.is_empty() {
        json_gates.push(json!({ "key": "actors", "value": actors }));
    }
    ApiFeature {
        name: name.to_string(),
        state: state.to_string(),
        gates: json_gates,
    }
}

/// Every flag that has a gate.
#[utoipa::path(tag = "features", operation_id = "list_features", security(("private_token" = [])),
    responses((status = 200, body = Vec<ApiFeature>), (status = 401, description = "no or wrong admin token")))]
#[get("/features")]
pub async fn list_features(
    _admin: AdminAuth,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let mut db = state.db.read().await?;
    let all = FeatureFlag::all(&mut db.conn()).await?;
    let mut names: Vec<&str> = all.iter().map(|f| f.name.as_str()).collect();
    names.dedup();
    let features: Vec<ApiFeature> = names
        .iter()
        .map(|n| {
            let gates: Vec<FeatureFlag> = all.iter().filter(|f| f.name == *n).cloned().collect();
            api_feature(n, &gates)
        })
        .collect();
    Ok(HttpResponse::Ok().json(features))
}

/// Params of `POST /features/:name`.
#[derive(Debug, ToSchema)]
pub struct SetFeatureParams {
    /// `true` or `false`.
    pub value: bool,
    /// Gate for one runner only (by id).
    pub runner: Option<i64>,
    /// Gate for one namespace only (by path).
    pub namespace: Option<String>,
}

impl FromParams for SetFeatureParams {
    fn from_params(params: &Params) -> ApiResult<Self> {
        let mut c = Check::new(params);
        let value = if params.get("value").is_none() {
            c.required_str("value");
            None
        } else {
            c.bool("value")
        };
        let runner = c.int("runner").flatten();
        let namespace = c.str("namespace");
        c.exclusive("runner", "namespace");
        c.finish()?;
        Ok(SetFeatureParams {
            value: value.unwrap_or(false),
            runner,
            namespace,
        })
    }
}

/// Turn a flag on or off, for the instance or one actor.
#[utoipa::path(tag = "features", operation_id = "set_feature", params(("name" = String, Path)),
    request_body(content = SetFeatureParams, content_type = "application/json"),
    security(("private_token" = [])),
    responses((status = 201, body = ApiFeature), (status = 400, description = "invalid params"),
              (status = 401, description = "no or wrong admin token")))]
#[post("/features/{name}")]
pub async fn set_feature(
    _admin: AdminAuth,
    name: web::Path<String>,
    params: Validated<SetFeatureParams>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let name = name.into_inner();
    if name.is_empty() || name.len() > 255 {
        return Err(ApiError::InvalidParams("name is invalid".into()));
    }
    let p = params.0;
    let (scope, key) = match (p.runner, p.namespace) {
        (Some(id), _) => (FlagScope::Runner, id.to_string()),
        (None, Some(ns)) => (FlagScope::Namespace, ns),
        (None, None) => (FlagScope::Instance, String::new()),
    };
    let mut db = state.db.write().await?;
    let mut conn = db.conn();
    FeatureFlag::set(&mut conn, &name, scope, &key, p.value).await?;
    state.backoff.forget();
    let gates = FeatureFlag::gates(&mut conn, &name).await?;
    drop(db);
    let details = serde_json::json!({ "feature": name, "scope": scope.as_str(), "key": key, "value": p.value });
    super::audit::record_admin_action(&state, "feature_flag_set", "feature_flag", 0, details).await;
    Ok(HttpResponse::Created().json(api_feature(&name, &gates)))
}

/// Remove every gate of a flag (back to off).
#[utoipa::path(tag = "features", operation_id = "delete_feature", params(("name" = String, Path)),
    security(("private_token" = [])),
    responses((status = 204, description = "removed"), (status = 401, description = "no or wrong admin token")))]
#[delete("/features/{name}")]
pub async fn delete_feature(
    _admin: AdminAuth,
    name: web::Path<String>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let mut db = state.db.write().await?;
    FeatureFlag::delete(&mut db.conn(), &name).await?;
    state.backoff.forget();
    drop(db);
    let details = serde_json::json!({ "feature": name.as_str() });
    super::audit::record_admin_action(&state, "feature_flag_removed", "feature_flag", 0, details)
        .await;
    Ok(no_content())
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(list_features)
        .service(set_feature)
        .service(delete_feature);
}
