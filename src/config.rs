//! Settings of `runway serve`: command-line flags, then `RUNWAY_*` environment variables
//! (clap reads both; a flag wins), then an optional TOML file (`--config`), then defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

/// Raw settings as given; every field optional so that the layers can be merged.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsArgs {
    /// Address to listen on.
    #[arg(long, env = "RUNWAY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// `sqlite:///abs/file.sqlite3` or `postgres://…` (default: SQLite under the data dir).
    #[arg(long, env = "RUNWAY_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Folder for artifacts, traces and the default database.
    #[arg(long, env = "RUNWAY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Base URL put into payloads and shown to users (default: http:// + listen address).
    #[arg(long, env = "RUNWAY_EXTERNAL_URL")]
    pub external_url: Option<String>,
    /// Admin token for the admin API (`PRIVATE-TOKEN`); generated on first start if unset.
    #[arg(long, env = "RUNWAY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Key that seals CI/CD variables at rest: 64 hex digits (unset: generated on the first
    /// start into `<data dir>/secret.key`).
    #[arg(long, env = "RUNWAY_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// Legacy instance registration token for `POST /runners` (unset: legacy registration off).
    #[arg(long, env = "RUNWAY_REGISTRATION_TOKEN", hide_env_values = true)]
    pub registration_token: Option<String>,
    /// Lifetime of runner authentication tokens in seconds (unset or 0: tokens never expire).
    #[arg(long, env = "RUNWAY_RUNNER_TOKEN_EXPIRES_IN")]
    pub runner_token_expires_in: Option<u64>,
    /// Seconds between two heartbeat writes of one runner or runner manager; a runner
    /// manager's row is also kept in memory that long.
    #[arg(long, env = "RUNWAY_HEARTBEAT_INTERVAL")]
    pub heartbeat_interval: Option<u64>,
    /// Largest JSON or form body accepted, in bytes (413 beyond).
    #[arg(long, env = "RUNWAY_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Server URL answered by router discovery for runners with the `job_router` flag.
    #[arg(long, env = "RUNWAY_JOB_ROUTER_URL")]
    pub job_router_url: Option<String>,
    /// Seconds a job request with a current `last_update` is held, and one with an older
    /// `last_update` that finds no job (0: answer at once).
    #[arg(long, env = "RUNWAY_LONG_POLL_TIMEOUT")]
    pub long_poll_timeout: Option<u64>,
    /// Seconds between trace updates asked of runners (`X-GitLab-Trace-Update-Interval`).
    #[arg(long, env = "RUNWAY_TRACE_UPDATE_INTERVAL")]
    pub trace_update_interval: Option<u64>,
    /// Seconds after which a running job its runner stopped updating is failed.
    #[arg(long, env = "RUNWAY_STUCK_JOB_TIMEOUT")]
    pub stuck_job_timeout: Option<u64>,
    /// Seconds between two pulls of a mirrored project's upstream, for projects that set
    /// no `mirror_interval` of their own (0: those are pulled only when asked).
    #[arg(long, env = "RUNWAY_MIRROR_INTERVAL")]
    pub mirror_interval: Option<u64>,
    /// Two-phase job commit for runners that advertise it: a job stays pending until the
    /// runner's first update and goes back to the queue if none comes within 2 minutes.
    /// Off by default, as GitLab's `allow_runner_job_acknowledgement`.
    #[arg(long, env = "RUNWAY_TWO_PHASE_COMMIT")]
    pub two_phase_commit: Option<bool>,
    /// Largest job log in bytes; a job whose log grows past it fails (`trace_size_exceeded`).
    #[arg(long, env = "RUNWAY_MAX_TRACE_BYTES")]
    pub max_trace_bytes: Option<u64>,
    /// Largest single trace PATCH in bytes (the runner sends at most 1 MiB).
    #[arg(long, env = "RUNWAY_MAX_TRACE_PATCH_BYTES")]
    pub max_trace_patch_bytes: Option<usize>,
    /// Largest artifact in bytes (413 beyond).
    #[arg(long, env = "RUNWAY_MAX_ARTIFACT_SIZE_BYTES")]
    pub max_artifact_size_bytes: Option<u64>,
    /// Job requests per minute per runner token (GitLab's `runner_jobs_request_api_limit`; 0: off).
    #[arg(long, env = "RUNWAY_RATE_LIMIT_JOBS_REQUEST")]
    pub rate_limit_jobs_request: Option<u32>,
    /// Trace PATCHes per minute per job token (`runner_jobs_patch_trace_api_limit`; 0: off).
    #[arg(long, env = "RUNWAY_RATE_LIMIT_TRACE")]
    pub rate_limit_trace: Option<u32>,
    /// Other job calls per minute per job token: PUT, artifact upload and download
    /// (`runner_jobs_endpoints_api_limit`; 0: off).
    #[arg(long, env = "RUNWAY_RATE_LIMIT_JOB_API")]
    pub rate_limit_job_api: Option<u32>,
    /// Failed authentications (and registrations) per window per client address before
    /// that address gets 429 for the rest of the window (0: off).
    #[arg(long, env = "RUNWAY_RATE_LIMIT_FAILED_AUTH")]
    pub rate_limit_failed_auth: Option<u32>,
    /// The window the rate limits count in, in seconds (GitLab's: a minute).
    #[arg(long, env = "RUNWAY_RATE_LIMIT_WINDOW")]
    pub rate_limit_window: Option<u64>,
    /// Expiry of artifacts uploaded without `expire_in` (a GitLab duration or `never`).
    #[arg(long, env = "RUNWAY_DEFAULT_ARTIFACTS_EXPIRE_IN")]
    pub default_artifacts_expire_in: Option<String>,
    /// Pipelines created longer ago than this (a GitLab duration of at least a day, or
    /// `never`) are deleted with their jobs, logs and artifacts, in projects without a
    /// `ci_delete_pipelines_in_seconds` of their own.
    #[arg(long, env = "RUNWAY_DELETE_PIPELINES_AFTER")]
    pub delete_pipelines_after: Option<String>,
    /// Object storage for artifacts: `s3://bucket[/prefix]` (default: the local filesystem
    /// under the data dir). S3 settings below, else the usual `AWS_*` variables.
    #[arg(long, env = "RUNWAY_OBJECT_STORE_URL")]
    pub object_store_url: Option<String>,
    /// S3 endpoint for S3-compatible servers (e.g. `http://127.0.0.1:9000`).
    #[arg(long, env = "RUNWAY_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "RUNWAY_S3_REGION")]
    pub s3_region: Option<String>,
    #[arg(long, env = "RUNWAY_S3_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key_id: Option<String>,
    #[arg(long, env = "RUNWAY_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// Maximum number of database connections.
    #[arg(long, env = "RUNWAY_DATABASE_POOL_SIZE")]
    pub database_pool_size: Option<usize>,
    /// Seconds a request waits for a database connection before answering 503.
    #[arg(long, env = "RUNWAY_DATABASE_POOL_TIMEOUT")]
    pub database_pool_timeout: Option<u64>,
    /// PEM certificate chain: serve HTTPS (with `tls_key_file`) instead of HTTP.
    #[arg(long, env = "RUNWAY_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    #[arg(long, env = "RUNWAY_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// Number of HTTP worker threads (default: one per core).
    #[arg(long, env = "RUNWAY_WORKERS")]
    pub workers: Option<usize>,
    /// Log format: `text` or `json`.
    #[arg(long, env = "RUNWAY_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Seconds a request body may go without a byte before the request is cut (408).
    #[arg(long, env = "RUNWAY_BODY_TIMEOUT")]
    pub body_timeout: Option<u64>,
    /// Slowest average rate a request body may arrive at once past `body_timeout`, in
    /// bytes per second (0: no minimum).
    #[arg(long, env = "RUNWAY_BODY_MIN_RATE")]
    pub body_min_rate: Option<u64>,
    /// Most jobs one pipeline may have (GitLab's `ci_pipeline_size` limit; 0: no limit).
    #[arg(long, env = "RUNWAY_MAX_PIPELINE_JOBS")]
    pub max_pipeline_jobs: Option<usize>,
    /// URL schemes a project's `repository_url` may use, comma-separated (`file` also
    /// allows plain local paths).
    #[arg(long, env = "RUNWAY_GIT_ALLOWED_SCHEMES")]
    pub git_allowed_schemes: Option<String>,
    /// Serve each project's pages site at `<project>/-/pages/` (to anybody who can reach
    /// Runway, sandboxed).
    #[arg(long, env = "RUNWAY_PAGES")]
    pub pages: Option<bool>,
    /// Let `include:remote` fetch addresses on the local network (loopback, private).
    #[arg(long, env = "RUNWAY_INCLUDE_REMOTE_ALLOW_LOCAL")]
    pub include_remote_allow_local: Option<bool>,
}

