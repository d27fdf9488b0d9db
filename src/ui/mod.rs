//! Web pages for people under `/-/ui`: runners, projects, pipelines, jobs and their logs,
//! and a form to start a pipeline. Pages are rendered on the server and read without
//! JavaScript; one small embedded script follows what changes while a page is open (a
//! running job's log, a pipeline's jobs, the runners) and adds variable rows to a form.
//!
//! Sign-in takes the admin token once and hands out a session cookie holding a random id
//! (never the token). The database keeps the id's SHA-256 digest and its expiry, so a
//! restart signs no one out; the session's CSRF token is derived from the id (a digest the
//! stored one does not reveal). Every form that changes something carries that token. The pages call the same services and models
//! as the admin API; they are not part of the OpenAPI document, which describes the API.

mod html;
pub mod log;
mod new_pipeline;
mod pages;

use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use rand::Rng;
use subtle::ConstantTimeEq;

use crate::auth::tokens::TokenDigest;
use crate::db::models::{now, UiSessionRow};
use crate::db::DbPool;
use crate::error::ApiError;
use crate::AppState;

/// The session cookie's name.
pub const COOKIE: &str = "runway_session";
/// How long a sign-in lasts.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The most forms the new-pipeline page accepts (a `.gitlab-ci.yml` and a few fields).
const FORM_LIMIT: usize = 1024 * 1024;

/// Sessions, kept in the database ([`UiSessionRow`]) by the digest of their id.
#[derive(Default)]
pub struct Sessions {
    /// When expired rows were last dropped (at most once per [`SWEEP_EVERY`], on sign-in).
    last_sweep: std::sync::Mutex<Option<Instant>>,
}

/// How often a sign-in also drops the expired sessions.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

fn random_hex() -> String {
    let bytes: [u8; 32] = rand::thread_rng().gen();
    hex::encode(bytes)
}

/// The CSRF token of the session with this id: only its holder can compute it, and the
/// stored digest (of the id alone) does not give it away.
fn csrf_of(id: &str) -> String {
    TokenDigest::of(&format!("runway-ui-csrf:{id}")).to_hex()
}

