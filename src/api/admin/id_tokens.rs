//! Runway's rotation of the key that signs jobs' ID tokens (GitLab rotates its
//! `ci_jwt_signing_key` with a Rake task; Runway with this route and
//! `runway id-tokens rotate-key`).

use actix_web::{post, web, HttpResponse};
use serde_json::json;

use crate::api::admin::audit::record_admin_action;
use crate::auth::AdminAuth;
use crate::error::ApiResult;
use crate::AppState;

/// Runway: a new ID token signing key. Tokens signed from now on use it; the old key stays
/// in the JWKS for seven days, so that tokens signed before still verify. Every instance
/// signs with the new key within 30 seconds.
#[utoipa::path(tag = "id_tokens", operation_id = "rotate_id_token_key",
    security(("private_token" = [])),
    responses((status = 201, description = "`{kid}`: the new key's id")))]
#[post("/admin/ci/id_tokens/rotate_key")]
pub async fn rotate_key(_admin: AdminAuth, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let kid = state.id_tokens.rotate().await?;
    record_admin_action(
        &state,
        "id_token_key_rotated",
        "IdTokenSigningKey",
        0,
        json!({ "kid": kid }),
    )
    .await;
    Ok(HttpResponse::Created().json(json!({ "kid": kid })))
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(rotate_key);
}
