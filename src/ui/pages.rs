//! The pages and the forms behind them.

use std::collections::BTreeMap;
use std::fmt::Write;

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use futures_util::TryStreamExt;
use serde::Deserialize;

use super::html::{self, button, escape, page, page_response, status, Paging};
use super::log::{self, LogState};
use super::{cookie, UiError, UiSession};
use crate::api::admin::audit::record_admin_action;
use crate::api::admin::runners::runner_status;
use crate::auth::guards::peer_ip;
use crate::auth::tokens::TokenDigest;
use crate::db::enums::JobStatus;
use crate::db::models::{
    now, Job, JobArtifact, Pipeline, Project, Runner, RunnerChanges, RunnerFilter, RunnerManager,
};
use crate::error::ApiError;
use crate::AppState;

pub(super) type Page = Result<HttpResponse, UiError>;

const CSS: &str = include_str!("assets/ui.css");
const JS: &str = include_str!("assets/ui.js");

/// Most chunks of log one poll of a running job reads (the runner sends ~1 chunk a few
/// seconds; a page that fell behind catches up over a few polls).
const CHUNKS_PER_POLL: i64 = 256;

/// How much of a long log a job's page shows at first: its end, from a line start (inside
/// the last line when that alone is longer). The
/// rest is behind links (the complete log, the raw log); the page follows the job from
/// there, so a log of many megabytes neither loads nor renders whole.
const LOG_TAIL_BYTES: usize = 512 * 1024;
/// The longest log the page renders whole (`?full=true`); a longer one is read raw. Its
/// HTML is several times its size, so this bounds what one view costs.
const FULL_LOG_MAX_BYTES: usize = 4 * 1024 * 1024;

pub(super) fn ok(title: &str, session: &UiSession, main: &str) -> Page {
    Ok(page_response(
        StatusCode::OK,
        page(title, Some(&session.csrf), main),
    ))
}

pub(super) fn see_other(location: &str) -> Page {
    Ok(HttpResponse::SeeOther()
        .insert_header(("Location", location))
        .finish())
}

/// A form that only carries the CSRF token.
#[derive(Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    csrf: String,
}

#[get("")]
async fn index() -> Page {
    see_other("/-/ui/runners")
}

#[get("/assets/{file}")]
async fn asset(file: web::Path<String>) -> HttpResponse {
    let (body, kind) = match file.as_str() {
        "ui.css" => (CSS, "text/css; charset=utf-8"),
        "ui.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return HttpResponse::NotFound().body("not found"),
    };
    HttpResponse::Ok()
        .content_type(kind)
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(body)
}

fn login_page(status: StatusCode, error: Option<&str>) -> HttpResponse {
    let alert = error.map_or(String::new(), |e| {
        format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e))
    });
    let main = format!(
        "<h1>Sign in</h1>{alert}<form method=\"post\" action=\"/-/ui/login\" class=\"card narrow\">\
         <label for=\"token\">Admin token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\
         <button type=\"submit\">Sign in</button></form>\
         <p class=\"hint\">The token <code>runway serve</code> printed on its first start, or <code>RUNWAY_ADMIN_TOKEN</code>.</p>"
    );
    page_response(status, page("Sign in", None, &main))
}

