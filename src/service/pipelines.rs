//! Pipelines: creation from a plan, progression after every job change, cancel and retry
//! of jobs and pipelines. Every change runs in one transaction and ends by re-processing
//! the pipeline; a job that became pending wakes held polls.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::ci::config::{self, JobSpec, RuleScope, Variable, When};
use crate::ci::progress::{advance, pipeline_status, JobState};
use crate::db::enums::{JobStatus, PipelineStatus};
use crate::db::models::resource_group::ResourceGroup;
use crate::db::models::{now, Candidate, Job, JobChanges, NewJob, NewPipeline, Pipeline, Project};
use crate::db::{Backend, Conn, DbPool};
use crate::error::{ApiError, ApiResult};
use crate::queue::Queue;
use crate::transaction;

/// GitLab's failure reasons ‹app/models/concerns/enums/ci/commit_status.rb›; sent to runners
/// in `features.failure_reasons`, and anything else on PUT becomes `unknown_failure`.
pub const FAILURE_REASONS: &[&str] = &[
    "unknown_failure",
    "script_failure",
    "api_failure",
    "stuck_or_timeout_failure",
    "runner_system_failure",
    "missing_dependency_failure",
    "runner_unsupported",
    "stale_schedule",
    "job_execution_timeout",
    "archived_failure",
    "unmet_prerequisites",
    "scheduler_failure",
    "data_integrity_failure",
    "forward_deployment_failure",
    "user_blocked",
    "project_deleted",
    "ci_quota_exceeded",
    "pipeline_loop_detected",
    "no_matching_runner",
    "trace_size_exceeded",
    "builds_disabled",
    "environment_creation_failure",
    "deployment_rejected",
    "failed_outdated_deployment_job",
    "job_execution_server_timeout",
    "stuck_pending_with_matching_runners",
    "stuck_pending_no_matching_runners",
    "no_updates_running",
    "no_updates_canceling",
    "server_timeout_running",
    "server_timeout_canceling",
    "runner_configuration_error",
    "runner_external_dependency_failure",
    "runner_interrupted",
    "protected_environment_failure",
    "insufficient_bridge_permissions",
    "downstream_bridge_project_not_found",
    "invalid_bridge_trigger",
    "upstream_bridge_project_not_found",
    "insufficient_upstream_permissions",
    "bridge_pipeline_is_child_pipeline",
    "downstream_pipeline_creation_failed",
    "secrets_provider_not_found",
    "reached_max_descendant_pipelines_depth",
    "ip_restriction_failure",
    "reached_max_pipeline_hierarchy_size",
    "reached_downstream_pipeline_trigger_rate_limit",
    "duo_workflow_not_allowed",
    "job_router_failure",
    "job_token_expired",
    "id_token_burned_project_path",
    "downstream_project_trigger_resolved_to_empty",
];

/// A variable given when creating a pipeline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct PipelineVariable {
    pub key: String,
    pub value: String,
}

/// GitLab's "no commit" sha: `before_sha` of a pipeline that no push started, or of a
/// pushed new branch.
pub const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

pub struct NewPipelineRequest {
    pub ref_: String,
    pub sha: String,
    /// `ref_` is a tag (else a branch).
    pub tag: bool,
    pub variables: Vec<PipelineVariable>,
    pub ci_config: String,
    pub source: String,
    /// The commit's files for `include:local` (none: a configuration sent with the
    /// request, which reads no repository).
    pub files: Option<crate::service::repos::RepoFiles>,
    /// `inputs` for the configuration's `spec:inputs` header.
    pub inputs: Option<serde_yaml_ng::Mapping>,
    /// The ref's head before a push (GitLab's `before_sha`; zeros otherwise).
    pub before_sha: String,
    /// GitLab's `save_on_errors` (pushes and mirror pulls): a configuration error is
    /// recorded as a failed pipeline rather than answered alone.
    pub save_on_errors: bool,
    /// The schedule starting this pipeline.
    pub schedule_id: Option<i64>,
    /// The bridge job triggering this child pipeline.
    pub parent_bridge_id: Option<i64>,
}

impl NewPipelineRequest {
    /// The pipeline's row as requested: `created`, no stages yet, GitLab's default
    /// `workflow:auto_cancel`.
    fn row(&self, project_id: i64, protected: bool, at: chrono::NaiveDateTime) -> NewPipeline<'_> {
        NewPipeline {
            project_id,
            ref_: &self.ref_,
            sha: &self.sha,
            before_sha: &self.before_sha,
            tag: self.tag,
            protected,
            source: &self.source,
            status: PipelineStatus::Created,
            started_at: None,
            finished_at: None,
            ci_config: &self.ci_config,
            variables: serde_json::to_string(&self.variables).unwrap_or_else(|_| "[]".into()),
            stages: "[]".into(),
            created_at: at,
            updated_at: at,
            name: None,
            auto_cancel_on_new_commit: "conservative",
            auto_cancel_on_job_failure: "none",
            has_sources: self.files.is_some(),
            yaml_errors: None,
            schedule_id: self.schedule_id,
            parent_bridge_id: self.parent_bridge_id,
            stage_scheduled: false,
        }
    }
}

/// What CI Lint found.
pub struct Lint {
    pub errors: Vec<String>,
    pub merged_yaml: Option<String>,
    pub jobs: Vec<crate::ci::config::JobPlan>,
}

/// The final state a runner reports.
#[derive(Clone)]
pub struct JobOutcome {
    pub success: bool,
    pub failure_reason: Option<String>,
    pub exit_code: Option<i32>,
    /// The runner's `crc32:%08x` of its log and the log's size, when it sent them.
    pub checksum: Option<String>,
    pub bytesize: Option<i64>,
}

pub struct Pipelines {
    db: DbPool,
    queue: Arc<Queue>,
    /// The most jobs one pipeline may have (GitLab's `ci_pipeline_size`); `None`: no limit.
    max_jobs: Option<usize>,
    /// How `include:remote` files are fetched.
    remote: crate::service::remote::RemoteIncludes,
    /// Where `include:project` files are read.
    repositories: crate::service::repos::Repositories,
    /// Opens CI/CD variables for `rules:if`.
    secrets: crate::secrets::SecretBox,
    /// Reads `trigger:include:artifact` files from a parent job's archive.
    artifacts: Arc<super::artifacts::Artifacts>,
}

/// Whether a refused configuration is recorded as a failed pipeline when the command saves
/// its errors: every failure but the rules filtering everything out (GitLab's
/// `Enums::Ci::Pipeline.persistable_failure_reasons` leave out `filtered_by_rules` and
/// `filtered_by_workflow_rules`).
fn persistable(error: &str) -> bool {
    !error.starts_with("Pipeline filtered out by workflow rules")
        && !error.starts_with("Pipeline will not run for the selected trigger")
}

/// The variables `rules:if` sees at creation: the predefined ones that do not depend on
/// the job, and the pipeline's own (which win over the file's).
fn rule_scope(
    project: &Project,
    req: &NewPipelineRequest,
    protected: bool,
    ci_variables: Vec<(String, String)>,
) -> RuleScope {
    let branch_or_tag = if req.tag {
        "CI_COMMIT_TAG"
    } else {
        "CI_COMMIT_BRANCH"
    };
    let predefined = [
        ("CI", "true".to_string()),
        ("GITLAB_CI", "true".to_string()),
        ("CI_PIPELINE_SOURCE", req.source.clone()),
        ("CI_COMMIT_REF_NAME", req.ref_.clone()),
        (
            "CI_COMMIT_REF_SLUG",
            crate::api::runner::payload::slug(&req.ref_),
        ),
        ("CI_COMMIT_SHORT_SHA", req.sha.chars().take(8).collect()),
        (
            "CI_PROJECT_PATH_SLUG",
            crate::api::runner::payload::slug(&project.path_with_namespace()),
        ),
        (branch_or_tag, req.ref_.clone()),
        ("CI_COMMIT_SHA", req.sha.clone()),
        ("CI_DEFAULT_BRANCH", project.default_branch.clone()),
        ("CI_PROJECT_NAME", project.path.clone()),
        ("CI_PROJECT_PATH", project.path_with_namespace()),
        ("CI_PROJECT_NAMESPACE", project.namespace_path.clone()),
        ("CI_COMMIT_REF_PROTECTED", protected.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    // CI/CD variables, then the pipeline's over them.
    let user = ci_variables
        .into_iter()
        .chain(
            req.variables
                .iter()
                .map(|v| (v.key.clone(), v.value.clone())),
        )
        .collect();
    RuleScope {
        predefined,
        user,
        inputs: req.inputs.clone(),
    }
}

/// `include:project`: the files of the Runway project at `path` (`namespace/project`) at
/// `ref_` — a branch, a tag or a sha; its default branch when none is given — or
/// GitLab's words (`External::File::Project`) for a project or a ref that is not there.
/// Every project is readable: the pipelines are created by the admin.
async fn included_project(
    db: &DbPool,
    repositories: &crate::service::repos::Repositories,
    path: &str,
    ref_: Option<&str>,
) -> Result<Box<dyn crate::ci::include::FileSource>, String> {
    let not_found = || {
        format!(
            "Project `{path}` not found or access denied! Make sure any includes in the \
             pipeline configuration are correctly defined."
        )
    };
    let project = {
        let mut db = db
            .read()
            .await
            .map_err(|_| "The project could not be read".to_string())?;
        Project::find_by_full_path(&mut db.conn(), path)
            .await
            .map_err(|_| "The project could not be read".to_string())?
            .ok_or_else(not_found)?
    };
    let ref_ = ref_.unwrap_or(&project.default_branch);
    let missing = || format!("Project `{path}` reference `{ref_}` does not exist!");
    let by_name = repositories.commit(&project, ref_, None).await;
    let commit = match by_name {
        Ok(commit) => commit,
        // Not a branch or a tag: maybe a commit's sha.
        Err(_) if ref_.len() >= 7 && ref_.bytes().all(|b| b.is_ascii_hexdigit()) => repositories
            .commit(&project, ref_, Some(ref_))
            .await
            .map_err(|_| missing())?,
        Err(_) => return Err(missing()),
    };
    let (_, _, files) = commit.ok_or_else(missing)?;
    Ok(Box::new(files))
}

/// The largest configuration [`Pipelines::plan`] may plan on the worker that received it:
/// the costliest shapes tried at this size (as many jobs as fit, or as many `extends` of
/// one hidden job) planned in about 0.3 ms, against 11 ms at 4 KiB, too long to hold up
/// the other requests of a worker.
const PLAN_INLINE_MAX: usize = 512;

/// Whether a configuration is planned on the async worker: small, and nothing in it can
/// make the loader's work outgrow the text. Aliases (`*`, with their anchors `&`) and
/// tags (`!reference`) can repeat what they name, `parallel` multiplies a job, and
/// escapes (`\`) can spell `parallel`. Anything else is loaded and planned in time about
/// linear in the text; the rest goes to the blocking pool, where a configuration of the
/// loader's largest (2 MiB, 2,000,000 values) holds up no request. Includes need no
/// check: without a commit, a local one is missing at once, and a remote one or another
/// project's sends the configuration to the blocking pool ([`Outside`]).
fn plans_inline(yaml: &str) -> bool {
    yaml.len() <= PLAN_INLINE_MAX
        && !yaml.contains(['*', '&', '!', '\\'])
        && !yaml.contains("parallel")
}

/// The files outside the pipeline's project, when planning inline: asking for one is
/// noted and refused, and the configuration is planned again on the blocking pool, where
/// they are read.
struct Outside<'a>(&'a std::cell::Cell<bool>);

impl crate::ci::include::FileSource for Outside<'_> {
    fn read(&self, _: &str) -> Result<Option<String>, String> {
        Ok(None)
    }
    fn paths(&self) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
    fn remote(&self, _: &str) -> Result<String, String> {
        self.0.set(true);
        Err("planned on the blocking pool".into())
    }
    fn project(
        &self,
        _: &str,
        _: Option<&str>,
    ) -> Result<Box<dyn crate::ci::include::FileSource>, String> {
        self.0.set(true);
        Err("planned on the blocking pool".into())
    }
}

