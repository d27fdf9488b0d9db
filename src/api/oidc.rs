//! Runway as the OpenID provider of its jobs' `id_tokens`: the public keys (JWKS) at
//! GitLab's `/oauth/discovery/keys`, the OpenID configuration at
//! `/.well-known/openid-configuration` (what Vault, AWS, GCP and Azure read to trust the
//! tokens). The admin rotates the key with `api::admin::id_tokens`.

use actix_web::{get, web, HttpResponse};
use serde_json::json;

use crate::AppState;

/// The keys that sign (and signed) jobs' ID tokens, as a JWKS.
#[utoipa::path(tag = "id_tokens", operation_id = "jwks",
    responses((status = 200, description = "`{keys: [{kty, kid, e, n, use, alg}]}`")))]
#[get("/oauth/discovery/keys")]
pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.id_tokens.jwks())
}

/// The OpenID Connect discovery document: the issuer of jobs' ID tokens (the server's
/// external URL, the tokens' `iss`) and where its keys are.
#[utoipa::path(tag = "id_tokens", operation_id = "openid_configuration",
    responses((status = 200, description = "`{issuer, jwks_uri, …}`")))]
#[get("/.well-known/openid-configuration")]
pub async fn openid_configuration(state: web::Data<AppState>) -> HttpResponse {
    let issuer = state.settings.external_url.trim_end_matches('/');
    HttpResponse::Ok().json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/oauth/discovery/keys"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public", "pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid"],
        "claims_supported": [
            "iss", "sub", "aud", "exp", "iat", "nbf", "jti",
            "namespace_path", "project_id", "project_path", "user_id", "user_login",
            "user_email", "user_access_level", "pipeline_id", "pipeline_source", "job_id",
            "ref", "ref_type", "ref_path", "ref_protected", "environment",
            "environment_protected", "deployment_tier", "environment_action", "runner_id",
            "runner_environment", "sha", "project_visibility", "ci_config_ref_uri",
            "ci_config_sha"
        ],
    }))
}
