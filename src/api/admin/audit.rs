//! `GET /audit_events` (GitLab's instance audit events API): who downloaded which job's
//! artifacts, and what the admin changed (runners deleted, feature flags set or removed).

use actix_web::{get, web, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::page_of;
use crate::api::params::params_of;
use crate::auth::AdminAuth;
use crate::db::models::AuditEvent;
use crate::error::ApiResult;
use crate::AppState;

/// One audit event, in GitLab's shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiAuditEvent {
    pub id: i64,
    /// What happened: `artifact_download`, `runner_deleted`, `feature_flag_set`, …
    pub event_name: String,
    /// Who did it: `admin`, or `job:<id>` for a job's token.
    pub author_name: String,
    pub entity_type: String,
    pub entity_id: i64,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    pub created_at: String,
}

impl From<AuditEvent> for ApiAuditEvent {
    fn from(e: AuditEvent) -> Self {
        let mut details: serde_json::Value =
            serde_json::from_str(&e.details).unwrap_or_else(|_| serde_json::json!({}));
        if let Some(map) = details.as_object_mut() {
            map.insert("author_name".into(), e.actor.clone().into());
            map.insert("event_name".into(), e.kind.clone().into());
        }
        ApiAuditEvent {
            id: e.id,
            event_name: e.kind,
            author_name: e.actor,
            entity_type: e.target_type,
            entity_id: e.target_id,
            details,
            created_at: crate::api::format_time(&e.created_at),
        }
    }
}

/// Every audit event, oldest first, paginated as GitLab paginates.
#[utoipa::path(tag = "admin runners", operation_id = "list_audit_events",
    params(("page" = Option<i64>, Query), ("per_page" = Option<i64>, Query)),
    security(("private_token" = [])),
    responses((status = 200, body = Vec<ApiAuditEvent>)))]
#[get("/audit_events")]
pub async fn list_audit_events(
    _admin: AdminAuth,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let page = page_of(&params_of(&req)?)?;
    let (events, counted) = {
        let mut db = state.db.read().await?;
        let events = AuditEvent::listed(&mut db.conn(), page.offset(), page.fetch()).await?;
        (
            events,
            AuditEvent::count(&mut db.conn(), super::COUNT_UP_TO).await?,
        )
    };
    let events: Vec<ApiAuditEvent> = events.into_iter().map(Into::into).collect();
    Ok(page.respond_rows(&req, counted, events))
}

/// Records an admin action (a failure to record is logged, not answered).
pub async fn record_admin_action(
    state: &AppState,
    kind: &str,
    target_type: &str,
    target_id: i64,
    details: serde_json::Value,
) {
    let recorded = async {
        let mut db = state.db.write().await?;
        AuditEvent::record(
            &mut db.conn(),
            kind,
            "admin",
            target_type,
            target_id,
            &details,
        )
        .await
        .map_err(crate::error::ApiError::from)
    }
    .await;
    if let Err(e) = recorded {
        tracing::error!(error = %e, kind, "recording an audit event failed");
    }
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(list_audit_events);
}
