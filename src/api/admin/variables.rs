//! CI/CD variables through the admin API, as GitLab's `lib/api/ci/variables.rb` (a
//! project's: `/projects/:id/variables`) and `lib/api/admin/ci/variables.rb` (the
//! instance's: `/admin/ci/variables`). Values are sealed at rest
//! ([`crate::secrets::SecretBox`]); a hidden variable's value is never shown again.

use actix_web::{delete, get, post, put, web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::api::admin::audit::record_admin_action;
use crate::api::admin::page_of;
use crate::api::admin::projects::find_project;
use crate::api::params::{params_of, Check, FromParams, Params, Validated};
use crate::auth::AdminAuth;
use crate::db::models::{now, CiVariable, CiVariableFields};
use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// GitLab's `Ci::Maskable::REGEX`: what a masked variable that the runner expands may hold
/// (single line, 8 characters or more, the Base64 alphabet with `@:.~-_+=/`).
fn maskable(value: &str) -> bool {
    value.chars().count() >= 8
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=/@:.~-".contains(c))
}

/// `MASK_AND_RAW_REGEX`: a masked raw variable may hold any 8 or more non-spaces.
fn maskable_raw(value: &str) -> bool {
    value.chars().count() >= 8 && !value.chars().any(char::is_whitespace)
}

/// A variable as the API shows it (`Entities::Ci::Variable`; the instance's has no
/// `environment_scope`).
fn variable_json(state: &AppState, v: &CiVariable) -> Value {
    let value = if v.hidden {
        Value::Null
    } else {
        match state.secrets.open(&v.value) {
            Ok(value) => json!(value),
            Err(e) => {
                tracing::error!(variable_id = v.id, error = %e, "opening a variable");
                Value::Null
            }
        }
    };
    let mut shown = json!({
        "variable_type": v.variable_type,
        "key": v.key,
        "value": value,
        "hidden": v.hidden,
        "protected": v.protected,
        "masked": v.masked,
        "raw": v.raw,
        "description": v.description,
    });
    if v.project_id.is_some() {
        shown["environment_scope"] = json!(v.environment_scope);
    }
    shown
}

/// Params of a create (`POST`) or an update (`PUT`).
#[derive(Debug, Default, ToSchema)]
pub struct VariableParams {
    /// Letters, digits and `_`, up to 255 (create only; in the path for an update).
    pub key: Option<String>,
    /// Up to 10,000 characters.
    pub value: Option<String>,
    /// `env_var` (default) or `file`: the runner writes the value to a file and sets the
    /// variable to its path.
    pub variable_type: Option<String>,
    /// Only for pipelines on protected branches and tags.
    pub protected: Option<bool>,
    /// Masked in job logs (GitLab's rules for what may be masked).
    pub masked: Option<bool>,
    /// Masked, and never shown again (create only).
    pub masked_and_hidden: Option<bool>,
    /// Not expanded by the runner.
    pub raw: Option<bool>,
    /// Project variables: the environments it is for (`*`, a name, or a pattern).
    pub environment_scope: Option<String>,
    pub description: Option<String>,
    /// Update and delete: which scope's variable, when the key is in several.
    #[schema(value_type = Option<Object>)]
    pub filter_environment_scope: Option<String>,
}

impl FromParams for VariableParams {
    fn from_params(params: &Params) -> ApiResult<Self> {
        let mut c = Check::new(params);
        let p = VariableParams {
            key: c.str_max("key", 255),
            value: c.str_max("value", 10_000),
            variable_type: c.one_of("variable_type", |t| {
                ["env_var", "file"].contains(&t).then(|| t.to_string())
            }),
            protected: c.bool("protected"),
            masked: c.bool("masked"),
            masked_and_hidden: c.bool("masked_and_hidden"),
            raw: c.bool("raw"),
            environment_scope: c.str_max("environment_scope", 255),
            description: c.str_max("description", 255),
            filter_environment_scope: filter_scope(&mut c),
        };
        c.finish()?;
        Ok(p)
    }
}

/// `filter[environment_scope]`.
fn filter_scope(c: &mut Check<'_>) -> Option<String> {
    c.object("filter")?
        .get("environment_scope")
        .and_then(|s| s.as_str().map(str::to_string))
}

/// GitLab's model validations, in its words (`{"message": {"key": […]}}`).
fn check_fields(fields: &CiVariableFields, plain: &str) -> ApiResult<()> {
    let mut errors: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    let mut add = |attr: &'static str, msg: String| errors.entry(attr).or_default().push(msg);
    if fields.key.is_empty() {
        add("key", "can't be blank".into());
    } else if !fields
        .key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        add("key", "can contain only letters, digits and '_'.".into());
    }
    if fields.masked {
        let ok = if fields.raw {
            maskable_raw(plain)
        } else {
            maskable(plain)
        };
        if !ok {
            add("value", "is invalid".into());
        }
    }
    if fields.environment_scope.is_empty()
        || !fields
            .environment_scope
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_/$*{}. ".contains(c))
    {
        add(
            "environment_scope",
            "can contain only letters, digits, '-', '_', '/', '$', '{', '}', '.', '*' and spaces"
                .into(),
        );
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(json!(errors)))
    }
}