#[get("/login")]
async fn login_form() -> HttpResponse {
    login_page(StatusCode::OK, None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
}

/// Signs in with the admin token. Wrong tokens count against the address's failed
/// authentications, as on the API.
#[post("/login")]
async fn login(req: HttpRequest, form: web::Form<LoginForm>, state: web::Data<AppState>) -> Page {
    let ip = peer_ip(&req);
    state.limits.check_address(ip)?;
    if !TokenDigest::of(form.token.trim()).matches(&state.admin_digest) {
        state.limits.authentication_failed(ip);
        return Ok(login_page(
            StatusCode::UNAUTHORIZED,
            Some("That is not the admin token."),
        ));
    }
    let id = state.ui_sessions.create(&state.db).await?;
    Ok(HttpResponse::SeeOther()
        .insert_header(("Location", "/-/ui/runners"))
        .insert_header(("Set-Cookie", cookie(&state, Some(&id))))
        .finish())
}

#[post("/logout")]
async fn logout(
    session: UiSession,
    form: web::Form<ActionForm>,
    state: web::Data<AppState>,
) -> Page {
    session.check(&form.csrf)?;
    state.ui_sessions.remove(&state.db, &session.id).await?;
    Ok(HttpResponse::SeeOther()
        .insert_header(("Location", "/-/ui/login"))
        .insert_header(("Set-Cookie", cookie(&state, None)))
        .finish())
}

/// The runners list, which follows the runners' contacts while the page is open.
async fn runners_region(
    session: &UiSession,
    state: &AppState,
    paging: Paging,
) -> Result<String, UiError> {
    let mut db = state.db.read().await.map_err(ApiError::from)?;
    let mut conn = db.conn();
    let all = Runner::list(&mut conn, &RunnerFilter::default(), None)
        .await
        .map_err(ApiError::from)?;
    let runners = paging.slice(&all);
    let at = now();
    let mut rows = String::new();
    for r in runners {
        let managers = RunnerManager::for_runner(&mut conn, r.id)
            .await
            .map_err(ApiError::from)?;
        let machines: Vec<String> = managers
            .iter()
            .map(|m| {
                format!(
                    "<li>{} {} · {}/{} · {}</li>",
                    escape(&m.system_xid),
                    escape(m.version.as_deref().unwrap_or("?")),
                    escape(m.platform.as_deref().unwrap_or("?")),
                    escape(m.architecture.as_deref().unwrap_or("?")),
                    html::time_opt(&m.contacted_at)
                )
            })
            .collect();
        let tags: String = r
            .tags()
            .iter()
            .map(|t| format!("<span class=\"tag\">{}</span>", escape(t)))
            .collect();
        let (action, label) = if r.paused {
            ("resume", "Resume")
        } else {
            ("pause", "Pause")
        };
        let paused = if r.paused {
            " <span class=\"status s-paused\">paused</span>"
        } else {
            ""
        };
        let _ = write!(
            rows,
            "<tr id=\"runner-{id}\"><td data-label=\"Runner\">#{id} {desc}</td>\
             <td data-label=\"Status\">{status}{paused}</td><td data-label=\"Type\">{kind}</td>\
             <td data-label=\"Tags\">{tags}</td><td data-label=\"Machines\"><ul class=\"plain\">{machines}</ul></td>\
             <td data-label=\"Last contact\">{contact}</td><td>{button}</td></tr>",
            id = r.id,
            // The description, as GitLab shows runners: the name a runner reports is its
            // program's ("gitlab-runner" for every Go runner), shown only without one.
            desc = escape(if r.description.trim().is_empty() {
                r.name.as_deref().unwrap_or("")
            } else {
                &r.description
            }),
            status = status(runner_status(r, at)),
            kind = escape(r.runner_type.as_str()),
            machines = machines.concat(),
            contact = html::time_opt(&r.contacted_at),
            button = button(&format!("/-/ui/runners/{}/{action}", r.id), label, &session.csrf),
        );
    }
    let list = if all.is_empty() {
        "<p>No runners yet. Create one with <code>POST /api/v4/user/runners</code> and register it with <code>gitlab-runner register</code>.</p>".to_string()
    } else {
        format!(
            "<table class=\"cards\"><thead><tr><th>Runner</th><th>Status</th><th>Type</th>\
             <th>Tags</th><th>Machines</th><th>Last contact</th><th><span class=\"sr\">Actions</span></th></tr></thead>\
             <tbody>{rows}</tbody></table>"
        )
    };
    let live = format!("/-/ui/runners/live{}", paging.query(paging.page));
    Ok(format!(
        "<div id=\"runners\"{}>{list}{}</div>",
        follow_attrs(&live, RUNNERS_REFRESH_MS),
        paging.nav("/-/ui/runners", all.len())
    ))
}

#[get("/runners")]
async fn runners_page(
    session: UiSession,
    paging: web::Query<Paging>,
    state: web::Data<AppState>,
) -> Page {
    let region = runners_region(&session, &state, paging.clamped()).await?;
    ok("Runners", &session, &format!("<h1>Runners</h1>{region}"))
}

/// The runners list alone, for `ui.js` to swap in.
#[get("/runners/live")]
async fn runners_live(
    session: UiSession,
    paging: web::Query<Paging>,
    state: web::Data<AppState>,
) -> Page {
    let region = runners_region(&session, &state, paging.clamped()).await?;
    Ok(html::fragment_response(region))
}

async fn set_paused(
    session: UiSession,
    form: web::Form<ActionForm>,
    state: web::Data<AppState>,
    id: i64,
    paused: bool,
) -> Page {
    session.check(&form.csrf)?;
    let runner = {
        let mut db = state.db.read().await.map_err(ApiError::from)?;
        Runner::find(&mut db.conn(), id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found("Runner"))?
    };
    let changes = RunnerChanges {
        paused: Some(paused),
        ..Default::default()
    };
    let updated = state.runners.update(&runner, changes).await?;
    let details = serde_json::json!({ "paused": paused, "via": "web" });
    record_admin_action(&state, "runner_updated", "runner", updated.id, details).await;
    see_other("/-/ui/runners")
}

/// `pause` or `resume` a runner.
#[post("/runners/{id}/{action}")]
async fn runner_action(
    session: UiSession,
    path: web::Path<(i64, String)>,
    form: web::Form<ActionForm>,
    state: web::Data<AppState>,
) -> Page {
    let (id, action) = path.into_inner();
    let paused = match action.as_str() {
        "pause" => true,
        "resume" => false,
        _ => return Err(ApiError::RouteNotFound.into()),
    };
    set_paused(session, form, state, id, paused).await
}

#[get("/projects")]
async fn projects_page(
    session: UiSession,
    paging: web::Query<Paging>,
    state: web::Data<AppState>,
) -> Page {
    let paging = paging.clamped();
    let projects = {
        let mut db = state.db.read().await.map_err(ApiError::from)?;
        Project::all(&mut db.conn()).await.map_err(ApiError::from)?
    };
    let items: String = paging
        .slice(&projects)
        .iter()
        .map(|p| {
            format!(
                "<li><a href=\"/-/ui/projects/{}\">{}</a> <span class=\"muted\">{}</span></li>",
                p.id,
                escape(&p.path_with_namespace()),
                escape(p.repository_url.as_deref().unwrap_or(""))
            )
        })
        .collect();
    let main = if projects.is_empty() {
        "<h1>Projects</h1><p>No projects yet. Create one with <code>POST /api/v4/projects</code>.</p>".into()
    } else {
        format!(
            "<h1>Projects</h1><ul class=\"list\">{items}</ul>{}",
            paging.nav("/-/ui/projects", projects.len())
        )
    };
    ok("Projects", &session, &main)
}

pub(super) async fn project_by_id(state: &AppState, id: i64) -> Result<Project, UiError> {
    let mut db = state.db.read().await.map_err(ApiError::from)?;
    Ok(Project::find(&mut db.conn(), id)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::not_found("Project"))?)
}

