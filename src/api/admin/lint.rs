//! CI Lint ‹lib/api/lint.rb›: `POST /projects/:id/ci/lint` checks a configuration sent
//! with the request, `GET /projects/:id/ci/lint` the repository's `.gitlab-ci.yml`.
//!
//! Runway lints as GitLab's `dry_run` does: a pipeline on the ref (the default branch
//! unless given) is planned — includes read from that commit, rules evaluated — and
//! nothing is created. `jobs` lists the jobs that pipeline would have.

use actix_web::{get, post, web, HttpResponse};
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::api::admin::projects::find_project;
use crate::api::params::{Check, FromParams, Params, Validated};
use crate::auth::AdminAuth;
use crate::ci::config::JobPlan;
use crate::db::models::Project;
use crate::error::ApiResult;
use crate::service::pipelines::{Lint, NewPipelineRequest};
use crate::AppState;

/// Params of `POST /projects/:id/ci/lint`.
#[derive(Debug, ToSchema)]
pub struct LintParams {
    /// The `.gitlab-ci.yml` text.
    pub content: String,
    /// GitLab's: simulate a pipeline (Runway always does).
    pub dry_run: Option<bool>,
    /// List the jobs of the pipeline.
    pub include_jobs: Option<bool>,
    /// The ref the pipeline would be on (default: the project's default branch).
    #[schema(rename = "ref")]
    pub ref_: Option<String>,
}

impl FromParams for LintParams {
    fn from_params(params: &Params) -> ApiResult<Self> {
        let mut c = Check::new(params);
        let p = LintParams {
            content: c.required_str("content"),
            dry_run: c.bool("dry_run"),
            include_jobs: c.bool("include_jobs"),
            ref_: c
                .str_max("ref", 255)
                .or_else(|| c.str_max("dry_run_ref", 255)),
        };
        c.finish()?;
        Ok(p)
    }
}

/// Params of `GET /projects/:id/ci/lint`.
#[derive(Debug, ToSchema)]
pub struct LintRepositoryParams {
    pub sha: Option<String>,
    #[schema(rename = "ref")]
    pub ref_: Option<String>,
    pub dry_run: Option<bool>,
    pub include_jobs: Option<bool>,
}

impl FromParams for LintRepositoryParams {
    fn from_params(params: &Params) -> ApiResult<Self> {
        let mut c = Check::new(params);
        let p = LintRepositoryParams {
            sha: c.str_max("sha", 64),
            ref_: c
                .str_max("ref", 255)
                .or_else(|| c.str_max("dry_run_ref", 255)),
            dry_run: c.bool("dry_run"),
            include_jobs: c.bool("include_jobs"),
        };
        c.finish()?;
        Ok(p)
    }
}

/// One job as the lint lists it (`Gitlab::Ci::Lint#jobs`).
fn job_json(job: &JobPlan) -> Value {
    json!({
        "name": job.name,
        "stage": job.stage,
        "before_script": job.spec.before_script,
        "script": job.spec.script,
        "after_script": job.spec.after_script,
        "tag_list": job.tags,
        "environment": job.spec.environment.as_ref().map(|e| e.name.clone()),
        "when": job.when.as_str(),
        "allow_failure": job.allow_failure,
        "only": null,
        "except": null,
        "needs": job.spec.needs.as_ref().map(|n| n.iter().map(|n| json!({ "name": n.job })).collect::<Vec<_>>()),
    })
}

fn lint_json(lint: Lint, include_jobs: bool) -> Value {
    let mut body = json!({
        "valid": lint.errors.is_empty(),
        "errors": lint.errors,
        "warnings": [],
        "merged_yaml": lint.merged_yaml,
        "includes": [],
    });
    if include_jobs {
        body["jobs"] = lint.jobs.iter().map(job_json).collect();
    }
    body
}

/// A request for the pipeline the lint plans: on `ref_` (the default branch unless
/// given), with the repository's commit there when the project has one.
async fn lint_request(
    state: &AppState,
    project: &Project,
    ref_: Option<String>,
    ci_config: String,
) -> ApiResult<NewPipelineRequest> {
    let ref_ = ref_.unwrap_or_else(|| project.default_branch.clone());
    let commit = state.repositories.commit(project, &ref_, None).await?;
    let (sha, tag, files) = match commit {
        Some((sha, tag, files)) => (sha, tag, Some(files)),
        None => ("0".repeat(40), false, None),
    };
    Ok(push_request(ref_, sha, tag, ci_config, files))
}

/// What CI Lint checks: the configuration as a push pipeline at the commit would read it
/// (no variables or inputs given).
fn push_request(
    ref_: String,
    sha: String,
    tag: bool,
    ci_config: String,
    files: Option<crate::service::repos::RepoFiles>,
) -> NewPipelineRequest {
    NewPipelineRequest {
        ref_,
        sha,
        tag,
        variables: Vec::new(),
        ci_config,
        source: "push".into(),
        files,
        inputs: None,
        before_sha: crate::service::pipelines::ZERO_SHA.into(),
        save_on_errors: false,
        schedule_id: None,
        parent_bridge_id: None,
    }
}

/// Check a `.gitlab-ci.yml` sent with the request, as a pipeline on `ref` would read it.
#[utoipa::path(tag = "pipelines", operation_id = "lint_ci_config", params(("id" = String, Path)),
    request_body(content = LintParams, content_type = "application/json"),
    security(("private_token" = [])),
    responses((status = 200, description = "`{valid, errors, warnings, merged_yaml, includes, jobs?}`"),
              (status = 400, description = "content missing"), (status = 404, description = "no such project")))]
#[post("/projects/{id}/ci/lint")]
pub async fn lint_content(
    _admin: crate::auth::AdminAuth,
    id: web::Path<String>,
    params: Validated<LintParams>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let project = find_project(&state, &id).await?;
    let p = params.0;
    let request = lint_request(&state, &project, p.ref_, p.content).await?;
    let lint = state.pipelines.lint(&project, request).await?;
    Ok(HttpResponse::Ok().json(lint_json(lint, p.include_jobs.unwrap_or(false))))
}

/// Check the repository's `.gitlab-ci.yml` at `sha` or `ref` (the default branch unless
/// given).
#[utoipa::path(tag = "pipelines", operation_id = "lint_repository_config", params(("id" = String, Path),
        ("sha" = Option<String>, Query), ("ref" = Option<String>, Query), ("include_jobs" = Option<bool>, Query)),
    security(("private_token" = [])),
    responses((status = 200, description = "`{valid, errors, warnings, merged_yaml, includes, jobs?}`"),
              (status = 400, description = "no repository, or no such ref"), (status = 404, description = "no such project")))]
#[get("/projects/{id}/ci/lint")]
pub async fn lint_repository(
    _admin: AdminAuth,
    id: web::Path<String>,
    params: Validated<LintRepositoryParams>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let project = find_project(&state, &id).await?;
    let p = params.0;
    let ref_ = p.ref_.unwrap_or_else(|| project.default_branch.clone());
    let resolved = state
        .repositories
        .read_config(&project, &ref_, p.sha.as_deref())
        .await?;
    let request = push_request(
        ref_,
        resolved.sha,
        resolved.tag,
        resolved.ci_config,
        Some(resolved.files),
    );
    let lint = state.pipelines.lint(&project, request).await?;
    Ok(HttpResponse::Ok().json(lint_json(lint, p.include_jobs.unwrap_or(false))))
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(lint_content).service(lint_repository);
}
