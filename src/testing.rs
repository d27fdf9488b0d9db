//! Runway as a library for integration tests of runners and executors: a real server on
//! 127.0.0.1 (random port) with a throwaway SQLite database, which a test fills with
//! pipelines from YAML, runner tokens and faults, then watches through the admin API.
//!
//! Everything a runner sees is the real server: job payloads, log PATCHes with
//! `Content-Range`, `Job-Status` on cancel, artifacts, long polls. The temporary folder
//! (database, logs, artifacts) is removed when the [`TestServer`] is dropped.
//!
//! A runner built on the `gitlab-runner` crate runs one job:
//!
//! ```
//! use std::time::Duration;
//!
//! use gitlab_runner::job::Job;
//! use gitlab_runner::{GitlabLayer, JobHandler, JobResult, Phase, RunnerBuilder};
//! use runway::testing::TestServer;
//! use tracing_subscriber::prelude::*;
//!
//! /// The runner under test: writes each script line to the job log.
//! struct Echo(Job);
//!
//! #[async_trait::async_trait]
//! impl JobHandler for Echo {
//!     async fn step(&mut self, script: &[String], _phase: Phase) -> JobResult {
//!         for line in script {
//!             self.0.trace(format!("ran {line}\n"));
//!         }
//!         Ok(())
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let server = TestServer::start().await?;
//!     let runner = server.create_runner().await?;
//!     let pipeline = server
//!         .enqueue_pipeline("hello:\n  script:\n    - echo hello\n")
//!         .await?;
//!     // The next job request answers 500 once: the runner has to poll again.
//!     let fault = server.fail_next("POST", "/api/v4/jobs/request", 1, 500);
//!
//!     let (layer, jobs) = GitlabLayer::new();
//!     let _logs = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
//!     let builds = tempfile::tempdir()?;
//!     let mut client = RunnerBuilder::new(server.url().try_into()?, runner.token, builds.path(), jobs)
//!         .build()
//!         .await;
//!     assert!(client.request_job(|job| async move { Ok(Echo(job)) }).await.is_err());
//!     assert_eq!(fault.hits(), 1);
//!     assert!(client.request_job(|job| async move { Ok(Echo(job)) }).await?);
//!     client.drain().await;
//!
//!     let job = server.job_named(pipeline, "hello").await?;
//!     server.wait_for_job(job.id, "success", Duration::from_secs(30)).await?;
//!     assert_eq!(server.job_log(job.id).await?, "ran echo hello\n");
//!     assert_eq!(server.wait_for_pipeline(pipeline, Duration::from_secs(10)).await?, "success");
//!     server.stop().await;
//!     Ok(())
//! }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::api::faults::{FaultAction, FaultHits, Faults};
use crate::client::{AdminClient, ClientError};
use crate::config::{Settings, SettingsArgs};
use crate::db::enums::JobStatus;
use crate::db::models::{Job as JobRow, Pipeline as PipelineRow};

/// What can go wrong in the harness; the messages say what was waited for and what was seen.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the test server did not start: {0}")]
    Start(String),
    #[error(transparent)]
    Api(#[from] ClientError),
    #[error("no {0}")]
    NotFound(String),
    #[error("{what} is still {status} after {waited:?} (waiting for {wanted}){context}")]
    Timeout {
        what: String,
        wanted: String,
        status: String,
        waited: Duration,
        context: String,
    },
    #[error("{what} ended {status}, not {wanted}{context}")]
    Ended {
        what: String,
        wanted: String,
        status: String,
        context: String,
    },
    #[error("{0} is not a job status")]
    UnknownStatus(String),
    #[error("unexpected answer from the admin API: {0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A runner created on the server: its id and `glrt-` authentication token.
#[derive(Debug, Clone)]
pub struct Runner {
    pub id: i64,
    pub token: String,
}

/// A job as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: i64,
    pub pipeline_id: i64,
    pub name: String,
    pub stage: String,
    /// GitLab's status name: `pending`, `running`, `success`, `failed`, `canceled`, …
    pub status: String,
    /// Set on failed jobs: `script_failure`, `stuck_or_timeout_failure`, …
    pub failure_reason: Option<String>,
    pub allow_failure: bool,
    /// The runner that took it.
    pub runner_id: Option<i64>,
}

