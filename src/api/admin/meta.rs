//! `GET /version` and `GET /user` (the admin), as python-gitlab's `gl.version()` and
//! `gl.auth()` call them.

use actix_web::{get, HttpResponse};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::auth::AdminAuth;

/// The GitLab API version Runway's admin and runner APIs follow.
pub const GITLAB_API_VERSION: &str = "18.5.0";

#[derive(Debug, Serialize, ToSchema)]
pub struct Version {
    /// GitLab version whose API this follows, with Runway's own version as a suffix.
    pub version: String,
    pub revision: String,
    pub enterprise: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub name: String,
    pub state: String,
    pub is_admin: bool,
    pub bot: bool,
    pub web_url: String,
    #[schema(value_type = Option<String>)]
    pub avatar_url: Option<String>,
}

/// The version of the API.
#[utoipa::path(tag = "meta", operation_id = "get_version", security(("private_token" = [])),
    responses((status = 200, body = Version), (status = 401, description = "no or wrong admin token")))]
#[get("/version")]
pub async fn get_version(_admin: AdminAuth) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "version": format!("{GITLAB_API_VERSION}-runway.{}", env!("CARGO_PKG_VERSION")),
        "revision": "runway",
        "enterprise": false,
        "kas": { "enabled": false, "externalUrl": null, "externalK8sProxyUrl": null, "version": null },
    }))
}

/// The user of the admin token: Runway's one administrator.
#[utoipa::path(tag = "meta", operation_id = "get_user", security(("private_token" = [])),
    responses((status = 200, body = User), (status = 401, description = "no or wrong admin token")))]
#[get("/user")]
pub async fn get_user(
    _admin: AdminAuth,
    state: actix_web::web::Data<crate::AppState>,
) -> HttpResponse {
    HttpResponse::Ok().json(User {
        id: 1,
        username: "root".into(),
        name: "Administrator".into(),
        state: "active".into(),
        is_admin: true,
        bot: false,
        web_url: format!("{}/root", state.settings.external_url),
        avatar_url: None,
    })
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(get_version).service(get_user);
}
