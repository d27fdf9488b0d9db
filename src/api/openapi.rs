//! The OpenAPI document: a base (info, security schemes) that utoipa-actix-web fills with
//! every route registered through it, so a route cannot exist without its entry.

use std::sync::OnceLock;

use actix_web::get;

use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Runway",
        description = "GitLab's runner API (`/api/v4/runners…`, `/api/v4/jobs…`) and a GitLab-compatible admin API, served without GitLab.",
    ),
    modifiers(&SecuritySchemes),
    components(schemas(Message, ParamsError)),
    tags(
        (name = "runners", description = "Runner registration and lifecycle (runner token)"),
        (name = "admin runners", description = "Runner administration (PRIVATE-TOKEN)"),
        (name = "features", description = "Feature flags (PRIVATE-TOKEN)"),
        (name = "pipeline schedules", description = "Pipelines on a cron (PRIVATE-TOKEN)"),
        (name = "environments", description = "Environments and their deployments (PRIVATE-TOKEN)"),
        (name = "id_tokens", description = "Jobs' ID tokens: the signing keys (JWKS), the OpenID configuration, the key's rotation (PRIVATE-TOKEN)"),
        (name = "releases", description = "Releases of a project's tags (PRIVATE-TOKEN, or a running job's JOB-TOKEN)"),
        (name = "resource_groups", description = "Resource groups: one job at a time per group (PRIVATE-TOKEN)"),
        (name = "triggers", description = "Pipeline trigger tokens (PRIVATE-TOKEN) and pipelines started with one (the trigger token)"),
        (name = "variables", description = "CI/CD variables of a project and of the instance (PRIVATE-TOKEN)"),
        (name = "meta", description = "Version, current user (PRIVATE-TOKEN), this document and Swagger UI"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
struct BaseDoc;

/// One security scheme per guard (DESIGN §3), named in each route's `security(…)`.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let key = |location: fn(ApiKeyValue) -> ApiKey, name: &str, what: &str| {
            SecurityScheme::ApiKey(location(ApiKeyValue::with_description(name, what)))
        };
        components.add_security_scheme(
            "registration_token",
            key(
                ApiKey::Query,
                "token",
                "Legacy registration token, as the `token` param (body, form or query).",
            ),
        );
        components.add_security_scheme(
            "runner_token",
            key(
                ApiKey::Query,
                "token",
                "Runner authentication token, as the `token` param (body, form or query).",
            ),
        );
        components.add_security_scheme(
            "runner_token_header",
            key(
                ApiKey::Header,
                "Runner-Token",
                "Runner authentication token in the `Runner-Token` header.",
            ),
        );
        components.add_security_scheme(
            "job_token",
            key(
                ApiKey::Header,
                "JOB-TOKEN",
                "Job token in the `JOB-TOKEN` header (or the `token` param).",
            ),
        );
        components.add_security_scheme(
            "private_token",
            key(
                ApiKey::Header,
                "PRIVATE-TOKEN",
                "Admin token (`RUNWAY_ADMIN_TOKEN`).",
            ),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

pub fn base() -> utoipa::openapi::OpenApi {
    let mut doc = BaseDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}

/// The whole document as pretty JSON, built once from the registered routes.
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let doc = crate::openapi_document();
        doc.to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    })
}

/// This document (OpenAPI 3.1), as `runway openapi` prints it.
#[utoipa::path(
    tag = "meta",
    responses((status = 200, description = "the OpenAPI document", content_type = "application/json", body = Object))
)]
#[get("/api/openapi.json")]
pub async fn document() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type("application/json")
        .body(json())
}

/// GitLab's error body: `{"message": "401 Unauthorized"}`; for validation errors the
/// message is an object of field → list of errors.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({ "message": "403 Forbidden" }))]
#[allow(dead_code)]
pub struct Message {
    /// A status line such as `404 Not Found`, or an object of field errors.
    message: serde_json::Value,
}

/// Grape's body for bad params and unknown routes: `{"error": "token is missing"}`.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({ "error": "token is missing" }))]
#[allow(dead_code)]
pub struct ParamsError {
    error: String,
}

fn error_content() -> utoipa::openapi::Content {
    use utoipa::openapi::schema::OneOfBuilder;
    use utoipa::openapi::{ContentBuilder, Ref};
    ContentBuilder::new()
        .schema(Some(
            OneOfBuilder::new()
                .item(Ref::from_schema_name("Message"))
                .item(Ref::from_schema_name("ParamsError")),
        ))
        .build()
}