impl SettingsArgs {
    /// Fills every unset field from `lower`.
    fn or(self, lower: SettingsArgs) -> SettingsArgs {
        SettingsArgs {
            listen: self.listen.or(lower.listen),
            database_url: self.database_url.or(lower.database_url),
            data_dir: self.data_dir.or(lower.data_dir),
            external_url: self.external_url.or(lower.external_url),
            admin_token: self.admin_token.or(lower.admin_token),
            secret_key: self.secret_key.or(lower.secret_key),
            registration_token: self.registration_token.or(lower.registration_token),
            runner_token_expires_in: self
                .runner_token_expires_in
                .or(lower.runner_token_expires_in),
            heartbeat_interval: self.heartbeat_interval.or(lower.heartbeat_interval),
            max_body_bytes: self.max_body_bytes.or(lower.max_body_bytes),
            job_router_url: self.job_router_url.or(lower.job_router_url),
            long_poll_timeout: self.long_poll_timeout.or(lower.long_poll_timeout),
            trace_update_interval: self.trace_update_interval.or(lower.trace_update_interval),
            stuck_job_timeout: self.stuck_job_timeout.or(lower.stuck_job_timeout),
            mirror_interval: self.mirror_interval.or(lower.mirror_interval),
            two_phase_commit: self.two_phase_commit.or(lower.two_phase_commit),
            max_trace_bytes: self.max_trace_bytes.or(lower.max_trace_bytes),
            max_trace_patch_bytes: self.max_trace_patch_bytes.or(lower.max_trace_patch_bytes),
            rate_limit_jobs_request: self
                .rate_limit_jobs_request
                .or(lower.rate_limit_jobs_request),
            rate_limit_trace: self.rate_limit_trace.or(lower.rate_limit_trace),
            rate_limit_job_api: self.rate_limit_job_api.or(lower.rate_limit_job_api),
            rate_limit_window: self.rate_limit_window.or(lower.rate_limit_window),
            rate_limit_failed_auth: self.rate_limit_failed_auth.or(lower.rate_limit_failed_auth),
            max_artifact_size_bytes: self
                .max_artifact_size_bytes
                .or(lower.max_artifact_size_bytes),
            default_artifacts_expire_in: self
                .default_artifacts_expire_in
                .or(lower.default_artifacts_expire_in),
            delete_pipelines_after: self.delete_pipelines_after.or(lower.delete_pipelines_after),
            object_store_url: self.object_store_url.or(lower.object_store_url),
            s3_endpoint: self.s3_endpoint.or(lower.s3_endpoint),
            s3_region: self.s3_region.or(lower.s3_region),
            s3_access_key_id: self.s3_access_key_id.or(lower.s3_access_key_id),
            s3_secret_access_key: self.s3_secret_access_key.or(lower.s3_secret_access_key),
            database_pool_size: self.database_pool_size.or(lower.database_pool_size),
            database_pool_timeout: self.database_pool_timeout.or(lower.database_pool_timeout),
            tls_cert_file: self.tls_cert_file.or(lower.tls_cert_file),
            tls_key_file: self.tls_key_file.or(lower.tls_key_file),
            workers: self.workers.or(lower.workers),
            log_format: self.log_format.or(lower.log_format),
            body_timeout: self.body_timeout.or(lower.body_timeout),
            body_min_rate: self.body_min_rate.or(lower.body_min_rate),
            max_pipeline_jobs: self.max_pipeline_jobs.or(lower.max_pipeline_jobs),
            git_allowed_schemes: self.git_allowed_schemes.or(lower.git_allowed_schemes),
            pages: self.pages.or(lower.pages),
            include_remote_allow_local: self
                .include_remote_allow_local
                .or(lower.include_remote_allow_local),
        }
    }
}