/// Whether `ref_` is protected in `project`: its default branch, or a listed branch.
pub fn ref_protected(project: &Project, ref_: &str) -> bool {
    let listed: Vec<String> = serde_json::from_str(&project.protected_branches).unwrap_or_default();
    ref_ == project.default_branch || listed.iter().any(|b| b == ref_)
}

impl Pipelines {
    pub fn new(
        db: DbPool,
        queue: Arc<Queue>,
        max_jobs: Option<usize>,
        remote: crate::service::remote::RemoteIncludes,
        repositories: crate::service::repos::Repositories,
        secrets: crate::secrets::SecretBox,
        artifacts: Arc<super::artifacts::Artifacts>,
    ) -> Pipelines {
        Pipelines {
            db,
            queue,
            max_jobs,
            remote,
            repositories,
            secrets,
            artifacts,
        }
    }

    /// The CI/CD variables `rules:if` sees when a pipeline is created: the instance's,
    /// then the project's (of scope `*`: no environment is known yet), protected ones on a
    /// protected ref only — GitLab's `Gitlab::Ci::Variables::Builder#config_variables`.
    async fn ci_variables_for_rules(
        &self,
        project: &Project,
        protected: bool,
    ) -> ApiResult<Vec<(String, String)>> {
        // Read as the polls read them, kept a short while (`Queue::ci_variables`).
        let rows = self.queue.ci_variables(&self.db, project.id).await?;
        let mut rows: Vec<&crate::db::models::CiVariable> = rows
            .iter()
            .filter(|v| v.environment_scope == "*" && (!v.protected || protected))
            .collect();
        rows.sort_by_key(|v| v.project_id.is_some());
        Ok(rows
            .into_iter()
            .filter_map(|v| Some((v.key.clone(), self.secrets.open(&v.value).ok()?)))
            .collect())
    }

