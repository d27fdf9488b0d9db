//! Pipelines and jobs of a project through the admin API.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{delete, get, post, web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use crate::api::admin::audit::record_admin_action;
use crate::api::admin::page_of;
use crate::api::admin::projects::{find_project, job_json, pipeline_json};
use crate::api::params::params_of;
use crate::api::path_id;
use crate::auth::AdminAuth;
use crate::db::models::{Job, Pipeline, Project, Runner};
use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// The project and its pipeline a `/projects/{id}/pipelines/{pipeline_id}` path names
/// (404 for either missing, the project first).
async fn find_pipeline(
    state: &AppState,
    (id, pipeline_id): &(String, String),
) -> ApiResult<(Project, Pipeline)> {
    let project = find_project(state, id).await?;
    let pipeline_id = path_id(pipeline_id, "pipeline_id")?;
    let mut db = state.db.read().await?;
    let found = Pipeline::find(&mut db.conn(), pipeline_id).await?;
    let pipeline = found
        .filter(|p| p.project_id == project.id)
        .ok_or_else(|| ApiError::not_found("Pipeline"))?;
    Ok((project, pipeline))
}

async fn find_job(state: &AppState, project: &Project, raw: &str) -> ApiResult<Job> {
    let id = path_id(raw, "job_id")?;
    let mut db = state.db.read().await?;
    let found = Job::find(&mut db.conn(), id).await?;
    found
        .filter(|j| j.project_id == project.id)
        .ok_or_else(|| ApiError::not_found("Job"))
}

/// Jobs as JSON, with their pipelines and runners looked up once each.
pub(crate) async fn jobs_json(
    state: &AppState,
    project: &Project,
    jobs: &[Job],
) -> ApiResult<Vec<Value>> {
    let mut db = state.db.read().await?;
    let mut conn = db.conn();
    let mut pipelines: HashMap<i64, Pipeline> = HashMap::new();
    let mut runners: HashMap<i64, Option<Runner>> = HashMap::new();
    let ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
    let artifacts = crate::db::models::JobArtifact::for_jobs(&mut conn, &ids).await?;
    let coverages: HashMap<i64, f64> = crate::db::models::JobCoverage::for_jobs(&mut conn, &ids)
        .await?
        .into_iter()
        .collect();
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        if !pipelines.contains_key(&job.pipeline_id) {
            if let Some(p) = Pipeline::find(&mut conn, job.pipeline_id).await? {
                pipelines.insert(p.id, p);
            }
        }
        if let Some(runner_id) = job.runner_id {
            if let std::collections::hash_map::Entry::Vacant(slot) = runners.entry(runner_id) {
                slot.insert(Runner::find(&mut conn, runner_id).await?);
            }
        }
        let Some(pipeline) = pipelines.get(&job.pipeline_id) else {
            continue;
        };
        let runner = job
            .runner_id
            .and_then(|id| runners.get(&id).cloned().flatten());
        let mut json = job_json(
            job,
            pipeline,
            project,
            runner.as_ref(),
            &state.settings.external_url,
        );
        // GitLab's `artifacts` list: each uploaded file with its type and size.
        json["artifacts"] = artifacts
            .iter()
            .filter(|a| a.job_id == job.id)
            .map(|a| serde_json::json!({ "file_type": a.file_type, "size": a.size, "filename": a.filename, "file_format": a.file_format }))
            .collect();
        json["artifacts_expire_at"] = artifacts
            .iter()
            .filter(|a| a.job_id == job.id && a.file_type == "archive")
            .find_map(|a| {
                a.expire_at
                    .map(|t| serde_json::json!(crate::api::format_time(&t)))
            })
            .unwrap_or(Value::Null);
        // GitLab's `coverage`: what the job's pattern found in its log, a number.
        json["coverage"] = coverages
            .get(&job.id)
            .map_or(Value::Null, |c| serde_json::json!(c));
        out.push(json);
    }
    Ok(out)
}

/// A project's pipelines, newest first.
#[utoipa::path(tag = "pipelines", operation_id = "list_pipelines",
    params(("id" = String, Path), ("source" = Option<String>, Query, description = "only pipelines of this source; child pipelines (`parent_pipeline`) are left out without it")),
    security(("private_token" = [])), responses((status = 200, description = "pipelines"), (status = 404, description = "no such project")))]