/// Where artifacts are kept.
#[derive(Clone, Default)]
pub struct ObjectStoreSettings {
    /// `s3://bucket[/prefix]`; `None`: the local filesystem under the data dir.
    pub url: Option<String>,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<String>,
}

impl std::fmt::Debug for ObjectStoreSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStoreSettings")
            .field("url", &self.url)
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_region", &self.s3_region)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The shortest pipeline retention GitLab allows (`ci_delete_pipelines_in_seconds`).
pub const ONE_DAY_SECONDS: i64 = 86_400;

/// Resolved settings; what the server runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub database_url: String,
    pub data_dir: PathBuf,
    pub external_url: String,
    /// Whether `external_url` was derived from `listen` (and follows the bound port).
    pub external_url_is_default: bool,
    pub admin_token: Option<String>,
    pub secret_key: Option<String>,
    pub registration_token: Option<String>,
    pub runner_token_expires_in: Option<Duration>,
    pub heartbeat_interval: Duration,
    pub max_body_bytes: usize,
    pub job_router_url: Option<String>,
    pub long_poll_timeout: Duration,
    pub trace_update_interval: Duration,
    pub stuck_job_timeout: Duration,
    /// The default timed-pull interval; `None`: projects without their own
    /// `mirror_interval` are pulled only when asked (`POST /projects/:id/mirror/pull`).
    pub mirror_interval: Option<Duration>,
    pub two_phase_commit: bool,
    pub max_trace_bytes: u64,
    pub max_trace_patch_bytes: usize,
    pub max_artifact_size_bytes: u64,
    pub rate_limit_jobs_request: u32,
    pub rate_limit_trace: u32,
    pub rate_limit_job_api: u32,
    pub rate_limit_window: Duration,
    pub rate_limit_failed_auth: u32,
    pub default_artifacts_expire_in: Option<Duration>,
    /// Pipelines older than this are deleted where the project sets no retention of its
    /// own; `None`: kept (GitLab's default).
    pub delete_pipelines_after: Option<Duration>,
    pub object_store: ObjectStoreSettings,
    pub database_pool_size: usize,
    pub database_pool_timeout: Duration,
    /// Certificate chain and key files, when serving HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub workers: usize,
    pub log_format: LogFormat,
    /// How long a request body may stall, and the slowest rate it may keep after that.
    pub body_timeout: Duration,
    pub body_min_rate: u64,
    /// Most jobs in one pipeline (`None`: no limit).
    pub max_pipeline_jobs: Option<usize>,
    /// Schemes a `repository_url` may use (lower case; `file` covers local paths).
    pub git_allowed_schemes: Vec<String>,
    /// Whether pages sites are served.
    pub pages: bool,
    /// Whether `include:remote` may fetch local-network addresses.
    pub include_remote_allow_local: bool,
}