    /// Plans `yaml` on the blocking pool: the commit's files (or none) and remote
    /// includes fetched with the server's runtime; with `merged`, the merged configuration
    /// too (CI Lint's `merged_yaml`). A small configuration that cannot grow while it is
    /// loaded ([`plans_inline`]) and has no commit's files is planned right here instead,
    /// sparing two thread hand-overs; it is planned again on the blocking pool if it asks
    /// for another project's or a remote file after all.
    async fn plan(
        &self,
        yaml: String,
        scope: RuleScope,
        files: Option<crate::service::repos::RepoFiles>,
        merged: bool,
    ) -> ApiResult<(
        Result<config::PipelinePlan, config::ConfigError>,
        Option<String>,
    )> {
        let max_jobs = self.max_jobs;
        if files.is_none() && !merged && plans_inline(&yaml) {
            let asked = std::cell::Cell::new(false);
            let outside = Outside(&asked);
            let sources = crate::ci::include::Within {
                files: &crate::ci::include::NoFiles,
                outer: &outside,
            };
            let planned = config::plan_with(&yaml, &scope, max_jobs, &sources);
            if !asked.get() {
                return Ok((planned, None));
            }
        }
        let remote = self.remote.clone();
        let (db, repositories) = (self.db.clone(), self.repositories.clone());
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let fetch = |url: &str| remote.fetch(&runtime, url);
            let projects = |path: &str, ref_: Option<&str>| {
                runtime.block_on(included_project(&db, &repositories, path, ref_))
            };
            let commit: &dyn crate::ci::include::FileSource = match &files {
                Some(files) => files,
                None => &crate::ci::include::NoFiles,
            };
            let fetchers = crate::ci::include::Fetchers {
                fetch: &fetch,
                projects: &projects,
            };
            let sources = crate::ci::include::Within {
                files: commit,
                outer: &fetchers,
            };
            let merged_yaml = merged
                .then(|| crate::ci::load::expand(&yaml, &scope, &sources).ok())
                .flatten()
                .map(|m| serde_yaml_ng::to_string(&m).unwrap_or_default());
            (
                config::plan_with(&yaml, &scope, max_jobs, &sources),
                merged_yaml,
            )
        })
        .await
        .map_err(|e| ApiError::Internal(e.into()))
    }

    /// Plans the configuration and creates the pipeline with its jobs; 400 with GitLab's
    /// `{"message":{"base":[…]}}` when the configuration is refused (nothing is created).
    pub async fn create(&self, project: &Project, req: NewPipelineRequest) -> ApiResult<Pipeline> {
        let protected = ref_protected(project, &req.ref_);
        // Parsing and planning are CPU work bounded by the loader's limits: off the async
        // workers, so that a large file does not hold up other requests.
        let ci_variables = self.ci_variables_for_rules(project, protected).await?;
        let scope = rule_scope(project, &req, protected, ci_variables);
        let yaml = req.ci_config.clone();
        // `Gitlab::Ci::Pipeline::Quota::Size` is checked while planning, before any row.
        let plan = match self.plan(yaml, scope, req.files.clone(), false).await?.0 {
            Ok(plan) => plan,
            Err(e) if req.save_on_errors && persistable(&e.0) => {
                return self.create_failed(project, &req, protected, &e.0).await;
            }
            Err(e) => return Err(ApiError::Validation(json!({ "base": [e.0] }))),
        };
        for v in &req.variables {
            if v.key.is_empty()
                || v.key.len() > 255
                || !v.key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(ApiError::Validation(
                    json!({ "base": [format!("Variable key {:?} is invalid", v.key)] }),
                ));
            }
        }
        // A hot write when pipelines come fast (a push, a trigger, a schedule): on SQLite
        // its statements run inline on the writer thread instead of each hopping to the
        // blocking pool and back, which is most of the time from a push to the job's pickup.
        let creation = Creation {
            project_id: project.id,
            build_timeout: project.build_timeout,
            protected,
            req,
            plan,
        };
        let pipelined = self.db.backend() == Backend::Postgres && rows_only(&creation.plan);
        let (pipeline, processed) = if pipelined {
            self.db
                .on_postgres(move |conn| Box::pin(create_pipelined(conn, creation)))
                .await?
        } else {
            self.db
                .write_transaction(move |tx| Box::pin(create_in(tx, creation)))
                .await?
        };
        // GitLab's persistent ref, written once the pipeline's id is known and before the
        // queue is woken (a runner that takes a job meanwhile fetches only after preparing
        // its executor; git takes milliseconds).
        if pipeline.has_sources {
            if let Err(e) = self
                .repositories
                .keep_pipeline_ref(project, pipeline.id, &pipeline.sha)
                .await
            {
                tracing::warn!(pipeline_id = pipeline.id, error = %e, "keeping refs/pipelines failed");
            }
        }
        self.queue.created(&pipeline);
        self.settle(processed).await;
        // After the new pipeline is there, as GitLab's worker does it: a failure here
        // leaves the older pipelines running, never the new one uncreated. A child pipeline
        // cancels nothing (its parent is older on the same ref).
        if pipeline.parent_bridge_id.is_some() {
            return Ok(pipeline);
        }
        if let Err(e) = self.cancel_redundant(&pipeline).await {
            tracing::warn!(pipeline_id = pipeline.id, error = %e, "canceling redundant pipelines failed");
        }
        Ok(pipeline)
    }

    /// A pipeline whose configuration was refused, recorded failed without jobs, with the
    /// errors as its `yaml_errors` (GitLab's `Chain::Helpers#drop_pipeline!` when the
    /// command saves incomplete pipelines).
    async fn create_failed(
        &self,
        project: &Project,
        req: &NewPipelineRequest,
        protected: bool,
        errors: &str,
    ) -> ApiResult<Pipeline> {
        let at = now();
        let new = NewPipeline {
            status: PipelineStatus::Failed,
            finished_at: Some(at),
            yaml_errors: Some(errors),
            ..req.row(project.id, protected, at)
        };
        let mut db = self.db.write().await?;
        Ok(Pipeline::create(&mut db.conn(), new).await?)
    }

    /// `Ci::PipelineCreation::CancelRedundantPipelinesService`: the project's older
    /// pipelines on the new one's ref — still waiting or running, created within the last
    /// 7 days, at another commit — are canceled as each one's own
    /// `workflow:auto_cancel:on_new_commit` says: `conservative` cancels the whole
    /// pipeline unless a job that is not `interruptible` has started, `interruptible`
    /// cancels only its interruptible jobs, `none` nothing. Manual jobs stay (GitLab's
    /// cancelable statuses leave them out).
    async fn cancel_redundant(&self, new: &Pipeline) -> ApiResult<()> {
        let candidates = {
            let mut db = self.db.read().await?;
            Pipeline::redundant_on_ref(
                &mut db.conn(),
                new.project_id,
                &new.ref_,
                &new.sha,
                new.id,
                new.created_at - chrono::Duration::days(7),
            )
            .await?
        };
        // Checked again in the transaction: a job may have started meanwhile.
        for old in candidates {
            let mode = old.auto_cancel_on_new_commit.clone();
            self.in_pipeline(old.id, move |tx, jobs| {
                let mode = mode.clone();
                Box::pin(async move {
                    let current: Vec<&Job> = jobs.iter().filter(|j| !j.retried).collect();
                    let started = |j: &&Job| Job::STARTED.contains(&j.status);
                    if mode != "interruptible"
                        && current
                            .iter()
                            .any(|j| started(j) && !j.spec().interruptible)
                    {
                        return Ok(());
                    }
                    for job in current {
                        let cancelable = !matches!(job.status, JobStatus::Manual);
                        if cancelable && (mode != "interruptible" || job.spec().interruptible) {
                            cancel_one(tx, job).await?;
                        }
                    }
                    Ok(())
                })
            })
            .await?;
        }
        Ok(())
    }

    /// CI Lint: what creating `req`'s pipeline would make of its configuration, without
    /// creating anything — the merged configuration and the jobs, or the errors.
    pub async fn lint(&self, project: &Project, req: NewPipelineRequest) -> ApiResult<Lint> {
        let protected = ref_protected(project, &req.ref_);
        let ci_variables = self.ci_variables_for_rules(project, protected).await?;
        let scope = rule_scope(project, &req, protected, ci_variables);
        let (plan, merged) = self.plan(req.ci_config, scope, req.files, true).await?;
        Ok(match plan {
            Ok(plan) => Lint {
                errors: Vec::new(),
                merged_yaml: merged,
                jobs: plan.jobs,
            },
            Err(e) => Lint {
                errors: vec![e.0],
                merged_yaml: None,
                jobs: Vec::new(),
            },
        })
    }

    /// Applies a runner's final `success`/`failed` to a running or canceling job: from
    /// `canceling` both end in `canceled`; a failure may be retried (`retry:`) or allowed
    /// (`allow_failure:exit_codes`). Answers the job as it is afterwards.
    /// `seen` is the job as the request read it (its guard): the end applies to it if it
    /// has not changed since, without reading it again.
    pub async fn finish(&self, seen: Job, outcome: JobOutcome) -> ApiResult<Job> {
        // Two ends in one pipeline at once may deadlock on PostgreSQL, which aborts one
        // of them: a job failing cancels the rest of its pipeline (`on_job_failure: all`)
        // and so waits for the rows of jobs ending meanwhile, each of which holds its own
        // and may wait for the other's, or for the pipeline's, which processing takes.
        // The one aborted is run again, on the rows as the other left them.
        let (job, processed) = retry_deadlocked(|| {
            let (seen, outcome) = (seen.clone(), outcome.clone());
            // A hot write, as a claim is: on SQLite its statements run inline on the
            // writer thread, committed with the others queued meanwhile.
            self.db
                .write_transaction(move |tx| Box::pin(finish_in(tx, seen, outcome)))
        })
        .await?;
        self.settle(processed).await;
        Ok(job)
    }

    /// Two-phase commit: the runner's first `running` update acknowledges the job, which
    /// starts running now. Answers the job afterwards (unchanged if it was not awaiting).
    pub async fn acknowledge(&self, job_id: i64) -> ApiResult<Job> {
        self.in_pipeline_of_job(job_id, |tx, job| {
            Box::pin(async move {
                let at = now();
                let changes = JobChanges {
                    status: Some(JobStatus::Running),
                    started_at: Some(Some(at)),
                    ack_deadline: Some(None),
                    updated_at: Some(at),
                    ..Default::default()
                };
                if job.ack_deadline.is_some() {
                    Job::transition(tx, job.id, &[JobStatus::Pending], &changes).await?;
                }
                Ok(job.id)
            })
        })
        .await
    }

    /// Fails a running job for a server-side reason (e.g. `trace_size_exceeded`).
    pub async fn fail_job(&self, job_id: i64, reason: &'static str) -> ApiResult<Job> {
        self.in_pipeline_of_job(job_id, |tx, job| {
            Box::pin(async move {
                let at = now();
                let changes = JobChanges {
                    status: Some(JobStatus::Failed),
                    failure_reason: Some(Some(reason.to_string())),
                    finished_at: Some(Some(at)),
                    updated_at: Some(at),
                    ..Default::default()
                };
                let failed = Job::transition(
                    tx,
                    job.id,
                    &[JobStatus::Running, JobStatus::Canceling],
                    &changes,
                )
                .await?;
                if failed && !job.allow_failure {
                    cancel_on_job_failure(tx, job.pipeline_id).await?;
                }
                Ok(job.id)
            })
        })
        .await
    }

    /// Cancels one job: waiting jobs at once; a running one through `canceling` when its
    /// runner cancels gracefully, else at once; a second cancel forces `canceled`.
    pub async fn cancel_job(&self, job_id: i64) -> ApiResult<Job> {
        self.in_pipeline_of_job(job_id, |tx, job| {
            Box::pin(async move {
                cancel_one(tx, &job).await?;
                Ok(job.id)
            })
        })
        .await
    }

    /// Cancels every unfinished job of the pipeline.
    pub async fn cancel_pipeline(&self, pipeline_id: i64) -> ApiResult<Pipeline> {
        let canceled = self
            .in_pipeline(pipeline_id, |tx, jobs| {
                Box::pin(async move {
                    for job in jobs.iter().filter(|j| !j.retried) {
                        cancel_one(tx, job).await?;
                    }
                    Ok(())
                })
            })
            .await?;
        // Its child pipelines go with it (`Ci::CancelPipelineService` cancels the
        // pipeline's descendants).
        let children = {
            let mut db = self.db.read().await?;
            Pipeline::children_of(&mut db.conn(), pipeline_id).await?
        };
        for child in children.iter().filter(|c| c.source == "parent_pipeline") {
            Box::pin(self.cancel_pipeline(child.id)).await?;
        }
        Ok(canceled)
    }

    /// GitLab deletes a pipeline's persistent ref once the pipeline has finished
    /// (`Ci::Pipelines::ClearPersistentRefService`, batched in the background); Runway does
    /// it on the reaper's passes: in the repositories of the projects where a pipeline
    /// finished at `since` or later (every project's: `None`), the `refs/pipelines/<id>` of
    /// finished pipelines go. A ref whose pipeline is not (yet) in the database stays.
    /// Answers how many refs went.
    pub async fn prune_refs(&self, since: Option<chrono::NaiveDateTime>) -> ApiResult<usize> {
        let projects: Vec<i64> = {
            let mut db = self.db.read().await?;
            match since {
                Some(since) => Pipeline::projects_finished_since(&mut db.conn(), since).await?,
                None => Project::all(&mut db.conn())
                    .await?
                    .into_iter()
                    .map(|p| p.id)
                    .collect(),
            }
        };
        let mut pruned = 0;
        for project_id in projects {
            let _held = self.repositories.lock_pipeline_refs(project_id).await?;
            let refs = self.repositories.pipeline_refs(project_id).await?;
            if refs.is_empty() {
                continue;
            }
            let finished = {
                let mut db = self.db.read().await?;
                Pipeline::finished_among(&mut db.conn(), &refs).await?
            };
            self.repositories
                .delete_pipeline_refs(project_id, &finished)
                .await?;
            pruned += finished.len();
        }
        Ok(pruned)
    }

    /// Runs `change`, which may start jobs of a finished pipeline again, after writing the
    /// pipeline's `refs/pipelines/<id>` back (GitLab's `ensure_persistent_ref` when a
    /// pipeline is processed again), under the lock [`Self::prune_refs`] takes: a runner
    /// that takes the job finds its commit.
    async fn with_pipeline_ref<T>(
        &self,
        pipeline_id: i64,
        change: impl std::future::Future<Output = ApiResult<T>>,
    ) -> ApiResult<T> {
        let found = {
            let mut db = self.db.read().await?;
            match Pipeline::find(&mut db.conn(), pipeline_id).await? {
                Some(p) if p.has_sources => Project::find(&mut db.conn(), p.project_id)
                    .await?
                    .map(|project| (p, project)),
                _ => None,
            }
        };
        let Some((pipeline, project)) = found else {
            return change.await;
        };
        let _held = self.repositories.lock_pipeline_refs(project.id).await?;
        if let Err(e) = self
            .repositories
            .keep_pipeline_ref(&project, pipeline.id, &pipeline.sha)
            .await
        {
            tracing::warn!(pipeline_id, error = %e, "writing refs/pipelines back failed");
        }
        change.await
    }

    /// The pipeline of a job; 404 without the job.
    async fn pipeline_of_job(&self, job_id: i64) -> ApiResult<i64> {
        let mut db = self.db.read().await?;
        Job::find(&mut db.conn(), job_id)
            .await?
            .map(|j| j.pipeline_id)
            .ok_or_else(|| ApiError::not_found("Job"))
    }

    /// Retries a finished job: a new try is created (the old one is kept as retried), and
    /// later jobs skipped because of it are reset to run again.
    pub async fn retry_job(&self, job_id: i64) -> ApiResult<Job> {
        let pipeline_id = self.pipeline_of_job(job_id).await?;
        self.with_pipeline_ref(pipeline_id, self.retry_job_now(job_id))
            .await
    }

    async fn retry_job_now(&self, job_id: i64) -> ApiResult<Job> {
        self.in_pipeline_of_job(job_id, |tx, job| {
            Box::pin(async move {
                if !job.status.is_complete() {
                    return Err(ApiError::forbidden("Job is not retryable"));
                }
                let new = retry_one(tx, &job).await?;
                reset_skipped_after(tx, &job).await?;
                Ok(new.id)
            })
        })
        .await
    }

    /// Retries every failed or canceled job of the pipeline and resets skipped ones.
    pub async fn retry_pipeline(&self, pipeline_id: i64) -> ApiResult<Pipeline> {
        self.with_pipeline_ref(pipeline_id, self.retry_pipeline_now(pipeline_id))
            .await
    }

    async fn retry_pipeline_now(&self, pipeline_id: i64) -> ApiResult<Pipeline> {
        self.in_pipeline(pipeline_id, |tx, jobs| {
            Box::pin(async move {
                let mut any = false;
                for job in jobs.iter().filter(|j| !j.retried) {
                    match job.status {
                        JobStatus::Failed | JobStatus::Canceled => {
                            retry_one(tx, job).await?;
                            any = true;
                        }
                        JobStatus::Skipped => {
                            let changes = JobChanges {
                                status: Some(JobStatus::Created),
                                finished_at: Some(None),
                                updated_at: Some(now()),
                                ..Default::default()
                            };
                            Job::transition(tx, job.id, &[JobStatus::Skipped], &changes).await?;
                            any = true;
                        }
                        _ => {}
                    }
                }
                if !any {
                    return Err(ApiError::forbidden("Pipeline is not retryable"));
                }
                Ok(())
            })
        })
        .await
    }

    /// Starts a `manual` job.
    pub async fn play_job(&self, job_id: i64) -> ApiResult<Job> {
        let pipeline_id = self.pipeline_of_job(job_id).await?;
        self.with_pipeline_ref(pipeline_id, self.play_job_now(job_id))
            .await
    }

    async fn play_job_now(&self, job_id: i64) -> ApiResult<Job> {
        self.in_pipeline_of_job(job_id, |tx, job| {
            Box::pin(async move {
                // `Ci::Build#playable?`: a manual job, or a delayed one started now (a
                // manual bridge runs on Runway: its pipeline is made after the commit).
                let status = turn_status(job.resource_group_id, &job.spec());
                let changes = JobChanges {
                    status: Some(status),
                    queued_at: Some((status == JobStatus::Pending).then(now)),
                    started_at: (status == JobStatus::Running).then(|| Some(now())),
                    scheduled_at: Some(None),
                    updated_at: Some(now()),
                    ..Default::default()
                };
                let playable = [JobStatus::Manual, JobStatus::Scheduled];
                if !Job::transition(tx, job.id, &playable, &changes).await? {
                    // GitLab: `bad_request!("Unplayable Job")`.
                    return Err(ApiError::bad_request("Unplayable Job"));
                }
                Ok(job.id)
            })
        })
        .await
    }

    /// Stops an environment (`POST /environments/:id/stop`, or its `auto_stop_at`): plays
    /// the `on_stop` job of its last successful deployment and leaves it `stopping` until
    /// that job succeeds; without such a job, or `force`d, it is stopped at once.
    pub async fn stop_environment(
        &self,
        project_id: i64,
        environment_id: i64,
        force: bool,
    ) -> ApiResult<crate::db::models::environment::Environment> {
        use crate::db::models::environment::Environment;
        let action = {
            let mut db = self.db.read().await?;
            let environment = Environment::find(&mut db.conn(), project_id, environment_id)
                .await?
                .ok_or_else(|| ApiError::not_found("Environment"))?;
            if force {
                None
            } else {
                super::deployments::stop_action(&mut db.conn(), &environment).await?
            }
        };
        let at = now();
        match action {
            Some(job) => {
                // The environment moves first, so that of two stops (two instances' timers,
                // a person and a timer) one plays the job.
                let moved = {
                    let mut db = self.db.write().await?;
                    Environment::transition(
                        &mut db.conn(),
                        environment_id,
                        &["available"],
                        "stopping",
                        at,
                    )
                    .await?
                };
                if moved {
                    self.play_job(job.id).await?;
                }
            }
            None => {
                let mut db = self.db.write().await?;
                Environment::transition(
                    &mut db.conn(),
                    environment_id,
                    &["available", "stopping"],
                    "stopped",
                    at,
                )
                .await?;
            }
        }
        let mut db = self.db.read().await?;
        Environment::find(&mut db.conn(), project_id, environment_id)
            .await?
            .ok_or_else(|| ApiError::not_found("Environment"))
    }

    /// Stops the environments whose `auto_stop_in` has passed; answers how many.
    pub async fn stop_expired_environments(&self) -> ApiResult<usize> {
        let due = {
            let mut db = self.db.read().await?;
            crate::db::models::environment::Environment::auto_stop_due(&mut db.conn(), now())
                .await?
        };
        for environment in &due {
            if let Err(e) = self
                .stop_environment(environment.project_id, environment.id, false)
                .await
            {
                tracing::warn!(environment_id = environment.id, error = %e, "an environment's auto-stop failed");
            }
        }
        Ok(due.len())
    }

    /// Queues the delayed jobs whose time has come (`Ci::Build#enqueue_scheduled`), each
    /// in its own transaction; the status moves from `scheduled` in the statement, so of
    /// several instances one queues each. Answers how many it queued.
    pub async fn enqueue_scheduled(&self) -> ApiResult<usize> {
        let due = {
            let mut db = self.db.read().await?;
            Job::scheduled_due(&mut db.conn(), now()).await?
        };
        let mut queued = 0;
        for job in due {
            let at = now();
            let status = super::resource_groups::enqueued(job.resource_group_id);
            let changes = JobChanges {
                status: Some(status),
                queued_at: Some((status == JobStatus::Pending).then_some(at)),
                scheduled_at: Some(None),
                updated_at: Some(at),
                ..Default::default()
            };
            let mut db = self.db.write().await?;
            let processed = transaction!(&mut db.conn(), |tx| {
                if !Job::transition(tx, job.id, &[JobStatus::Scheduled], &changes).await? {
                    return Ok::<Option<Processed>, ApiError>(None);
                }
                Ok(Some(process(tx, job.pipeline_id).await?))
            })?;
            drop(db);
            if let Some(mut processed) = processed {
                processed.became_pending |= status == JobStatus::Pending;
                self.settle(processed).await;
                queued += 1;
            }
        }
        Ok(queued)
    }

    /// Fails what nothing will finish: running jobs past their timeout (plus a grace for the
    /// runner's own report) with `job_execution_server_timeout`, and jobs whose runner sent
    /// nothing for `stuck_after` with `stuck_or_timeout_failure` (canceling ones end
    /// canceled). Answers how many jobs it ended.
    pub async fn reap(&self, stuck_after: std::time::Duration) -> ApiResult<usize> {
        const GRACE: chrono::TimeDelta = chrono::TimeDelta::minutes(5);
        let stuck_after =
            chrono::TimeDelta::from_std(stuck_after).unwrap_or(chrono::TimeDelta::hours(1));
        let executing = {
            let mut db = self.db.read().await?;
            Job::executing(&mut db.conn()).await?
        };
        let at = now();
        let mut ended = 0;
        // Two-phase commit: jobs not acknowledged in time go back to the queue.
        let unacknowledged = {
            let mut db = self.db.read().await?;
            Job::unacknowledged(&mut db.conn(), at).await?
        };
        for job in unacknowledged {
            let changes = JobChanges {
                runner_id: Some(None),
                runner_manager_id: Some(None),
                token_digest: Some(None),
                ack_deadline: Some(None),
                queued_at: Some(Some(at)),
                updated_at: Some(at),
                ..Default::default()
            };
            let mut db = self.db.write().await?;
            if Job::transition(&mut db.conn(), job.id, &[JobStatus::Pending], &changes).await? {
                tracing::warn!(
                    job_id = job.id,
                    "job not acknowledged in time: queued again"
                );
                ended += 1;
            }
        }
        // Why a job ends now, from when it started, its timeout and its last contact.
        let reason = |started_at: Option<chrono::NaiveDateTime>,
                      timeout: Option<i32>,
                      updated_at: chrono::NaiveDateTime| {
            let timed_out = started_at.is_some_and(|s| {
                s + chrono::TimeDelta::seconds(i64::from(timeout.unwrap_or(3600))) + GRACE < at
            });
            let silent = updated_at + stuck_after < at;
            match (timed_out, silent) {
                (true, _) => Some("job_execution_server_timeout"),
                (false, true) => Some("stuck_or_timeout_failure"),
                _ => None,
            }
        };
        for running in executing {
            if reason(running.started_at, running.timeout, running.updated_at).is_none() {
                continue;
            }
            // Read whole only now: few jobs end on a pass, and the others are many. A job
            // its runner reached meanwhile, or that moved on, stays.
            let job = {
                let mut db = self.db.read().await?;
                Job::find(&mut db.conn(), running.id).await?
            };
            let Some(job) = job.filter(|j| j.status == running.status) else {
                continue;
            };
            let Some(reason) = reason(job.started_at, job.timeout, job.updated_at) else {
                continue;
            };
            // A bridge runs on Runway, without a runner to hear from: its child decides.
            if job.runner_id.is_none() && job.spec().trigger.is_some() {
                continue;
            }
            let status = if job.status == JobStatus::Canceling {
                JobStatus::Canceled
            } else {
                JobStatus::Failed
            };
            let changes = JobChanges {
                status: Some(status),
                failure_reason: Some((status == JobStatus::Failed).then(|| reason.to_string())),
                finished_at: Some(Some(at)),
                updated_at: Some(at),
                ..Default::default()
            };
            let processed = self
                .change_and_process(&job, &[job.status], &changes)
                .await?;
            if let Some(processed) = processed {
                self.settle(processed).await;
                tracing::warn!(job_id = job.id, reason, "job ended by the server");
                ended += 1;
            }
        }
        if ended > 0 {
            self.queue.bump();
        }
        Ok(ended)
    }

    /// After a change committed: assigns the resources it may have freed or queued jobs
    /// for, and wakes held polls when a job became pending.
    fn settle(&self, processed: Processed) -> futures_util::future::BoxFuture<'_, ()> {
        Box::pin(async move {
            // Jobs of other pipelines: a resource group's waiting jobs, assigned.
            let mut elsewhere = false;
            if !processed.resource_groups.is_empty() {
                match super::resource_groups::assign(&self.db, &processed.resource_groups).await {
                    Ok(assigned) => elsewhere = assigned,
                    // The per-second pass assigns it instead.
                    Err(e) => tracing::warn!(error = %e, "assigning a resource group failed"),
                }
            }
            match (processed.became_pending, processed.first_job, elsewhere) {
                (true, Some(first), false) => self.queue.bump_from(first, processed.pending),
                (false, _, false) => {}
                _ => self.queue.bump(),
            }
            for bridge in processed.bridges {
                if let Err(e) = self.trigger_downstream(bridge).await {
                    tracing::warn!(bridge_id = bridge, error = %e, "triggering a child pipeline failed");
                }
            }
            if let Some((bridge, status)) = processed.finished_child {
                if let Err(e) = self.follow_child(bridge, status).await {
                    tracing::warn!(bridge_id = bridge, error = %e, "a bridge did not follow its child pipeline");
                }
            }
        })
    }

    /// Makes a running bridge's child pipeline, once (`Ci::CreateDownstreamPipelineService`):
    /// on the parent's ref and commit, source `parent_pipeline`, its configuration the
    /// trigger's `include`, the bridge's variables (and the parent's, if forwarded) as its
    /// pipeline variables. Without `strategy: depend` the bridge succeeds once the child is
    /// there; a child that cannot be made fails it (`downstream_pipeline_creation_failed`),
    /// as does a third level of children (`reached_max_descendant_pipelines_depth`).
    async fn trigger_downstream(&self, bridge_id: i64) -> ApiResult<()> {
        let (bridge, pipeline, project, existing) = {
            let mut db = self.db.read().await?;
            let mut conn = db.conn();
            let Some(bridge) = Job::find(&mut conn, bridge_id).await? else {
                return Ok(());
            };
            let pipeline = Pipeline::find(&mut conn, bridge.pipeline_id)
                .await?
                .ok_or(ApiError::Conflict)?;
            let project = Project::find(&mut conn, bridge.project_id)
                .await?
                .ok_or(ApiError::Conflict)?;
            let existing = Pipeline::child_of(&mut conn, bridge.id).await?;
            (bridge, pipeline, project, existing)
        };
        let spec = bridge.spec();
        let Some(trigger) = spec.trigger.clone() else {
            return Ok(());
        };
        if bridge.status != JobStatus::Running {
            return Ok(());
        }
        if existing.is_some() {
            if trigger.strategy.is_none() {
                self.end_bridge(&bridge, JobStatus::Success, None).await?;
            }
            return Ok(());
        }
        let chain = self.upstream(&pipeline).await?;
        // `MAX_NESTED_CHILDREN = 2`: a parent, a child and a grandchild at most.
        let children_above = chain
            .iter()
            .take_while(|p| p.source == "parent_pipeline")
            .count();
        if trigger.project.is_none() && children_above >= 2 {
            let reason = "reached_max_descendant_pipelines_depth";
            return self
                .end_bridge(&bridge, JobStatus::Failed, Some(reason))
                .await;
        }
        // The bridge's variables as it sees them (`Downstream::Generator` expands what it
        // forwards so), so that the common `PARENT_PIPELINE_ID: $CI_PIPELINE_ID` carries
        // the parent's id.
        let seen = {
            let mut seen: std::collections::HashMap<String, String> = [
                ("CI_PIPELINE_ID", pipeline.id.to_string()),
                ("CI_PIPELINE_IID", pipeline.id.to_string()),
                ("CI_PIPELINE_SOURCE", pipeline.source.clone()),
                ("CI_JOB_ID", bridge.id.to_string()),
                ("CI_JOB_NAME", bridge.name.clone()),
                ("CI_COMMIT_SHA", pipeline.sha.clone()),
                ("CI_COMMIT_REF_NAME", pipeline.ref_.clone()),
                (
                    "CI_COMMIT_REF_SLUG",
                    crate::api::runner::payload::slug(&pipeline.ref_),
                ),
                ("CI_PROJECT_ID", project.id.to_string()),
                ("CI_PROJECT_PATH", project.path_with_namespace()),
                ("CI_DEFAULT_BRANCH", project.default_branch.clone()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            for v in &spec.variables {
                seen.insert(v.key.clone(), v.value.clone());
            }
            crate::ci::environment::expand_all(&seen)
        };
        let mut variables: Vec<PipelineVariable> = Vec::new();
        let mut add = |key: String, value: String| {
            variables.retain(|v| v.key != key);
            variables.push(PipelineVariable { key, value });
        };
        if trigger.forward_yaml_variables {
            for v in &spec.variables {
                let value = seen.get(&v.key).cloned().unwrap_or_else(|| v.value.clone());
                add(v.key.clone(), value);
            }
        }
        if trigger.forward_pipeline_variables {
            for v in pipeline_variables(&pipeline) {
                add(v.key, v.value);
            }
        }
        if let Some(path) = &trigger.project {
            let path = crate::ci::environment::expand_existing(path, &seen);
            let branch = trigger
                .branch
                .as_ref()
                .map(|b| crate::ci::environment::expand_existing(b, &seen));
            return self
                .trigger_project(&bridge, &project, &chain, &path, branch, variables)
                .await;
        }
        let files = if pipeline.has_sources {
            self.repositories
                .commit(&project, &pipeline.ref_, Some(&pipeline.sha))
                .await
                .ok()
                .flatten()
                .map(|(_, _, files)| files)
        } else {
            None
        };
        let ci_config = match &trigger.artifact {
            None => trigger.config.clone(),
            Some(artifact) => match self.artifact_config(&pipeline, artifact).await? {
                Ok(text) => text,
                Err(problem) => {
                    tracing::info!(
                        bridge_id = bridge.id,
                        problem,
                        "the child pipeline's configuration could not be read"
                    );
                    let reason = "downstream_pipeline_creation_failed";
                    return self
                        .end_bridge(&bridge, JobStatus::Failed, Some(reason))
                        .await;
                }
            },
        };
        let req = NewPipelineRequest {
            ref_: pipeline.ref_.clone(),
            sha: pipeline.sha.clone(),
            tag: pipeline.tag,
            variables,
            ci_config,
            source: "parent_pipeline".into(),
            files,
            inputs: None,
            before_sha: pipeline.before_sha.clone(),
            save_on_errors: false,
            schedule_id: None,
            parent_bridge_id: Some(bridge.id),
        };
        let created = Box::pin(self.create(&project, req)).await;
        self.bridge_after_creating(&bridge, trigger.strategy.is_some(), created)
            .await
    }

    /// `trigger:include:artifact` (`External::File::Artifact`): the file `path` of the
    /// archive of the parent pipeline's latest job `job`, a YAML file of at most the
    /// loader's size; `Err` in GitLab's words when there is none.
    async fn artifact_config(
        &self,
        pipeline: &Pipeline,
        artifact: &crate::ci::config::ArtifactInclude,
    ) -> ApiResult<Result<String, String>> {
        let archive = {
            let mut db = self.db.read().await?;
            let job = Job::for_pipeline(&mut db.conn(), pipeline.id)
                .await?
                .into_iter()
                .filter(|j| j.name == artifact.job && !j.retried)
                .max_by_key(|j| j.id);
            match job {
                Some(job) => {
                    crate::db::models::JobArtifact::find(&mut db.conn(), job.id, "archive").await?
                }
                None => None,
            }
        };
        let Some(archive) = archive else {
            return Ok(Err(format!(
                "Job `{}` not found in parent pipeline or does not have artifacts!",
                artifact.job
            )));
        };
        let path = artifact.path.trim_start_matches('/');
        match self.artifacts.pages_entry(&archive, "", path).await? {
            super::artifacts::PagesEntry::File(bytes, _) if bytes.is_empty() => {
                Ok(Err(format!("File `{path}` is empty!")))
            }
            super::artifacts::PagesEntry::File(bytes, _)
                if bytes.len() > crate::ci::load::MAX_YAML_BYTES =>
            {
                Ok(Err(crate::ci::load::TOO_BIG.to_string()))
            }
            super::artifacts::PagesEntry::File(bytes, _) => {
                Ok(Ok(String::from_utf8_lossy(&bytes).into_owned()))
            }
            _ => Ok(Err(format!(
                "Path `{path}` does not exist inside the `{}` artifacts archive!",
                artifact.job
            ))),
        }
    }

    /// `pipeline` and the pipelines above it whose bridges started it, nearest first (at
    /// most 20).
    async fn upstream(&self, pipeline: &Pipeline) -> ApiResult<Vec<Pipeline>> {
        let mut chain = vec![pipeline.clone()];
        let mut db = self.db.read().await?;
        while let Some(id) = chain.last().and_then(|p| p.parent_bridge_id) {
            if chain.len() >= 20 {
                break;
            }
            let parent = match Job::find(&mut db.conn(), id).await? {
                Some(job) => Pipeline::find(&mut db.conn(), job.pipeline_id).await?,
                None => None,
            };
            match parent {
                Some(parent) => chain.push(parent),
                None => break,
            }
        }
        Ok(chain)
    }

    /// A multi-project trigger: a pipeline of the project at `path` on `branch` (its
    /// default branch without one), from its own `.gitlab-ci.yml`, source `pipeline`
    /// (`Ci::CreateDownstreamPipelineService`): a project not there fails the bridge with
    /// `downstream_bridge_project_not_found`, its own project with `invalid_bridge_trigger`,
    /// a project and ref met twice upstream with `pipeline_loop_detected`.
    async fn trigger_project(
        &self,
        bridge: &Job,
        project: &Project,
        chain: &[Pipeline],
        path: &str,
        branch: Option<String>,
        variables: Vec<PipelineVariable>,
    ) -> ApiResult<()> {
        let target = {
            let mut db = self.db.read().await?;
            Project::find_by_full_path(&mut db.conn(), path).await?
        };
        let Some(target) = target else {
            let reason = "downstream_bridge_project_not_found";
            return self
                .end_bridge(bridge, JobStatus::Failed, Some(reason))
                .await;
        };
        if target.id == project.id {
            let reason = "invalid_bridge_trigger";
            return self
                .end_bridge(bridge, JobStatus::Failed, Some(reason))
                .await;
        }
        let ref_ = branch.unwrap_or_else(|| target.default_branch.clone());
        let met = chain
            .iter()
            .filter(|p| p.project_id == target.id && p.ref_ == ref_)
            .count();
        if met >= 2 {
            let reason = "pipeline_loop_detected";
            return self
                .end_bridge(bridge, JobStatus::Failed, Some(reason))
                .await;
        }
        let strategy = bridge.spec().trigger.and_then(|t| t.strategy);
        let created = match self.repositories.read_config(&target, &ref_, None).await {
            Ok(resolved) => {
                let req = NewPipelineRequest {
                    ref_,
                    sha: resolved.sha,
                    tag: resolved.tag,
                    variables,
                    ci_config: resolved.ci_config,
                    source: "pipeline".into(),
                    files: Some(resolved.files),
                    inputs: None,
                    before_sha: ZERO_SHA.into(),
                    save_on_errors: false,
                    schedule_id: None,
                    parent_bridge_id: Some(bridge.id),
                };
                Box::pin(self.create(&target, req)).await
            }
            Err(e) => Err(e),
        };
        self.bridge_after_creating(bridge, strategy.is_some(), created)
            .await
    }

    /// A bridge once its downstream pipeline was made or refused: without a strategy it
    /// succeeds with the pipeline; a pipeline that could not be made fails it
    /// (`downstream_pipeline_creation_failed`) unless another instance made it meanwhile.
    async fn bridge_after_creating(
        &self,
        bridge: &Job,
        depends: bool,
        created: ApiResult<Pipeline>,
    ) -> ApiResult<()> {
        match created {
            Ok(_) if !depends => self.end_bridge(bridge, JobStatus::Success, None).await,
            Ok(_) => Ok(()),
            Err(e) => {
                let mut db = self.db.read().await?;
                if Pipeline::child_of(&mut db.conn(), bridge.id)
                    .await?
                    .is_some()
                {
                    return Ok(());
                }
                drop(db);
                tracing::info!(bridge_id = bridge.id, error = %e, "the downstream pipeline could not be created");
                let reason = "downstream_pipeline_creation_failed";
                self.end_bridge(bridge, JobStatus::Failed, Some(reason))
                    .await
            }
        }
    }

    /// A `strategy: depend` bridge ends as its child pipeline ended
    /// (`Ci::Bridge#inherit_status_from_downstream`): success, canceled, else failed.
    async fn follow_child(&self, bridge_id: i64, child: PipelineStatus) -> ApiResult<()> {
        let bridge = {
            let mut db = self.db.read().await?;
            Job::find(&mut db.conn(), bridge_id).await?
        };
        let Some(bridge) = bridge.filter(|b| b.status == JobStatus::Running) else {
            return Ok(());
        };
        let depends = bridge
            .spec()
            .trigger
            .is_some_and(|t| t.strategy.as_deref() == Some("depend"));
        if !depends {
            return Ok(());
        }
        let status = match child {
            PipelineStatus::Success => JobStatus::Success,
            PipelineStatus::Canceled => JobStatus::Canceled,
            _ => JobStatus::Failed,
        };
        self.end_bridge(&bridge, status, None).await
    }

    /// Ends a running bridge and moves its pipeline on.
    async fn end_bridge(
        &self,
        bridge: &Job,
        status: JobStatus,
        reason: Option<&'static str>,
    ) -> ApiResult<()> {
        let at = now();
        let changes = JobChanges {
            status: Some(status),
            failure_reason: Some(reason.map(str::to_string)),
            finished_at: Some(Some(at)),
            updated_at: Some(at),
            ..Default::default()
        };
        let processed = self
            .change_and_process(bridge, &[JobStatus::Running], &changes)
            .await?;
        if let Some(processed) = processed {
            self.settle(processed).await;
        }
        Ok(())
    }

    /// Applies `changes` to `job` if it is still in one of `from`, and processes its
    /// pipeline, in one transaction; `None` when the job had moved on.
    async fn change_and_process(
        &self,
        job: &Job,
        from: &[JobStatus],
        changes: &JobChanges,
    ) -> ApiResult<Option<Processed>> {
        let mut db = self.db.write().await?;
        let (id, pipeline_id) = (job.id, job.pipeline_id);
        transaction!(&mut db.conn(), |tx| {
            if !Job::transition(tx, id, from, changes).await? {
                return Ok::<Option<Processed>, ApiError>(None);
            }
            Ok(Some(process(tx, pipeline_id).await?))
        })
    }

    /// Runs `change` on a job in a transaction, re-processes its pipeline, wakes polls.
    async fn in_pipeline_of_job<F>(&self, job_id: i64, change: F) -> ApiResult<Job>
    where
        F: for<'a, 'b> Fn(
                &'a mut Conn<'b>,
                Job,
            ) -> futures_util::future::BoxFuture<'a, ApiResult<i64>>
            + Send
            + Sync,
    {
        let change = &change;
        let (result, mut processed) = retry_deadlocked(|| async move {
            let mut db = self.db.write().await?;
            transaction!(&mut db.conn(), |tx| {
                let job = Job::find(tx, job_id)
                    .await?
                    .ok_or_else(|| ApiError::not_found("Job"))?;
                let pipeline_id = job.pipeline_id;
                let result_id = change(tx, job).await?;
                let processed = process(tx, pipeline_id).await?;
                let job = Job::find(tx, result_id).await?.ok_or(ApiError::Conflict)?;
                Ok::<_, ApiError>((job, processed))
            })
        })
        .await?;
        processed.became_pending = true;
        self.settle(processed).await;
        Ok(result)
    }

    async fn in_pipeline<F>(&self, pipeline_id: i64, change: F) -> ApiResult<Pipeline>
    where
        F: for<'a, 'b> Fn(
                &'a mut Conn<'b>,
                Vec<Job>,
            ) -> futures_util::future::BoxFuture<'a, ApiResult<()>>
            + Send
            + Sync,
    {
        let change = &change;
        let (pipeline, mut processed) = retry_deadlocked(|| async move {
            let mut db = self.db.write().await?;
            transaction!(&mut db.conn(), |tx| {
                let jobs = Job::for_pipeline(tx, pipeline_id).await?;
                change(tx, jobs).await?;
                let processed = process(tx, pipeline_id).await?;
                let pipeline = Pipeline::find(tx, pipeline_id)
                    .await?
                    .ok_or_else(|| ApiError::not_found("Pipeline"))?;
                Ok::<_, ApiError>((pipeline, processed))
            })
        })
        .await?;
        processed.became_pending = true;
        self.settle(processed).await;
        Ok(pipeline)
    }
}

/// The transaction of [`Pipelines::create`]: the pipeline, its resource groups, jobs and
/// deployments, and its first processing; a hot write transaction
/// ([`DbPool::write_transaction`]), so it owns what it writes.
async fn create_in(tx: &mut Conn<'_>, mut creation: Creation) -> ApiResult<(Pipeline, Processed)> {
    let at = now();
    rank_stages(&mut creation.plan.jobs);
    // Each resource group named, created the first time (`Seed::Build`).
    let mut groups: std::collections::HashMap<&str, i64> = Default::default();
    for key in creation
        .plan
        .jobs
        .iter()
        .filter_map(|j| j.spec.resource_group.as_deref())
    {
        if !groups.contains_key(key) {
            let group = ResourceGroup::find_or_create(tx, creation.project_id, key, at).await?;
            groups.insert(key, group.id);
        }
    }
    let NewRows {
        pipeline,
        jobs,
        mut states,
        became_pending,
    } = new_rows(&creation, &groups, at);
    let pipeline = Pipeline::create(tx, pipeline).await?;
    let jobs: Vec<NewJob> = jobs
        .into_iter()
        .map(|j| NewJob {
            pipeline_id: pipeline.id,
            ..j
        })
        .collect();
    let created = Job::insert_many(tx, &jobs).await?;
    let specs: Vec<JobSpec> = creation.plan.jobs.into_iter().map(|j| j.spec).collect();
    if specs.iter().any(|spec| spec.environment.is_some()) {
        let pairs: Vec<(Job, JobSpec)> =
            created.iter().cloned().zip(specs.iter().cloned()).collect();
        super::deployments::create_for_jobs(tx, &pipeline, &pairs, at).await?;
    }
    let moved = Moved::written(&created, &mut states, &specs, became_pending)?;
    let processed = follow_up(tx, &pipeline, PipelineStatus::Created, moved, at).await?;
    Ok((pipeline, processed))
}

/// What [`Pipelines::create`] writes: a project's new pipeline from its plan.
struct Creation {
    project_id: i64,
    build_timeout: i32,
    protected: bool,
    req: NewPipelineRequest,
    plan: config::PipelinePlan,
}

/// Whether [`create_pipelined`] can write this plan: nothing but the pipeline's row and its
/// jobs' (no resource group to find or create, no deployment).
fn rows_only(plan: &config::PipelinePlan) -> bool {
    plan.jobs
        .iter()
        .all(|j| j.spec.resource_group.is_none() && j.spec.environment.is_none())
}

/// [`create_in`] for a plan that writes rows only ([`rows_only`]), on PostgreSQL: the same
/// rows in one round trip ([`Pipeline::create_with_jobs`]) instead of four (`BEGIN`, each
/// `INSERT`, `COMMIT`), from the pipeline's `POST` to its first job's pickup.
async fn create_pipelined(
    conn: &mut diesel_async::AsyncPgConnection,
    mut creation: Creation,
) -> ApiResult<(Pipeline, Processed)> {
    let at = now();
    rank_stages(&mut creation.plan.jobs);
    let NewRows {
        pipeline,
        jobs,
        mut states,
        became_pending,
    } = new_rows(&creation, &Default::default(), at);
    let (pipeline, created) = Pipeline::create_with_jobs(conn, &pipeline, &jobs).await?;
    let specs: Vec<JobSpec> = creation.plan.jobs.into_iter().map(|j| j.spec).collect();
    let moved = Moved::written(&created, &mut states, &specs, became_pending)?;
    let processed = processed_after(&pipeline, PipelineStatus::Created, moved);
    Ok((pipeline, processed))
}

/// A new pipeline's rows, decided before any is written.
struct NewRows<'a> {
    pipeline: NewPipeline<'a>,
    /// Their `pipeline_id` is 0 until the pipeline is written.
    jobs: Vec<NewJob>,
    /// Ids are the plan's indexes until the jobs are written ([`Moved::written`]).
    states: Vec<JobState>,
    became_pending: bool,
}

