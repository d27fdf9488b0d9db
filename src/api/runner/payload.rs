//! The job payload of `201 POST /jobs/request` (reference §10), with the types exactly as
//! the Go runner decodes them: a decode failure loses the job (client reference §0).

use serde::Serialize;
use serde_json::{json, Value};

use crate::ci::config::{ImageSpec, JobSpec};
use crate::db::enums::RunnerType;
use crate::db::models::{now, Job, Runner};
use crate::queue::Assignment;
use crate::service::pipelines::{pipeline_variables, FAILURE_REASONS};

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::api::openapi::job_payload_example)]
pub struct JobPayload {
    pub id: i64,
    pub token: String,
    pub allow_git_fetch: bool,
    #[schema(value_type = Object)]
    pub job_info: Value,
    #[schema(value_type = Object)]
    pub git_info: Value,
    #[schema(value_type = Object)]
    pub runner_info: Value,
    #[schema(value_type = Vec<Object>)]
    pub variables: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    pub steps: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    pub hooks: Vec<Value>,
    #[schema(value_type = Option<Object>)]
    pub image: Option<Value>,
    #[schema(value_type = Vec<Object>)]
    pub services: Vec<Value>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub artifacts: Option<Vec<Value>>,
    #[schema(value_type = Vec<Object>)]
    pub cache: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    pub credentials: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    pub dependencies: Vec<Value>,
    #[schema(value_type = Object)]
    pub features: Value,
}

/// What the payload needs from the server's settings.
pub struct PayloadContext<'a> {
    pub external_url: &'a str,
    /// Opens the CI/CD variables' sealed values.
    pub secrets: &'a crate::secrets::SecretBox,
    /// Signs the job's `id_tokens`.
    pub id_tokens: &'a crate::service::id_tokens::IdTokens,
}

fn var(key: &str, value: impl Into<String>, public: bool) -> Value {
    json!({ "key": key, "value": value.into(), "public": public, "masked": false })
}

/// The CI/CD variables a job sees, as `Ci::HasVariable#to_hash_variable` sends them
/// (`file`, `masked` and `raw` for the runner), in rising precedence: the instance's, then
/// the project's; protected ones only on a protected ref; a project's only when its
/// `environment_scope` covers the job's environment (`*` alone for a job without one),
/// the more specific scope winning (`*`, then patterns, then the exact name).
fn ci_variables(a: &Assignment, environment: Option<&str>, ctx: &PayloadContext<'_>) -> Vec<Value> {
    let specificity = |scope: &str| match scope {
        "*" => 0,
        s if s.contains('*') => 1,
        _ => 2,
    };
    let mut chosen: Vec<&crate::db::models::CiVariable> = a
        .variables
        .iter()
        .filter(|v| !v.protected || a.pipeline.protected)
        .filter(|v| match environment {
            _ if v.environment_scope == "*" => true,
            Some(name) => scope_matches(&v.environment_scope, name),
            None => false,
        })
        .collect();
    chosen.sort_by_key(|v| (v.project_id.is_some(), specificity(&v.environment_scope)));
    chosen
        .into_iter()
        .filter_map(|v| {
            let value = match ctx.secrets.open(&v.value) {
                Ok(value) => value,
                Err(e) => {
                    tracing::error!(variable_id = v.id, error = %e, "a CI/CD variable left out");
                    return None;
                }
            };
            let mut shown =
                json!({ "key": v.key, "value": value, "public": false, "masked": v.masked });
            if v.variable_type == "file" {
                shown["file"] = json!(true);
            }
            if v.raw {
                shown["raw"] = json!(true);
            }
            Some(shown)
        })
        .collect()
}