fn error_response(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
    utoipa::openapi::ResponseBuilder::new()
        .description(description)
        .content("application/json", error_content())
        .build()
        .into()
}

/// An error answer with `Retry-After` (seconds): 503 when no database connection came in
/// time or object storage failed; 429 while runners are backed off.
fn retry_response(
    description: &str,
    seconds: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
    use utoipa::openapi::header::HeaderBuilder;
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    utoipa::openapi::ResponseBuilder::new()
        .description(description)
        .header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::Integer))
                .description(Some(seconds))
                .build(),
        )
        .content("application/json", error_content())
        .build()
        .into()
}

/// What every operation can answer, added where a route does not say it itself: 400 when
/// it takes params or a body (a param of the wrong type or out of range), 401 when it
/// needs a token (missing or wrong), 503 with `Retry-After` when it uses the database,
/// 429 with `Retry-After` on runner routes (backoff); and the body of every error answer, GitLab's
/// `{"message": …}` or Grape's `{"error": …}`.
pub fn complete(doc: &mut utoipa::openapi::OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let uses_database = path.starts_with("/api/v4/");
        let runner_route = crate::service::backoff::is_runner_route(path);
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in operations.into_iter().flatten() {
            let takes_input =
                op.parameters.as_ref().is_some_and(|p| !p.is_empty()) || op.request_body.is_some();
            let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
            let responses = &mut op.responses.responses;
            if takes_input && !responses.contains_key("400") {
                responses.insert("400".into(), error_response("invalid params"));
            }
            if secured && !responses.contains_key("401") {
                responses.insert("401".into(), error_response("no token, or not a valid one"));
            }
            if uses_database && !responses.contains_key("503") {
                responses.insert(
                    "503".into(),
                    retry_response(
                        "the database or object storage is unavailable for now",
                        "seconds to wait before trying again",
                    ),
                );
            }
            if (runner_route || secured) && !responses.contains_key("429") {
                responses.insert(
                    "429".into(),
                    retry_response(
                        "runners are backed off (database migrations, or the `runner_backoff` flag; `Retry-After: 60`), or this token's rate limit is used up, or this address failed authentication too often (`{\"message\":{\"error\":…}}`)",
                        "seconds to wait before trying again",
                    ),
                );
            }
            for (status, response) in responses.iter_mut() {
                let is_error = status.starts_with('4') || status.starts_with('5');
                if let (true, utoipa::openapi::RefOr::T(response)) = (is_error, response) {
                    if response.content.is_empty() {
                        response
                            .content
                            .insert("application/json".into(), error_content());
                    }
                }
            }
        }
    }
}

/// The methods the document has for a concrete request path, as an `Allow` header value;
/// `None` when no documented path matches it.
pub fn allowed_methods(path: &str) -> Option<&'static str> {
    static TABLE: OnceLock<Vec<(regex::Regex, String)>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let doc: serde_json::Value = serde_json::from_str(json()).unwrap_or_default();
        let param = regex::Regex::new(r"\\\{[^}]+\\\}").expect("regex");
        let mut table = Vec::new();
        for (template, item) in doc["paths"].as_object().into_iter().flatten() {
            let pattern = param
                .replace_all(&regex::escape(template), "[^/]+")
                .into_owned();
            let pattern = if template == "/api/docs/{file}" {
                "^/api/docs/.+$".to_string()
            } else {
                format!("^{pattern}$")
            };
            let Ok(re) = regex::Regex::new(&pattern) else {
                continue;
            };
            let methods: Vec<String> = item
                .as_object()
                .into_iter()
                .flatten()
                .map(|(m, _)| m.to_uppercase())
                .filter(|m| ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&m.as_str()))
                .collect();
            table.push((re, methods.join(", ")));
        }
        table
    });
    table
        .iter()
        .find(|(re, _)| re.is_match(path))
        .map(|(_, allow)| allow.as_str())
}

/// A job payload as `POST /jobs/request` gives it (`openapi/examples/job-payload.json`,
/// taken from the server's answer in the payload test).
pub fn job_payload_example() -> serde_json::Value {
    serde_json::from_str(include_str!("../../openapi/examples/job-payload.json"))
        .unwrap_or_default()
}