/// The rows of a new pipeline from its plan (stages ranked, [`rank_stages`]) and the ids
/// of the resource groups its jobs name.
///
/// The first jobs are decided before anything is written, as processing the rows just
/// written would decide them: the jobs are written with their status (pending, say) and
/// the pipeline with its own, not written and then changed (on PostgreSQL two round trips
/// fewer from the pipeline's POST to its first job's pickup, and one statement fewer per
/// job starting at once).
fn new_rows<'a>(
    creation: &'a Creation,
    groups: &std::collections::HashMap<&str, i64>,
    at: chrono::NaiveDateTime,
) -> NewRows<'a> {
    let Creation {
        project_id,
        build_timeout,
        protected,
        ref req,
        ref plan,
    } = *creation;
    let group_of = |j: &config::JobPlan| {
        j.spec
            .resource_group
            .as_deref()
            .and_then(|k| groups.get(k).copied())
    };
    let mut states: Vec<JobState> = plan
        .jobs
        .iter()
        .enumerate()
        .map(|(i, j)| JobState {
            id: i as i64,
            name: j.name.clone(),
            stage_idx: j.stage_idx,
            status: JobStatus::Created,
            when: j.when,
            allow_failure: j.allow_failure,
            needs: j
                .spec
                .needs
                .as_ref()
                .map(|n| n.iter().map(|n| n.job.clone()).collect()),
        })
        .collect();
    let mut became_pending = false;
    for (i, status) in advance(&mut states) {
        let i = i as usize;
        let status = match status {
            JobStatus::Pending => turn_status(group_of(&plan.jobs[i]), &plan.jobs[i].spec),
            other => other,
        };
        states[i].status = status;
        became_pending |= status == JobStatus::Pending;
    }
    let (status, started_at, finished_at) = pipeline_state(&states, None, None, at);
    let pipeline = NewPipeline {
        stages: serde_json::to_string(&plan.stages).unwrap_or_else(|_| "[]".into()),
        name: plan.name.as_deref(),
        auto_cancel_on_new_commit: plan.auto_cancel.on_new_commit.as_str(),
        auto_cancel_on_job_failure: plan.auto_cancel.on_job_failure.as_str(),
        stage_scheduled: !plan.jobs.iter().any(|j| j.spec.needs.is_some()),
        status,
        started_at,
        finished_at,
        ..req.row(project_id, protected, at)
    };
    let jobs: Vec<NewJob> = plan
        .jobs
        .iter()
        .zip(&states)
        .map(|(j, state)| {
            let times = Entered::at(state.status, &j.spec, at);
            NewJob {
                pipeline_id: 0,
                project_id,
                name: j.name.clone(),
                stage: j.stage.clone(),
                stage_idx: j.stage_idx,
                status: state.status,
                when_: j.when.as_str().to_string(),
                allow_failure: j.allow_failure,
                tag_list: json!(j.tags).to_string(),
                options: serde_json::to_string(&j.spec).unwrap_or_else(|_| "{}".into()),
                protected,
                timeout: Some(
                    j.spec
                        .timeout
                        .map_or(build_timeout, |t| t.min(i64::from(i32::MAX)) as i32),
                ),
                resource_group_id: group_of(j),
                claims_alone: crate::queue::claims_alone(&j.spec, j.stage_idx),
                interruptible: j.spec.interruptible,
                queued_at: times.queued_at,
                started_at: times.started_at,
                finished_at: times.finished_at,
                scheduled_at: times.scheduled_at,
                created_at: at,
                updated_at: at,
            }
        })
        .collect();
    NewRows {
        pipeline,
        jobs,
        states,
        became_pending,
    }
}

