//! `TestApp`: a real Runway server on a random port with a fresh database.

#![allow(dead_code)]

pub mod e2e;
pub mod tls;

use std::time::Duration;

use reqwest::{Client, Method, RequestBuilder, Response};
use runway::config::{Settings, SettingsArgs};
use runway::db::models::{Runner, RunnerFilter, RunnerManager};
use runway::db::DbPool;
use serde_json::Value;

pub const ADMIN_TOKEN: &str = "glpat-test-admin-token";
pub const REGISTRATION_TOKEN: &str = "test-registration-token";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Expands each test body into `<name>::sqlite` and `<name>::postgres`, with `$backend`
/// bound to the backend.
macro_rules! both_backends {
    ($(async fn $name:ident($backend:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                async fn run($backend: $crate::helpers::Backend) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    run($crate::helpers::Backend::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    run($crate::helpers::Backend::Postgres).await
                }
            }
        )*
    };
}
pub(crate) use both_backends;

pub struct TestAppBuilder {
    backend: Backend,
    args: SettingsArgs,
    database_url: Option<String>,
    data_dir: Option<std::path::PathBuf>,
}

impl TestAppBuilder {
    pub fn token_expires_in(mut self, seconds: u64) -> Self {
        self.args.runner_token_expires_in = Some(seconds);
        self
    }

    pub fn heartbeat_interval(mut self, seconds: u64) -> Self {
        self.args.heartbeat_interval = Some(seconds);
        self
    }

    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.args.max_body_bytes = Some(bytes);
        self
    }

    pub fn long_poll_timeout(mut self, seconds: u64) -> Self {
        self.args.long_poll_timeout = Some(seconds);
        self
    }

    /// Artifacts in S3 at `url` (`s3://bucket/prefix`) on the server at `endpoint`.
    pub fn s3(mut self, url: &str, endpoint: &str) -> Self {
        self.args.object_store_url = Some(url.to_string());
        self.args.s3_endpoint = Some(endpoint.to_string());
        self.args.s3_region = Some("us-east-1".into());
        self.args.s3_access_key_id = Some("testing".into());
        self.args.s3_secret_access_key = Some("testing".into());
        self
    }

    pub fn trace_update_interval(mut self, seconds: u64) -> Self {
        self.args.trace_update_interval = Some(seconds);
        self
    }

    /// Rate limits per token: job requests, trace PATCHes, other job calls, per `window`.
    pub fn rate_limits(mut self, jobs_request: u32, trace: u32, job_api: u32, window: u64) -> Self {
        self.args.rate_limit_jobs_request = Some(jobs_request);
        self.args.rate_limit_trace = Some(trace);
        self.args.rate_limit_job_api = Some(job_api);
        self.args.rate_limit_window = Some(window);
        self
    }

    /// Failed authentications per `window` seconds per client address.
    pub fn failed_auth_limit(mut self, failures: u32, window: u64) -> Self {
        self.args.rate_limit_failed_auth = Some(failures);
        self.args.rate_limit_window = Some(window);
        self
    }

    pub fn max_artifact_size(mut self, bytes: u64) -> Self {
        self.args.max_artifact_size_bytes = Some(bytes);
        self
    }

    /// A request body is cut after `seconds` without a byte, or under `min_rate` bytes/s.
    pub fn body_timeout(mut self, seconds: u64, min_rate: u64) -> Self {
        self.args.body_timeout = Some(seconds);
        self.args.body_min_rate = Some(min_rate);
        self
    }

    /// `include:remote` may fetch 127.0.0.1 (the tests' own file servers).
    pub fn include_remote_allow_local(mut self) -> Self {
        self.args.include_remote_allow_local = Some(true);
        self
    }

    /// The most jobs one pipeline may have (0: no limit).
    pub fn max_pipeline_jobs(mut self, jobs: usize) -> Self {
        self.args.max_pipeline_jobs = Some(jobs);
        self
    }

    /// The instance's pipeline retention (`RUNWAY_DELETE_PIPELINES_AFTER`).
    pub fn delete_pipelines_after(mut self, duration: &str) -> Self {
        self.args.delete_pipelines_after = Some(duration.into());
        self
    }

    /// The stuck-job timeout; the reaper passes every quarter of it (15 s at 60).
    pub fn stuck_job_timeout(mut self, seconds: u64) -> Self {
        self.args.stuck_job_timeout = Some(seconds);
        self
    }

    /// Pull mirrored projects' upstreams every `seconds` (off in tests otherwise), unless
    /// a project sets its own `mirror_interval`.
    pub fn mirror_interval(mut self, seconds: u64) -> Self {
        self.args.mirror_interval = Some(seconds);
        self
    }

    pub fn max_trace_bytes(mut self, bytes: u64) -> Self {
        self.args.max_trace_bytes = Some(bytes);
        self
    }

    pub fn two_phase_commit(mut self) -> Self {
        self.args.two_phase_commit = Some(true);
        self
    }

    /// A second server on the first one's database (several instances, one database).
    pub fn same_database_as(mut self, other: &TestApp) -> Self {
        self.database_url = Some(other.database_url.clone());
        self
    }

    /// The first server's data dir (its artifacts and logs), e.g. for a restart.
    pub fn data_dir_of(mut self, other: &TestApp) -> Self {
        self.data_dir = Some(other.data_dir().to_path_buf());
        self
    }

    /// A database of the test's own (e.g. a PostgreSQL server it stops and starts).
    pub fn database_url(mut self, url: &str) -> Self {
        self.database_url = Some(url.to_string());
        self
    }

    pub fn pool(mut self, size: usize, timeout_seconds: u64) -> Self {
        self.args.database_pool_size = Some(size);
        self.args.database_pool_timeout = Some(timeout_seconds);
        self
    }

    /// HTTPS with this certificate chain and key (PEM files).
    pub fn tls(mut self, cert: &std::path::Path, key: &std::path::Path) -> Self {
        self.args.tls_cert_file = Some(cert.to_path_buf());
        self.args.tls_key_file = Some(key.to_path_buf());
        self
    }

    pub fn without_registration_token(mut self) -> Self {
        self.args.registration_token = None;
        self
    }

    pub async fn spawn(self) -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut args = self.args;
        let database_url = match (self.database_url, self.backend) {
            (Some(url), _) => url,
            (None, Backend::Sqlite) => {
                format!("sqlite://{}", dir.path().join("runway.sqlite3").display())
            }
            (None, Backend::Postgres) => fresh_postgres_database().await,
        };
        args.database_url = Some(database_url.clone());
        let data_dir = self.data_dir.unwrap_or_else(|| dir.path().to_path_buf());
        args.data_dir = Some(data_dir.clone());
        let settings = Settings::resolve(args, None).expect("settings");
        let runway = runway::Runway::build(settings)
            .await
            .expect("server starts");
        let base = runway.state.settings.external_url.clone();
        let handle = runway.server.handle();
        tokio::spawn(runway.server);
        TestApp {
            base,
            database_url,
            backend: self.backend,
            client: Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            db: runway.state.db.clone(),
            state: runway.state.clone(),
            handle,
            data_dir,
            _dir: dir,
        }
    }
}