impl Job {
    fn from_json(json: &Value) -> Result<Job> {
        let text = |key: &str| json[key].as_str().map(str::to_string);
        let invalid = || Error::Invalid(format!("job without id, name or status: {json}"));
        Ok(Job {
            id: json["id"].as_i64().ok_or_else(invalid)?,
            pipeline_id: json["pipeline"]["id"].as_i64().ok_or_else(invalid)?,
            name: text("name").ok_or_else(invalid)?,
            stage: text("stage").unwrap_or_default(),
            status: text("status").ok_or_else(invalid)?,
            failure_reason: text("failure_reason"),
            allow_failure: json["allow_failure"].as_bool().unwrap_or(false),
            runner_id: json["runner"]["id"].as_i64(),
        })
    }

    /// Whether the job has ended (success, failed, canceled or skipped).
    pub fn is_finished(&self) -> bool {
        is_finished(&self.status)
    }
}

fn is_finished(status: &str) -> bool {
    matches!(status, "success" | "failed" | "canceled" | "skipped")
}

/// Where [`TestServer::enqueue_pipeline_with`] puts a pipeline.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// The project's path; created on first use. Default `harness`.
    pub project: String,
    /// Branch the pipeline runs for. Default `main` (protected, as GitLab's default branch).
    pub git_ref: String,
    /// Pipeline variables, as `variables` of `POST /projects/:id/pipeline`.
    pub variables: Vec<(String, String)>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            project: "harness".into(),
            git_ref: "main".into(),
            variables: Vec::new(),
        }
    }
}

/// An armed fault: how often it fired so far.
#[derive(Debug, Clone)]
pub struct Fault {
    hits: FaultHits,
    times: usize,
}

impl Fault {
    /// Requests it answered (or held) so far.
    pub fn hits(&self) -> usize {
        self.hits.get()
    }

    /// Whether it fired as often as it was armed for (it is then disarmed).
    pub fn is_spent(&self) -> bool {
        self.hits() >= self.times
    }
}

/// Settings of a [`TestServer`] before it starts.
pub struct TestServerBuilder {
    args: SettingsArgs,
}

impl TestServerBuilder {
    /// How long `/jobs/request` is held for a runner whose `last_update` is current.
    /// Default: not held (the answer comes at once), so test runners poll in a loop.
    pub fn long_poll_timeout(mut self, hold: Duration) -> Self {
        self.args.long_poll_timeout = Some(hold.as_secs());
        self
    }

    /// `X-GitLab-Trace-Update-Interval`: how often runners send logs, and so how fast a
    /// cancel reaches them. Default 1 s (the server's default is 60 s).
    pub fn trace_update_interval(mut self, interval: Duration) -> Self {
        self.args.trace_update_interval = Some(interval.as_secs().max(1));
        self
    }

    /// Two-phase job commit for runners that advertise it. Default off.
    pub fn two_phase_commit(mut self, on: bool) -> Self {
        self.args.two_phase_commit = Some(on);
        self
    }

    /// Lifetime of runner authentication tokens. Default: no expiry.
    pub fn runner_token_expires_in(mut self, lifetime: Duration) -> Self {
        self.args.runner_token_expires_in = Some(lifetime.as_secs());
        self
    }

    /// Starts the server on 127.0.0.1 on a free port, in the current tokio runtime.
    pub async fn start(self) -> Result<TestServer> {
        let dir = tempfile::Builder::new()
            .prefix("runway-test-")
            .tempdir()
            .map_err(|e| Error::Start(format!("temporary folder: {e}")))?;
        let admin_token = format!("glpat-{}", uuid::Uuid::new_v4().simple());
        let registration_token = format!("runway-reg-{}", uuid::Uuid::new_v4().simple());
        let args = SettingsArgs {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            database_url: Some(format!(
                "sqlite://{}",
                dir.path().join("runway.sqlite3").display()
            )),
            data_dir: Some(dir.path().to_path_buf()),
            admin_token: Some(admin_token.clone()),
            registration_token: Some(registration_token.clone()),
            ..self.args
        };
        let settings = Settings::resolve(args, None).map_err(|e| Error::Start(format!("{e:#}")))?;
        let runway = crate::Runway::build(settings)
            .await
            .map_err(|e| Error::Start(format!("{e:#}")))?;
        let url = format!("http://{}", runway.addr);
        let handle = runway.server.handle();
        tokio::spawn(runway.server);
        Ok(TestServer {
            admin: AdminClient::new(&url, &admin_token)?,
            url,
            admin_token,
            registration_token,
            faults: runway.state.faults.clone(),
            state: runway.state,
            handle,
            data_dir: dir.path().to_path_buf(),
            dir: Some(dir),
        })
    }
}

