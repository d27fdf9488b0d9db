//! Git over smart HTTP at GitLab's URL shape, `<external URL>/<namespace>/<project>.git`:
//! `info/refs` and `git-upload-pack` (protocol v0 and v2), for the jobs of a project to
//! fetch its sources from Runway whatever the runner can reach; `git-receive-pack` for
//! the admin to push to a project without an upstream, each updated branch or tag then
//! starting a pipeline (source `push`, GitLab's skip-ci and push options). Git's own server side does the protocol: `git http-backend` runs as a CGI
//! program, the request body streamed to it and its answer streamed back, so memory does
//! not grow with the repository.
//!
//! Who may read (GitLab's `Repositories::GitHttpClientController` for CI): HTTP Basic with
//! user `gitlab-ci-token` and the token of a running job of this project (another
//! project's job: 404; a job that is not running: 401), or the admin token (as the Basic
//! password, or `PRIVATE-TOKEN`). Without credentials: 401 with
//! `WWW-Authenticate: Basic`. Failures count in the failed-authentication limit.
//!
//! The repository served: the project's mirror of its `repository_url` (fetched for each
//! pipeline), or the repository pushed to Runway (created by the first push).

use std::path::PathBuf;
use std::process::Stdio;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::auth::tokens::TokenDigest;
use crate::db::enums::JobStatus;
use crate::db::models::Project;
use crate::AppState;

/// The user name GitLab gives a job's token in Git URLs.
pub const JOB_TOKEN_USER: &str = "gitlab-ci-token";

/// The largest `git-upload-pack` request (its wants and haves) read.
const MAX_FETCH_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// The largest push (its pack) read.
const MAX_PUSH_BYTES: usize = 1024 * 1024 * 1024;

/// The `post-receive` hook Runway keeps in the repositories pushed to it: it writes the
/// push options and the updated refs (`<old> <new> <ref>`) to `$RUNWAY_PUSH_LOG`, which
/// Runway reads once the push is done (options reach hooks only).
const POST_RECEIVE: &str = r#"#!/bin/sh
# Written by Runway: what this push updated, for its push pipelines.
[ -n "$RUNWAY_PUSH_LOG" ] || exit 0
{
  i=0
  while [ "$i" -lt "${GIT_PUSH_OPTION_COUNT:-0}" ]; do
    eval "printf 'option %s\n' \"\$GIT_PUSH_OPTION_$i\""
    i=$((i + 1))
  done
  cat
} > "$RUNWAY_PUSH_LOG"
"#;

/// The largest CGI header block read from `git http-backend`.
const MAX_CGI_HEADERS: usize = 64 * 1024;

/// Who is asking.
enum Reader {
    Admin,
    /// A running job of this project.
    Job(i64),
}

/// Why not.
enum Refusal {
    /// 401 with `WWW-Authenticate`: no credentials yet. git asks without them first, so
    /// this is no failed authentication (GitLab counts only credentials given).
    Challenge,
    /// 401 with `WWW-Authenticate`: wrong credentials.
    Unauthorized,
    /// 404: no such project, or none this caller may see.
    NotFound,
    /// 403, with why.
    Forbidden(&'static str),
}

fn refused(refusal: Refusal) -> HttpResponse {
    match refusal {
        Refusal::Challenge | Refusal::Unauthorized => HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, "Basic realm=\"GitLab\""))
            .content_type("text/plain; charset=utf-8")
            .body("HTTP Basic: Access denied\n"),
        Refusal::Forbidden(why) => HttpResponse::Forbidden()
            .content_type("text/plain; charset=utf-8")
            .body(format!("{why}\n")),
        Refusal::NotFound => HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body("The project you were looking for could not be found or you don't have permission to view it.\n"),
    }
}