#[get("/projects/{id}")]
async fn project_page(
    session: UiSession,
    id: web::Path<i64>,
    paging: web::Query<Paging>,
    state: web::Data<AppState>,
) -> Page {
    let paging = paging.clamped();
    let project = project_by_id(&state, *id).await?;
    let (pipelines, total) = {
        let mut db = state.db.read().await.map_err(ApiError::from)?;
        let mut conn = db.conn();
        let (offset, limit) = (paging.offset() as i64, paging.per_page as i64);
        let page = Pipeline::page_for_project(&mut conn, project.id, offset, limit).await;
        let total = Pipeline::count_for_project(&mut conn, project.id).await;
        (
            page.map_err(ApiError::from)?,
            total.map_err(ApiError::from)?,
        )
    };
    let rows: String = pipelines
        .iter()
        .map(|p| {
            format!(
                "<tr><td data-label=\"Pipeline\"><a href=\"/-/ui/projects/{}/pipelines/{id}\">#{id}</a></td>\
                 <td data-label=\"Status\">{}</td><td data-label=\"Ref\">{}</td><td data-label=\"Commit\"><code>{}</code></td>\
                 <td data-label=\"Source\">{}</td><td data-label=\"Duration\">{}</td><td data-label=\"Created\">{}</td></tr>",
                project.id,
                status(p.status.as_str()),
                escape(&p.ref_),
                escape(&p.sha.chars().take(8).collect::<String>()),
                escape(&p.source),
                html::duration(&p.started_at, &p.finished_at),
                html::time(&p.created_at),
                id = p.id,
            )
        })
        .collect();
    // Where git reaches the project through Runway (`git_http`), and its upstream.
    let clone_url = format!(
        "{}/{}.git",
        state.settings.external_url.trim_end_matches('/'),
        project.path_with_namespace()
    );
    let upstream = match project.repository_url.as_deref().filter(|u| !u.is_empty()) {
        Some(url) => format!(" <span class=\"muted\">mirrors {}</span>", escape(url)),
        None => String::new(),
    };
    let main = format!(
        "<h1>{}</h1><p>Clone: <code>{}</code>{upstream}</p>\
         <p><a class=\"button\" href=\"/-/ui/pipelines/new?project={id}\">New pipeline</a> \
         <a href=\"/-/ui/projects/{id}/variables\">CI/CD variables</a> \
         <a href=\"/-/ui/projects/{id}/environments\">Environments</a></p>\
         <table class=\"cards\"><thead><tr><th>Pipeline</th><th>Status</th><th>Ref</th><th>Commit</th>\
         <th>Source</th><th>Duration</th><th>Created</th></tr></thead><tbody>{rows}</tbody></table>{nav}",
        escape(&project.path_with_namespace()),
        escape(&clone_url),
        id = project.id,
        nav = paging.nav(&format!("/-/ui/projects/{}", project.id), total as usize),
    );
    ok(&project.path_with_namespace(), &session, &main)
}

/// A project's environments: state, tier, URL, last deployment, and Stop for those not
/// stopped (their `on_stop` job runs, as GitLab's button does).
#[get("/projects/{id}/environments")]
async fn environments_page(
    session: UiSession,
    id: web::Path<i64>,
    state: web::Data<AppState>,
) -> Page {
    use crate::db::models::environment::{Deployment, Environment};
    let project = project_by_id(&state, *id).await?;
    let mut rows = String::new();
    {
        let mut db = state.db.read().await.map_err(ApiError::from)?;
        let environments = Environment::for_project(&mut db.conn(), project.id)
            .await
            .map_err(ApiError::from)?;
        for e in environments {
            let last = Deployment::last_of(&mut db.conn(), e.id, false)
                .await
                .map_err(ApiError::from)?;
            let deployment = match last {
                Some(d) => format!(
                    "{} <a href=\"/-/ui/jobs/{}\">#{}</a> {} <code>{}</code>{}",
                    status(&d.status),
                    d.job_id,
                    d.iid,
                    escape(&d.ref_),
                    escape(&d.sha.chars().take(8).collect::<String>()),
                    d.finished_at
                        .as_ref()
                        .map(|t| format!(" {}", html::time(t)))
                        .unwrap_or_default(),
                ),
                None => "<span class=\"muted\">none yet</span>".to_string(),
            };
            let url = e
                .external_url
                .as_deref()
                .map(|u| format!("<a href=\"{0}\">{0}</a>", escape(u)))
                .unwrap_or_default();
            let stop = if e.state == "stopped" {
                String::new()
            } else {
                button(
                    &format!("/-/ui/projects/{}/environments/{}/stop", project.id, e.id),
                    "Stop",
                    &session.csrf,
                )
            };
            let auto_stop = e
                .auto_stop_at
                .as_ref()
                .map(|t| format!("<br><span class=\"muted\">stops {}</span>", html::time(t)))
                .unwrap_or_default();
            let _ = write!(
                rows,
                "<tr><td>{}{auto_stop}</td><td>{}</td><td>{}</td><td>{url}</td><td>{deployment}</td><td>{stop}</td></tr>",
                escape(&e.name),
                status(&e.state),
                escape(&e.tier),
            );
        }
    }
    let main = format!(
        "<p class=\"crumbs\"><a href=\"/-/ui/projects/{}\">{}</a></p><h1>Environments</h1>\
         <table class=\"cards\"><thead><tr><th>Environment</th><th>State</th><th>Tier</th><th>URL</th>\
         <th>Last deployment</th><th></th></tr></thead><tbody>{rows}</tbody></table>",
        project.id,
        escape(&project.path_with_namespace()),
    );
    ok("Environments", &session, &main)
}

/// Stop an environment from its page.
#[post("/projects/{id}/environments/{environment_id}/stop")]
async fn environment_stop(
    session: UiSession,
    path: web::Path<(i64, i64)>,
    form: web::Form<ActionForm>,
    state: web::Data<AppState>,
) -> Page {
    session.check(&form.csrf)?;
    let (id, environment_id) = path.into_inner();
    let project = project_by_id(&state, id).await?;
    let stopped = state
        .pipelines
        .stop_environment(project.id, environment_id, false)
        .await?;
    let details =
        serde_json::json!({ "project_id": project.id, "state": stopped.state, "via": "web" });
    record_admin_action(
        &state,
        "environment_stopped",
        "Environment",
        environment_id,
        details,
    )
    .await;
    see_other(&format!("/-/ui/projects/{}/environments", project.id))
}

