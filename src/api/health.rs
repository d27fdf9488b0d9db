//! `/-/liveness`, `/-/readiness`, `/-/health`, as GitLab names them.

use actix_web::{get, web, HttpResponse};
use serde_json::json;

use crate::AppState;

/// The process is up.
#[utoipa::path(tag = "health", responses((status = 200, description = "alive")))]
#[get("/-/liveness")]
pub async fn liveness() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Migrations ran and the database answers.
#[utoipa::path(
    tag = "health",
    responses((status = 200, description = "ready"), (status = 503, description = "database unreachable"))
)]
#[get("/-/readiness")]
pub async fn readiness(state: web::Data<AppState>) -> HttpResponse {
    match crate::db::ping(&state.db).await {
        Ok(()) => {
            HttpResponse::Ok().json(json!({ "status": "ok", "db_check": [{ "status": "ok" }] }))
        }
        Err(_) => HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "failed", "db_check": [{ "status": "failed" }] })),
    }
}

/// Plain-text health check (GitLab answers `GitLab OK`).
#[utoipa::path(tag = "health", responses((status = 200, description = "healthy", body = String)))]
#[get("/-/health")]
pub async fn health() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain")
        .body("Runway OK")
}