impl<'a> Moved<'a> {
    /// A new pipeline's jobs as written: their states (in the plan's order) take the ids
    /// the rows were written with; a conflict if the rows written are not the plan's.
    fn written(
        created: &'a [Job],
        states: &'a mut [JobState],
        specs: &'a [JobSpec],
        became_pending: bool,
    ) -> ApiResult<Moved<'a>> {
        if created.len() != states.len() {
            return Err(ApiError::Conflict);
        }
        for (state, job) in states.iter_mut().zip(created) {
            state.id = job.id;
        }
        Ok(Moved {
            jobs: created,
            states,
            specs,
            became_pending,
        })
    }
}

/// Runs `transaction` again when PostgreSQL aborted it to break a deadlock (up to three
/// times more): writers of one pipeline's jobs lock rows in different orders (an end
/// holds its own job's row, a cancel of the rest takes the others' in turn, processing
/// takes the pipeline's), and the one aborted succeeds on the rows as the other left them.
async fn retry_deadlocked<T, F, Fut>(transaction: F) -> ApiResult<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ApiResult<T>>,
{
    let mut tries = 0;
    loop {
        match transaction().await {
            Err(e) if e.is_deadlock() && tries < 3 => {
                tries += 1;
                tracing::info!(tries, "a transaction deadlocked; run again");
            }
            done => return done,
        }
    }
}

