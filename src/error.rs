//! One error currency for every handler: [`ApiError`] renders exactly the bodies GitLab's
//! API renders (`lib/api/helpers.rb`: `forbidden!`, `not_found!`, `conflict!`, …, and Grape's
//! validation errors), so a runner or API client that parses them keeps working.
//!
//! Services return `ApiError` (or `anyhow::Error`, which becomes a logged 500); handlers
//! return `Result<_, ApiError>`. Nothing here ever puts a cause or stack trace in a body.

use std::borrow::Cow;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, HttpResponseBuilder, ResponseError};
use serde_json::{json, Value};

pub type ApiResult<T> = Result<T, ApiError>;

/// The job's status, on every answer to a job route (`Job-Status`).
pub const JOB_STATUS_HEADER: &str = "Job-Status";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Grape's parameter validation: `{"error":"token is missing"}`, several joined by ", ".
    #[error("invalid parameters: {0}")]
    InvalidParams(String),
    /// `bad_request!(reason)`: `{"message":"400 Bad request - <reason>"}`.
    #[error("bad request: {0}")]
    BadRequest(Cow<'static, str>),
    /// A required header is missing or unreadable: `{"message":"400 Missing header <name>"}`.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// `render_validation_error!`: `{"message":{"<attr>":["<msg>"]}}` with 400.
    #[error("validation failed: {0}")]
    Validation(Value),
    /// `unauthorized!`: `{"message":"401 Unauthorized"}`.
    #[error("unauthorized")]
    Unauthorized,
    /// `forbidden!(reason)`: `{"message":"403 Forbidden"}` or `… - <reason>`.
    #[error("forbidden")]
    Forbidden(Option<Cow<'static, str>>),
    /// `authenticate_job!` on a job that is not running: 403 with `Job-Status`, which the
    /// runner reads to abort the job.
    #[error("job is not running")]
    JobNotRunning(crate::db::enums::JobStatus),
    /// `not_found!(what)`: `{"message":"404 <what> Not Found"}` or `{"message":"404 Not Found"}`.
    #[error("not found")]
    NotFound(Option<Cow<'static, str>>),
    /// No route matched: Grape's `{"error":"404 Not Found"}`.
    #[error("no route")]
    RouteNotFound,
    /// `conflict!`: `{"message":"409 Conflict"}`.
    #[error("conflict")]
    Conflict,
    /// `render_api_error!('410 Gone - …', 410)`.
    #[error("gone: {0}")]
    Gone(Cow<'static, str>),
    /// `destroy_conditionally!` with a stale `If-Unmodified-Since`.
    #[error("precondition failed")]
    PreconditionFailed,
    /// A body over the configured limit: `{"message":"413 Request Entity Too Large"}`.
    #[error("payload too large")]
    PayloadTooLarge,
    /// `{"message":"<text>"}` with 501, as router discovery answers without a job router.
    #[error("not implemented: {0}")]
    NotImplemented(Cow<'static, str>),
    /// `render_api_error!(message, status)`: `{"message":"<text>"}` with that status.
    #[error("{1}")]
    Render(StatusCode, Cow<'static, str>),
    /// A rate limit was hit: 429 with GitLab's body and `Retry-After: <seconds>`.
    #[error("too many requests")]
    TooManyRequests(u64),
    /// The database pool had no connection in time: 503, the runner retries.
    #[error("service unavailable")]
    Unavailable,
    /// Anything unexpected: logged with its cause chain, answered with GitLab's generic 500.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn forbidden(reason: impl Into<Cow<'static, str>>) -> Self {
        ApiError::Forbidden(Some(reason.into()))
    }

    pub fn not_found(what: impl Into<Cow<'static, str>>) -> Self {
        ApiError::NotFound(Some(what.into()))
    }

    pub fn bad_request(reason: impl Into<Cow<'static, str>>) -> Self {
        ApiError::BadRequest(reason.into())
    }

    /// `{"message":{"<attr>":["<msg>"]}}`: one attribute, one message.
    pub fn validation(attr: &str, msg: impl Into<String>) -> Self {
        ApiError::Validation(json!({ attr: [msg.into()] }))
    }

    fn body(&self) -> Value {
        match self {
            ApiError::InvalidParams(text) => json!({ "error": text }),
            ApiError::BadRequest(reason) => {
                json!({ "message": format!("400 Bad request - {reason}") })
            }
            ApiError::MissingHeader(name) => {
                json!({ "message": format!("400 Missing header {name}") })
            }
            ApiError::Validation(errors) => json!({ "message": errors }),
            ApiError::Unauthorized => json!({ "message": "401 Unauthorized" }),
            ApiError::Forbidden(None) => json!({ "message": "403 Forbidden" }),
            ApiError::Forbidden(Some(reason)) => {
                json!({ "message": format!("403 Forbidden - {reason}") })
            }
            ApiError::JobNotRunning(_) => {
                json!({ "message": "403 Forbidden - Job is not processing on runner" })
            }
            ApiError::NotFound(None) => json!({ "message": "404 Not Found" }),
            ApiError::NotFound(Some(what)) => json!({ "message": format!("404 {what} Not Found") }),
            ApiError::RouteNotFound => json!({ "error": "404 Not Found" }),
            ApiError::Conflict => json!({ "message": "409 Conflict" }),
            ApiError::Gone(reason) => json!({ "message": format!("410 Gone - {reason}") }),
            ApiError::PreconditionFailed => json!({ "message": "412 Precondition Failed" }),
            ApiError::PayloadTooLarge => json!({ "message": "413 Request Entity Too Large" }),
            ApiError::NotImplemented(text) => json!({ "message": text }),
            ApiError::Render(_, text) => json!({ "message": text }),
            ApiError::TooManyRequests(_) => json!({
                "message": { "error": "This endpoint has been requested too many times. Try again later." }
            }),
            ApiError::Unavailable => json!({ "message": "503 Service Unavailable" }),
            ApiError::Internal(_) => json!({ "message": "500 Internal Server Error" }),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidParams(_) => StatusCode::BAD_REQUEST,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::MissingHeader(_) => StatusCode::BAD_REQUEST,
            ApiError::Validation(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::JobNotRunning(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::RouteNotFound => StatusCode::NOT_FOUND,
            ApiError::Conflict => StatusCode::CONFLICT,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Render(status, _) => *status,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(cause) = self {
            tracing::error!(error = ?cause, "internal error");
        }
        let mut response = HttpResponseBuilder::new(self.status_code());
        match self {
            ApiError::Unavailable => {
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            ApiError::JobNotRunning(status) => {
                response.insert_header((JOB_STATUS_HEADER, status.as_str()));
            }
            ApiError::TooManyRequests(seconds) => {
                response.insert_header((header::RETRY_AFTER, seconds.max(&1).to_string()));
            }
            _ => {}
        }
        response.json(self.body())
    }
}

/// Whether a database error says the connection went away rather than that the query was
/// wrong: closed or unwritable, or PostgreSQL ending it as it stops or restarts (SQLSTATE
/// class 57: `terminating connection due to administrator command`, `the database system
/// is shutting down`; diesel reports those with their message only).
fn connection_lost(
    kind: &diesel::result::DatabaseErrorKind,
    info: &dyn diesel::result::DatabaseErrorInformation,
) -> bool {
    use diesel::result::DatabaseErrorKind::{ClosedConnection, UnableToSendCommand, Unknown};
    match kind {
        ClosedConnection | UnableToSendCommand => true,
        Unknown => {
            let message = info.message();
            message.starts_with("terminating connection")
                || message.starts_with("the database system is")
        }
        _ => false,
    }
}

impl ApiError {
    /// A transaction PostgreSQL aborted to break a deadlock (SQLSTATE 40P01, which diesel
    /// reports with its message only): running it again may succeed.
    pub fn is_deadlock(&self) -> bool {
        let ApiError::Internal(cause) = self else {
            return false;
        };
        matches!(
            cause.downcast_ref::<diesel::result::Error>(),
            Some(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::Unknown,
                info,
            )) if info.message().starts_with("deadlock detected")
        )
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(err: diesel::result::Error) -> Self {
        match err {
            diesel::result::Error::NotFound => ApiError::NotFound(None),
            // The connection broke under the query (the database stopped or restarted): the
            // client is told to come back, as when no connection can be had.
            diesel::result::Error::DatabaseError(kind, info) if connection_lost(&kind, &*info) => {
                tracing::warn!(error = info.message(), "database connection lost");
                ApiError::Unavailable
            }
            other => ApiError::Internal(anyhow::Error::new(other)),
        }
    }
}

impl From<crate::db::PoolError> for ApiError {
    fn from(err: crate::db::PoolError) -> Self {
        match err {
            crate::db::PoolError::Timeout => ApiError::Unavailable,
            crate::db::PoolError::Unreachable(cause) => {
                tracing::warn!(error = %cause, "database unreachable");
                ApiError::Unavailable
            }
            crate::db::PoolError::Other(cause) => ApiError::Internal(cause),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::to_bytes;

    #[test]
    fn a_lost_database_connection_is_unavailable_not_internal() {
        use diesel::result::{DatabaseErrorKind, Error};
        let error = |kind, message: &str| Error::DatabaseError(kind, Box::new(message.to_string()));
        for lost in [
            error(
                DatabaseErrorKind::Unknown,
                "terminating connection due to administrator command",
            ),
            error(
                DatabaseErrorKind::Unknown,
                "the database system is shutting down",
            ),
            error(
                DatabaseErrorKind::ClosedConnection,
                "server closed the connection",
            ),
        ] {
            assert!(matches!(ApiError::from(lost), ApiError::Unavailable));
        }
        let wrong = error(DatabaseErrorKind::Unknown, "column \"x\" does not exist");
        let wrong = ApiError::from(wrong);
        assert!(matches!(wrong, ApiError::Internal(_)) && !wrong.is_deadlock());
        // PostgreSQL's deadlock victim: Internal too, but known as one.
        let deadlock = error(DatabaseErrorKind::Unknown, "deadlock detected");
        assert!(ApiError::from(deadlock).is_deadlock());
        let unique = error(DatabaseErrorKind::UniqueViolation, "terminating connection");
        assert!(matches!(ApiError::from(unique), ApiError::Internal(_)));
    }

    async fn render(err: ApiError) -> (u16, String) {
        let response = err.error_response();
        let status = response.status().as_u16();
        let body = to_bytes(response.into_body()).await.unwrap_or_default();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[actix_web::test]
    async fn every_variant_renders_gitlabs_body() {
        let cases = [
            (
                ApiError::InvalidParams("token is missing".into()),
                400,
                r#"{"error":"token is missing"}"#,
            ),
            (
                ApiError::bad_request("bad ref"),
                400,
                r#"{"message":"400 Bad request - bad ref"}"#,
            ),
            (
                ApiError::validation("tags_list", "x"),
                400,
                r#"{"message":{"tags_list":["x"]}}"#,
            ),
            (
                ApiError::Unauthorized,
                401,
                r#"{"message":"401 Unauthorized"}"#,
            ),
            (
                ApiError::Forbidden(None),
                403,
                r#"{"message":"403 Forbidden"}"#,
            ),
            (
                ApiError::forbidden("invalid token supplied"),
                403,
                r#"{"message":"403 Forbidden - invalid token supplied"}"#,
            ),
            (
                ApiError::NotFound(None),
                404,
                r#"{"message":"404 Not Found"}"#,
            ),
            (
                ApiError::not_found("Runner"),
                404,
                r#"{"message":"404 Runner Not Found"}"#,
            ),
            (ApiError::RouteNotFound, 404, r#"{"error":"404 Not Found"}"#),
            (ApiError::Conflict, 409, r#"{"message":"409 Conflict"}"#),
            (
                ApiError::Gone("runner registration disallowed".into()),
                410,
                r#"{"message":"410 Gone - runner registration disallowed"}"#,
            ),
            (
                ApiError::PreconditionFailed,
                412,
                r#"{"message":"412 Precondition Failed"}"#,
            ),
            (
                ApiError::PayloadTooLarge,
                413,
                r#"{"message":"413 Request Entity Too Large"}"#,
            ),
            (
                ApiError::NotImplemented("no".into()),
                501,
                r#"{"message":"no"}"#,
            ),
            (
                ApiError::Unavailable,
                503,
                r#"{"message":"503 Service Unavailable"}"#,
            ),
            (
                ApiError::Internal(anyhow::anyhow!("secret detail")),
                500,
                r#"{"message":"500 Internal Server Error"}"#,
            ),
        ];
        for (err, status, body) in cases {
            assert_eq!(render(err).await, (status, body.to_string()));
        }
    }
}
