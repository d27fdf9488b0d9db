//! HTTP: the runner API, the admin API, health, the OpenAPI document and Swagger UI.
//! Handlers parse, call a service, and map the result; they hold no SQL.

pub mod admin;
pub mod docs;
pub mod faults;
pub mod hardening;
pub mod health;
pub mod oidc;
pub mod openapi;
pub mod params;
pub mod paths;
pub mod runner;

use actix_web::HttpResponse;
use chrono::NaiveDateTime;
use serde::Serializer;

/// GitLab's API time format: UTC with milliseconds (`2022-01-11T14:39:24.000Z`), which
/// the runner's Go `time.Time` decodes.
pub fn format_time(at: &NaiveDateTime) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Serialises `Option<NaiveDateTime>` with [`format_time`], `null` when absent.
pub fn serialize_time_opt<S: Serializer>(
    at: &Option<NaiveDateTime>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => s.serialize_str(&format_time(at)),
        None => s.serialize_none(),
    }
}

pub fn serialize_time<S: Serializer>(at: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_time(at))
}

/// 204 with no body.
pub fn no_content() -> HttpResponse {
    HttpResponse::NoContent().finish()
}

/// Parses a numeric path id as Grape's `requires :id, type: Integer` does: 400
/// `{"error":"id is invalid"}` for anything else.
pub fn path_id(raw: &str, name: &str) -> Result<i64, crate::error::ApiError> {
    raw.parse::<i64>()
        .map_err(|_| crate::error::ApiError::InvalidParams(format!("{name} is invalid")))
}

/// Middleware before params and auth: runner routes answer GitLab's 429 while the server
/// backs runners off (see [`crate::service::backoff`]).
pub async fn runner_backoff(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<
    actix_web::dev::ServiceResponse<actix_web::body::EitherBody<impl actix_web::body::MessageBody>>,
    actix_web::Error,
> {
    if crate::service::backoff::is_runner_route(req.path()) {
        if let Some(state) = req.app_data::<actix_web::web::Data<crate::AppState>>() {
            if state.backoff.active().await {
                let response = HttpResponse::TooManyRequests()
                    .insert_header((actix_web::http::header::RETRY_AFTER, "60"))
                    .json(serde_json::json!({
                        "message": "Executing database migrations. Please retry later."
                    }));
                return Ok(req.into_response(response).map_into_right_body());
            }
        }
    }
    Ok(next.call(req).await?.map_into_left_body())
}
