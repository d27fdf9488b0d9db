//! Pages: a project's site, served from the artifacts archive of its latest successful
//! pages job (`pages:` in `.gitlab-ci.yml`), read-only, at
//! `<external URL>/<namespace>/<project>/-/pages/<path>` (GitLab serves it from a domain
//! of its own; Runway has one origin).
//!
//! The site is anybody's HTML on Runway's origin, so every answer carries
//! `Content-Security-Policy: sandbox`: the browser gives the page an origin of its own, and
//! its scripts can neither read Runway's pages nor send the session cookie (which is
//! `SameSite=Strict` and scoped to `/-/ui` anyway). `RUNWAY_PAGES=false` turns serving off.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use crate::db::models::Project;
use crate::service::artifacts::PagesEntry;
use crate::AppState;

/// The sandbox every answer is served in: scripts, forms and pop-ups work, but never with
/// Runway's origin.
const SANDBOX: &str = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads";

fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Content-Security-Policy", SANDBOX))
        .body(
            "<!doctype html><title>404 Not Found</title><h1>404 Not Found</h1><p>No such page.</p>",
        )
}

/// The content type of a site's file, by its extension.
fn content_type(name: &str) -> &'static str {
    let extension = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match extension.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" | "md" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

fn file_response(status: actix_web::http::StatusCode, bytes: Vec<u8>, name: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type(content_type(name))
        .insert_header(("Content-Security-Policy", SANDBOX))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Cache-Control", "no-cache"))
        .body(bytes)
}

/// `GET /<namespace>/<project>/-/pages[/<path>]`.
async fn serve(req: actix_web::HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if !state.settings.pages {
        return not_found();
    }
    // The route's parts, percent-decoded.
    let project_path = req.match_info().get("project").unwrap_or_default();
    let file = req.match_info().get("path").unwrap_or_default();
    let project_path = format!("/{}", project_path.trim_matches('/'));
    let file = file.trim_start_matches('/');
    // The path as the archive names it: no `..`, no `.`, no empty part.
    if file
        .split('/')
        .any(|part| part == ".." || part == "." || (part.is_empty() && !file.is_empty()))
    {
        return not_found();
    }
    let project = {
        let Ok(mut db) = state.db.read().await else {
            return HttpResponse::ServiceUnavailable().finish();
        };
        match Project::find_by_full_path(&mut db.conn(), project_path.trim_start_matches('/')).await
        {
            Ok(Some(project)) => project,
            Ok(None) => return not_found(),
            Err(e) => {
                tracing::error!(error = %e, "reading a project for pages");
                return HttpResponse::InternalServerError().finish();
            }
        }
    };
    let site = match state.artifacts.pages_site(project.id).await {
        Ok(Some(site)) => site,
        Ok(None) => return not_found(),
        Err(e) => return actix_web::ResponseError::error_response(&e),
    };
    let (archive, folder) = site;
    match state.artifacts.pages_entry(&archive, &folder, file).await {
        Ok(PagesEntry::File(bytes, name)) => {
            file_response(actix_web::http::StatusCode::OK, bytes, &name)
        }
        // A folder: to its index, so that the page's relative links resolve inside it.
        Ok(PagesEntry::Folder) => {
            let base = format!("{project_path}/-/pages");
            let to = if file.is_empty() {
                format!("{base}/index.html")
            } else {
                format!("{base}/{file}/index.html")
            };
            HttpResponse::Found()
                .insert_header((header::LOCATION, to))
                .finish()
        }
        // The site's own 404 page when it has one, as GitLab Pages serves it.
        Ok(PagesEntry::Missing(Some((bytes, name)))) => {
            file_response(actix_web::http::StatusCode::NOT_FOUND, bytes, &name)
        }
        Ok(PagesEntry::Missing(None)) => not_found(),
        Err(e) => actix_web::ResponseError::error_response(&e),
    }
}

/// The pages routes: plain routes, outside the OpenAPI document and `src/api` (they
/// serve sites, not an API).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/{project:.+}/-/pages", web::get().to(serve))
        .route("/{project:.+}/-/pages/{path:.*}", web::get().to(serve));
}