/// `?reveal=<variable id>`: the one value the page shows.
#[derive(serde::Deserialize)]
struct Reveal {
    reveal: Option<i64>,
}

/// A project's CI/CD variables, and the instance's: values hidden until one is revealed
/// (`?reveal=<id>`, one at a time, never a hidden variable's).
#[get("/projects/{id}/variables")]
async fn variables_page(
    session: UiSession,
    id: web::Path<i64>,
    reveal: web::Query<Reveal>,
    state: web::Data<AppState>,
) -> Page {
    let project = project_by_id(&state, *id).await?;
    let variables = {
        let mut db = state.db.read().await.map_err(ApiError::from)?;
        crate::db::models::CiVariable::for_job(&mut db.conn(), project.id)
            .await
            .map_err(ApiError::from)?
    };
    let base = format!("/-/ui/projects/{}/variables", project.id);
    let rows: String = variables
        .iter()
        .map(|v| {
            let value = if v.hidden {
                "<span class=\"muted\">hidden</span>".to_string()
            } else if reveal.reveal == Some(v.id) {
                match state.secrets.open(&v.value) {
                    Ok(value) => format!("<code>{}</code>", escape(&value)),
                    Err(_) => "<span class=\"error\">cannot be opened</span>".to_string(),
                }
            } else {
                format!("<span class=\"muted\">••••••</span> <a href=\"{base}?reveal={}\">Reveal</a>", v.id)
            };
            let flags: Vec<&str> = [(v.protected, "protected"), (v.masked, "masked"), (v.raw, "raw")]
                .into_iter()
                .filter_map(|(on, name)| on.then_some(name))
                .collect();
            format!(
                "<tr><td data-label=\"Key\"><code>{}</code></td><td data-label=\"Value\">{value}</td>\
                 <td data-label=\"Type\">{}</td><td data-label=\"Flags\">{}</td>\
                 <td data-label=\"Environments\">{}</td><td data-label=\"Level\">{}</td></tr>",
                escape(&v.key),
                escape(&v.variable_type),
                flags.join(", "),
                escape(&v.environment_scope),
                if v.project_id.is_some() { "project" } else { "instance" },
            )
        })
        .collect();
    let main = format!(
        "<p class=\"crumbs\"><a href=\"/-/ui/projects/{}\">{}</a></p><h1>CI/CD variables</h1>\
         <p class=\"muted\">Set them with the API (<code>/api/v4/projects/{}/variables</code>, \
         <code>/api/v4/admin/ci/variables</code>).</p>\
         <table class=\"cards\"><thead><tr><th>Key</th><th>Value</th><th>Type</th><th>Flags</th>\
         <th>Environments</th><th>Level</th></tr></thead><tbody>{rows}</tbody></table>",
        project.id,
        escape(&project.path_with_namespace()),
        project.id,
    );
    ok("CI/CD variables", &session, &main)
}

async fn pipeline_of(state: &AppState, project_id: i64, id: i64) -> Result<Pipeline, UiError> {
    let mut db = state.db.read().await.map_err(ApiError::from)?;
    Ok(Pipeline::find(&mut db.conn(), id)
        .await
        .map_err(ApiError::from)?
        .filter(|p| p.project_id == project_id)
        .ok_or_else(|| ApiError::not_found("Pipeline"))?)
}

/// Whether the job is not over yet: it may still be canceled and write to its log.
fn unfinished(status: JobStatus) -> bool {
    moving(status) || matches!(status, JobStatus::Manual | JobStatus::Scheduled)
}

/// How often an open page asks for its changing part again (see `ui.js`), in milliseconds.
const PIPELINE_REFRESH_MS: u32 = 2000;
const RUNNERS_REFRESH_MS: u32 = 5000;

/// The attributes that make `ui.js` replace an element by what `url` renders, every `ms`.
fn follow_attrs(url: &str, ms: u32) -> String {
    format!(" data-follow=\"{}\" data-every=\"{ms}\"", escape(url))
}

/// Whether the job may change without anyone acting: waiting for or held by a runner.
/// (Manual and scheduled jobs wait for a person or a time.)
fn moving(status: JobStatus) -> bool {
    matches!(
        status,
        JobStatus::Created
            | JobStatus::WaitingForResource
            | JobStatus::Preparing
            | JobStatus::Pending
            | JobStatus::Running
            | JobStatus::Canceling
    )
}

/// Run (a manual job, or a delayed one now), cancel and retry, as the job's status allows.
fn job_buttons(job: &Job, csrf: &str) -> String {
    let mut buttons = String::new();
    if matches!(job.status, JobStatus::Manual | JobStatus::Scheduled) {
        let run = button(&format!("/-/ui/jobs/{}/play", job.id), "Run", csrf);
        // `Ci::Processable#manual_confirmation_message`: manual jobs only.
        buttons += &match job.spec().manual_confirmation {
            Some(question) if job.when_ == "manual" => run.replacen(
                "<form ",
                &format!("<form data-confirm=\"{}\" ", escape(&question)),
                1,
            ),
            _ => run,
        };
    }
    if job.status == JobStatus::Scheduled {
        if let Some(at) = &job.scheduled_at {
            buttons += &format!("<span class=\"muted\">starts at {}</span>", html::time(at));
        }
    }
    if unfinished(job.status) {
        buttons += &button(&format!("/-/ui/jobs/{}/cancel", job.id), "Cancel", csrf);
    }
    if retryable(job.status) {
        buttons += &button(&format!("/-/ui/jobs/{}/retry", job.id), "Retry", csrf);
    }
    buttons
}