#[get("/projects/{id}/pipelines")]
pub async fn list_pipelines(
    _admin: AdminAuth,
    id: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let project = find_project(&state, &id).await?;
    let params = params_of(&req)?;
    let page = page_of(&params)?;
    let mut c = crate::api::params::Check::new(&params);
    let source = c.str("source");
    c.finish()?;
    // `PipelinesFinder`: child pipelines only when their source is asked for.
    let source = source.as_deref();
    let (pipelines, counted) = {
        let mut db = state.db.read().await?;
        let (offset, fetch) = (page.offset(), page.fetch());
        let pipelines =
            Pipeline::listed_for_project(&mut db.conn(), project.id, source, offset, fetch).await?;
        let most = super::COUNT_UP_TO;
        let counted =
            Pipeline::count_listed_for_project(&mut db.conn(), project.id, source, most).await?;
        (pipelines, counted)
    };
    let items: Vec<Value> = pipelines
        .iter()
        .map(|p| pipeline_json(p, &project, &state.settings.external_url))
        .collect();
    Ok(page.respond_rows(&req, counted, items))
}

/// The jobs a runner ran (`status` to filter; `sort` `asc` or `desc` by id), each with
/// its project (`Entities::Ci::JobBasicWithProject`).
#[utoipa::path(tag = "admin runners", operation_id = "list_runner_jobs",
    params(("id" = i64, Path), ("status" = Option<String>, Query), ("sort" = Option<String>, Query, description = "`desc` (default) or `asc`")),
    security(("private_token" = [])), responses((status = 200, description = "the jobs"), (status = 404, description = "no such runner")))]
#[get("/runners/{id}/jobs")]
pub async fn list_runner_jobs(
    _admin: AdminAuth,
    id: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let runner_id = path_id(&id, "id")?;
    let params = params_of(&req)?;
    let page = page_of(&params)?;
    let mut c = crate::api::params::Check::new(&params);
    let status = c.one_of("status", crate::db::enums::JobStatus::parse);
    let ascending = c.one_of("sort", |s| match s {
        "asc" => Some(true),
        "desc" => Some(false),
        _ => None,
    });
    c.finish()?;
    let (mut jobs, counted, projects) = {
        let mut db = state.db.read().await?;
        if Runner::find(&mut db.conn(), runner_id).await?.is_none() {
            return Err(ApiError::not_found("Runner"));
        }
        let ascending = ascending == Some(true);
        let window = (page.offset(), page.fetch());
        let jobs =
            Job::listed_for_runner(&mut db.conn(), runner_id, status, ascending, window).await?;
        let most = super::COUNT_UP_TO;
        let counted = Job::count_listed_for_runner(&mut db.conn(), runner_id, status, most).await?;
        let mut projects: HashMap<i64, Project> = HashMap::new();
        for job in &jobs {
            if !projects.contains_key(&job.project_id) {
                if let Some(p) = Project::find(&mut db.conn(), job.project_id).await? {
                    projects.insert(p.id, p);
                }
            }
        }
        (jobs, counted, projects)
    };
    let more = page.cut(&mut jobs);
    let mut items = Vec::with_capacity(jobs.len());
    for job in &jobs {
        let Some(project) = projects.get(&job.project_id) else {
            continue;
        };
        if let Some(mut shown) = jobs_json(&state, project, std::slice::from_ref(job))
            .await?
            .pop()
        {
            shown["project"] = json!({
                "id": project.id, "name": project.name, "name_with_namespace": project.name_with_namespace(),
                "path": project.path, "path_with_namespace": project.path_with_namespace(),
                "description": project.description, "created_at": crate::api::format_time(&project.created_at),
            });
            items.push(shown);
        }
    }
    Ok(page.respond_listed(&req, counted, more, items))
}

/// One suite of a pipeline's test report: GitLab names a suite after its jobs.
struct Suite {
    name: String,
    build_ids: Vec<i64>,
    cases: Vec<crate::service::junit::TestCase>,
    /// The first read error of its jobs' reports.
    suite_error: Option<String>,
}