/// A running server; stopped (and its folder removed) by [`TestServer::stop`] or on drop.
pub struct TestServer {
    url: String,
    admin_token: String,
    registration_token: String,
    admin: AdminClient,
    faults: Arc<Faults>,
    state: actix_web::web::Data<crate::AppState>,
    handle: actix_web::dev::ServerHandle,
    data_dir: std::path::PathBuf,
    dir: Option<tempfile::TempDir>,
}

/// A job or pipeline id.
#[derive(Debug, Clone, Copy)]
enum Owned {
    Job(i64),
    Pipeline(i64),
}

impl std::fmt::Display for Owned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owned::Job(id) => write!(f, "job {id}"),
            Owned::Pipeline(id) => write!(f, "pipeline {id}"),
        }
    }
}

/// Polls of the `wait_for_*` functions.
const POLL: Duration = Duration::from_millis(50);

impl TestServer {
    pub fn builder() -> TestServerBuilder {
        TestServerBuilder {
            args: SettingsArgs {
                long_poll_timeout: Some(0),
                trace_update_interval: Some(1),
                // Tests send wrong tokens on purpose; every client is 127.0.0.1.
                rate_limit_failed_auth: Some(0),
                workers: Some(2),
                database_pool_size: Some(4),
                ..Default::default()
            },
        }
    }

    /// A server with the defaults of [`TestServer::builder`].
    pub async fn start() -> Result<TestServer> {
        TestServer::builder().start().await
    }

    /// `http://127.0.0.1:<port>`: what runners are given as the GitLab URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The admin token (`PRIVATE-TOKEN`) of the admin API.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The legacy registration token (`gitlab-runner register --registration-token`).
    pub fn registration_token(&self) -> &str {
        &self.registration_token
    }

    /// The folder of the database, logs and artifacts; removed when the server stops.
    pub fn data_dir(&self) -> &std::path::Path {
        self.data_dir.as_path()
    }

    /// The admin API, for what this harness has no shortcut for.
    pub fn admin(&self) -> &AdminClient {
        &self.admin
    }

    /// An instance runner that runs untagged jobs.
    pub async fn create_runner(&self) -> Result<Runner> {
        self.create_runner_with(json!({ "runner_type": "instance_type" }))
            .await
    }

    /// A runner created with `POST /user/runners` params (`tag_list`, `run_untagged`,
    /// `paused`, `runner_type`, …).
    pub async fn create_runner_with(&self, params: Value) -> Result<Runner> {
        let created = self.admin.create_runner(&params).await?;
        match (created["id"].as_i64(), created["token"].as_str()) {
            (Some(id), Some(token)) => Ok(Runner {
                id,
                token: token.to_string(),
            }),
            _ => Err(Error::Invalid(format!("created runner: {created}"))),
        }
    }

    /// Deletes a runner: its token stops working at once.
    pub async fn delete_runner(&self, id: i64) -> Result<()> {
        Ok(self.admin.delete_runner(id).await?)
    }

    /// A pipeline from `.gitlab-ci.yml` text, on `main` of the project `harness`; its id.
    pub async fn enqueue_pipeline(&self, ci_config: &str) -> Result<i64> {
        self.enqueue_pipeline_with(ci_config, &PipelineOptions::default())
            .await
    }

    /// A pipeline in the project, ref and with the variables of `options`; its id.
    pub async fn enqueue_pipeline_with(
        &self,
        ci_config: &str,
        options: &PipelineOptions,
    ) -> Result<i64> {
        let project = self.admin.ensure_project(&options.project).await?;
        let project = project["id"]
            .as_i64()
            .ok_or_else(|| Error::Invalid(format!("project: {project}")))?;
        let pipeline = self
            .admin
            .create_pipeline(project, &options.git_ref, ci_config, &options.variables)
            .await?;
        pipeline["id"]
            .as_i64()
            .ok_or_else(|| Error::Invalid(format!("pipeline: {pipeline}")))
    }

    async fn pipeline_project(&self, pipeline: i64) -> Result<i64> {
        self.project_of(Owned::Pipeline(pipeline)).await
    }

    async fn job_project(&self, job: i64) -> Result<i64> {
        self.project_of(Owned::Job(job)).await
    }