fn retryable(status: JobStatus) -> bool {
    matches!(
        status,
        JobStatus::Success | JobStatus::Failed | JobStatus::Canceled
    )
}

/// The pipeline's part of its page that changes while it runs: status, duration, buttons
/// and jobs. While a job may still move, it names the URL that renders it again
/// (`data-follow`, read by `ui.js`); once all are over, it does not, and following stops.
async fn pipeline_region(
    session: &UiSession,
    state: &AppState,
    project: &Project,
    pipeline_id: i64,
) -> Result<(Pipeline, String), UiError> {
    let pipeline = pipeline_of(state, project.id, pipeline_id).await?;
    let jobs: Vec<Job> = {
        let mut db = state.db.read().await.map_err(ApiError::from)?;
        Job::for_pipeline(&mut db.conn(), pipeline.id)
            .await
            .map_err(ApiError::from)?
    }
    .into_iter()
    .filter(|j| !j.retried)
    .collect();
    let mut stages: BTreeMap<(i32, String), Vec<&Job>> = BTreeMap::new();
    for job in &jobs {
        stages
            .entry((job.stage_idx, job.stage.clone()))
            .or_default()
            .push(job);
    }
    let base = format!("/-/ui/projects/{}/pipelines/{}", project.id, pipeline.id);
    let mut body = String::new();
    for ((_, stage), jobs) in &stages {
        let _ = write!(
            body,
            "<section class=\"stage\" aria-labelledby=\"stage-{0}\"><h2 id=\"stage-{0}\">{0}</h2><ul class=\"jobs\">",
            escape(stage)
        );
        for job in jobs {
            let needs = match job.spec().needs {
                Some(needs) if needs.is_empty() => {
                    "<span class=\"needs\">needs nothing</span>".to_string()
                }
                Some(needs) => format!(
                    "<span class=\"needs\">needs {}</span>",
                    needs
                        .iter()
                        .map(|n| escape(&n.job))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => String::new(),
            };
            let actions = job_buttons(job, &session.csrf);
            let _ = write!(
                body,
                "<li class=\"job\" data-job=\"{}\"><div class=\"job-head\">{} <a href=\"/-/ui/jobs/{}\">{}</a> \
                 <span class=\"muted\">{}</span> <span class=\"actions\">{actions}</span></div>{needs}</li>",
                escape(&job.name),
                status(job.status.as_str()),
                job.id,
                escape(&job.name),
                html::duration(&job.started_at, &job.finished_at),
            );
        }
        body.push_str("</ul></section>");
    }
    let exposed = exposed_artifacts(state, &jobs).await?;
    let follow = if jobs.iter().any(|j| moving(j.status)) {
        follow_attrs(&format!("{base}/live"), PIPELINE_REFRESH_MS)
    } else {
        String::new()
    };
    let region = format!(
        "<div id=\"pipeline\"{follow}><h1>Pipeline #{id}{name} {status}</h1>\
         <dl class=\"facts\"><dt>Ref</dt><dd>{ref_}</dd><dt>Commit</dt><dd><code>{sha}</code></dd>\
         <dt>Source</dt><dd>{source}</dd><dt>Duration</dt><dd>{duration}</dd><dt>Created</dt><dd>{created}</dd></dl>\
         {notes}{exposed}<div class=\"row\">{cancel}{retry}</div><div class=\"stages\">{body}</div></div>",
        id = pipeline.id,
        name = pipeline
            .name
            .as_deref()
            .map_or(String::new(), |n| format!(" <span class=\"muted\">{}</span>", escape(n))),
        status = status(pipeline.status.as_str()),
        ref_ = escape(&pipeline.ref_),
        sha = escape(&pipeline.sha),
        source = escape(&pipeline.source),
        duration = html::duration(&pipeline.started_at, &pipeline.finished_at),
        created = html::time(&pipeline.created_at),
        notes = pipeline_notes(&pipeline),
        cancel = if jobs.iter().any(|j| unfinished(j.status)) {
            button(&format!("{base}/cancel"), "Cancel pipeline", &session.csrf)
        } else {
            String::new()
        },
        retry = if jobs
            .iter()
            .any(|j| matches!(j.status, JobStatus::Failed | JobStatus::Canceled))
        {
            button(&format!("{base}/retry"), "Retry failed jobs", &session.csrf)
        } else {
            String::new()
        },
    );
    Ok((pipeline, region))
}

/// `artifacts:expose_as`: the archives the pipeline's successful jobs expose, by the name
/// they give them (GitLab shows them in the merge request; Runway, which has none, on the
/// pipeline). An archive nobody may download (`access: none`) is not shown.
async fn exposed_artifacts(state: &AppState, jobs: &[Job]) -> Result<String, UiError> {
    let exposing: Vec<(&Job, String)> = jobs
        .iter()
        .filter(|j| j.status == JobStatus::Success)
        .filter_map(|j| {
            let artifacts = j.spec().artifacts?;
            let name = artifacts.expose_as?;
            (artifacts.access.as_deref() != Some("none")).then_some((j, name))
        })
        .collect();
    if exposing.is_empty() {
        return Ok(String::new());
    }
    let ids: Vec<i64> = exposing.iter().map(|(j, _)| j.id).collect();
    let archives = {
        let mut db = state.db.read().await.map_err(ApiError::from)?;
        JobArtifact::for_jobs(&mut db.conn(), &ids)
            .await
            .map_err(ApiError::from)?
    };
    let links: Vec<String> = exposing
        .iter()
        .filter(|(j, _)| {
            archives
                .iter()
                .any(|a| a.job_id == j.id && a.file_type == "archive")
        })
        .map(|(j, name)| {
            format!(
                "<li><a href=\"/-/ui/jobs/{}/artifacts\">{}</a> <span class=\"muted\">from {}</span></li>",
                j.id,
                escape(name),
                escape(&j.name)
            )
        })
        .collect();
    if links.is_empty() {
        return Ok(String::new());
    }
    Ok(format!(
        "<section aria-labelledby=\"exposed\"><h2 id=\"exposed\">Exposed artifacts</h2><ul>{}</ul></section>",
        links.concat()
    ))
}

/// What the pipeline page says besides its jobs: why a pipeline without jobs failed (its
/// configuration's errors), and that a project without a repository runs without sources.
fn pipeline_notes(pipeline: &Pipeline) -> String {
    let mut notes = String::new();
    if let Some(errors) = &pipeline.yaml_errors {
        let _ = write!(
            notes,
            "<p class=\"error\" role=\"alert\">The configuration is invalid: {}</p>",
            escape(errors)
        );
    }
    if !pipeline.has_sources {
        notes.push_str(
            "<p class=\"muted\">The project has no repository: its jobs run without sources \
             (<code>GIT_STRATEGY: none</code>).</p>",
        );
    }
    notes
}

/// The project, the pipeline and its changing part, for the page and for `ui.js`.
async fn pipeline_parts(
    session: &UiSession,
    state: &AppState,
    (project_id, pipeline_id): (i64, i64),
) -> Result<(Project, Pipeline, String), UiError> {
    let project = project_by_id(state, project_id).await?;
    let (pipeline, region) = pipeline_region(session, state, &project, pipeline_id).await?;
    Ok((project, pipeline, region))
}

#[get("/projects/{id}/pipelines/{pipeline_id}")]
async fn pipeline_page(
    session: UiSession,
    path: web::Path<(i64, i64)>,
    state: web::Data<AppState>,
) -> Page {
    let (project, pipeline, region) = pipeline_parts(&session, &state, *path).await?;
    let main = format!(
        "<p class=\"crumbs\"><a href=\"/-/ui/projects/{}\">{}</a></p>{region}",
        project.id,
        escape(&project.path_with_namespace()),
    );
    ok(&format!("Pipeline #{}", pipeline.id), &session, &main)
}

/// The pipeline page's changing part alone, for `ui.js` to swap in.
#[get("/projects/{id}/pipelines/{pipeline_id}/live")]
async fn pipeline_live(
    session: UiSession,
    path: web::Path<(i64, i64)>,
    state: web::Data<AppState>,
) -> Page {
    let (_, _, region) = pipeline_parts(&session, &state, *path).await?;
    Ok(html::fragment_response(region))
}

/// `cancel` or `retry` a pipeline.
#[post("/projects/{id}/pipelines/{pipeline_id}/{action}")]
async fn pipeline_action(
    session: UiSession,
    path: web::Path<(i64, i64, String)>,
    form: web::Form<ActionForm>,
    state: web::Data<AppState>,
) -> Page {
    session.check(&form.csrf)?;
    let (project_id, pipeline_id, action) = path.into_inner();
    let pipeline = pipeline_of(&state, project_id, pipeline_id).await?;
    let (kind, done) = match action.as_str() {
        "retry" => (
            "pipeline_retried",
            state.pipelines.retry_pipeline(pipeline.id).await?,
        ),
        "cancel" => (
            "pipeline_canceled",
            state.pipelines.cancel_pipeline(pipeline.id).await?,
        ),
        _ => return Err(ApiError::RouteNotFound.into()),
    };
    let details =
        serde_json::json!({ "project_id": project_id, "status": done.status, "via": "web" });
    record_admin_action(&state, kind, "pipeline", done.id, details).await;
    see_other(&format!(
        "/-/ui/projects/{project_id}/pipelines/{}",
        done.id
    ))
}

async fn job_by_id(state: &AppState, id: i64) -> Result<Job, UiError> {
    let mut db = state.db.read().await.map_err(ApiError::from)?;
    Ok(Job::find(&mut db.conn(), id)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::not_found("Job"))?)
}