/// The credentials of a request: (user, password) from HTTP Basic, or the admin's
/// `PRIVATE-TOKEN`.
fn credentials(req: &HttpRequest) -> Option<(String, String)> {
    if let Some(token) = req
        .headers()
        .get("PRIVATE-TOKEN")
        .and_then(|v| v.to_str().ok())
    {
        return Some((String::new(), token.to_string()));
    }
    let basic = req
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Who the credentials name (before the project is known).
async fn reader(state: &AppState, req: &HttpRequest) -> Result<Reader, Refusal> {
    let (user, password) = credentials(req).ok_or(Refusal::Challenge)?;
    let digest = TokenDigest::of(password.trim());
    if digest.matches(&state.admin_digest) {
        return Ok(Reader::Admin);
    }
    if user != JOB_TOKEN_USER {
        return Err(Refusal::Unauthorized);
    }
    let mut db = state.db.read().await.map_err(|_| Refusal::Unauthorized)?;
    let job = crate::db::models::job_by_token_digest(&mut db.conn(), digest.as_bytes())
        .await
        .map_err(|_| Refusal::Unauthorized)?
        .ok_or(Refusal::Unauthorized)?;
    // `validate_executing_job!`'s rule: running, canceling, or awaiting acknowledgement.
    let executing = matches!(job.status, JobStatus::Running | JobStatus::Canceling)
        || (job.status == JobStatus::Pending && job.ack_deadline.is_some());
    if !executing {
        return Err(Refusal::Unauthorized);
    }
    Ok(Reader::Job(job.project_id))
}

/// `GET …/info/refs`, `POST …/git-upload-pack` and `POST …/git-receive-pack`.
async fn serve(req: HttpRequest, body: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    let ip = crate::auth::guards::peer_ip(&req);
    if let Err(e) = state.limits.check_address(ip) {
        return actix_web::ResponseError::error_response(&e);
    }
    let reader = match reader(&state, &req).await {
        Ok(reader) => reader,
        Err(refusal) => {
            if !matches!(refusal, Refusal::Challenge) {
                state.limits.authentication_failed(ip);
            }
            return refused(refusal);
        }
    };
    let project_path = req.match_info().get("project").unwrap_or_default();
    let service = req.match_info().get("service").unwrap_or_default();
    let push = service == "git-receive-pack"
        || req
            .query_string()
            .split('&')
            .any(|p| p == "service=git-receive-pack");
    let Some(project) = find_project(&state, project_path).await else {
        return refused(Refusal::NotFound);
    };
    if let Reader::Job(project_id) = reader {
        if project_id != project.id {
            return refused(Refusal::NotFound);
        }
        if push {
            // GitLab's answer to a job token that pushes.
            return refused(Refusal::Forbidden(
                "You are not allowed to push code to this project.",
            ));
        }
    }
    let dir = if push {
        if project
            .repository_url
            .as_deref()
            .is_some_and(|u| !u.is_empty())
        {
            return refused(Refusal::Forbidden(
                "This project mirrors its repository_url: push there, Runway fetches it",
            ));
        }
        match pushable(&state, &project).await {
            Ok(dir) => dir,
            Err(e) => {
                tracing::error!(project_id = project.id, error = %e, "preparing a push");
                return HttpResponse::InternalServerError().finish();
            }
        }
    } else {
        match state.repositories.served_dir(&project).await {
            Some(dir) => dir,
            None => return refused(Refusal::NotFound),
        }
    };
    // A push's updates, written by the repository's hook, read when git is done.
    let push_log = (service == "git-receive-pack").then(|| {
        std::env::temp_dir().join(format!("runway-push-{}", uuid::Uuid::new_v4().simple()))
    });
    let done = push_log.clone().map(|log| {
        let state = state.clone();
        let project = project.clone();
        move || async move { push_pipelines(&state, &project, &log).await }
    });
    match backend(&req, body, &dir, service, push_log.as_deref(), done).await {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(project_id = project.id, error = %e, "git http-backend failed");
            HttpResponse::InternalServerError().finish()
        }
    }
}

/// The project a `<namespace>/<project>` path names.
async fn find_project(state: &AppState, path: &str) -> Option<Project> {
    let mut db = state.db.read().await.ok()?;
    Project::find_by_full_path(&mut db.conn(), path.trim_matches('/'))
        .await
        .ok()?
}

/// The repository a push goes into, its hook in place.
async fn pushable(state: &AppState, project: &Project) -> anyhow::Result<PathBuf> {
    let dir = state
        .repositories
        .ensure_pushable(project)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    tokio::fs::create_dir_all(dir.join("hooks")).await?;
    let hook = dir.join("hooks").join("post-receive");
    tokio::fs::write(&hook, POST_RECEIVE).await?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tokio::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).await?;
    }
    Ok(dir)
}

/// The push's updates as the repository's hook wrote them, handed to
/// [`crate::service::pushes::start`].
async fn push_pipelines(state: &AppState, project: &Project, log: &std::path::Path) {
    let Ok(text) = tokio::fs::read_to_string(log).await else {
        return;
    };
    let _ = tokio::fs::remove_file(log).await;
    let mut options = Vec::new();
    let mut updates = Vec::new();
    for line in text.lines() {
        if let Some(option) = line.strip_prefix("option ") {
            options.push(option.to_string());
        } else if let [old, new, name] = line.split(' ').collect::<Vec<_>>()[..] {
            updates.push(crate::service::pushes::Update {
                old: old.to_string(),
                new: new.to_string(),
                name: name.to_string(),
            });
        }
    }
    crate::service::pushes::start(state, project, &updates, &options).await;
}