/// The pipeline's JUnit reports by suite, by name; retried jobs' reports are left out.
async fn test_suites(state: &AppState, pipeline: &Pipeline) -> ApiResult<Vec<Suite>> {
    let mut db = state.db.read().await?;
    let jobs: HashMap<i64, Job> = Job::for_pipeline(&mut db.conn(), pipeline.id)
        .await?
        .into_iter()
        .filter(|j| !j.retried)
        .map(|j| (j.id, j))
        .collect();
    let mut rows =
        crate::db::models::TestReportRow::for_pipeline(&mut db.conn(), pipeline.id).await?;
    rows.sort_by_key(|(job_id, _)| *job_id);
    let mut suites: Vec<Suite> = Vec::new();
    for (job_id, json) in rows {
        let Some(job) = jobs.get(&job_id) else {
            continue;
        };
        let report: crate::service::junit::Report = serde_json::from_str(&json).unwrap_or_default();
        match suites.iter_mut().find(|s| s.name == job.name) {
            Some(suite) => {
                suite.build_ids.push(job_id);
                suite.cases.extend(report.cases);
                suite.suite_error = suite.suite_error.take().or(report.suite_error);
            }
            None => suites.push(Suite {
                name: job.name.clone(),
                build_ids: vec![job_id],
                cases: report.cases,
                suite_error: report.suite_error,
            }),
        }
    }
    suites.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(suites)
}

/// GitLab's counts of test cases: their time and how many have each status.
fn tally<'a>(cases: impl Iterator<Item = &'a crate::service::junit::TestCase> + Clone) -> Value {
    let count = |status: &str| cases.clone().filter(|c| c.status == status).count();
    let time: f64 = cases.clone().map(|c| c.execution_time).sum();
    json!({
        "total_time": (time * 1000.0).round() / 1000.0,
        "total_count": cases.clone().count(),
        "success_count": count("success"),
        "failed_count": count("failed"),
        "skipped_count": count("skipped"),
        "error_count": count("error"),
    })
}

/// A pipeline's test report (`artifacts:reports:junit` of its jobs), as GitLab's.
#[utoipa::path(tag = "pipelines", operation_id = "get_pipeline_test_report", params(("id" = String, Path), ("pipeline_id" = i64, Path)),
    security(("private_token" = [])),
    responses((status = 200, description = "`{total_time, total_count, success_count, failed_count, skipped_count, error_count, test_suites: [{name, …, test_cases}]}`"),
              (status = 404, description = "not found")))]
#[get("/projects/{id}/pipelines/{pipeline_id}/test_report")]
pub async fn get_test_report(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (_, pipeline) = find_pipeline(&state, &path).await?;
    let suites = test_suites(&state, &pipeline).await?;
    let mut shown = tally(suites.iter().flat_map(|s| s.cases.iter()));
    shown["test_suites"] = suites
        .iter()
        .map(|s| {
            let mut suite = tally(s.cases.iter());
            suite["name"] = json!(s.name);
            suite["suite_error"] = json!(s.suite_error);
            suite["test_cases"] = json!(s.cases);
            suite
        })
        .collect();
    Ok(HttpResponse::Ok().json(shown))
}

/// The counts of a pipeline's test report, by suite, without the cases.
#[utoipa::path(tag = "pipelines", operation_id = "get_pipeline_test_report_summary", params(("id" = String, Path), ("pipeline_id" = i64, Path)),
    security(("private_token" = [])),
    responses((status = 200, description = "`{total: {time, count, success, failed, skipped, error, suite_error}, test_suites: [{…, build_ids}]}`"),
              (status = 404, description = "not found")))]
#[get("/projects/{id}/pipelines/{pipeline_id}/test_report_summary")]
pub async fn get_test_report_summary(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (_, pipeline) = find_pipeline(&state, &path).await?;
    let suites = test_suites(&state, &pipeline).await?;
    let total = tally(suites.iter().flat_map(|s| s.cases.iter()));
    let test_suites: Vec<Value> = suites
        .iter()
        .map(|s| {
            let mut suite = tally(s.cases.iter());
            suite["name"] = json!(s.name);
            suite["build_ids"] = json!(s.build_ids);
            suite["suite_error"] = json!(s.suite_error);
            suite
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "total": {
            "time": total["total_time"], "count": total["total_count"], "success": total["success_count"],
            "failed": total["failed_count"], "skipped": total["skipped_count"], "error": total["error_count"],
            "suite_error": suites.iter().find_map(|s| s.suite_error.clone()),
        },
        "test_suites": test_suites,
    })))
}

