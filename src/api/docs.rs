//! Swagger UI at `/api/docs/`, served from the binary (the Swagger UI distribution is
//! vendored at build time), reading the document at `/api/openapi.json`.
//!
//! The server trims trailing slashes before routing, so `/api/docs/` and `/api/docs` are
//! one route here; the page carries `<base href="/api/docs/">` so that its relative
//! assets resolve under `/api/docs/` whichever the browser asked for.

use std::sync::{Arc, OnceLock};

use actix_web::{get, web, HttpResponse};
use utoipa_swagger_ui::Config;

const BASE: &str = "/api/docs/";

fn config() -> Arc<Config<'static>> {
    static CONFIG: OnceLock<Arc<Config<'static>>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            Arc::new(
                Config::new(["/api/openapi.json"])
                    .try_it_out_enabled(true)
                    // Tokens typed into "Authorize" stay in the page, not in the
                    // browser's storage on the web pages' origin.
                    .persist_authorization(false)
                    .display_request_duration(true)
                    .filter(true)
                    .deep_linking(true),
            )
        })
        .clone()
}

fn serve(file: &str) -> HttpResponse {
    match utoipa_swagger_ui::serve(file, config()) {
        Ok(Some(found)) => {
            let mut bytes = found.bytes.to_vec();
            if file.is_empty() || file == "index.html" {
                let page = String::from_utf8_lossy(&bytes).replacen(
                    "<head>",
                    &format!("<head>\n    <base href=\"{BASE}\">"),
                    1,
                );
                bytes = page.into_bytes();
            }
            // The web pages' headers (`ui::html::page_response`), with what Swagger UI
            // needs besides: inline styles and `data:` images; scripts only from here.
            HttpResponse::Ok()
                .content_type(found.content_type)
                .insert_header(("Cache-Control", "no-cache"))
                .insert_header((
                    "Content-Security-Policy",
                    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                     frame-ancestors 'none'; form-action 'self'",
                ))
                .insert_header(("X-Content-Type-Options", "nosniff"))
                .insert_header(("Referrer-Policy", "same-origin"))
                .body(bytes)
        }
        Ok(None) => {
            HttpResponse::NotFound().json(serde_json::json!({ "message": "404 Not Found" }))
        }
        Err(e) => {
            tracing::error!(error = %e, "swagger ui");
            HttpResponse::InternalServerError()
                .json(serde_json::json!({ "message": "500 Internal Server Error" }))
        }
    }
}

/// Swagger UI (`/api/docs/`): every route of this document, with "Try it out".
#[utoipa::path(
    tag = "meta",
    responses((status = 200, description = "the Swagger UI page", content_type = "text/html", body = String))
)]
#[get("/api/docs")]
pub async fn index() -> HttpResponse {
    serve("")
}

/// Swagger UI's scripts, styles and images.
#[utoipa::path(
    tag = "meta",
    params(("file" = String, Path, description = "a file of the Swagger UI distribution")),
    responses(
        (status = 200, description = "the file", content_type = "application/octet-stream", body = String),
        (status = 404, description = "no such file", body = crate::api::openapi::Message),
    )
)]
#[get("/api/docs/{file:.*}")]
pub async fn asset(file: web::Path<String>) -> HttpResponse {
    serve(&file)
}