/// [`Pipelines::finish`]'s transaction; owns what it uses, as a hot write transaction
/// ([`DbPool::write_transaction`]). `seen` is the job as the request's guard read it: the
/// end applies to it if it is still so; if it changed meanwhile (a cancel, a log
/// appended), the job is read again, locked, and ended as it is then.
async fn finish_in(
    tx: &mut Conn<'_>,
    seen: Job,
    outcome: JobOutcome,
) -> ApiResult<(Job, Processed)> {
    let mut job = seen;
    for fresh in [false, true] {
        if !matches!(job.status, JobStatus::Running | JobStatus::Canceling) {
            break;
        }
        let end = Ending::of(tx, &job, &outcome).await?;
        if let Some((ended, quiet)) =
            Job::end_as_seen(tx, &job, &end.changes, end.ended_plainly).await?
        {
            return after_end(tx, &job, ended, quiet, end).await;
        }
        if fresh {
            break;
        }
        job = Job::find_locked(tx, job.id)
            .await?
            .ok_or(ApiError::Forbidden(None))?;
    }
    Err(ApiError::Conflict)
}

/// How a runner's `success` or `failed` ends a job as read.
struct Ending {
    changes: JobChanges,
    spec: JobSpec,
    /// `retry:` gives the job another try.
    retry: bool,
    /// It ends in `success` or an allowed failure, and nothing else follows from it but
    /// processing its pipeline: no retry, no environment, no resource group.
    ended_plainly: bool,
}