/// The newest pipeline of a ref (`ref`; the default branch if none is given).
#[utoipa::path(tag = "pipelines", operation_id = "latest_pipeline", params(("id" = String, Path), ("ref" = Option<String>, Query)),
    security(("private_token" = [])), responses((status = 200, description = "the pipeline"), (status = 404, description = "none on that ref")))]
#[get("/projects/{id}/pipelines/latest")]
pub async fn latest_pipeline(
    _admin: AdminAuth,
    id: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let project = find_project(&state, &id).await?;
    let params = params_of(&req)?;
    let mut c = crate::api::params::Check::new(&params);
    let ref_ = c
        .str_max("ref", 255)
        .unwrap_or_else(|| project.default_branch.clone());
    c.finish()?;
    let newest = {
        let mut db = state.db.read().await?;
        Pipeline::newest_on_ref(&mut db.conn(), project.id, &ref_, None).await?
    }
    .ok_or_else(|| ApiError::not_found("Pipeline"))?;
    Ok(HttpResponse::Ok().json(pipeline_json(
        &newest,
        &project,
        &state.settings.external_url,
    )))
}

/// The variables a pipeline was created with (API, trigger, schedule, push options).
#[utoipa::path(tag = "pipelines", operation_id = "list_pipeline_variables", params(("id" = String, Path), ("pipeline_id" = i64, Path)),
    security(("private_token" = [])), responses((status = 200, description = "`[{variable_type, key, value}]`"), (status = 404, description = "not found")))]
#[get("/projects/{id}/pipelines/{pipeline_id}/variables")]
pub async fn list_pipeline_variables(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (_, pipeline) = find_pipeline(&state, &path).await?;
    let variables: Vec<Value> = crate::service::pipelines::pipeline_variables(&pipeline)
        .into_iter()
        .map(|v| json!({ "variable_type": "env_var", "key": v.key, "value": v.value }))
        .collect();
    Ok(HttpResponse::Ok().json(variables))
}

/// One pipeline.
#[utoipa::path(tag = "pipelines", operation_id = "get_pipeline", params(("id" = String, Path), ("pipeline_id" = i64, Path)),
    security(("private_token" = [])), responses((status = 200, description = "the pipeline"), (status = 404, description = "not found")))]
#[get("/projects/{id}/pipelines/{pipeline_id}")]
pub async fn get_pipeline(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (project, pipeline) = find_pipeline(&state, &path).await?;
    Ok(HttpResponse::Ok().json(pipeline_json(
        &pipeline,
        &project,
        &state.settings.external_url,
    )))
}

/// The latest try of each job of a pipeline (`include_retried=true`: all tries).
#[utoipa::path(tag = "pipelines", operation_id = "list_pipeline_jobs", params(("id" = String, Path), ("pipeline_id" = i64, Path),
    ("include_retried" = Option<bool>, Query), ("scope" = Option<String>, Query, description = "a status, or several as scope[]")),
    security(("private_token" = [])), responses((status = 200, description = "jobs"), (status = 404, description = "not found")))]
#[get("/projects/{id}/pipelines/{pipeline_id}/jobs")]
pub async fn list_pipeline_jobs(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (project, jobs, page) = pipeline_jobs_asked(&state, path.into_inner(), &req, false).await?;
    Ok(page.respond(&req, jobs_json(&state, &project, &jobs).await?))
}

/// The project, the pipeline's jobs the request asks for (`include_retried`, `scope`),
/// builds or `bridges` (GitLab's `Ci::JobsFinder` lists them apart), and the page.
async fn pipeline_jobs_asked(
    state: &AppState,
    path: (String, String),
    req: &HttpRequest,
    bridges: bool,
) -> ApiResult<(Project, Vec<Job>, crate::api::admin::Page)> {
    let (project, pipeline) = find_pipeline(state, &path).await?;
    let params = params_of(req)?;
    let page = page_of(&params)?;
    let mut check = crate::api::params::Check::new(&params);
    let include_retried = check.bool("include_retried").unwrap_or(false);
    let scope = check.tags("scope").unwrap_or_default();
    check.finish()?;
    let all = {
        let mut db = state.db.read().await?;
        Job::for_pipeline(&mut db.conn(), pipeline.id).await?
    };
    let jobs: Vec<Job> = all
        .into_iter()
        .filter(|j| include_retried || !j.retried)
        .filter(|j| scope.is_empty() || scope.iter().any(|s| s == j.status.as_str()))
        .filter(|j| j.spec().trigger.is_some() == bridges)
        .collect();
    Ok((project, jobs, page))
}