/// Writes a small file at `path`, last modified `hours_ago` hours ago (now when 0).
pub fn write_file_aged(path: &std::path::Path, hours_ago: u64) {
    let file = std::fs::File::create(path).expect("create");
    std::io::Write::write_all(&mut &file, b"bytes").expect("write");
    if hours_ago > 0 {
        let at = std::time::SystemTime::now() - std::time::Duration::from_secs(hours_ago * 3600);
        file.set_modified(at).expect("mtime");
    }
}

/// A fresh, empty database on the test PostgreSQL server.
pub async fn fresh_postgres_database() -> String {
    let url = std::env::var("RUNWAY_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "RUNWAY_TEST_DATABASE_URL is not set: PostgreSQL tests need a server. \
             Run the suite with scripts/test.sh, which starts one."
        )
    });
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL server");
    tokio::spawn(connection);
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(|| sweep_old_databases(url.clone()));
    let name = format!("runway_test_{}", uuid::Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create test database");
    let (base, _) = url.rsplit_once('/').expect("database URL has a path");
    format!("{base}/{name}")
}

/// The databases earlier runs left on the test server (each test makes its own and none
/// drops it: a test may start a second server on it, or restart on it): once a run, in
/// the background, those no session uses and whose folder has not changed for an hour
/// are dropped, so that a server kept between runs does not fill its disk. Best effort:
/// without the right to read the data folder's times, nothing is dropped.
fn sweep_old_databases(url: String) {
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async move {
            let Ok((client, connection)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await else {
                return;
            };
            tokio::spawn(connection);
            let old = client
                .query(
                    "SELECT d.datname FROM pg_database d \
                     WHERE d.datname LIKE 'runway\\_test\\_%' \
                       AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname) \
                       AND (pg_stat_file('base/' || d.oid)).modification < now() - interval '1 hour'",
                    &[],
                )
                .await
                .unwrap_or_default();
            for row in old {
                let name: String = row.get(0);
                // A database a session opened meanwhile is not dropped (the statement fails).
                let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\"")).await;
            }
        });
    });
}

pub struct TestApp {
    pub base: String,
    pub database_url: String,
    pub backend: Backend,
    pub client: Client,
    pub db: DbPool,
    pub state: actix_web::web::Data<runway::AppState>,
    handle: actix_web::dev::ServerHandle,
    data_dir: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        tokio::spawn(async move { handle.stop(false).await });
    }
}