impl Ending {
    /// A failure neither allowed nor retried: `cancel_on_job_failure` may cancel the rest
    /// of the pipeline.
    fn may_cancel_rest(&self) -> bool {
        self.changes.status == Some(JobStatus::Failed)
            && !self.retry
            && self.changes.allow_failure != Some(true)
    }

    async fn of(tx: &mut Conn<'_>, job: &Job, outcome: &JobOutcome) -> ApiResult<Ending> {
        let at = now();
        // The token stays: a finished job's PUT must still be recognised, to answer
        // 403 with its `Job-Status` (the guard refuses every job that is not running).
        let mut changes = JobChanges {
            finished_at: Some(Some(at)),
            updated_at: Some(at),
            ..Default::default()
        };
        if let Some(checksum) = &outcome.checksum {
            // Verified against the stored log; a mismatch is recorded and logged, and
            // the answer stays 200, as GitLab's (the runner cannot repair it anyway).
            let stored = crate::service::traces::checksum_text(job.trace_crc32 as u32);
            let ok = *checksum == stored && outcome.bytesize.is_none_or(|b| b == job.trace_size);
            if !ok {
                tracing::warn!(job_id = job.id, runner_checksum = %checksum, %stored,
                        runner_bytesize = ?outcome.bytesize, stored_bytesize = job.trace_size, "job log checksum mismatch");
            }
            changes.trace_checksum_ok = Some(Some(ok));
        }
        let mut retry = false;
        let spec = job.spec();
        if job.status == JobStatus::Canceling {
            changes.status = Some(JobStatus::Canceled);
        } else if outcome.success {
            changes.status = Some(JobStatus::Success);
        } else {
            let reason = outcome
                .failure_reason
                .clone()
                .filter(|r| FAILURE_REASONS.contains(&r.as_str()))
                .unwrap_or_else(|| "unknown_failure".to_string());
            let allowed = outcome
                .exit_code
                .is_some_and(|c| spec.allow_failure_exit_codes.contains(&i64::from(c)));
            retry = retry_allowed(tx, job, &spec, &reason, outcome.exit_code).await?;
            changes.status = Some(JobStatus::Failed);
            changes.failure_reason = Some(Some(reason));
            changes.exit_code = Some(outcome.exit_code);
            changes.allow_failure = Some(job.allow_failure || allowed);
            changes.retried = Some(retry);
        }
        // Most jobs end while others of their stage still run: then nothing else moves,
        // and the pipeline is not read whole (the cost of a finish stays the same in a
        // pipeline of 10 jobs or of 1,000). A deploying job, a job of a resource group,
        // a retried one, or a failure not allowed (which may cancel the rest,
        // `cancel_on_job_failure`) takes the whole way.
        let ended_plainly = match changes.status {
            Some(JobStatus::Success) => true,
            Some(JobStatus::Failed) => changes.allow_failure == Some(true),
            _ => false,
        } && !retry
            && spec.environment.is_none()
            && job.resource_group_id.is_none();
        Ok(Ending {
            changes,
            spec,
            retry,
            ended_plainly,
        })
    }
}

/// What follows a job's end in [`finish_in`]: its environment stopped, its retry queued,
/// its pipeline canceled or processed (unless `quiet`: its end moves nothing else).
async fn after_end(
    tx: &mut Conn<'_>,
    job: &Job,
    ended: Job,
    quiet: bool,
    end: Ending,
) -> ApiResult<(Job, Processed)> {
    let cancel_rest = end.may_cancel_rest();
    let Ending {
        changes,
        spec,
        retry,
        ..
    } = end;
    if changes.status == Some(JobStatus::Success) {
        if let (Some(env), Some(Some(at))) = (&spec.environment, changes.finished_at) {
            super::deployments::stop_job_succeeded(tx, job.project_id, env, at).await?;
        }
    }
    let mut requeued = false;
    if retry {
        let status = super::resource_groups::enqueued(job.resource_group_id);
        clone_job(tx, job, status).await?;
        requeued = status == JobStatus::Pending;
    }
    if cancel_rest {
        cancel_on_job_failure(tx, job.pipeline_id).await?;
    }
    let mut processed = if quiet {
        Processed::default()
    } else {
        process(tx, job.pipeline_id).await?
    };
    processed.became_pending |= requeued;
    // What follows the transition changes other jobs, never this one.
    Ok((ended, processed))
}

/// `workflow:auto_cancel:on_job_failure: all`: a job failed (not allowed to, and not to
/// be retried), so the rest of its pipeline is canceled (`Ci::Processable`'s
/// `after_transition … => :failed`, then `Ci::CancelPipelineService`); manual jobs
/// stay, as GitLab's cancelable statuses leave them out.
async fn cancel_on_job_failure(tx: &mut Conn<'_>, pipeline_id: i64) -> ApiResult<()> {
    let Some(pipeline) = Pipeline::find(tx, pipeline_id).await? else {
        return Ok(());
    };
    if pipeline.auto_cancel_on_job_failure != "all" {
        return Ok(());
    }
    for job in Job::for_pipeline(tx, pipeline_id).await? {
        if !job.retried && job.status != JobStatus::Manual {
            cancel_one(tx, &job).await?;
        }
    }
    Ok(())
}

async fn cancel_one(tx: &mut Conn<'_>, job: &Job) -> ApiResult<()> {
    let at = now();
    let target = match job.status {
        JobStatus::Created
        | JobStatus::Pending
        | JobStatus::Manual
        | JobStatus::Scheduled
        | JobStatus::WaitingForResource
        | JobStatus::Preparing => JobStatus::Canceled,
        JobStatus::Running if job.cancel_gracefully => JobStatus::Canceling,
        JobStatus::Running | JobStatus::Canceling => JobStatus::Canceled,
        JobStatus::Success | JobStatus::Failed | JobStatus::Canceled | JobStatus::Skipped => {
            return Ok(())
        }
    };
    let finished = (target == JobStatus::Canceled).then_some(at);
    let changes = JobChanges {
        status: Some(target),
        finished_at: Some(finished),
        updated_at: Some(at),
        ..Default::default()
    };
    Job::transition(tx, job.id, &[job.status], &changes).await?;
    Ok(())
}

async fn retry_one(tx: &mut Conn<'_>, job: &Job) -> ApiResult<Job> {
    let changes = JobChanges {
        retried: Some(true),
        ..Default::default()
    };
    Job::transition(tx, job.id, &[job.status], &changes).await?;
    clone_job(tx, job, JobStatus::Created).await
}

/// Resets later `skipped` jobs of the pipeline to `created` (GitLab's ResetSkippedJobsService).
async fn reset_skipped_after(tx: &mut Conn<'_>, job: &Job) -> ApiResult<()> {
    for other in Job::for_pipeline(tx, job.pipeline_id).await? {
        if !other.retried && other.status == JobStatus::Skipped && other.stage_idx >= job.stage_idx
        {
            let changes = JobChanges {
                status: Some(JobStatus::Created),
                finished_at: Some(None),
                updated_at: Some(now()),
                ..Default::default()
            };
            Job::transition(tx, other.id, &[JobStatus::Skipped], &changes).await?;
        }
    }
    Ok(())
}

/// `retry:` allows another try: tries left, and the reason and exit code qualify.
async fn retry_allowed(
    tx: &mut Conn<'_>,
    job: &Job,
    spec: &JobSpec,
    reason: &str,
    exit_code: Option<i32>,
) -> ApiResult<bool> {
    if spec.retry.max == 0 {
        return Ok(false);
    }
    let tries = Job::for_pipeline(tx, job.pipeline_id)
        .await?
        .iter()
        .filter(|j| j.name == job.name)
        .count() as i64;
    let reason_ok =
        spec.retry.when.is_empty() || spec.retry.when.iter().any(|w| w == "always" || w == reason);
    let code_ok = spec.retry.exit_codes.is_empty()
        || exit_code.is_some_and(|c| spec.retry.exit_codes.contains(&i64::from(c)));
    Ok(tries <= spec.retry.max && reason_ok && code_ok)
}

/// A new try of `job` with the same plan.
async fn clone_job(tx: &mut Conn<'_>, job: &Job, status: JobStatus) -> ApiResult<Job> {
    let at = now();
    // The same plan: its options are copied as they are.
    let spec = job.spec();
    let new = NewJob {
        pipeline_id: job.pipeline_id,
        project_id: job.project_id,
        name: job.name.clone(),
        stage: job.stage.clone(),
        stage_idx: job.stage_idx,
        status,
        when_: job.when_.clone(),
        allow_failure: job.allow_failure,
        tag_list: job.tag_list.clone(),
        options: job.options.clone(),
        protected: job.protected,
        timeout: job.timeout,
        resource_group_id: job.resource_group_id,
        claims_alone: crate::queue::claims_alone(&spec, job.stage_idx),
        interruptible: spec.interruptible,
        queued_at: (status == JobStatus::Pending).then_some(at),
        started_at: None,
        finished_at: None,
        scheduled_at: None,
        created_at: at,
        updated_at: at,
    };
    let mut created = Job::insert_many(tx, &[new]).await?;
    let created = created.pop().ok_or(ApiError::Conflict)?;
    // A new try deploys anew (GitLab gives the retried build its own deployment).
    if spec.environment.is_some() {
        if let Some(pipeline) = Pipeline::find(tx, created.pipeline_id).await? {
            let pairs = [(created.clone(), spec)];
            super::deployments::create_for_jobs(tx, &pipeline, &pairs, at).await?;
        }
    }
    Ok(created)
}

/// What processing a pipeline did that its caller acts on once the transaction commits.
#[derive(Debug, Default)]
#[must_use]
pub struct Processed {
    /// A job became pending: held polls are to be woken.
    pub became_pending: bool,
    /// The lowest id among the processed pipeline's jobs: a job that became pending in it
    /// has no lower one (the queue's reads need not start below it, [`Queue::bump_from`]).
    /// None when nothing was processed.
    pub first_job: Option<i64>,
    /// The processed pipeline's jobs waiting for a runner after it: with those that
    /// became pending, as the queue reads them ([`crate::queue::Queue::bump_from`]). None
    /// when nothing was processed.
    pub pending: Option<Vec<Candidate>>,
    /// Resource groups of the pipeline's jobs that may have a resource to assign (a job of
    /// theirs waits, or may have completed): [`super::resource_groups::assign`].
    pub resource_groups: Vec<i64>,
    /// Running bridges, whose child pipeline is to be made if it is not there yet.
    pub bridges: Vec<i64>,
    /// A child pipeline that just ended: its bridge and its status.
    pub finished_child: Option<(i64, PipelineStatus)>,
}