/// The pipeline's bridges (`trigger` jobs), each with the pipeline it made
/// (`Entities::Ci::Bridge`: a job with `downstream_pipeline`).
#[utoipa::path(tag = "pipelines", operation_id = "list_pipeline_bridges", params(("id" = String, Path), ("pipeline_id" = i64, Path),
    ("scope" = Option<String>, Query, description = "a status, or several as scope[]")),
    security(("private_token" = [])), responses((status = 200, description = "bridges"), (status = 404, description = "not found")))]
#[get("/projects/{id}/pipelines/{pipeline_id}/bridges")]
pub async fn list_pipeline_bridges(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (project, bridges, page) =
        pipeline_jobs_asked(&state, path.into_inner(), &req, true).await?;
    let mut shown = jobs_json(&state, &project, &bridges).await?;
    let base = &state.settings.external_url;
    for (json, bridge) in shown.iter_mut().zip(&bridges) {
        let child = {
            let mut db = state.db.read().await?;
            Pipeline::child_of(&mut db.conn(), bridge.id).await?
        };
        json["downstream_pipeline"] = match child {
            Some(p) => json!({
                "id": p.id, "iid": p.id, "project_id": p.project_id, "sha": p.sha, "ref": p.ref_,
                "status": p.status, "source": p.source,
                "created_at": crate::api::format_time(&p.created_at), "updated_at": crate::api::format_time(&p.updated_at),
                "web_url": format!("{base}/{}/-/pipelines/{}", project.path_with_namespace(), p.id),
            }),
            None => Value::Null,
        };
    }
    Ok(page.respond(&req, shown))
}

/// Runs `action` on the pipeline the path names; answers it afterwards with 201.
async fn pipeline_action(
    state: &AppState,
    audit_kind: &str,
    path: (String, String),
    action: impl AsyncFnOnce(&AppState, i64) -> ApiResult<Pipeline>,
) -> ApiResult<HttpResponse> {
    let (project, pipeline) = find_pipeline(state, &path).await?;
    let pipeline = action(state, pipeline.id).await?;
    let details = json!({ "project_id": project.id, "status": pipeline.status });
    record_admin_action(state, audit_kind, "pipeline", pipeline.id, details).await;
    Ok(HttpResponse::Created().json(pipeline_json(
        &pipeline,
        &project,
        &state.settings.external_url,
    )))
}

/// Cancel every unfinished job of a pipeline.
#[utoipa::path(tag = "pipelines", operation_id = "cancel_pipeline", params(("id" = String, Path), ("pipeline_id" = i64, Path)),
    security(("private_token" = [])), responses((status = 201, description = "the pipeline"), (status = 404, description = "not found")))]
#[post("/projects/{id}/pipelines/{pipeline_id}/cancel")]
pub async fn cancel_pipeline(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    pipeline_action(
        &state,
        "pipeline_canceled",
        path.into_inner(),
        async |s, id| s.pipelines.cancel_pipeline(id).await,
    )
    .await
}

/// Retry the failed and canceled jobs of a pipeline.
#[utoipa::path(tag = "pipelines", operation_id = "retry_pipeline", params(("id" = String, Path), ("pipeline_id" = i64, Path)),
    security(("private_token" = [])), responses((status = 201, description = "the pipeline"), (status = 403, description = "nothing to retry"), (status = 404, description = "not found")))]
#[post("/projects/{id}/pipelines/{pipeline_id}/retry")]
pub async fn retry_pipeline(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    pipeline_action(
        &state,
        "pipeline_retried",
        path.into_inner(),
        async |s, id| s.pipelines.retry_pipeline(id).await,
    )
    .await
}