impl Settings {
    /// Merges flags/environment over the optional TOML file over the defaults.
    pub fn resolve(args: SettingsArgs, config_file: Option<&Path>) -> anyhow::Result<Settings> {
        let file = match config_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str::<SettingsArgs>(&text)
                    .with_context(|| format!("parsing {}", path.display()))?
            }
            None => SettingsArgs::default(),
        };
        let merged = args.or(file);
        let listen = merged
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let data_dir = merged
            .data_dir
            .unwrap_or_else(|| PathBuf::from("runway-data"));
        let database_url = match merged.database_url {
            Some(url) => url,
            None => {
                let dir = std::path::absolute(&data_dir)
                    .with_context(|| format!("resolving {}", data_dir.display()))?;
                format!("sqlite://{}", dir.join("runway.sqlite3").display())
            }
        };
        let external_url_is_default = merged.external_url.is_none();
        let external_url = merged
            .external_url
            .unwrap_or_else(|| format!("http://{listen}"))
            .trim_end_matches('/')
            .to_string();
        let log_format = match merged.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => anyhow::bail!("log format must be text or json, not {other:?}"),
        };
        let workers = merged
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        Ok(Settings {
            listen,
            database_url,
            data_dir,
            external_url,
            external_url_is_default,
            admin_token: merged.admin_token.filter(|t| !t.is_empty()),
            secret_key: merged.secret_key.filter(|k| !k.is_empty()),
            registration_token: merged.registration_token.filter(|t| !t.is_empty()),
            runner_token_expires_in: merged
                .runner_token_expires_in
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
            heartbeat_interval: Duration::from_secs(merged.heartbeat_interval.unwrap_or(60)),
            max_body_bytes: merged.max_body_bytes.unwrap_or(1024 * 1024),
            job_router_url: merged.job_router_url.filter(|u| !u.is_empty()),
            // 50 s: Workhorse's hold for runner long polls.
            long_poll_timeout: Duration::from_secs(merged.long_poll_timeout.unwrap_or(50)),
            // 60 s: GitLab's interval while nobody watches the log.
            trace_update_interval: Duration::from_secs(
                merged.trace_update_interval.unwrap_or(60).max(1),
            ),
            // 1 h: GitLab's stuck-jobs worker fails running jobs silent for an hour.
            stuck_job_timeout: Duration::from_secs(
                merged.stuck_job_timeout.unwrap_or(3600).max(60),
            ),
            mirror_interval: match merged.mirror_interval.unwrap_or(60) {
                0 => None,
                seconds => Some(Duration::from_secs(seconds)),
            },
            two_phase_commit: merged.two_phase_commit.unwrap_or(false),
            // 100 MiB: GitLab's default `ci_jobs_trace_size_limit`.
            max_trace_bytes: merged.max_trace_bytes.unwrap_or(100 * 1024 * 1024),
            max_trace_patch_bytes: merged.max_trace_patch_bytes.unwrap_or(8 * 1024 * 1024),
            // GitLab's defaults (reference §22).
            rate_limit_jobs_request: merged.rate_limit_jobs_request.unwrap_or(2000),
            rate_limit_trace: merged.rate_limit_trace.unwrap_or(200),
            rate_limit_job_api: merged.rate_limit_job_api.unwrap_or(200),
            rate_limit_window: Duration::from_secs(merged.rate_limit_window.unwrap_or(60).max(1)),
            rate_limit_failed_auth: merged.rate_limit_failed_auth.unwrap_or(300),
            // 100 MiB: GitLab's default `max_artifacts_size`.
            max_artifact_size_bytes: merged.max_artifact_size_bytes.unwrap_or(100 * 1024 * 1024),
            // 30 days: GitLab's default `default_artifacts_expire_in`.
            default_artifacts_expire_in: match merged
                .default_artifacts_expire_in
                .as_deref()
                .map(str::trim)
            {
                None => Some(Duration::from_secs(30 * 86_400)),
                Some("never") | Some("0") | Some("") => None,
                Some(text) => Some(Duration::from_secs(
                    crate::ci::duration::parse_seconds(text).with_context(|| {
                        format!("default artifacts expiry {text:?} is not a duration")
                    })? as u64,
                )),
            },
            // None by default: GitLab keeps pipelines unless a project sets
            // `ci_delete_pipelines_in_seconds` (at least a day).
            delete_pipelines_after: match merged.delete_pipelines_after.as_deref().map(str::trim) {
                None | Some("never") | Some("0") | Some("") => None,
                Some(text) => {
                    let seconds = crate::ci::duration::parse_seconds(text).with_context(|| {
                        format!("pipeline retention {text:?} is not a duration")
                    })?;
                    anyhow::ensure!(
                        seconds >= ONE_DAY_SECONDS,
                        "pipeline retention {text:?} is shorter than a day"
                    );
                    Some(Duration::from_secs(seconds as u64))
                }
            },
            object_store: ObjectStoreSettings {
                url: merged.object_store_url.filter(|u| !u.is_empty()),
                s3_endpoint: merged.s3_endpoint,
                s3_region: merged.s3_region,
                s3_access_key_id: merged.s3_access_key_id,
                s3_secret_access_key: merged.s3_secret_access_key,
            },
            database_pool_size: merged.database_pool_size.unwrap_or(16).max(1),
            database_pool_timeout: Duration::from_secs(
                merged.database_pool_timeout.unwrap_or(5).max(1),
            ),
            tls: match (merged.tls_cert_file, merged.tls_key_file) {
                (Some(cert), Some(key)) => Some((cert, key)),
                (None, None) => None,
                _ => anyhow::bail!("RUNWAY_TLS_CERT_FILE and RUNWAY_TLS_KEY_FILE go together"),
            },
            workers: workers.max(1),
            log_format,
            // 30 s without a byte, then 1 KiB/s on average: a stalled or trickling body
            // cannot hold a connection (nginx's `client_body_timeout` is 60 s).
            body_timeout: Duration::from_secs(merged.body_timeout.unwrap_or(30).max(1)),
            body_min_rate: merged.body_min_rate.unwrap_or(1024),
            // GitLab's `ci_pipeline_size` is off by default on self-managed instances; one
            // binary on a small machine keeps to 2,000 jobs (the size from which GitLab
            // logs a pipeline as large), enough for 10 jobs × `parallel: 200`.
            max_pipeline_jobs: match merged.max_pipeline_jobs.unwrap_or(2_000) {
                0 => None,
                n => Some(n),
            },
            git_allowed_schemes: merged
                .git_allowed_schemes
                .as_deref()
                .unwrap_or("https,http,ssh,git,file")
                .split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect(),
            pages: merged.pages.unwrap_or(true),
            include_remote_allow_local: merged.include_remote_allow_local.unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_and_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("runway.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:9999\"\nheartbeat_interval = 5\nexternal_url = \"http://file/\"\n").unwrap();
        let args = SettingsArgs {
            external_url: Some("http://flag/".into()),
            ..Default::default()
        };
        let s = Settings::resolve(args, Some(&file)).unwrap();
        assert_eq!(s.listen.port(), 9999);
        assert_eq!(s.heartbeat_interval, Duration::from_secs(5));
        assert_eq!(s.external_url, "http://flag");
        assert!(
            s.database_url.starts_with("sqlite:///"),
            "{}",
            s.database_url
        );
    }

    #[test]
    fn pipeline_retention_is_a_day_or_more_or_never() {
        let resolve = |text: &str| {
            let args = SettingsArgs {
                delete_pipelines_after: Some(text.into()),
                ..Default::default()
            };
            Settings::resolve(args, None).map(|s| s.delete_pipelines_after)
        };
        assert_eq!(
            resolve("30 days").unwrap(),
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(resolve("86400").unwrap(), Some(Duration::from_secs(86_400)));
        assert_eq!(resolve("never").unwrap(), None);
        let short = resolve("1 hour").unwrap_err().to_string();
        assert!(short.contains("shorter than a day"), "{short}");
        assert!(resolve("soon").is_err());
        assert_eq!(
            Settings::resolve(SettingsArgs::default(), None)
                .unwrap()
                .delete_pipelines_after,
            None
        );
    }

    #[test]
    fn unknown_keys_in_the_file_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("runway.toml");
        std::fs::write(&file, "listn = \"127.0.0.1:1\"\n").unwrap();
        assert!(Settings::resolve(SettingsArgs::default(), Some(&file)).is_err());
    }
}