/// A response read whole: status, headers and body.
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status and that the body is exactly `body` (as JSON), with a JSON type.
    #[track_caller]
    pub fn assert(&self, status: u16, body: Value) {
        assert_eq!(self.status, status, "status; body: {}", self.text);
        assert_eq!(self.json(), body, "body");
        let content_type = self.header("content-type").unwrap_or("");
        assert!(
            content_type.starts_with("application/json"),
            "content type {content_type:?}"
        );
    }
}

impl TestApp {
    pub fn builder(backend: Backend) -> TestAppBuilder {
        TestAppBuilder {
            backend,
            args: SettingsArgs {
                listen: Some("127.0.0.1:0".parse().expect("address")),
                admin_token: Some(ADMIN_TOKEN.into()),
                registration_token: Some(REGISTRATION_TOKEN.into()),
                database_pool_size: Some(8),
                // Tests that want held polls ask for them; the rest answer at once.
                long_poll_timeout: Some(0),
                // Every test client is 127.0.0.1: tests that send wrong tokens on purpose
                // would ban each other. The limit's own test turns it on.
                rate_limit_failed_auth: Some(0),
                // Mirrors are pulled when a test asks (`POST …/mirror/pull`), not on a
                // timer that would race the test's own commits.
                mirror_interval: Some(0),
                workers: Some(2),
                ..Default::default()
            },
            database_url: None,
            data_dir: None,
        }
    }

    pub async fn spawn(backend: Backend) -> TestApp {
        TestApp::builder(backend).spawn().await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path)
            .header("PRIVATE-TOKEN", ADMIN_TOKEN)
    }

    pub async fn send(&self, request: RequestBuilder) -> Reply {
        let response: Response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body read");
        Reply {
            status,
            headers,
            text,
        }
    }

    /// `POST /api/v4/<path>` with a JSON body.
    pub async fn post_json(&self, path: &str, body: Value) -> Reply {
        self.send(
            self.request(Method::POST, &format!("/api/v4{path}"))
                .json(&body),
        )
        .await
    }

    /// Creates a runner through the admin API; returns (id, glrt- token).
    pub async fn create_runner(&self, body: Value) -> (i64, String) {
        let reply = self
            .send(self.admin(Method::POST, "/api/v4/user/runners").json(&body))
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let json = reply.json();
        (
            json["id"].as_i64().expect("id"),
            json["token"].as_str().expect("token").to_string(),
        )
    }

    /// Registers a runner with the legacy registration token; returns (id, token).
    pub async fn register_runner(&self) -> (i64, String) {
        let reply = self
            .post_json(
                "/runners",
                serde_json::json!({ "token": REGISTRATION_TOKEN }),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let json = reply.json();
        (
            json["id"].as_i64().expect("id"),
            json["token"].as_str().expect("token").to_string(),
        )
    }

    pub async fn runners(&self) -> Vec<Runner> {
        let mut db = self.db.read().await.expect("connection");
        Runner::list(&mut db.conn(), &RunnerFilter::default(), None)
            .await
            .expect("runners")
    }

    pub async fn runner(&self, id: i64) -> Option<Runner> {
        let mut db = self.db.read().await.expect("connection");
        Runner::find(&mut db.conn(), id).await.expect("runner")
    }

    pub async fn managers(&self, runner_id: i64) -> Vec<RunnerManager> {
        let mut db = self.db.read().await.expect("connection");
        RunnerManager::for_runner(&mut db.conn(), runner_id)
            .await
            .expect("managers")
    }

    /// A job's row.
    pub async fn runner_job(&self, id: i64) -> runway::db::models::Job {
        let mut db = self.db.read().await.expect("connection");
        runway::db::models::Job::find(&mut db.conn(), id)
            .await
            .expect("job")
            .expect("job exists")
    }

    /// Every runner and manager row, for "nothing changed" checks.
    pub async fn snapshot(&self) -> String {
        let mut out = String::new();
        for runner in self.runners().await {
            out.push_str(&format!("{runner:?}\n"));
            for manager in self.managers(runner.id).await {
                out.push_str(&format!("  {manager:?}\n"));
            }
        }
        out
    }

    /// Stops the server and waits until it has; its database and data folder stay (a
    /// second app `same_database_as` this one is then the same server restarted).
    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }

    /// The server's data dir.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Runs one SQL statement on the app's database (to age tokens and the like).
    pub async fn execute(&self, sql: &str) {
        use diesel_async::RunQueryDsl;
        let mut db = self.db.write().await.expect("connection");
        runway::db_run!(&mut db.conn(), |c| diesel::sql_query(sql).execute(c).await).expect("sql");
    }
}