/// Moves the pipeline's `created` jobs on and records the pipeline's status. Runs inside
/// the caller's transaction.
pub async fn process(tx: &mut Conn<'_>, pipeline_id: i64) -> ApiResult<Processed> {
    // The pipeline first, locked ([`Pipeline::find_locked`]): its jobs are read once any
    // other transaction processing it is over.
    let pipeline = Pipeline::find_locked(tx, pipeline_id)
        .await?
        .ok_or_else(|| ApiError::not_found("Pipeline"))?;
    let jobs = Job::for_pipeline(tx, pipeline_id).await?;
    Ok(process_loaded(tx, pipeline, jobs).await?.1)
}

/// Numbers a new pipeline's jobs' stages by their rank among the stages that have jobs
/// (0 for the first), where the plan numbered them by their place among all the stages
/// declared. GitLab stores the declared place (`stage_idx`), which none of its APIs show,
/// and every rule reads it only to compare two jobs of one pipeline, which the rank keeps.
/// With it a job of the pipeline's first stage knows it has no earlier job whose artifacts
/// it downloads, without asking the database as its claim runs.
fn rank_stages(jobs: &mut [config::JobPlan]) {
    let mut used: Vec<i32> = jobs.iter().map(|j| j.stage_idx).collect();
    used.sort_unstable();
    used.dedup();
    for job in jobs {
        job.stage_idx = used.partition_point(|&s| s < job.stage_idx) as i32;
    }
}

/// [`process`] over the pipeline's row and all its jobs' rows (by id), as the caller's
/// transaction holds them; answers the pipeline as it is afterwards.
async fn process_loaded(
    tx: &mut Conn<'_>,
    pipeline: Pipeline,
    jobs: Vec<Job>,
) -> ApiResult<(Pipeline, Processed)> {
    let pipeline_id = pipeline.id;
    let jobs: Vec<Job> = jobs.into_iter().filter(|j| !j.retried).collect();
    let specs: Vec<JobSpec> = jobs.iter().map(Job::spec).collect();
    let mut states: Vec<JobState> = jobs
        .iter()
        .zip(&specs)
        .map(|(j, spec)| JobState {
            id: j.id,
            name: j.name.clone(),
            stage_idx: j.stage_idx,
            status: j.status,
            when: When::parse(&j.when_).unwrap_or(When::OnSuccess),
            allow_failure: j.allow_failure,
            needs: spec
                .needs
                .as_ref()
                .map(|n| n.iter().map(|n| n.job.clone()).collect()),
        })
        .collect();
    let at = now();
    let mut became_pending = false;
    // `states` is built from `jobs`, in the same order.
    let index: std::collections::HashMap<i64, usize> =
        jobs.iter().enumerate().map(|(i, j)| (j.id, i)).collect();
    for (id, status) in advance(&mut states) {
        let Some(&i) = index.get(&id) else { continue };
        let status = match status {
            JobStatus::Pending => turn_status(jobs[i].resource_group_id, &specs[i]),
            other => other,
        };
        states[i].status = status;
        let times = Entered::at(status, &specs[i], at);
        let changes = JobChanges {
            status: Some(status),
            queued_at: times.queued_at.map(Some),
            started_at: times.started_at.map(Some),
            finished_at: times.finished_at.map(Some),
            scheduled_at: times.scheduled_at.map(Some),
            updated_at: Some(at),
            ..Default::default()
        };
        Job::transition(tx, id, &[JobStatus::Created], &changes).await?;
        became_pending |= status == JobStatus::Pending;
    }
    let (status, started_at, finished_at) =
        pipeline_state(&states, pipeline.started_at, pipeline.finished_at, at);
    let before = pipeline.status;
    let pipeline = if status != pipeline.status
        || started_at != pipeline.started_at
        || finished_at != pipeline.finished_at
    {
        Pipeline::set_status(tx, pipeline_id, status, started_at, finished_at).await?
    } else {
        pipeline
    };
    let moved = Moved {
        jobs: &jobs,
        states: &states,
        specs: &specs,
        became_pending,
    };
    let processed = follow_up(tx, &pipeline, before, moved, at).await?;
    Ok((pipeline, processed))
}

/// The times a job takes when it moves to `status` at `at`: queued when pending, started
/// when running, finished when skipped, and for `when: delayed` queued once `start_in`
/// has passed (`Ci::Build#schedule`).
struct Entered {
    queued_at: Option<chrono::NaiveDateTime>,
    started_at: Option<chrono::NaiveDateTime>,
    finished_at: Option<chrono::NaiveDateTime>,
    scheduled_at: Option<chrono::NaiveDateTime>,
}

impl Entered {
    fn at(status: JobStatus, spec: &JobSpec, at: chrono::NaiveDateTime) -> Entered {
        Entered {
            queued_at: (status == JobStatus::Pending).then_some(at),
            started_at: (status == JobStatus::Running).then_some(at),
            finished_at: (status == JobStatus::Skipped).then_some(at),
            scheduled_at: (status == JobStatus::Scheduled).then(|| {
                let start_in = spec.start_in.unwrap_or(0);
                crate::db::models::later(
                    at,
                    chrono::TimeDelta::try_seconds(start_in).unwrap_or(chrono::TimeDelta::zero()),
                )
            }),
        }
    }
}

/// The pipeline's (status, started_at, finished_at) from its jobs' states, keeping the
/// times it has: started once a job ran, finished once complete.
fn pipeline_state(
    states: &[JobState],
    started_at: Option<chrono::NaiveDateTime>,
    finished_at: Option<chrono::NaiveDateTime>,
    at: chrono::NaiveDateTime,
) -> (
    PipelineStatus,
    Option<chrono::NaiveDateTime>,
    Option<chrono::NaiveDateTime>,
) {
    let status = pipeline_status(states);
    let started = states.iter().any(|s| {
        !matches!(
            s.status,
            JobStatus::Created | JobStatus::Pending | JobStatus::Manual | JobStatus::Skipped
        )
    });
    (
        status,
        started_at.or(started.then_some(at)),
        if status.is_complete() {
            finished_at.or(Some(at))
        } else {
            None
        },
    )
}

/// A pipeline's jobs as processing left them: rows, states and specs in the same order.
struct Moved<'a> {
    jobs: &'a [Job],
    states: &'a [JobState],
    specs: &'a [JobSpec],
    became_pending: bool,
}

/// What follows once the jobs' and the pipeline's statuses are written: deployments
/// follow their jobs, and what the caller acts on after the commit. `before` is the
/// pipeline's status before.
async fn follow_up(
    tx: &mut Conn<'_>,
    pipeline: &Pipeline,
    before: PipelineStatus,
    moved: Moved<'_>,
    at: chrono::NaiveDateTime,
) -> ApiResult<Processed> {
    // Deployments follow their jobs.
    let deploying: Vec<(i64, JobStatus, &crate::ci::environment::EnvironmentSpec)> = moved
        .states
        .iter()
        .zip(moved.specs)
        .filter_map(|(s, spec)| spec.environment.as_ref().map(|e| (s.id, s.status, e)))
        .collect();
    if !deploying.is_empty() {
        super::deployments::follow_jobs(tx, &deploying, at).await?;
    }
    Ok(processed_after(pipeline, before, moved))
}

/// What the caller acts on once the jobs' and the pipeline's statuses are committed.
fn processed_after(pipeline: &Pipeline, before: PipelineStatus, moved: Moved<'_>) -> Processed {
    let Moved {
        jobs,
        states,
        specs,
        became_pending,
    } = moved;
    // Groups whose jobs here wait or ran: one of them may have freed its resource.
    let mut resource_groups: Vec<i64> = jobs
        .iter()
        .zip(states)
        .filter(|(_, s)| !matches!(s.status, JobStatus::Created | JobStatus::Manual))
        .filter_map(|(j, _)| j.resource_group_id)
        .collect();
    resource_groups.sort_unstable();
    resource_groups.dedup();
    let bridges: Vec<i64> = states
        .iter()
        .zip(specs)
        .filter(|(s, spec)| s.status == JobStatus::Running && spec.trigger.is_some())
        .map(|(s, _)| s.id)
        .collect();
    let finished_child = pipeline
        .parent_bridge_id
        .filter(|_| pipeline.status.is_complete() && pipeline.status != before)
        .map(|bridge| (bridge, pipeline.status));
    // The rows are as read before the statuses changed: the states say which wait now.
    // `claims_alone` as the rows were written with it ([`crate::queue::claims_alone`]).
    let pending = jobs
        .iter()
        .zip(states)
        .zip(specs)
        .filter(|((j, s), _)| s.status == JobStatus::Pending && j.runner_id.is_none())
        .map(|((j, _), spec)| Candidate::of(j, crate::queue::claims_alone(spec, j.stage_idx)))
        .collect();
    Processed {
        became_pending,
        first_job: jobs.iter().map(|j| j.id).min(),
        pending: Some(pending),
        resource_groups,
        bridges,
        finished_child,
    }
}

/// The status a job takes when its turn comes (its stage reached, played, or its delay
/// over): a bridge runs on Runway at once (its pipeline is made after the commit), a job of
/// a resource group waits for the resource, any other is pending.
fn turn_status(resource_group_id: Option<i64>, spec: &JobSpec) -> JobStatus {
    if spec.trigger.is_some() {
        JobStatus::Running
    } else {
        super::resource_groups::enqueued(resource_group_id)
    }
}

/// Pipeline variables as the payload lists them.
pub fn pipeline_variables(pipeline: &Pipeline) -> Vec<Variable> {
    serde_json::from_str::<Vec<PipelineVariable>>(&pipeline.variables)
        .unwrap_or_default()
        .into_iter()
        .map(|v| Variable {
            key: v.key,
            value: v.value,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_ranked_among_those_with_jobs() {
        let job = |stage_idx| config::JobPlan {
            name: format!("job{stage_idx}"),
            stage: format!("stage{stage_idx}"),
            stage_idx,
            when: When::OnSuccess,
            allow_failure: false,
            tags: Vec::new(),
            spec: JobSpec::default(),
        };
        let mut jobs = vec![job(4), job(2), job(2), job(7), job(4)];
        rank_stages(&mut jobs);
        let ranks: Vec<i32> = jobs.iter().map(|j| j.stage_idx).collect();
        assert_eq!(ranks, [1, 0, 0, 2, 1]);
    }

    #[test]
    fn only_small_configurations_that_cannot_grow_are_planned_inline() {
        assert!(plans_inline("job:\n  script: [make test]\n"));
        assert!(plans_inline(
            "include:\n  remote: https://example.com/ci.yml\n"
        ));
        for grows in [
            "a: &a [x]\nb: *a\n",
            "job:\n  script: !reference [.x, script]\n",
            "job:\n  script: [x]\n  parallel: 200\n",
            "job:\n  script: [x]\n  \"p\\x61rallel\": 200\n",
        ] {
            assert!(!plans_inline(grows), "{grows}");
        }
        let large = format!("job:\n  script: [{}]\n", "x".repeat(PLAN_INLINE_MAX));
        assert!(!plans_inline(&large));
    }
}