/// Delete a pipeline with its child pipelines, jobs, logs and artifacts (one still
/// running is canceled first, as GitLab's `Ci::DestroyPipelineService` does).
#[utoipa::path(tag = "pipelines", operation_id = "delete_pipeline", params(("id" = String, Path), ("pipeline_id" = i64, Path)),
    security(("private_token" = [])), responses((status = 204, description = "deleted"), (status = 404, description = "not found")))]
#[delete("/projects/{id}/pipelines/{pipeline_id}")]
pub async fn delete_pipeline(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (project, pipeline) = find_pipeline(&state, &path).await?;
    crate::service::retention::delete_pipeline(&state, &pipeline).await?;
    let details = json!({ "project_id": project.id, "status": pipeline.status });
    record_admin_action(&state, "pipeline_deleted", "pipeline", pipeline.id, details).await;
    Ok(HttpResponse::NoContent().finish())
}

/// A project's jobs, newest first.
#[utoipa::path(tag = "jobs (admin)", operation_id = "list_jobs", params(("id" = String, Path)),
    security(("private_token" = [])), responses((status = 200, description = "jobs"), (status = 404, description = "no such project")))]
#[get("/projects/{id}/jobs")]
pub async fn list_jobs(
    _admin: AdminAuth,
    id: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let project = find_project(&state, &id).await?;
    let page = page_of(&params_of(&req)?)?;
    let (mut jobs, counted) = {
        let mut db = state.db.read().await?;
        let (offset, fetch) = (page.offset(), page.fetch());
        let jobs = Job::listed_for_project(&mut db.conn(), project.id, offset, fetch).await?;
        (
            jobs,
            Job::count_for_project(&mut db.conn(), project.id, super::COUNT_UP_TO).await?,
        )
    };
    let more = page.cut(&mut jobs);
    let shown = jobs_json(&state, &project, &jobs).await?;
    Ok(page.respond_listed(&req, counted, more, shown))
}

/// One job.
#[utoipa::path(tag = "jobs (admin)", operation_id = "get_job", params(("id" = String, Path), ("job_id" = i64, Path)),
    security(("private_token" = [])), responses((status = 200, description = "the job"), (status = 404, description = "not found")))]
#[get("/projects/{id}/jobs/{job_id}")]
pub async fn get_job(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, job_id) = path.into_inner();
    let project = find_project(&state, &id).await?;
    let job = find_job(&state, &project, &job_id).await?;
    let mut json = jobs_json(&state, &project, std::slice::from_ref(&job)).await?;
    Ok(HttpResponse::Ok().json(json.pop()))
}

/// A job's log as plain text, while it runs and after.
#[utoipa::path(tag = "jobs (admin)", operation_id = "get_job_trace", params(("id" = String, Path), ("job_id" = i64, Path)),
    security(("private_token" = [])),
    responses((status = 200, description = "the log", content_type = "text/plain", body = String), (status = 404, description = "not found")))]
#[get("/projects/{id}/jobs/{job_id}/trace")]
pub async fn get_job_trace(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, job_id) = path.into_inner();
    let project = find_project(&state, &id).await?;
    let job = find_job(&state, &project, &job_id).await?;
    state.traces.mark_watched(job.id);
    if let Some(archived) = state.artifacts.archived_trace(job.id).await? {
        let stream = state.artifacts.open(&archived).await?;
        return Ok(HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .streaming(stream));
    }
    let log = state.traces.read(job.id).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(log))
}

/// `artifacts:access: none`: nobody downloads the archive, only the jobs that depend on
/// it (through the runner API); `developer`, `maintainer` and `all` let the admin.
pub(crate) fn downloadable(job: &Job) -> ApiResult<()> {
    let access = job.spec().artifacts.and_then(|a| a.access);
    if access.as_deref() == Some("none") {
        return Err(ApiError::Forbidden(None));
    }
    Ok(())
}

/// A job's artifacts archive.
#[utoipa::path(tag = "jobs (admin)", operation_id = "get_job_artifacts", params(("id" = String, Path), ("job_id" = i64, Path)),
    security(("private_token" = [])),
    responses((status = 200, description = "the archive", content_type = "application/octet-stream"), (status = 404, description = "not found")))]