/// The job's log from byte `from`, and where the chunks read start. `chunk` is where the
/// chunk holding `from` starts, as the last answer said ([`chunk_of`]): the chunks are read
/// from there, so a page whose offset is inside a chunk (an unfinished line left for later)
/// reads only the end of the log. Without a usable hint, or once the chunks were archived
/// (and dropped), from the whole log.
async fn log_from(
    state: &AppState,
    job: &Job,
    from: usize,
    chunk: usize,
) -> Result<(Vec<u8>, Vec<usize>), UiError> {
    let chunk = chunk.min(from);
    let chunks = state
        .traces
        .page(job.id, chunk as i64 - 1, CHUNKS_PER_POLL)
        .await?;
    match chunks.first() {
        Some((first, _)) if *first == chunk as i64 => {
            let starts: Vec<usize> = chunks.iter().map(|(o, _)| *o as usize).collect();
            let data: Vec<u8> = chunks.into_iter().flat_map(|(_, data)| data).collect();
            if let Some(rest) = data.get(from - chunk..) {
                return Ok((rest.to_vec(), starts));
            }
        }
        None if job.trace_size <= from as i64 => return Ok((Vec::new(), Vec::new())),
        _ => {}
    }
    let (whole, starts) = stored_log(state, job).await?;
    Ok((
        whole.get(from..).map(<[u8]>::to_vec).unwrap_or_default(),
        starts,
    ))
}

/// Where the chunk holding byte `offset` starts, given the starts of the chunks that hold
/// the log up to `end`: `offset` itself at the end (the runner's next chunk starts there)
/// or when the chunks are not known.
fn chunk_of(starts: &[usize], offset: usize, end: usize) -> usize {
    if offset >= end {
        return offset;
    }
    starts
        .iter()
        .copied()
        .filter(|s| *s <= offset)
        .max()
        .unwrap_or(offset)
}

