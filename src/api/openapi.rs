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
    tags(
        (name = "runners", description = "Runner registration and lifecycle (runner token)"),
        (name = "admin runners", description = "Runner administration (PRIVATE-TOKEN)"),
        (name = "features", description = "Feature flags (PRIVATE-TOKEN)"),
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
    #[schema(value_type = Object)]
    message: serde_json::Value,
}

/// Grape's body for bad params and unknown routes: `{"error": "token is missing"}`.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({ "error": "token is missing" }))]
#[allow(dead_code)]
pub struct ParamsError {
    error: String,
}