/// Whether an `environment_scope` covers `name`: the same name, or a pattern whose `*`
/// stands for any text (GitLab matches with SQL `LIKE`, `*` as `%`).
fn scope_matches(scope: &str, name: &str) -> bool {
    let parts: Vec<&str> = scope.split('*').collect();
    if parts.len() == 1 {
        return scope == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// GitLab's `CI_COMMIT_REF_SLUG`: lower case, non-alphanumerics to `-`, at most 63 chars,
/// no leading or trailing `-`.
pub fn slug(text: &str) -> String {
    let lowered: String = text
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let cut: String = lowered.chars().take(63).collect();
    cut.trim_matches('-').to_string()
}

fn image_json(image: &ImageSpec, service: bool) -> Value {
    let mut value = json!({
        "name": image.name,
        "entrypoint": image.entrypoint,
        "ports": [],
        "executor_opts": image.executor_opts.clone().unwrap_or_else(|| json!({})),
        "pull_policy": image.pull_policy,
    });
    if service {
        value["alias"] = json!(image.alias.clone().unwrap_or_default());
        value["command"] = json!(image.command);
        value["variables"] = if image.variables.is_empty() {
            Value::Null
        } else {
            json!(image
                .variables
                .iter()
                .map(|v| json!({ "key": v.key, "value": v.value }))
                .collect::<Vec<_>>())
        };
    }
    value
}

/// The job's timeout as sent to the runner: the job's (or project's) timeout, capped by
/// the runner's `maximum_timeout` (reference §20.1).
pub fn timeout_for(job: &Job, runner: &Runner) -> i64 {
    let job_timeout = i64::from(job.timeout.unwrap_or(3600));
    match runner.maximum_timeout {
        Some(max) => job_timeout.min(i64::from(max)),
        None => job_timeout,
    }
}

pub fn build(a: &Assignment, runner: &Runner, ctx: &PayloadContext<'_>) -> JobPayload {
    let job = &a.job;
    let pipeline = &a.pipeline;
    let project = &a.project;
    let spec: JobSpec = job.spec();
    let timeout = timeout_for(job, runner);
    let server = ctx.external_url.trim_end_matches('/');
    let project_path = project.path_with_namespace();
    let project_url = format!("{server}/{project_path}");
    let (host, port, protocol) = split_url(server);
    // GitLab's `repo_url`: the project's repository served by Runway (`git_http`), the
    // job's token as the password — a runner fetches it wherever it runs.
    let repo_url = if pipeline.has_sources {
        let (scheme, rest) = server.split_once("://").unwrap_or(("http", server));
        format!(
            "{scheme}://{}:{}@{rest}/{project_path}.git",
            crate::git_http::JOB_TOKEN_USER,
            a.token
        )
    } else {
        String::new()
    };
    let sha = pipeline.sha.clone();
    let depth: i64 = spec
        .variables
        .iter()
        .find(|v| v.key == "GIT_DEPTH")
        .and_then(|v| v.value.parse().ok())
        .unwrap_or(20);
    let ref_type = if pipeline.tag { "tag" } else { "branch" };
    // `Ci::BuildRunnerPresenter#refspecs`: the pipeline's persistent ref first (Runway
    // keeps it in the mirror it serves), then the branch or tag — or every head and tag
    // for a full clone.
    let mut refspecs: Vec<String> = if repo_url.is_empty() {
        Vec::new()
    } else {
        vec![format!(
            "+refs/pipelines/{0}:refs/pipelines/{0}",
            pipeline.id
        )]
    };
    refspecs.extend(if depth > 0 {
        if pipeline.tag {
            vec![format!("+refs/tags/{0}:refs/tags/{0}", pipeline.ref_)]
        } else {
            vec![format!(
                "+refs/heads/{0}:refs/remotes/origin/{0}",
                pipeline.ref_
            )]
        }
    } else {
        vec![
            "+refs/heads/*:refs/remotes/origin/*".into(),
            "+refs/tags/*:refs/tags/*".into(),
        ]
    });

    let started_at = job
        .started_at
        .map(|t| crate::api::format_time(&t))
        .unwrap_or_default();
    let mut variables = vec![
        var("CI", "true", true),
        var("GITLAB_CI", "true", true),
        var("CI_SERVER_URL", server, true),
        var("CI_SERVER_HOST", host.clone(), true),
        var("CI_SERVER_PORT", port.to_string(), true),
        var("CI_SERVER_PROTOCOL", protocol.clone(), true),
        var("CI_SERVER_NAME", "GitLab", true),
        var(
            "CI_SERVER_VERSION",
            crate::api::admin::meta::GITLAB_API_VERSION,
            true,
        ),
        var("CI_API_V4_URL", format!("{server}/api/v4"), true),
        var("CI_JOB_ID", job.id.to_string(), true),
        var(
            "CI_JOB_URL",
            format!("{project_url}/-/jobs/{}", job.id),
            true,
        ),
        json!({ "key": "CI_JOB_TOKEN", "value": a.token, "public": false, "masked": true }),
        var("CI_JOB_NAME", job.name.clone(), true),
        var("CI_JOB_NAME_SLUG", slug(&job.name), true),
        var("CI_JOB_STAGE", job.stage.clone(), true),
        var("CI_JOB_STARTED_AT", started_at, true),
        var("CI_PIPELINE_ID", pipeline.id.to_string(), true),
        var("CI_PIPELINE_IID", pipeline.id.to_string(), true),
        var(
            "CI_PIPELINE_URL",
            format!("{project_url}/-/pipelines/{}", pipeline.id),
            true,
        ),
        var("CI_PIPELINE_SOURCE", pipeline.source.clone(), true),
        var(
            "CI_PIPELINE_CREATED_AT",
            crate::api::format_time(&pipeline.created_at),
            true,
        ),
        var("CI_PROJECT_ID", project.id.to_string(), true),
        var("CI_PROJECT_NAME", project.path.clone(), true),
        var("CI_PROJECT_TITLE", project.name.clone(), true),
        var("CI_PROJECT_PATH", project_path.clone(), true),
        var("CI_PROJECT_PATH_SLUG", slug(&project_path), true),
        var("CI_PROJECT_NAMESPACE", project.namespace_path.clone(), true),
        var(
            "CI_PROJECT_ROOT_NAMESPACE",
            project.namespace_path.split('/').next().unwrap_or_default(),
            true,
        ),
        var("CI_PROJECT_URL", project_url.clone(), true),
        // Where the project's pages site is served (`src/pages.rs`).
        var("CI_PAGES_URL", format!("{project_url}/-/pages"), true),
        var("CI_PAGES_DOMAIN", host.clone(), true),
        var("CI_PROJECT_VISIBILITY", "private", true),
        var("CI_DEFAULT_BRANCH", project.default_branch.clone(), true),
        var("CI_CONFIG_PATH", ".gitlab-ci.yml", true),
        var("CI_COMMIT_SHA", sha.clone(), true),
        var(
            "CI_COMMIT_SHORT_SHA",
            sha.chars().take(8).collect::<String>(),
            true,
        ),
        var("CI_COMMIT_BEFORE_SHA", pipeline.before_sha.clone(), true),
        var("CI_COMMIT_REF_NAME", pipeline.ref_.clone(), true),
        var("CI_COMMIT_REF_SLUG", slug(&pipeline.ref_), true),
        var(
            "CI_COMMIT_REF_PROTECTED",
            pipeline.protected.to_string(),
            true,
        ),
        var(
            if pipeline.tag {
                "CI_COMMIT_TAG"
            } else {
                "CI_COMMIT_BRANCH"
            },
            pipeline.ref_.clone(),
            true,
        ),
        // It holds the job's token: not public, as GitLab's.
        var("CI_REPOSITORY_URL", repo_url.clone(), false),
        var("CI_RUNNER_ID", runner.id.to_string(), true),
        var("CI_RUNNER_DESCRIPTION", runner.description.clone(), true),
        var("CI_RUNNER_TAGS", json!(runner.tags()).to_string(), true),
        var("GITLAB_USER_ID", "1", true),
        var("GITLAB_USER_LOGIN", "root", true),
        var("GITLAB_USER_NAME", "Administrator", true),
        var("GITLAB_USER_EMAIL", "admin@example.com", true),
    ];
    // GitLab's `CI_PIPELINE_TRIGGERED`, for pipelines started with a trigger token.
    if pipeline.source == "trigger" {
        variables.push(var("CI_PIPELINE_TRIGGERED", "true", true));
    }
    // Without a repository there is nothing to clone: the job runs in an empty folder.
    if repo_url.is_empty() && !spec.variables.iter().any(|v| v.key == "GIT_STRATEGY") {
        variables.push(var("GIT_STRATEGY", "none", true));
    }
    // `environment`: GitLab's deployment variables, before the file's own.
    if let Some(env) = &spec.environment {
        for (key, value) in crate::ci::environment::variables(env) {
            variables.push(var(key, value, true));
        }
    }
    for v in &spec.variables {
        variables.push(var(&v.key, v.value.clone(), true));
    }
    // Variables of the dotenv reports of the jobs this one depends on: above the file's,
    // below the pipeline's (GitLab's precedence).
    for (dependency, _) in &a.dependencies {
        let dotenv: Vec<Value> =
            serde_json::from_str(&dependency.dotenv_variables).unwrap_or_default();
        for v in dotenv {
            variables.push(var(
                v["key"].as_str().unwrap_or_default(),
                v["value"].as_str().unwrap_or_default(),
                false,
            ));
        }
    }
    // CI/CD variables: the instance's, then the project's, above the file's and the
    // dotenv reports', below the pipeline's (GitLab's precedence).
    let environment = spec.environment.as_ref().map(|e| e.name.as_str());
    variables.extend(ci_variables(a, environment, ctx));
    for v in pipeline_variables(pipeline) {
        variables.push(var(&v.key, v.value, false));
    }
    // `id_tokens`: each a JWT signed now, masked (`Ci::Build#id_tokens_variables`).
    for token in &spec.id_tokens {
        let claims = crate::service::id_tokens::JobClaims {
            issuer: server,
            audience: &token.aud,
            project_id: project.id,
            project_path: &project_path,
            namespace_path: &project.namespace_path,
            pipeline_id: pipeline.id,
            pipeline_source: &pipeline.source,
            job_id: job.id,
            ref_: &pipeline.ref_,
            tag: pipeline.tag,
            ref_protected: pipeline.protected,
            sha: &sha,
            runner_id: runner.id,
            timeout,
            environment: spec
                .environment
                .as_ref()
                .map(|e| (e.name.as_str(), e.tier.as_str(), e.action.as_str())),
        };
        match ctx.id_tokens.sign(&claims.to_json()) {
            Some(jwt) => variables
                .push(json!({ "key": token.name, "value": jwt, "public": false, "masked": true })),
            None => tracing::error!(job_id = job.id, "no key to sign the job's ID token"),
        }
    }
    // One entry per key: a later definition (job over global, pipeline over file) wins,
    // as it does in GitLab, so no runner has to guess which of two entries counts.
    let mut seen = std::collections::HashSet::new();
    variables.reverse();
    variables.retain(|v| seen.insert(v["key"].as_str().unwrap_or_default().to_string()));
    variables.reverse();

    let mut steps = vec![json!({
        "name": "script",
        "script": spec.before_script.iter().chain(spec.script.iter()).collect::<Vec<_>>(),
        "timeout": timeout,
        "when": "on_success",
        "allow_failure": false,
    })];
    // `release`: its step after the script (`Ci::Build#steps`, `Gitlab::Ci::Build::Step`).
    if let Some(release) = &spec.release {
        steps.push(json!({
            "name": "release",
            "script": [crate::ci::release_command(release)],
            "timeout": timeout,
            "when": "on_success",
            "allow_failure": false,
        }));
    }
    if !spec.after_script.is_empty() {
        steps.push(json!({
            "name": "after_script",
            "script": spec.after_script,
            "timeout": timeout,
            "when": "always",
            "allow_failure": true,
        }));
    }

    let artifacts = spec.artifacts.as_ref().map(|art| {
        let mut entries = Vec::new();
        if !art.paths.is_empty() || art.untracked {
            let mut entry = json!({
                "name": art.name.clone().unwrap_or_else(|| "artifacts".into()),
                "untracked": art.untracked,
                "paths": art.paths,
                "when": art.when,
                "expire_in": art.expire_in,
                "artifact_type": "archive",
                "artifact_format": "zip",
            });
            if !art.exclude.is_empty() {
                entry["exclude"] = json!(art.exclude);
            }
            entries.push(entry);
        }
        for report in &art.reports {
            entries.push(json!({
                "name": report.name,
                "paths": report.paths,
                "when": "always",
                "expire_in": art.expire_in,
                "artifact_type": report.artifact_type,
                "artifact_format": report.artifact_format,
            }));
        }
        entries
    });

    let cache: Vec<Value> = spec
        .cache
        .iter()
        .map(|c| {
            // `Ci::Build#cache`: protected refs keep their own caches unless `unprotect`.
            let protection = if job.protected && !c.unprotect {
                "protected"
            } else {
                "non_protected"
            };
            json!({
                "key": format!("{}-{protection}", c.key),
                "untracked": c.untracked,
                "paths": c.paths,
                "policy": c.policy,
                "when": c.when,
                "fallback_keys": c.fallback_keys,
            })
        })
        .collect();

    // Each dependency carries the consuming job's own token (reference §10.10): the
    // artifact download guard accepts the token of a running job of the same project.
    let dependencies: Vec<Value> = a
        .dependencies
        .iter()
        .map(|(d, archive)| {
            let mut entry = json!({ "id": d.id, "name": d.name, "token": a.token });
            if let Some(archive) = archive {
                entry["artifacts_file"] =
                    json!({ "filename": archive.filename, "size": archive.size });
            }
            entry
        })
        .collect();

    let time_in_queue = job
        .queued_at
        .map(|q| (now() - q).num_milliseconds() as f64 / 1000.0)
        .unwrap_or(0.0)
        .max(0.0);
    let running_count = if runner.runner_type == RunnerType::Instance {
        "0".to_string()
    } else {
        "+Inf".to_string()
    };

    JobPayload {
        id: job.id,
        token: a.token.clone(),
        allow_git_fetch: true,
        job_info: json!({
            "id": job.id,
            "name": job.name,
            "stage": job.stage,
            "pipeline_id": pipeline.id,
            "project_id": project.id,
            "project_name": project.name,
            "project_full_path": project_path,
            "user_id": 1,
            "scoped_user_id": null,
            "time_in_queue_seconds": time_in_queue,
            "project_jobs_running_on_instance_runners_count": running_count,
            "queue_size": a.queue_size,
            "queue_depth": 1,
        }),
        git_info: json!({
            "repo_url": repo_url,
            "ref": pipeline.ref_,
            "sha": sha,
            "before_sha": pipeline.before_sha,
            "ref_type": ref_type,
            "refspecs": refspecs,
            "depth": depth,
            "repo_object_format": "sha1",
            "protected": pipeline.protected,
        }),
        runner_info: json!({ "timeout": timeout, "runner_session_url": null }),
        variables,
        steps,
        hooks: spec
            .hooks
            .iter()
            .map(|h| json!({ "name": h.name, "script": h.script }))
            .collect(),
        image: spec.image.as_ref().map(|i| image_json(i, false)),
        services: spec.services.iter().map(|s| image_json(s, true)).collect(),
        artifacts,
        cache,
        credentials: Vec::new(),
        dependencies,
        features: json!({ "trace_sections": true, "failure_reasons": FAILURE_REASONS }),
    }
}

/// Host, port and scheme of a URL such as `http://127.0.0.1:8080`.
fn split_url(url: &str) -> (String, u16, String) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let authority = rest.split('/').next().unwrap_or(rest);
    let default_port = if scheme == "https" { 443 } else { 80 };
    match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => (
            host.to_string(),
            port.parse().unwrap_or(default_port),
            scheme.to_string(),
        ),
        _ => (authority.to_string(), default_port, scheme.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_and_urls() {
        assert_eq!(slug("Feature/ABC_12"), "feature-abc-12");
        assert_eq!(slug("-x-"), "x");
        assert_eq!(
            split_url("http://127.0.0.1:8080"),
            ("127.0.0.1".into(), 8080, "http".into())
        );
        assert_eq!(
            split_url("https://ci.example.com/x"),
            ("ci.example.com".into(), 443, "https".into())
        );
    }
}