#[get("/projects/{id}/jobs/{job_id}/artifacts")]
pub async fn get_job_artifacts(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, job_id) = path.into_inner();
    let project = find_project(&state, &id).await?;
    let job = find_job(&state, &project, &job_id).await?;
    downloadable(&job)?;
    let archive = {
        let mut db = state.db.read().await?;
        crate::db::models::JobArtifact::find(&mut db.conn(), job.id, "archive").await?
    }
    .ok_or_else(|| ApiError::not_found("Artifact"))?;
    crate::api::runner::artifacts::send_archive(&state, &archive).await
}

/// `Project#latest_successful_build_for_ref`: in the ref's newest successful pipeline, the
/// job named `job` (its latest try) with an archive; GitLab's 404 otherwise.
async fn latest_artifacts_for_ref(
    state: &AppState,
    project: &Project,
    raw_ref: &str,
    req: &HttpRequest,
) -> ApiResult<crate::db::models::JobArtifact> {
    let params = params_of(req)?;
    let mut c = crate::api::params::Check::new(&params);
    let name = c.required_str("job");
    c.finish()?;
    let ref_ = raw_ref.replace("%2F", "/").replace("%2f", "/");
    let mut db = state.db.read().await?;
    let success = Some(crate::db::enums::PipelineStatus::Success);
    let pipeline = Pipeline::newest_on_ref(&mut db.conn(), project.id, &ref_, success)
        .await?
        .ok_or(ApiError::NotFound(None))?;
    let job = Job::for_pipeline(&mut db.conn(), pipeline.id)
        .await?
        .into_iter()
        .filter(|j| j.name == name && !j.retried)
        .max_by_key(|j| j.id)
        .ok_or(ApiError::NotFound(None))?;
    downloadable(&job)?;
    crate::db::models::JobArtifact::find(&mut db.conn(), job.id, "archive")
        .await?
        .ok_or(ApiError::NotFound(None))
}

/// The artifacts archive of the latest successful pipeline of a ref, from its job `job`.
#[utoipa::path(tag = "jobs (admin)", operation_id = "download_artifacts_by_ref",
    params(("id" = String, Path), ("ref_name" = String, Path), ("job" = String, Query, description = "the job's name")),
    security(("private_token" = [])),
    responses((status = 200, description = "the archive", content_type = "application/octet-stream"), (status = 404, description = "none")))]
#[get("/projects/{id}/jobs/artifacts/{ref_name}/download")]
pub async fn download_artifacts_by_ref(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, ref_name) = path.into_inner();
    let project = find_project(&state, &id).await?;
    let archive = latest_artifacts_for_ref(&state, &project, &ref_name, &req).await?;
    crate::api::runner::artifacts::send_archive(&state, &archive).await
}

/// One file of the artifacts of the latest successful pipeline of a ref (job `job`).
#[utoipa::path(tag = "jobs (admin)", operation_id = "raw_artifact_by_ref",
    params(("id" = String, Path), ("ref_name" = String, Path), ("artifact_path" = String, Path),
           ("job" = String, Query, description = "the job's name")),
    security(("private_token" = [])),
    responses((status = 200, description = "the file"), (status = 404, description = "no such file")))]
#[get("/projects/{id}/jobs/artifacts/{ref_name}/raw/{artifact_path:.*}")]
pub async fn raw_artifact_by_ref(
    _admin: AdminAuth,
    path: web::Path<(String, String, String)>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, ref_name, artifact_path) = path.into_inner();
    let project = find_project(&state, &id).await?;
    let archive = latest_artifacts_for_ref(&state, &project, &ref_name, &req).await?;
    if artifact_path.split('/').any(|part| part == "..") {
        return Err(ApiError::NotFound(None));
    }
    match state
        .artifacts
        .pages_entry(&archive, "", &artifact_path)
        .await?
    {
        crate::service::artifacts::PagesEntry::File(bytes, name) => {
            let kind = if std::str::from_utf8(&bytes).is_ok() {
                "text/plain; charset=utf-8"
            } else {
                "application/octet-stream"
            };
            let file = name.rsplit('/').next().unwrap_or_default().replace('"', "");
            Ok(HttpResponse::Ok()
                .content_type(kind)
                .insert_header((
                    actix_web::http::header::CONTENT_DISPOSITION,
                    format!("inline; filename=\"{file}\""),
                ))
                .body(bytes))
        }
        _ => Err(ApiError::NotFound(None)),
    }
}