    /// The project of a job or pipeline: the admin API's paths name it.
    async fn project_of(&self, owned: Owned) -> Result<i64> {
        let db_error = |e: &dyn std::fmt::Display| Error::Invalid(e.to_string());
        let mut db = self.state.db.read().await.map_err(|e| db_error(&e))?;
        let mut conn = db.conn();
        let project = match owned {
            Owned::Job(id) => JobRow::find(&mut conn, id)
                .await
                .map(|j| j.map(|j| j.project_id)),
            Owned::Pipeline(id) => PipelineRow::find(&mut conn, id)
                .await
                .map(|p| p.map(|p| p.project_id)),
        };
        project
            .map_err(|e| db_error(&e))?
            .ok_or_else(|| Error::NotFound(owned.to_string()))
    }

    /// A pipeline's status: `created`, `pending`, `running`, `success`, `failed`, …
    pub async fn pipeline_status(&self, pipeline: i64) -> Result<String> {
        let project = self.pipeline_project(pipeline).await?;
        let json = self.admin.pipeline(project, pipeline).await?;
        json["status"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| Error::Invalid(format!("pipeline: {json}")))
    }

    /// The latest try of each job of a pipeline, in creation order.
    pub async fn jobs(&self, pipeline: i64) -> Result<Vec<Job>> {
        let project = self.pipeline_project(pipeline).await?;
        let mut jobs = self
            .admin
            .pipeline_jobs(project, pipeline)
            .await?
            .iter()
            .map(Job::from_json)
            .collect::<Result<Vec<Job>>>()?;
        jobs.sort_by_key(|j| j.id);
        Ok(jobs)
    }

    /// The pipeline's (latest) job called `name`.
    pub async fn job_named(&self, pipeline: i64, name: &str) -> Result<Job> {
        self.jobs(pipeline)
            .await?
            .into_iter()
            .rfind(|j| j.name == name)
            .ok_or_else(|| Error::NotFound(format!("job {name:?} in pipeline {pipeline}")))
    }

    pub async fn job(&self, job: i64) -> Result<Job> {
        let project = self.job_project(job).await?;
        Job::from_json(&self.admin.job(project, job).await?)
    }