/// The job's whole log, and where its stored chunks start: archived once the job is over
/// (no chunks then), else from its chunks.
async fn stored_log(state: &AppState, job: &Job) -> Result<(Vec<u8>, Vec<usize>), UiError> {
    if let Some(archived) = state.artifacts.archived_trace(job.id).await? {
        let stream = state.artifacts.open(&archived).await?;
        let parts: Vec<bytes::Bytes> = stream
            .try_collect()
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;
        return Ok((parts.concat(), Vec::new()));
    }
    let chunks = state.traces.page(job.id, -1, i64::MAX).await?;
    let starts = chunks.iter().map(|(o, _)| *o as usize).collect();
    Ok((chunks.into_iter().flat_map(|(_, d)| d).collect(), starts))
}

/// The job's coverage fact, when its pattern found one.
async fn coverage_fact(state: &AppState, job: &Job) -> Result<String, UiError> {
    let mut db = state.db.read().await.map_err(ApiError::from)?;
    let found = crate::db::models::JobCoverage::for_jobs(&mut db.conn(), &[job.id])
        .await
        .map_err(ApiError::from)?;
    Ok(found.first().map_or(String::new(), |(_, c)| {
        format!("<dt>Coverage</dt><dd id=\"coverage\">{c}%</dd>")
    }))
}

async fn archive_of(state: &AppState, job: &Job) -> Result<Option<JobArtifact>, UiError> {
    let mut db = state.db.read().await.map_err(ApiError::from)?;
    Ok(JobArtifact::find(&mut db.conn(), job.id, "archive")
        .await
        .map_err(ApiError::from)?)
}

#[derive(Deserialize)]
pub struct JobPageQuery {
    /// The whole log, however long.
    #[serde(default)]
    full: bool,
}

/// The log part of a job's page: a long log from a line near its end (the part before it
/// read only for the state it leaves: colours and open sections), with links to the rest.
/// Answers the HTML and the `data-` attributes the script follows it from.
async fn log_region(state: &AppState, job: &Job, full: bool) -> Result<String, UiError> {
    let (bytes, starts) = stored_log(state, job).await?;
    let live = unfinished(job.status);
    // The complete log is rendered only up to a size; past it the page stays the end of
    // the log, and says where the rest is (the raw log).
    let whole = full && bytes.len() <= FULL_LOG_MAX_BYTES;
    let cut = if whole {
        0
    } else {
        log::tail_start(&bytes, LOG_TAIL_BYTES)
    };
    let before = log::state_before(&bytes, cut);
    let mut items = log::reopened(&before);
    let rendered = log::render(&bytes[cut..], before, !live);
    items.extend(rendered.items);
    let last = rendered
        .partial
        .as_ref()
        .map_or(String::new(), log::partial_html);
    let log_html = log::to_html(&items, rendered.state.depth(), &last);
    let offset = cut + rendered.consumed;
    let raw = format!("/-/ui/jobs/{}/raw", job.id);
    let links = if cut > 0 && bytes.len() > FULL_LOG_MAX_BYTES {
        format!(
            "<p id=\"log-cut\" class=\"note\">This is the end of a long log: the last {} of {}. \
             The complete log is too long to show here (over {}): <a href=\"{raw}\">Raw log</a></p>",
            html::size(bytes.len() - cut),
            html::size(bytes.len()),
            html::size(FULL_LOG_MAX_BYTES),
        )
    } else if cut > 0 {
        format!(
            "<p id=\"log-cut\" class=\"note\">This is the end of a long log: the last {} of {}. \
             <a href=\"/-/ui/jobs/{}?full=true\">Show the complete log</a> · <a href=\"{raw}\">Raw log</a></p>",
            html::size(bytes.len() - cut),
            html::size(bytes.len()),
            job.id,
        )
    } else {
        format!("<p class=\"note\"><a href=\"{raw}\">Raw log</a></p>")
    };
    Ok(format!(
        "<h2>Log</h2>{links}<div id=\"log\" class=\"log\" data-job=\"{id}\" data-live=\"{live}\" \
         data-offset=\"{offset}\" data-chunk=\"{chunk}\" data-state=\"{state}\" role=\"log\" aria-live=\"polite\">{log_html}</div>\
         <p id=\"log-note\" class=\"muted\">{note}</p>",
        id = job.id,
        chunk = chunk_of(&starts, offset, bytes.len()),
        state = escape(&rendered.state.encode()),
        note = if live {
            "The log follows the job while it runs (reload the page if scripts are off)."
        } else {
            ""
        },
    ))
}

#[get("/jobs/{id}")]
async fn job_page(
    session: UiSession,
    id: web::Path<i64>,
    query: web::Query<JobPageQuery>,
    state: web::Data<AppState>,
) -> Page {
    let job = job_by_id(&state, *id).await?;
    let project = project_by_id(&state, job.project_id).await?;
    state.traces.mark_watched(job.id);
    let log = log_region(&state, &job, query.full).await?;
    let archive = archive_of(&state, &job).await?;
    let artifact = format!(
        "<p id=\"artifact\"{}><a class=\"button\" href=\"/-/ui/jobs/{}/artifacts\" download>Download artifacts</a>{}</p>",
        if archive.is_some() { "" } else { " hidden" },
        job.id,
        archive
            .as_ref()
            .map_or(String::new(), |a| format!(" <span class=\"muted\">{} · {} bytes</span>", escape(&a.filename), a.size))
    );
    let actions = job_buttons(&job, &session.csrf);
    let main = format!(
        "<p class=\"crumbs\"><a href=\"/-/ui/projects/{pid}\">{path}</a> › \
         <a href=\"/-/ui/projects/{pid}/pipelines/{pipeline}\">Pipeline #{pipeline}</a></p>\
         <h1>{name} <span id=\"job-status\">{status}</span></h1>\
         <dl class=\"facts\"><dt>Stage</dt><dd>{stage}</dd><dt>Runner</dt><dd>{runner}</dd>\
         <dt>Duration</dt><dd>{duration}</dd><dt>Started</dt><dd>{started}</dd>{environment}{coverage}</dl>\
         <div id=\"job-actions\" class=\"row\">{actions}</div>{artifact}{log}",
        pid = project.id,
        path = escape(&project.path_with_namespace()),
        pipeline = job.pipeline_id,
        name = escape(&job.name),
        status = status(job.status.as_str()),
        stage = escape(&job.stage),
        runner = job.runner_id.map_or("—".into(), |r| format!("#{r}")),
        duration = html::duration(&job.started_at, &job.finished_at),
        started = html::time_opt(&job.started_at),
        environment = environment_fact(&job),
        coverage = coverage_fact(&state, &job).await?,
    );
    ok(&format!("Job {}", job.name), &session, &main)
}