fn taken(key: &str) -> ApiError {
    ApiError::validation("key", format!("({key}) has already been taken"))
}

/// The one variable `key` names (in `scope` if given); GitLab's 404 and 409.
async fn find_one(
    state: &AppState,
    project_id: Option<i64>,
    key: &str,
    scope: Option<&str>,
) -> ApiResult<CiVariable> {
    let mut db = state.db.read().await?;
    let mut found = CiVariable::find(&mut db.conn(), project_id, key, scope).await?;
    match found.len() {
        0 => Err(ApiError::not_found("Variable")),
        1 => Ok(found.remove(0)),
        _ => Err(ApiError::Render(
            actix_web::http::StatusCode::CONFLICT,
            "There are multiple variables with provided parameters. Please use 'filter[environment_scope]'".into(),
        )),
    }
}

async fn list(
    state: &AppState,
    req: &HttpRequest,
    project_id: Option<i64>,
) -> ApiResult<HttpResponse> {
    let page = page_of(&params_of(req)?)?;
    let variables = {
        let mut db = state.db.read().await?;
        CiVariable::list(&mut db.conn(), project_id).await?
    };
    let items: Vec<Value> = variables.iter().map(|v| variable_json(state, v)).collect();
    Ok(page.respond(req, items))
}

async fn show(
    state: &AppState,
    req: &HttpRequest,
    project_id: Option<i64>,
    key: &str,
) -> ApiResult<HttpResponse> {
    let params = params_of(req)?;
    let mut c = Check::new(&params);
    let scope = filter_scope(&mut c);
    c.finish()?;
    let variable = find_one(state, project_id, key, scope.as_deref()).await?;
    Ok(HttpResponse::Ok().json(variable_json(state, &variable)))
}

async fn create(
    state: &AppState,
    project_id: Option<i64>,
    p: VariableParams,
) -> ApiResult<HttpResponse> {
    // Grape's `requires :key, :value`.
    crate::api::params::require(&[("key", p.key.is_none()), ("value", p.value.is_none())])?;
    let plain = p.value.unwrap_or_default();
    let hidden = p.masked_and_hidden.unwrap_or(false);
    let fields = CiVariableFields {
        project_id,
        key: p.key.unwrap_or_default(),
        value: state.secrets.seal(&plain),
        variable_type: p.variable_type.unwrap_or_else(|| "env_var".into()),
        protected: p.protected.unwrap_or(false),
        masked: hidden || p.masked.unwrap_or(false),
        hidden,
        raw: p.raw.unwrap_or(false),
        environment_scope: match project_id {
            Some(_) => p.environment_scope.unwrap_or_else(|| "*".into()),
            None => "*".into(),
        },
        description: p.description,
        updated_at: now(),
    };
    check_fields(&fields, &plain)?;
    let created = {
        let mut db = state.db.write().await?;
        CiVariable::create(&mut db.conn(), &fields).await?
    }
    .ok_or_else(|| taken(&fields.key))?;
    state.queue.variables_changed(project_id);
    audit(state, "ci_variable_created", &created).await;
    Ok(HttpResponse::Created().json(variable_json(state, &created)))
}