    /// A job's log so far (lossy UTF-8).
    pub async fn job_log(&self, job: i64) -> Result<String> {
        let project = self.job_project(job).await?;
        let bytes = self.admin.job_trace(project, job).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A job's artifacts archive as uploaded (a zip for `artifacts:paths`); `None` if none.
    pub async fn job_artifacts(&self, job: i64) -> Result<Option<Vec<u8>>> {
        let project = self.job_project(job).await?;
        Ok(self.admin.job_artifacts(project, job).await?)
    }

    /// Cancels a job as a user would; the runner learns it from `Job-Status: canceled`.
    pub async fn cancel_job(&self, job: i64) -> Result<Job> {
        let project = self.job_project(job).await?;
        Job::from_json(&self.admin.job_action(project, job, "cancel").await?)
    }

    /// Cancels every unfinished job of a pipeline.
    pub async fn cancel_pipeline(&self, pipeline: i64) -> Result<()> {
        let project = self.pipeline_project(pipeline).await?;
        self.admin
            .pipeline_action(project, pipeline, "cancel")
            .await?;
        Ok(())
    }

    /// Waits until the job's status is `status`; fails at once if the job ends otherwise,
    /// and after `timeout` with the status it was left in and the end of its log.
    pub async fn wait_for_job(&self, job: i64, status: &str, timeout: Duration) -> Result<Job> {
        if JobStatus::parse(status).is_none() {
            return Err(Error::UnknownStatus(status.to_string()));
        }
        let start = tokio::time::Instant::now();
        loop {
            let current = self.job(job).await?;
            if current.status == status {
                return Ok(current);
            }
            let what = format!("job {job} ({})", current.name);
            if current.is_finished() {
                return Err(Error::Ended {
                    what,
                    wanted: status.to_string(),
                    status: current.status.clone(),
                    context: self.log_tail(job).await,
                });
            }
            if start.elapsed() >= timeout {
                return Err(Error::Timeout {
                    what,
                    wanted: status.to_string(),
                    status: current.status.clone(),
                    waited: timeout,
                    context: self.log_tail(job).await,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the pipeline has ended; its final status (`success`, `failed`,
    /// `canceled` or `skipped`). After `timeout`: an error listing its jobs' statuses.
    pub async fn wait_for_pipeline(&self, pipeline: i64, timeout: Duration) -> Result<String> {
        let start = tokio::time::Instant::now();
        loop {
            let status = self.pipeline_status(pipeline).await?;
            if is_finished(&status) {
                return Ok(status);
            }
            if start.elapsed() >= timeout {
                let jobs: Vec<String> = self
                    .jobs(pipeline)
                    .await?
                    .iter()
                    .map(|j| format!("{} {}", j.name, j.status))
                    .collect();
                return Err(Error::Timeout {
                    what: format!("pipeline {pipeline}"),
                    wanted: "it to end".into(),
                    status,
                    waited: timeout,
                    context: format!("; jobs: {}", jobs.join(", ")),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The last lines of a job's log, for error messages.
    async fn log_tail(&self, job: i64) -> String {
        match self.job_log(job).await {
            Ok(log) if log.is_empty() => "; its log is empty".into(),
            Ok(log) => {
                let start = log.len().saturating_sub(2000);
                let start = (start..log.len())
                    .find(|i| log.is_char_boundary(*i))
                    .unwrap_or(0);
                format!("; end of its log:\n{}", &log[start..])
            }
            Err(e) => format!("; its log could not be read: {e}"),
        }
    }

    /// The next `times` requests with `method` (`"*"`: any) whose path matches `path`
    /// answer `status` with a GitLab-shaped body (`{"message":"500 Internal Server
    /// Error"}`) and an `X-Runway-Fault: injected` header, without reaching the route.
    /// `path` is matched segment by segment: `*` or `{name}` is any one segment, a final
    /// `**` any rest, e.g. `/api/v4/jobs/*` for the job `PUT`, `/api/v4/jobs/*/trace`.
    /// Faults fire in the order they were armed.
    ///
    /// # Panics
    /// On a method that is not one, a path not starting with `/`, or a status outside
    /// 100–999: mistakes in the test, not conditions to handle.
    pub fn fail_next(&self, method: &str, path: &str, times: usize, status: u16) -> Fault {
        let status = StatusCode::from_u16(status)
            .unwrap_or_else(|_| panic!("{status} is not an HTTP status"));
        self.arm(method, path, times, FaultAction::Respond(status))
    }

    /// The next `times` requests with `method` (`"*"`: any) whose path matches `path` are
    /// held for `hold`, then served as usual — e.g. `("POST", "/api/v4/jobs/request")` to
    /// make job requests slow. Paths as in [`TestServer::fail_next`].
    ///
    /// # Panics
    /// As [`TestServer::fail_next`].
    pub fn hold_next(&self, method: &str, path: &str, times: usize, hold: Duration) -> Fault {
        self.arm(method, path, times, FaultAction::Delay(hold))
    }

    /// The next `times` requests with `method` whose path matches `path` panic in the
    /// server, as a bug in a handler would: each is answered 500 (`{"message":"500
    /// Internal Server Error"}`) and the server goes on. Paths as in
    /// [`TestServer::fail_next`].
    ///
    /// # Panics
    /// As [`TestServer::fail_next`].
    pub fn panic_next(&self, method: &str, path: &str, times: usize) -> Fault {
        self.arm(method, path, times, FaultAction::Panic)
    }

    fn arm(&self, method: &str, path: &str, times: usize, action: FaultAction) -> Fault {
        let method = match method {
            "*" => None,
            m => Some(
                Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                    .unwrap_or_else(|_| panic!("{m:?} is not an HTTP method")),
            ),
        };
        let hits = self
            .faults
            .arm(method, path, times, action)
            .unwrap_or_else(|e| panic!("{e}"));
        Fault { hits, times }
    }

    /// Disarms every fault.
    pub fn clear_faults(&self) {
        self.faults.clear();
    }

    /// Stops the server: held job requests answer at once, requests in flight finish
    /// (bounded), then the temporary folder is removed.
    pub async fn stop(mut self) {
        self.faults.clear();
        self.state.queue.close();
        self.handle.stop(true).await;
        if let Some(dir) = self.dir.take() {
            remove_folder(dir);
        }
    }
}

/// Removes the data folder. Retried: the server's periodic pass stops when the queue
/// closes, but a pass under way may write to the database for a few more milliseconds,
/// re-creating a file between the removal of the files and that of the folder.
fn remove_folder(dir: tempfile::TempDir) {
    let path = dir.keep();
    for _ in 0..50 {
        match std::fs::remove_dir_all(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => return,
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else {
            return; // stopped
        };
        self.faults.clear();
        self.state.queue.close();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let handle = self.handle.clone();
            runtime.spawn(async move { handle.stop(false).await });
        }
        remove_folder(dir);
    }
}