async fn job_action(
    state: &AppState,
    audit_kind: &str,
    status: StatusCode,
    path: (String, String),
    action: impl AsyncFnOnce(&AppState, i64) -> ApiResult<Job>,
) -> ApiResult<HttpResponse> {
    let (id, job_id) = path;
    let project = find_project(state, &id).await?;
    let asked = find_job(state, &project, &job_id).await?;
    let job = action(state, asked.id).await?;
    // A retry answers the new try: the event names the job asked for and the new one.
    let details =
        json!({ "project_id": project.id, "status": job.status, "result_job_id": job.id });
    record_admin_action(state, audit_kind, "job", asked.id, details).await;
    let mut json = jobs_json(state, &project, std::slice::from_ref(&job)).await?;
    Ok(HttpResponse::build(status).json(json.pop()))
}

/// Cancel a job (running jobs of runners that cancel gracefully go through `canceling`).
#[utoipa::path(tag = "jobs (admin)", operation_id = "cancel_job", params(("id" = String, Path), ("job_id" = i64, Path)),
    security(("private_token" = [])), responses((status = 201, description = "the job"), (status = 404, description = "not found")))]
#[post("/projects/{id}/jobs/{job_id}/cancel")]
pub async fn cancel_job(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    job_action(
        &state,
        "job_canceled",
        StatusCode::CREATED,
        path.into_inner(),
        async |s, id| s.pipelines.cancel_job(id).await,
    )
    .await
}

/// Retry a finished job: answers the new try.
#[utoipa::path(tag = "jobs (admin)", operation_id = "retry_job", params(("id" = String, Path), ("job_id" = i64, Path)),
    security(("private_token" = [])), responses((status = 201, description = "the new job"), (status = 403, description = "not retryable"), (status = 404, description = "not found")))]
#[post("/projects/{id}/jobs/{job_id}/retry")]
pub async fn retry_job(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    job_action(
        &state,
        "job_retried",
        StatusCode::CREATED,
        path.into_inner(),
        async |s, id| s.pipelines.retry_job(id).await,
    )
    .await
}

/// Erase a finished job: its log and artifacts.
#[utoipa::path(tag = "jobs (admin)", operation_id = "erase_job", params(("id" = String, Path), ("job_id" = i64, Path)),
    security(("private_token" = [])), responses((status = 201, description = "the job"), (status = 403, description = "not finished"), (status = 404, description = "not found")))]
#[post("/projects/{id}/jobs/{job_id}/erase")]
pub async fn erase_job(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    job_action(
        &state,
        "job_erased",
        StatusCode::CREATED,
        path.into_inner(),
        async |s, id| s.artifacts.erase(id).await,
    )
    .await
}

/// Start a manual job.
#[utoipa::path(tag = "jobs (admin)", operation_id = "play_job", params(("id" = String, Path), ("job_id" = i64, Path)),
    security(("private_token" = [])), responses((status = 200, description = "the job"), (status = 400, description = "not playable: `400 Bad request - Unplayable Job`"), (status = 404, description = "not found")))]
#[post("/projects/{id}/jobs/{job_id}/play")]
pub async fn play_job(
    _admin: AdminAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    // GitLab answers 201 (Grape's default for POST), but `status 200` for play.
    job_action(
        &state,
        "job_played",
        StatusCode::OK,
        path.into_inner(),
        async |s, id| s.pipelines.play_job(id).await,
    )
    .await
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(list_pipelines)
        // Before `{pipeline_id}`, which would take `latest` for an id.
        .service(latest_pipeline)
        .service(get_pipeline)
        .service(list_pipeline_variables)
        .service(list_runner_jobs)
        .service(get_test_report)
        .service(get_test_report_summary)
        .service(list_pipeline_jobs)
        .service(list_pipeline_bridges)
        .service(cancel_pipeline)
        .service(retry_pipeline)
        .service(delete_pipeline)
        .service(list_jobs)
        .service(get_job)
        .service(get_job_trace)
        .service(get_job_artifacts)
        .service(download_artifacts_by_ref)
        .service(raw_artifact_by_ref)
        .service(cancel_job)
        .service(retry_job)
        .service(play_job)
        .service(erase_job);
}