/// Runs `git http-backend` for the repository at `dir`: the request's body streamed to
/// it, its CGI headers turned into the response's, its body streamed back.
async fn backend<F, Fut>(
    req: &HttpRequest,
    mut body: web::Payload,
    dir: &std::path::Path,
    service: &str,
    push_log: Option<&std::path::Path>,
    done: Option<F>,
) -> anyhow::Result<HttpResponse>
where
    F: FnOnce() -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let max_request = if push_log.is_some() {
        MAX_PUSH_BYTES
    } else {
        MAX_FETCH_REQUEST_BYTES
    };
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let mut command = tokio::process::Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", dir)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", format!("/{service}"))
        .env("REQUEST_METHOD", req.method().as_str())
        .env("QUERY_STRING", req.query_string())
        .env("CONTENT_TYPE", header("Content-Type"))
        .env("HTTP_CONTENT_ENCODING", header("Content-Encoding"))
        // Protocol v2, as the client asks for it.
        .env("GIT_PROTOCOL", header("Git-Protocol"))
        .env(
            "REMOTE_ADDR",
            crate::auth::guards::peer_ip(req)
                .map(|ip| ip.to_string())
                .unwrap_or_default(),
        )
        // Pushes are served to the admin only (checked before): git's own switch on, and
        // push options offered (`-o ci.skip`).
        .env("REMOTE_USER", "root")
        .env("GIT_CONFIG_COUNT", "2")
        .env("GIT_CONFIG_KEY_0", "http.receivepack")
        .env("GIT_CONFIG_VALUE_0", "true")
        .env("GIT_CONFIG_KEY_1", "receive.advertisePushOptions")
        .env("GIT_CONFIG_VALUE_1", "true")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(log) = push_log {
        command.env("RUNWAY_PUSH_LOG", log);
    }
    let mut child = command.spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");

    // The request body goes in while the answer's headers are read: git reads all of a
    // stateless request before it answers, and a pipe holds little.
    let feed = async move {
        let mut sent = 0usize;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| anyhow::anyhow!("reading the request: {e}"))?;
            sent += chunk.len();
            if sent > max_request {
                anyhow::bail!("the request is larger than {max_request} bytes");
            }
            stdin.write_all(&chunk).await?;
        }
        stdin.shutdown().await?;
        drop(stdin);
        Ok::<_, anyhow::Error>(())
    };
    let headers = async {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        // Byte by byte up to the blank line: the header block is small, and what follows
        // stays in the pipe for the streamed body.
        loop {
            if head.len() > MAX_CGI_HEADERS {
                anyhow::bail!("the CGI headers are too long");
            }
            if stdout.read(&mut byte).await? == 0 {
                break;
            }
            head.push(byte[0]);
            if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
                break;
            }
        }
        Ok::<_, anyhow::Error>(head)
    };
    let (fed, head) = futures_util::future::join(feed, headers).await;
    fed?;
    let head = String::from_utf8_lossy(&head?).into_owned();

    let mut status = StatusCode::OK;
    let mut response = HttpResponse::build(StatusCode::OK);
    for line in head.lines().filter(|l| !l.trim().is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("Status") {
            let code = value.split_whitespace().next().and_then(|c| c.parse().ok());
            status = code
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        } else {
            response.insert_header((name.trim(), value));
        }
    }
    response.status(status);
    // Git's complaints, logged once it is done.
    actix_web::rt::spawn(async move {
        let mut text = String::new();
        let _ = (&mut stderr)
            .take(64 * 1024)
            .read_to_string(&mut text)
            .await;
        let waited = child.wait().await;
        if !text.trim().is_empty() || waited.as_ref().map_or(true, |s| !s.success()) {
            tracing::info!(stderr = %text.trim(), status = ?waited, "git http-backend");
        }
        if let Some(done) = done {
            done().await;
        }
    });
    Ok(response.streaming(tokio_util::io::ReaderStream::new(stdout)))
}

/// The routes: plain routes, outside the OpenAPI document and `src/api`, like pages.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/{project:.+}.git/{service:info/refs}",
        web::get().to(serve),
    )
    .route(
        "/{project:.+}.git/{service:git-upload-pack}",
        web::post().to(serve),
    )
    .route(
        "/{project:.+}.git/{service:git-receive-pack}",
        web::post().to(serve),
    );
}
