//! `/api/v4/jobs/:id/artifacts` ‹lib/api/ci/runner.rb›: upload (streamed multipart) and
//! download (the dependent-job rule).

use actix_web::http::header;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::json;

use crate::api::params::{params_of, Check, FromParams, Params, Validated};
use crate::auth::{DependentJobAuth, JobAuth, NoHeartbeat};
use crate::db::models::{AuditEvent, JobArtifact};
use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// A small text field of the form (params other clients send as fields).
async fn field_text(field: &mut actix_multipart::Field) -> ApiResult<String> {
    let mut text = Vec::new();
    while let Some(chunk) = field.next().await {
        let chunk = chunk.map_err(|_| ApiError::bad_request("the upload was interrupted"))?;
        if text.len() + chunk.len() > 4096 {
            return Err(ApiError::PayloadTooLarge);
        }
        text.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// Upload an artifact: `multipart/form-data` with a `file` part (chunked or not), and
/// `artifact_type`, `artifact_format`, `expire_in` in the query (the Go runner) or as
/// fields. The bytes stream to storage; 413 past `RUNWAY_MAX_ARTIFACT_SIZE_BYTES`.
#[utoipa::path(
    tag = "jobs",
    operation_id = "upload_artifacts",
    params(
        ("id" = i64, Path),
        ("artifact_type" = Option<String>, Query, description = "archive (default), metadata, junit, dotenv, …"),
        ("artifact_format" = Option<String>, Query, description = "zip (default), gzip or raw"),
        ("expire_in" = Option<String>, Query, description = "a GitLab duration, or never"),
    ),
    request_body(content_type = "multipart/form-data", description = "a `file` part"),
    security(("job_token" = [])),
    responses(
        (status = 201, description = "stored"),
        (status = 400, description = "file missing, bad type or format, or another artifact of the type"),
        (status = 403, description = "wrong token or job not running", headers(("Job-Status" = String))),
        (status = 413, description = "too large"),
    )
)]
#[post("/jobs/{id}/artifacts")]
pub async fn upload_artifacts(
    auth: JobAuth<NoHeartbeat>,
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let job = auth.job;
    let query = params_of(&req)?;
    let mut artifact_type = query.text("artifact_type");
    let mut artifact_format = query.text("artifact_format");
    let mut expire_in = query.text("expire_in");
    // A bad `expire_in` in the query is refused before any byte is stored.
    if let Some(text) = expire_in.as_deref().map(str::trim) {
        if !text.is_empty() && text != "never" && crate::ci::duration::parse_seconds(text).is_none()
        {
            return Err(ApiError::InvalidParams("expire_in is invalid".into()));
        }
    }
    let mut form = actix_multipart::Multipart::new(req.headers(), body);
    let mut stored = None;
    let mut filename = String::from("artifacts.zip");
    while let Some(field) = form.next().await {
        let mut field =
            field.map_err(|e| ApiError::bad_request(format!("invalid multipart body: {e}")))?;
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "file" if stored.is_none() => {
                if let Some(f) = field.content_disposition().and_then(|cd| cd.get_filename()) {
                    filename = f
                        .rsplit('/')
                        .next()
                        .unwrap_or(f)
                        .chars()
                        .take(255)
                        .collect();
                }
                let chunks = (&mut field).map(|c| c.map_err(|_| ()));
                stored = Some(state.artifacts.write(job.id, chunks).await?);
            }
            "artifact_type" => {
                artifact_type = artifact_type.or(Some(field_text(&mut field).await?))
            }
            "artifact_format" => {
                artifact_format = artifact_format.or(Some(field_text(&mut field).await?))
            }
            "expire_in" => expire_in = expire_in.or(Some(field_text(&mut field).await?)),
            _ => {
                while let Some(chunk) = field.next().await {
                    chunk.map_err(|_| ApiError::bad_request("the upload was interrupted"))?;
                }
            }
        }
    }
    let stored = stored.ok_or_else(|| ApiError::InvalidParams("file is missing".into()))?;
    let file_type = artifact_type.unwrap_or_else(|| "archive".into());
    let file_format = artifact_format.unwrap_or_else(|| "zip".into());
    state
        .artifacts
        .record(
            &job,
            stored,
            &file_type,
            &file_format,
            &filename,
            expire_in.as_deref(),
        )
        .await?;
    // The connection closes after this answer: reading the body grew its read buffer
    // (to 128 KiB, actix's most), which a keep-alive connection would hold for its life —
    // through every poll its runner holds after. The runner connects again (one
    // handshake a job) and the memory goes back.
    Ok(HttpResponse::Created()
        .content_type("text/plain")
        .force_close()
        .body("201"))
}

/// Stream an artifact archive as an attachment.
pub async fn send_archive(state: &AppState, artifact: &JobArtifact) -> ApiResult<HttpResponse> {
    let stream = state.artifacts.open(artifact).await?;
    let name = artifact.filename.replace('"', "");
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header(("Content-Transfer-Encoding", "binary"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\"; filename*=UTF-8''{name}"),
        ))
        .insert_header((header::CONTENT_LENGTH, artifact.size.to_string()))
        .streaming(stream))
}

/// Params of `GET /jobs/:id/artifacts`.
pub struct DownloadParams {
    /// Answer with a redirect to the object itself when storage is remote (S3).
    pub direct_download: bool,
}

impl FromParams for DownloadParams {
    fn from_params(params: &Params) -> ApiResult<Self> {
        let mut c = Check::new(params);
        let p = DownloadParams {
            direct_download: c.bool("direct_download").unwrap_or(false),
        };
        c.finish()?;
        Ok(p)
    }
}

/// Download a job's artifacts archive with the token of a running job of the same project
/// (the consuming job's token, as the payload's `dependencies[].token` gives it). With
/// `direct_download=true` and S3 storage the answer is GitLab's: a 302 to a presigned URL
/// of the object (valid 10 minutes); with local storage the bytes come in the answer.
#[utoipa::path(
    tag = "jobs",
    operation_id = "download_artifacts",
    params(("id" = i64, Path), ("direct_download" = Option<bool>, Query)),
    security(("job_token" = [])),
    responses(
        (status = 200, description = "the archive", content_type = "application/octet-stream"),
        (status = 302, description = "`direct_download=true` with S3 storage: the archive's presigned URL in `Location`"),
        (status = 401, description = "the token is not a running job's"),
        (status = 403, description = "no such job, or another project's"),
        (status = 404, description = "the job has no archive"),
    )
)]
#[get("/jobs/{id}/artifacts")]
pub async fn download_artifacts(
    auth: DependentJobAuth,
    params: Validated<DownloadParams>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let archive = {
        let mut db = state.db.read().await?;
        JobArtifact::find(&mut db.conn(), auth.target.id, "archive").await?
    }
    .ok_or(ApiError::NotFound(None))?;
    {
        // `audit_download`: who read which job's artifacts.
        let mut db = state.db.write().await?;
        let details = json!({ "file_type": "archive", "size": archive.size, "caller_job_id": auth.caller.id });
        AuditEvent::record(
            &mut db.conn(),
            "artifact_download",
            &format!("job:{}", auth.caller.id),
            "job",
            auth.target.id,
            &details,
        )
        .await?;
    }
    if params.0.direct_download {
        if let Some(url) = state.artifacts.direct_url(&archive).await? {
            return Ok(HttpResponse::Found()
                .insert_header((header::LOCATION, url))
                .finish());
        }
    }
    send_archive(&state, &archive).await
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(upload_artifacts).service(download_artifacts);
}