async fn update(
    state: &AppState,
    project_id: Option<i64>,
    key: &str,
    p: VariableParams,
) -> ApiResult<HttpResponse> {
    let old = find_one(
        state,
        project_id,
        key,
        p.filter_environment_scope.as_deref(),
    )
    .await?;
    let plain = match &p.value {
        Some(value) => value.clone(),
        None => state
            .secrets
            .open(&old.value)
            .map_err(|e| ApiError::Internal(e.into()))?,
    };
    let masked = p.masked.unwrap_or(old.masked);
    if old.hidden && !masked {
        // GitLab: a hidden variable stays masked.
        return Err(ApiError::validation(
            "masked",
            "cannot be unset for a hidden variable",
        ));
    }
    let fields = CiVariableFields {
        project_id,
        key: old.key.clone(),
        value: state.secrets.seal(&plain),
        variable_type: p.variable_type.unwrap_or(old.variable_type),
        protected: p.protected.unwrap_or(old.protected),
        masked,
        hidden: old.hidden,
        raw: p.raw.unwrap_or(old.raw),
        environment_scope: match project_id {
            Some(_) => p.environment_scope.unwrap_or(old.environment_scope),
            None => "*".into(),
        },
        description: p.description.or(old.description),
        updated_at: now(),
    };
    check_fields(&fields, &plain)?;
    let updated = {
        let mut db = state.db.write().await?;
        CiVariable::update(&mut db.conn(), old.id, &fields).await?
    }
    .ok_or_else(|| taken(&fields.key))?;
    state.queue.variables_changed(project_id);
    audit(state, "ci_variable_updated", &updated).await;
    Ok(HttpResponse::Ok().json(variable_json(state, &updated)))
}

async fn remove(
    state: &AppState,
    req: &HttpRequest,
    project_id: Option<i64>,
    key: &str,
) -> ApiResult<HttpResponse> {
    let params = params_of(req)?;
    let mut c = Check::new(&params);
    let scope = filter_scope(&mut c);
    c.finish()?;
    let variable = find_one(state, project_id, key, scope.as_deref()).await?;
    {
        let mut db = state.db.write().await?;
        CiVariable::delete(&mut db.conn(), variable.id).await?;
    }
    state.queue.variables_changed(project_id);
    audit(state, "ci_variable_deleted", &variable).await;
    Ok(HttpResponse::NoContent().finish())
}

/// The audit event of a change: the key and scope, never the value.
async fn audit(state: &AppState, kind: &str, v: &CiVariable) {
    let details = json!({
        "project_id": v.project_id,
        "key": v.key,
        "environment_scope": v.environment_scope,
        "protected": v.protected,
        "masked": v.masked,
    });
    record_admin_action(state, kind, "ci_variable", v.id, details).await;
}

/// A project's CI/CD variables.
#[utoipa::path(tag = "variables", operation_id = "list_project_variables", params(("id" = String, Path)),
    security(("private_token" = [])),
    responses((status = 200, description = "`[{variable_type, key, value, hidden, protected, masked, raw, environment_scope, description}]`"),
              (status = 404, description = "no such project")))]
#[get("/projects/{id}/variables")]
pub async fn list_project_variables(
    _admin: AdminAuth,
    id: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let project = find_project(&state, &id).await?;
    list(&state, &req, Some(project.id)).await
}

/// One of a project's variables (`filter[environment_scope]` when its key is in several).
#[utoipa::path(tag = "variables", operation_id = "get_project_variable", params(("id" = String, Path), ("key" = String, Path)),
    security(("private_token" = [])),
    responses((status = 200, description = "the variable"), (status = 404, description = "no such variable"),
              (status = 409, description = "the key is in several scopes")))]
#[get("/projects/{id}/variables/{key}")]
pub async fn get_project_variable(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, key) = path.into_inner();
    let project = find_project(&state, &id).await?;
    show(&state, &req, Some(project.id), &key).await
}

/// Add a variable to a project.
#[utoipa::path(tag = "variables", operation_id = "create_project_variable", params(("id" = String, Path)),
    request_body(content = VariableParams, content_type = "application/json",
        example = json!({ "key": "DEPLOY_TOKEN", "value": "s3cr3t-t0ken", "protected": true, "masked": true })),
    security(("private_token" = [])),
    responses((status = 201, description = "the variable"), (status = 400, description = "invalid, or the key is taken in that scope"),
              (status = 404, description = "no such project")))]
#[post("/projects/{id}/variables")]
pub async fn create_project_variable(
    params: Validated<VariableParams>,
    _admin: AdminAuth,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let project = find_project(&state, &id).await?;
    create(&state, Some(project.id), params.0).await
}