/// The job's environment for its facts: the name, its action, and its URL as a link
/// when it is a web address.
fn environment_fact(job: &Job) -> String {
    let Some(env) = job.spec().environment else {
        return String::new();
    };
    let url = env
        .url
        .as_deref()
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        .map_or(String::new(), |u| {
            format!(
                " · <a href=\"{0}\" rel=\"noopener noreferrer\">{0}</a>",
                escape(u)
            )
        });
    format!(
        "<dt>Environment</dt><dd id=\"environment\">{} <span class=\"muted\">({})</span>{url}</dd>",
        escape(&env.name),
        escape(&env.action),
    )
}

#[derive(Deserialize)]
pub struct LogQuery {
    #[serde(default)]
    offset: usize,
    /// Where the chunk holding `offset` starts (the last answer's `chunk`).
    chunk: Option<usize>,
    #[serde(default)]
    state: String,
}

/// The log after `offset`, rendered from `state`, as JSON for the page's script:
/// `{items, partial, offset, chunk, state, status, live, artifact}`.
#[get("/jobs/{id}/log")]
async fn job_log(
    _session: UiSession,
    id: web::Path<i64>,
    query: web::Query<LogQuery>,
    state: web::Data<AppState>,
) -> Page {
    let start = LogState::decode(&query.state)
        .ok_or_else(|| ApiError::BadRequest("state is not one this page made".into()))?;
    let job = job_by_id(&state, *id).await?;
    state.traces.mark_watched(job.id);
    let chunk = query.chunk.unwrap_or(query.offset);
    let (mut bytes, starts) = log_from(&state, &job, query.offset, chunk).await?;
    let live = unfinished(job.status);
    // At most what the complete view renders per answer; the script asks again for the rest.
    let more = bytes.len() > FULL_LOG_MAX_BYTES;
    bytes.truncate(FULL_LOG_MAX_BYTES);
    let rendered = log::render(&bytes, start, !live && !more);
    let artifact = !live && archive_of(&state, &job).await?.is_some();
    let offset = query.offset + rendered.consumed;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(serde_json::json!({
            "items": rendered.items,
            "partial": rendered.partial,
            "offset": offset,
            "chunk": chunk_of(&starts, offset, query.offset + bytes.len()),
            "state": rendered.state.encode(),
            "status": job.status.as_str(),
            // A finished job's log may still have more than one poll reads.
            "live": live || job.trace_size > (query.offset + rendered.consumed) as i64,
            "artifact": artifact,
        })))
}

/// The whole log as the runner sent it (escapes and section markers included), as text.
#[get("/jobs/{id}/raw")]
async fn job_raw(_session: UiSession, id: web::Path<i64>, state: web::Data<AppState>) -> Page {
    let job = job_by_id(&state, *id).await?;
    let (bytes, _) = stored_log(&state, &job).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(bytes))
}

#[get("/jobs/{id}/artifacts")]
async fn job_artifacts(
    _session: UiSession,
    id: web::Path<i64>,
    state: web::Data<AppState>,
) -> Page {
    let job = job_by_id(&state, *id).await?;
    crate::api::admin::pipelines::downloadable(&job)?;
    let archive = archive_of(&state, &job)
        .await?
        .ok_or_else(|| ApiError::not_found("Artifact"))?;
    Ok(crate::api::runner::artifacts::send_archive(&state, &archive).await?)
}

/// `cancel`, `retry` or `play` a job; a retry shows the new try.
#[post("/jobs/{id}/{action}")]
async fn job_action(
    session: UiSession,
    path: web::Path<(i64, String)>,
    form: web::Form<ActionForm>,
    state: web::Data<AppState>,
) -> Page {
    session.check(&form.csrf)?;
    let (id, action) = path.into_inner();
    let asked = job_by_id(&state, id).await?;
    let (kind, job) = match action.as_str() {
        "retry" => ("job_retried", state.pipelines.retry_job(asked.id).await?),
        "cancel" => ("job_canceled", state.pipelines.cancel_job(asked.id).await?),
        "play" => ("job_played", state.pipelines.play_job(asked.id).await?),
        _ => return Err(ApiError::RouteNotFound.into()),
    };
    let details = serde_json::json!({
        "project_id": job.project_id, "status": job.status, "result_job_id": job.id, "via": "web",
    });
    record_admin_action(&state, kind, "job", asked.id, details).await;
    see_other(&format!("/-/ui/jobs/{}", job.id))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(index)
        .service(asset)
        .service(login_form)
        .service(login)
        .service(logout)
        .service(runners_page)
        .service(runners_live)
        .service(runner_action)
        .service(projects_page)
        .service(project_page)
        .service(variables_page)
        .service(environments_page)
        .service(environment_stop)
        .service(pipeline_page)
        .service(pipeline_live)
        .service(pipeline_action)
        .service(job_page)
        .service(job_log)
        .service(job_raw)
        .service(job_artifacts)
        .service(job_action);
}