/// Every feature a v19 runner with the shell executor advertises (client reference §3).
pub fn shell_features() -> Value {
    serde_json::json!({
        "variables": true, "image": false, "services": false, "artifacts": true, "cache": true,
        "fallback_cache_keys": true, "shared": true, "upload_multiple_artifacts": true,
        "upload_raw_artifacts": true, "session": true, "terminal": true, "refspecs": true,
        "masking": true, "proxy": false, "raw_variables": true, "artifacts_exclude": true,
        "multi_build_steps": true, "trace_reset": true, "trace_checksum": true, "trace_size": true,
        "vault_secrets": true, "cancelable": true, "return_exit_code": true,
        "service_variables": false, "service_multiple_aliases": false, "image_executor_opts": false,
        "service_executor_opts": false, "cancel_gracefully": true, "native_steps_integration": true,
        "two_phase_job_commit": true, "job_inputs": true,
    })
}

impl TestApp {
    /// Creates a project through the admin API; returns its id.
    pub async fn create_project(&self, body: Value) -> i64 {
        let reply = self
            .send(self.admin(Method::POST, "/api/v4/projects").json(&body))
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        reply.json()["id"].as_i64().expect("id")
    }

    /// `POST /projects/:id/pipeline` with `ci_config`.
    /// An admin call to `/api/v4<path>`, with a JSON body if given.
    pub async fn api(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let request = self.admin(method, &format!("/api/v4{path}"));
        self.send(match body {
            Some(body) => request.json(&body),
            None => request,
        })
        .await
    }

    pub async fn create_pipeline(&self, project_id: i64, ref_: &str, yaml: &str) -> Reply {
        self.send(
            self.admin(
                Method::POST,
                &format!("/api/v4/projects/{project_id}/pipeline"),
            )
            .json(&serde_json::json!({ "ref": ref_, "ci_config": yaml })),
        )
        .await
    }

    /// Creates a pipeline that must be accepted; returns its id.
    pub async fn pipeline(&self, project_id: i64, yaml: &str) -> i64 {
        let reply = self.create_pipeline(project_id, "main", yaml).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        reply.json()["id"].as_i64().expect("id")
    }

    /// `POST /jobs/request` as a v19 shell runner.
    pub async fn request_job(&self, runner_token: &str) -> Reply {
        self.request_job_with(runner_token, serde_json::json!({}))
            .await
    }

    pub async fn request_job_with(&self, runner_token: &str, extra: Value) -> Reply {
        let mut body = serde_json::json!({
            "token": runner_token,
            "system_id": "s_000000000001",
            "info": { "name": "gitlab-runner", "version": "19.4.0", "executor": "shell", "features": shell_features() },
        });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                body.insert(k.clone(), v.clone());
            }
        }
        self.send(
            self.request(Method::POST, "/api/v4/jobs/request")
                .header("Runner-Token", runner_token)
                .json(&body),
        )
        .await
    }

    /// Polls until a job comes; returns the payload.
    pub async fn take_job(&self, runner_token: &str) -> Value {
        let reply = self.request_job(runner_token).await;
        assert_eq!(
            reply.status, 201,
            "expected a job: {} {}",
            reply.status, reply.text
        );
        reply.json()
    }

    /// `PUT /jobs/:id` as the runner sends it.
    pub async fn update_job(&self, job: &Value, body: Value) -> Reply {
        let token = job["token"].as_str().expect("token");
        let mut body = body;
        body["token"] = Value::String(token.to_string());
        self.send(
            self.request(Method::PUT, &format!("/api/v4/jobs/{}", job["id"]))
                .header("Job-Token", token)
                .json(&body),
        )
        .await
    }

    /// `(name, status)` of the latest jobs of a pipeline.
    pub async fn job_statuses(&self, project_id: i64, pipeline_id: i64) -> Vec<(String, String)> {
        let reply = self
            .send(self.admin(
                Method::GET,
                &format!("/api/v4/projects/{project_id}/pipelines/{pipeline_id}/jobs?per_page=100"),
            ))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply
            .json()
            .as_array()
            .expect("array")
            .iter()
            .map(|j| {
                (
                    j["name"].as_str().unwrap_or("").to_string(),
                    j["status"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// The sorted names of the latest jobs of the pipeline in `pipeline` (its JSON).
    pub async fn job_names(&self, project_id: i64, pipeline: &Value) -> Vec<String> {
        let id = pipeline["id"].as_i64().expect("pipeline id");
        let mut names: Vec<String> = self
            .job_statuses(project_id, id)
            .await
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        names.sort();
        names
    }

    pub async fn pipeline_status(&self, project_id: i64, pipeline_id: i64) -> String {
        let reply = self
            .send(self.admin(
                Method::GET,
                &format!("/api/v4/projects/{project_id}/pipelines/{pipeline_id}"),
            ))
            .await;
        reply.json()["status"].as_str().unwrap_or("").to_string()
    }
}

/// `[("a", "pending"), …]` from string pairs, for comparisons.
pub fn statuses(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}