/// Change a project's variable.
#[utoipa::path(tag = "variables", operation_id = "update_project_variable", params(("id" = String, Path), ("key" = String, Path)),
    request_body(content = VariableParams, content_type = "application/json"),
    security(("private_token" = [])),
    responses((status = 200, description = "the variable"), (status = 400, description = "invalid"),
              (status = 404, description = "no such variable")))]
#[put("/projects/{id}/variables/{key}")]
pub async fn update_project_variable(
    params: Validated<VariableParams>,
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, key) = path.into_inner();
    let project = find_project(&state, &id).await?;
    update(&state, Some(project.id), &key, params.0).await
}

/// Delete a project's variable.
#[utoipa::path(tag = "variables", operation_id = "delete_project_variable", params(("id" = String, Path), ("key" = String, Path)),
    security(("private_token" = [])),
    responses((status = 204, description = "deleted"), (status = 404, description = "no such variable")))]
#[delete("/projects/{id}/variables/{key}")]
pub async fn delete_project_variable(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, key) = path.into_inner();
    let project = find_project(&state, &id).await?;
    remove(&state, &req, Some(project.id), &key).await
}

/// The instance's CI/CD variables: every project's jobs get them, below the project's own.
#[utoipa::path(tag = "variables", operation_id = "list_instance_variables",
    security(("private_token" = [])), responses((status = 200, description = "the variables")))]
#[get("/admin/ci/variables")]
pub async fn list_instance_variables(
    _admin: AdminAuth,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    list(&state, &req, None).await
}

/// One instance variable.
#[utoipa::path(tag = "variables", operation_id = "get_instance_variable", params(("key" = String, Path)),
    security(("private_token" = [])),
    responses((status = 200, description = "the variable"), (status = 404, description = "no such variable")))]
#[get("/admin/ci/variables/{key}")]
pub async fn get_instance_variable(
    _admin: AdminAuth,
    key: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    show(&state, &req, None, &key).await
}

/// Add an instance variable.
#[utoipa::path(tag = "variables", operation_id = "create_instance_variable",
    request_body(content = VariableParams, content_type = "application/json",
        example = json!({ "key": "REGISTRY_MIRROR", "value": "https://mirror.example.com" })),
    security(("private_token" = [])),
    responses((status = 201, description = "the variable"), (status = 400, description = "invalid, or the key is taken")))]
#[post("/admin/ci/variables")]
pub async fn create_instance_variable(
    params: Validated<VariableParams>,
    _admin: AdminAuth,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    create(&state, None, params.0).await
}

/// Change an instance variable.
#[utoipa::path(tag = "variables", operation_id = "update_instance_variable", params(("key" = String, Path)),
    request_body(content = VariableParams, content_type = "application/json"),
    security(("private_token" = [])),
    responses((status = 200, description = "the variable"), (status = 400, description = "invalid"),
              (status = 404, description = "no such variable")))]
#[put("/admin/ci/variables/{key}")]
pub async fn update_instance_variable(
    params: Validated<VariableParams>,
    _admin: AdminAuth,
    key: web::Path<String>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    update(&state, None, &key, params.0).await
}

/// Delete an instance variable.
#[utoipa::path(tag = "variables", operation_id = "delete_instance_variable", params(("key" = String, Path)),
    security(("private_token" = [])),
    responses((status = 204, description = "deleted"), (status = 404, description = "no such variable")))]
#[delete("/admin/ci/variables/{key}")]
pub async fn delete_instance_variable(
    _admin: AdminAuth,
    key: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    remove(&state, &req, None, &key).await
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(list_project_variables)
        .service(get_project_variable)
        .service(create_project_variable)
        .service(update_project_variable)
        .service(delete_project_variable)
        .service(list_instance_variables)
        .service(get_instance_variable)
        .service(create_instance_variable)
        .service(update_instance_variable)
        .service(delete_instance_variable);
}

#[cfg(test)]
mod tests {
    use super::{maskable, maskable_raw};

    #[test]
    fn gitlabs_masking_rules() {
        for ok in ["s3cr3t-t0ken", "abc+/=@:.~-_12", "12345678"] {
            assert!(maskable(ok), "{ok}");
        }
        for bad in [
            "short",
            "has space 123",
            "with$VARIABLE",
            "line\nbreak1",
            "ünïcödé123",
        ] {
            assert!(!maskable(bad), "{bad}");
        }
        assert!(
            maskable_raw("with$VARIABLE!")
                && !maskable_raw("has space 123")
                && !maskable_raw("short")
        );
    }
}