impl Sessions {
    /// A new session: its id, for the cookie.
    async fn create(&self, db: &DbPool) -> Result<String, ApiError> {
        let id = random_hex();
        let expires = now() + chrono::TimeDelta::seconds(SESSION_TTL.as_secs() as i64);
        let mut conn = db.write().await?;
        UiSessionRow::insert(&mut conn.conn(), &TokenDigest::of(&id), expires).await?;
        let sweep = {
            let mut last = self.last_sweep.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.is_none_or(|at| at.elapsed() >= SWEEP_EVERY);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if sweep {
            UiSessionRow::delete_expired(&mut conn.conn(), now()).await?;
        }
        Ok(id)
    }

    /// The CSRF token of a live session; `None` for an unknown or expired one.
    async fn csrf(&self, db: &DbPool, id: &str) -> Result<Option<String>, ApiError> {
        let mut conn = db.read().await?;
        let live = UiSessionRow::is_live(&mut conn.conn(), &TokenDigest::of(id), now()).await?;
        Ok(live.then(|| csrf_of(id)))
    }

    async fn remove(&self, db: &DbPool, id: &str) -> Result<(), ApiError> {
        let mut conn = db.write().await?;
        Ok(UiSessionRow::delete(&mut conn.conn(), &TokenDigest::of(id)).await?)
    }
}

/// The session cookie's value in a request, if any.
fn session_cookie(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get_all(actix_web::http::header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

/// `Set-Cookie` for the session: HttpOnly, SameSite=Strict, scoped to the pages, and
/// Secure when the server speaks HTTPS. `None` clears it.
fn cookie(state: &AppState, id: Option<&str>) -> String {
    session_cookie_header(state.settings.tls.is_some(), id)
}

fn session_cookie_header(https: bool, id: Option<&str>) -> String {
    let secure = if https { "; Secure" } else { "" };
    match id {
        Some(id) => format!(
            "{COOKIE}={id}; Path=/-/ui; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            SESSION_TTL.as_secs()
        ),
        None => format!("{COOKIE}=; Path=/-/ui; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

/// A signed-in person: every page takes one, and is sent to the sign-in page without it.
pub struct UiSession {
    id: String,
    pub csrf: String,
}

impl UiSession {
    /// Refuses a form whose CSRF token is not this session's.
    pub fn check(&self, form_csrf: &str) -> Result<(), UiError> {
        if bool::from(form_csrf.as_bytes().ct_eq(self.csrf.as_bytes())) {
            Ok(())
        } else {
            Err(UiError::Csrf)
        }
    }
}

impl FromRequest for UiSession {
    type Error = UiError;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Self, UiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        // An id that is not one this server hands out is no session, without a query.
        let id = session_cookie(req)
            .filter(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()));
        Box::pin(async move {
            let (Some(state), Some(id)) = (state, id) else {
                return Err(UiError::SignIn);
            };
            match state.ui_sessions.csrf(&state.db, &id).await? {
                Some(csrf) => Ok(UiSession { id, csrf }),
                None => Err(UiError::SignIn),
            }
        })
    }
}

/// What a page answers when it cannot show what was asked.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// No or an expired session: to the sign-in page.
    #[error("sign in first")]
    SignIn,
    /// A form without this session's CSRF token.
    #[error("the form is stale or forged")]
    Csrf,
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl ResponseError for UiError {
    fn status_code(&self) -> StatusCode {
        match self {
            UiError::SignIn => StatusCode::SEE_OTHER,
            UiError::Csrf => StatusCode::FORBIDDEN,
            UiError::Api(e) => e.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        let message = match self {
            UiError::SignIn => {
                return HttpResponse::SeeOther()
                    .insert_header(("Location", "/-/ui/login"))
                    .insert_header(("Cache-Control", "no-store"))
                    .finish();
            }
            UiError::Csrf => {
                "This form has expired or did not come from this site; reload the page and try again."
                    .to_string()
            }
            UiError::Api(e) => message_of(e),
        };
        let status = self.status_code();
        let main = format!(
            "<h1>{}</h1><p role=\"alert\">{}</p><p><a href=\"/-/ui/runners\">Back to the runners</a></p>",
            status.as_u16(),
            html::escape(&message)
        );
        html::page_response(status, html::page("Error", None, &main))
    }
}

/// What the API would answer for `e` (`{"message": …}` or `{"error": …}`), as text; the
/// API's answer also logs an internal error's cause.
fn message_of(e: &ApiError) -> String {
    let body = e.error_response().into_body().try_into_bytes().ok();
    let json: Option<serde_json::Value> = body.and_then(|b| serde_json::from_slice(&b).ok());
    match json
        .as_ref()
        .and_then(|j| j.get("message").or(j.get("error")))
    {
        Some(serde_json::Value::String(s)) => s.clone(),
        // Grape's validation shape, `{"message":{"base":["…"]}}`: the reasons themselves.
        Some(serde_json::Value::Object(fields)) => fields
            .values()
            .flat_map(|v| v.as_array().cloned().unwrap_or_default())
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join("; "),
        Some(other) => other.to_string(),
        None => e.status_code().to_string(),
    }
}

/// Registers the pages under `/-/ui`. Plain actix routes on purpose: pages are not API
/// operations, so they stay out of the OpenAPI document (`tests/api/meta.rs` checks only
/// `src/api` for that reason).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/-/ui")
            .app_data(
                web::FormConfig::default()
                    .limit(FORM_LIMIT)
                    .error_handler(|e, _| {
                        UiError::Api(ApiError::BadRequest(e.to_string().into())).into()
                    }),
            )
            // A malformed query (`?page=x`) gets the pages' own error page, not plain text.
            .app_data(web::QueryConfig::default().error_handler(|e, _| {
                UiError::Api(ApiError::BadRequest(e.to_string().into())).into()
            }))
            .configure(pages::configure)
            .configure(new_pipeline::configure),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_secure_under_https_and_cleared_on_sign_out() {
        assert_eq!(
            session_cookie_header(true, Some("abc")),
            "runway_session=abc; Path=/-/ui; HttpOnly; SameSite=Strict; Max-Age=43200; Secure"
        );
        assert_eq!(
            session_cookie_header(false, None),
            "runway_session=; Path=/-/ui; HttpOnly; SameSite=Strict; Max-Age=0"
        );
    }

    #[test]
    fn csrf_tokens_come_from_the_session_id_and_not_from_its_digest() {
        let (a, b) = (random_hex(), random_hex());
        assert_ne!(a, b);
        assert_eq!((a.len(), csrf_of(&a).len()), (64, 64));
        assert_eq!(csrf_of(&a), csrf_of(&a));
        assert_ne!(csrf_of(&a), csrf_of(&b));
        assert_ne!(
            csrf_of(&a),
            TokenDigest::of(&a).to_hex(),
            "not what the database keeps"
        );
    }
}
