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

/// Prometheus metrics (text format 0.0.4): GitLab's runner authentication counters,
/// request latency by route, job pick-up latency, jobs by status, queue depth, held long
/// polls and database pool use.
#[utoipa::path(
    tag = "health",
    responses(
        (status = 200, description = "metrics", content_type = "text/plain", body = String),
        (status = 503, description = "the database did not answer"),
    )
)]
#[get("/-/metrics")]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let jobs_by_status = match state.db.read().await {
        Ok(mut db) => crate::db::models::Job::count_by_status(&mut db.conn()).await,
        Err(_) => return HttpResponse::ServiceUnavailable().finish(),
    };
    let Ok(jobs_by_status) = jobs_by_status else {
        return HttpResponse::ServiceUnavailable().finish();
    };
    let snapshot = crate::metrics::Snapshot {
        jobs_by_status: jobs_by_status
            .into_iter()
            .map(|(status, count)| (status.as_str().to_string(), count))
            .collect(),
        pools: state.db.pools(),
        held_polls: state.queue.held(),
        searches: state.dispatcher.searches(),
        queue_reads: state.queue.reads(),
        waited_claims: state.queue.waited_claims(),
        write_groups: state.db.write_groups(),
        write_queue: state.db.write_queue(),
        checkpoints: state.db.checkpoints(),
    };
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render(&snapshot))
}
