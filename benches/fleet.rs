//! A fleet of gitlab-runners against one Runway, on 127.0.0.1 only: the release binary
//! (`runway serve`, rate limits off, polls held up to 50 s as GitLab's Workhorse holds
//! them) on SQLite and on PostgreSQL, one fresh database each.
//!
//! - **Runners**: `RUNWAY_FLEET_RUNNERS` (10000) simulated runner machines, each one task
//!   with one keep-alive HTTP/1.1 connection, as gitlab-runner with `concurrent = 1` and
//!   `request_concurrency = 1` behaves: `POST /api/v4/jobs/request` with one of 100 runner
//!   tokens (instance runners), its own `system_id` and, as `last_update`, the last
//!   `X-GitLab-Last-Update` it was answered; a new poll right after each answer, none
//!   while it runs a job.
//! - **Jobs**: `RUNWAY_FLEET_JOBS_PER_SECOND` (100) for `RUNWAY_FLEET_SECONDS` (60), as
//!   paced pipelines of two jobs (`build`, then `test` in the next stage, which downloads
//!   `build`'s artifact) made through `POST /projects/:id/pipeline`.
//! - **Each job** on the connection it came on: 10 log PATCHes of 4 KiB, a 1 MiB artifact
//!   upload, the dependency's artifact downloaded with the job's own token (`test` only),
//!   then `PUT /jobs/:id` `success`; then the runner polls again.
//!
//! Figures: pickup latency (from the moment a job became pending — the pipeline POST's
//! 201 for `build`, the 200 of `build`'s final PUT for `test` — to the runner having read
//! the 201 carrying it), jobs created / picked / finished, errors (any unexpected status
//! or failed connection), the server's CPU and RSS over the load, the database's size at
//! the end, and the load generator's own CPU. PostgreSQL comes from
//! `RUNWAY_BENCH_DATABASE_URL`, else `scripts/pg.sh` starts a throwaway one, stopped at the
//! end. `RUNWAY_FLEET_COLUMNS` (`sqlite,postgres`) picks the backends;
//! `RUNWAY_BENCH_SERVER_LOG=<file>` keeps the servers' logs; `RUNWAY_FLEET_PICKUPS=<file>`
//! appends each job's pickup with when it became pending.
//!
//! Run: `cargo bench --bench fleet` (Linux); a quick run:
//! `RUNWAY_FLEET_RUNNERS=500 RUNWAY_FLEET_SECONDS=10 RUNWAY_FLEET_JOBS_PER_SECOND=20 cargo bench --bench fleet`.

mod common;
// Not all of it is used here.
#[allow(dead_code)]
#[path = "compare/load.rs"]
mod load;
#[allow(dead_code)]
#[path = "compare/phases.rs"]
mod phases;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};

use common::{raise_open_files, start_runway, Postgres, Server, ADMIN_TOKEN};
use load::{Conn, Latencies};
use phases::server_env;

const REQUEST: &str = "/api/v4/jobs/request";
/// How long the server holds a poll (`RUNWAY_LONG_POLL_TIMEOUT`).
const HOLD_SECONDS: u64 = 50;
const TRACE_PATCHES: usize = 10;
const TRACE_PATCH_BYTES: usize = 4 * 1024;
const ARTIFACT_BYTES: usize = 1 << 20;
const MAX_RUNNER_TOKENS: usize = 100;
const JOBS_PER_PIPELINE: usize = 2;
/// Connections being opened at once.
const CONNECTING: usize = 256;
/// Pipeline creations in flight at once; beyond it the producer falls behind its pace.
const CREATING: usize = 64;
/// A held poll answers within the hold; anything else within this.
const POLL_TIMEOUT: Duration = Duration::from_secs(HOLD_SECONDS + 20);
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the runners may take to hold their first polls, and the jobs to end after
/// the last pipeline was made.
const SETTLE: Duration = Duration::from_secs(120);
/// Errors printed as they happen (all are counted).
const ERRORS_SHOWN: u64 = 10;
const BOUNDARY: &str = "runway-fleet-bench-boundary";

/// Two stages; `test` depends on `build` by default (earlier stages) and downloads its
/// archive. Both keep artifacts, so both upload one.
const PIPELINE_YAML: &str = "\
build:
  stage: build
  script: [make]
  artifacts:
    paths: [out]
test:
  stage: test
  script: [make test]
  artifacts:
    paths: [report]
";

struct Sizes {
    runners: usize,
    runner_tokens: usize,
    jobs_per_second: f64,
    seconds: f64,
}

impl Sizes {
    fn from_env() -> Sizes {
        let var = |name: &str, default: f64| -> f64 {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let runners = (var("RUNWAY_FLEET_RUNNERS", 10_000.0) as usize).max(1);
        Sizes {
            runners,
            runner_tokens: runners.min(MAX_RUNNER_TOKENS),
            jobs_per_second: var("RUNWAY_FLEET_JOBS_PER_SECOND", 100.0).max(0.1),
            seconds: var("RUNWAY_FLEET_SECONDS", 60.0).max(0.1),
        }
    }

    fn pipelines(&self) -> usize {
        ((self.jobs_per_second * self.seconds) / JOBS_PER_PIPELINE as f64)
            .round()
            .max(1.0) as usize
    }

    fn pipeline_period(&self) -> Duration {
        Duration::from_secs_f64(JOBS_PER_PIPELINE as f64 / self.jobs_per_second)
    }
}

/// When each job became pending and when a runner got it, matched whichever comes first
/// (a held poll can carry a job before the call that made it pending has returned).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Became {
    /// The first-stage job of a pipeline: pending once the pipeline POST returned 201.
    Created(i64),
    /// The job depending on this one: pending once this job's final PUT returned 200.
    After(i64),
}

enum Side {
    Pending(Instant),
    Picked(Instant),
}

#[derive(Default)]
struct Pickups {
    open: Mutex<HashMap<Became, Side>>,
    /// When each job became pending, and its pickup latency.
    latencies: Mutex<Vec<(Instant, Duration)>>,
    /// Picked before the call making them pending had returned (counted as 0 ms).
    early: AtomicU64,
}

impl Pickups {
    fn meet(&self, key: Became, side: Side) {
        let other = {
            let mut open = self.open.lock().expect("pickups");
            match open.remove(&key) {
                Some(other) => other,
                None => {
                    open.insert(key, side);
                    return;
                }
            }
        };
        let (pending, latency) = match (other, side) {
            (Side::Pending(pending), Side::Picked(picked))
            | (Side::Picked(picked), Side::Pending(pending)) => {
                if picked < pending {
                    self.early.fetch_add(1, Ordering::Relaxed);
                }
                (pending, picked.saturating_duration_since(pending))
            }
            _ => return,
        };
        self.latencies
            .lock()
            .expect("latencies")
            .push((pending, latency));
    }
}

/// An error with its causes, each after a colon (reqwest's own says only "error sending
/// request").
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[derive(Default)]
struct Errors {
    count: AtomicU64,
    first: Mutex<Vec<String>>,
}

impl Errors {
    fn note(&self, what: impl Into<String>) {
        let n = self.count.fetch_add(1, Ordering::Relaxed);
        if n < ERRORS_SHOWN {
            let what = what.into();
            eprintln!("fleet error: {what}");
            self.first.lock().expect("errors").push(what);
        }
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// What the runners share.
struct Fleet {
    host: String,
    tokens: Vec<String>,
    trace: Bytes,
    /// The multipart body of every upload (`file` = 1 MiB).
    upload: Bytes,
    upload_type: String,
    pickups: Pickups,
    created: AtomicU64,
    picked: AtomicU64,
    finished: AtomicU64,
    /// Jobs a runner gave up on after an error.
    abandoned: AtomicU64,
    /// Job requests answered 204 (a poll's hold ended, or it woke and found nothing).
    empty_polls: AtomicU64,
    errors: Errors,
}

impl Fleet {
    fn new(host: String, tokens: Vec<String>) -> Fleet {
        let trace: Bytes = common::chunk(7, TRACE_PATCH_BYTES)
            .into_iter()
            .map(|b| b" abcdefghijklmnopqrstuvwxyz0123456789\n"[usize::from(b) % 38])
            .collect::<Vec<u8>>()
            .into();
        let mut upload = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; \
             filename=\"artifacts.zip\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        upload.extend(common::chunk(11, ARTIFACT_BYTES));
        upload.extend(format!("\r\n--{BOUNDARY}--\r\n").into_bytes());
        Fleet {
            host,
            tokens,
            trace,
            upload: upload.into(),
            upload_type: format!("multipart/form-data; boundary={BOUNDARY}"),
            pickups: Pickups::default(),
            created: AtomicU64::new(0),
            picked: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            empty_polls: AtomicU64::new(0),
            errors: Errors::default(),
        }
    }

    fn settled(&self) -> bool {
        let ended = self.finished.load(Ordering::Relaxed) + self.abandoned.load(Ordering::Relaxed);
        ended >= self.created.load(Ordering::Relaxed)
    }
}

/// A job request as gitlab-runner sends it (the features it announces), from runner
/// machine `system_id`.
fn poll_body(token: &str, system_id: &str, last_update: Option<&str>) -> Bytes {
    let last_update = last_update
        .map(|v| format!(",\"last_update\":\"{v}\""))
        .unwrap_or_default();
    format!(
        "{{\"token\":\"{token}\",\"system_id\":\"{system_id}\",\"info\":{{\"name\":\"gitlab-runner\",\
         \"features\":{{\"upload_multiple_artifacts\":true,\"refspecs\":true,\"return_exit_code\":true,\
         \"trace_checksum\":true,\"trace_size\":true,\"cancelable\":true}}}}{last_update}}}"
    )
    .into()
}

/// Waits until `stop` is set.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// One runner machine: polls, runs what it gets, polls again, until told to stop (a held
/// poll is then dropped; a job in hand is finished first).
async fn runner(
    fleet: Arc<Fleet>,
    index: usize,
    connecting: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let token = fleet.tokens[index % fleet.tokens.len()].clone();
    let system_id = format!("s_{index:012x}");
    let mut conn: Option<Conn> = None;
    let mut last_update: Option<String> = None;
    while !*stop.borrow() {
        let Some(c) = conn.as_mut() else {
            let permit = connecting.acquire().await.expect("semaphore");
            let opened = Conn::connect(&fleet.host).await;
            drop(permit);
            match opened {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    fleet.errors.note(format!("runner {index}: {e}"));
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stopped(&mut stop) => {}
                    }
                }
            }
            continue;
        };
        let body = poll_body(&token, &system_id, last_update.as_deref());
        let headers = [("content-type", "application/json")];
        let answer = tokio::select! {
            answer = tokio::time::timeout(
                POLL_TIMEOUT,
                c.send(Method::POST, REQUEST, &headers, body, true),
            ) => answer,
            _ = stopped(&mut stop) => break,
        };
        let failure = match answer {
            Ok(Ok(answer)) if answer.status == 204 => {
                fleet.empty_polls.fetch_add(1, Ordering::Relaxed);
                if let Some(v) = answer.last_update.filter(|v| !v.is_empty()) {
                    last_update = Some(v);
                }
                continue;
            }
            Ok(Ok(answer)) if answer.status == 201 => {
                let picked = Instant::now();
                fleet.picked.fetch_add(1, Ordering::Relaxed);
                if let Some(v) = answer.last_update.filter(|v| !v.is_empty()) {
                    last_update = Some(v);
                }
                match run_job(&fleet, c, &answer.body, picked).await {
                    Ok(()) => {
                        fleet.finished.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Err(e) => {
                        fleet.abandoned.fetch_add(1, Ordering::Relaxed);
                        format!("runner {index}, job: {e}")
                    }
                }
            }
            Ok(Ok(answer)) => format!(
                "runner {index}: job request: {} {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            ),
            Ok(Err(e)) => format!("runner {index}: {e}"),
            Err(_) => format!(
                "runner {index}: job request unanswered after {} s",
                POLL_TIMEOUT.as_secs()
            ),
        };
        fleet.errors.note(failure);
        // The connection may be in any state: a new one, after a pause.
        conn = None;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stopped(&mut stop) => {}
        }
    }
}

/// A job, as gitlab-runner's calls for it: log, artifact, the dependency's artifact, end.
async fn run_job(
    fleet: &Fleet,
    conn: &mut Conn,
    payload: &[u8],
    picked: Instant,
) -> Result<(), String> {
    let job: Value = serde_json::from_slice(payload).map_err(|e| format!("payload: {e}"))?;
    let id = job["id"].as_i64().ok_or("payload without id")?;
    let token = job["token"].as_str().ok_or("payload without token")?;
    let dependencies: Vec<(i64, bool)> = job["dependencies"]
        .as_array()
        .map(|deps| {
            deps.iter()
                .filter_map(|d| Some((d["id"].as_i64()?, d.get("artifacts_file").is_some())))
                .collect()
        })
        .unwrap_or_default();
    let became = match dependencies.first() {
        Some((dependency, _)) => Became::After(*dependency),
        None => Became::Created(
            job["job_info"]["pipeline_id"]
                .as_i64()
                .ok_or("payload without job_info.pipeline_id")?,
        ),
    };
    fleet.pickups.meet(became, Side::Picked(picked));

    let trace_path = format!("/api/v4/jobs/{id}/trace");
    for i in 0..TRACE_PATCHES {
        let start = i * TRACE_PATCH_BYTES;
        let range = format!("{start}-{}", start + TRACE_PATCH_BYTES - 1);
        let headers = [
            ("job-token", token),
            ("content-type", "text/plain"),
            ("content-range", range.as_str()),
        ];
        conn.expect(
            Method::PATCH,
            &trace_path,
            &headers,
            fleet.trace.clone(),
            true,
            202,
            CALL_TIMEOUT,
        )
        .await?;
    }

    let headers = [
        ("job-token", token),
        ("content-type", fleet.upload_type.as_str()),
    ];
    conn.expect(
        Method::POST,
        &format!("/api/v4/jobs/{id}/artifacts?artifact_type=archive&artifact_format=zip"),
        &headers,
        fleet.upload.clone(),
        true,
        201,
        CALL_TIMEOUT,
    )
    .await?;

    for (dependency, has_archive) in &dependencies {
        if !has_archive {
            return Err(format!("dependency {dependency} without artifacts_file"));
        }
        let got = conn
            .expect(
                Method::GET,
                &format!("/api/v4/jobs/{dependency}/artifacts"),
                &[("job-token", token)],
                Bytes::new(),
                false,
                200,
                CALL_TIMEOUT,
            )
            .await?;
        if got.len != ARTIFACT_BYTES {
            return Err(format!(
                "artifact of {dependency}: {} bytes, not {ARTIFACT_BYTES}",
                got.len
            ));
        }
    }

    let end = json!({ "token": token, "state": "success" }).to_string();
    conn.expect(
        Method::PUT,
        &format!("/api/v4/jobs/{id}"),
        &[("job-token", token), ("content-type", "application/json")],
        end.into(),
        true,
        200,
        CALL_TIMEOUT,
    )
    .await?;
    if dependencies.is_empty() {
        fleet
            .pickups
            .meet(Became::After(id), Side::Pending(Instant::now()));
    }
    Ok(())
}

/// Creates the pipelines at their pace; returns when every creation has answered.
async fn produce(fleet: Arc<Fleet>, server: &Server, project: i64, sizes: &Sizes) {
    // A connection idle for the server's keep-alive (actix's 5 s) is closed by it; one
    // idle nearly that long is not reused, so that a POST is not sent on a connection
    // the server is closing at that moment (a POST is not sent again).
    let client = reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(3))
        .build()
        .expect("client");
    let url = server.api(&format!("/projects/{project}/pipeline"));
    let body = json!({ "ref": "main", "ci_config": PIPELINE_YAML }).to_string();
    let creating = Arc::new(Semaphore::new(CREATING));
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..sizes.pipelines() {
        tokio::time::sleep_until(start + sizes.pipeline_period() * k as u32).await;
        let permit = creating.clone().acquire_owned().await.expect("semaphore");
        let (client, url, body, fleet) = (client.clone(), url.clone(), body.clone(), fleet.clone());
        tasks.spawn(async move {
            let sent = client
                .post(&url)
                .header("PRIVATE-TOKEN", ADMIN_TOKEN)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            let response = match sent {
                Ok(r) => r,
                Err(e) => return fleet.errors.note(format!("pipeline POST: {}", causes(&e))),
            };
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            let at = Instant::now();
            drop(permit);
            if status != 201 {
                return fleet.errors.note(format!("pipeline POST: {status} {text}"));
            }
            let pipeline: Value = serde_json::from_str(&text).unwrap_or_default();
            match pipeline["id"].as_i64() {
                Some(id) => {
                    fleet
                        .created
                        .fetch_add(JOBS_PER_PIPELINE as u64, Ordering::Relaxed);
                    fleet.pickups.meet(Became::Created(id), Side::Pending(at));
                }
                None => fleet.errors.note(format!("pipeline POST: no id in {text}")),
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// The server's RSS every 100 ms until stopped: (peak, last) in KiB.
fn sample_rss(pid: u32, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<(u64, u64)> {
    tokio::spawn(async move {
        let mut peak = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tick.tick() => peak = peak.max(common::rss_kib(pid)),
                _ = stopped(&mut stop) => break,
            }
        }
        let last = common::rss_kib(pid);
        (peak.max(last), last)
    })
}

/// `GET /-/metrics`: job requests held open now.
async fn held_polls(client: &reqwest::Client, server: &Server) -> Option<u64> {
    let text = client
        .get(format!("{}/-/metrics", server.base))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("runway_held_long_polls "))
        .and_then(|v| v.trim().parse().ok())
}

/// CPU time of a PostgreSQL server: the postmaster and its children (backends, writers).
fn postgres_cpu(postmaster: u32) -> Duration {
    let mut total = common::cpu_time(postmaster);
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return total;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // After the command's closing parenthesis: state, then the parent's pid.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent == Some(postmaster) {
            total += common::cpu_time(pid);
        }
    }
    total
}

/// Bytes of the files under `dir` whose names `keep` accepts, recursively.
fn folder_bytes(dir: &Path, keep: &dyn Fn(&str) -> bool) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            total += folder_bytes(&entry.path(), keep);
        } else if keep(&entry.file_name().to_string_lossy()) {
            total += meta.len();
        }
    }
    total
}

fn is_sqlite_file(name: &str) -> bool {
    name.starts_with("runway.sqlite3")
}

async fn postgres_size(url: &str) -> Result<u64, String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("connecting to PostgreSQL: {e}"))?;
    tokio::spawn(connection);
    let row = client
        .query_one("SELECT pg_database_size(current_database())", &[])
        .await
        .map_err(|e| format!("pg_database_size: {e}"))?;
    Ok(row.get::<_, i64>(0).max(0) as u64)
}

/// One backend's figures.
struct Figures {
    held_at_start: u64,
    created: u64,
    picked: u64,
    finished: u64,
    load_time: Duration,
    produce_time: Duration,
    pickup: Latencies,
    early: u64,
    unmatched: usize,
    errors: u64,
    first_errors: Vec<String>,
    server_cpu: f64,
    postgres_cpu: Option<f64>,
    generator_cpu: f64,
    /// With every runner's poll held, before the first pipeline.
    rss_held_kib: u64,
    rss_peak_kib: u64,
    rss_end_kib: u64,
    empty_polls_per_second: f64,
    database_bytes: Option<u64>,
    data_dir_bytes: u64,
}

/// Where the database comes from: SQLite in the data folder, or a fresh PostgreSQL
/// database (with the postmaster's pid when it runs here).
struct Backend {
    database_url: Option<String>,
    postmaster: Option<u32>,
}

/// With `RUNWAY_FLEET_PICKUPS` set to a file, appends a line per job: the column, the
/// seconds from the load's start to the job becoming pending, and its pickup in
/// milliseconds, to tell a tail spread over the run from one stall.
fn dump_timeline(backend: &Backend, started: Instant, timeline: &[(Instant, Duration)]) {
    let column = match backend.database_url {
        Some(_) => "postgres",
        None => "sqlite",
    };
    common::append_to_file_named_by("RUNWAY_FLEET_PICKUPS", || {
        timeline
            .iter()
            .map(|(pending, latency)| {
                let at = pending.saturating_duration_since(started).as_secs_f64();
                format!("{column} {at:.3} {:.3}\n", load::ms(*latency))
            })
            .collect()
    });
}

async fn run(backend: &Backend, sizes: &Sizes) -> Result<Figures, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let data_dir = dir.path().join("data");
    let env = server_env(&data_dir, backend.database_url.as_deref(), HOLD_SECONDS);
    let server = start_runway(&env).await;
    let client = reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let admin = |path: &str, body: Value| {
        client
            .post(server.api(path))
            .header("PRIVATE-TOKEN", ADMIN_TOKEN)
            .json(&body)
    };
    let (status, project) = common::call(admin("/projects", json!({ "name": "fleet" }))).await;
    if status != 201 {
        return Err(format!("POST /projects: {status} {project}"));
    }
    let project = project["id"].as_i64().ok_or("project id")?;
    let mut tokens = Vec::with_capacity(sizes.runner_tokens);
    for _ in 0..sizes.runner_tokens {
        let (status, runner) = common::call(admin(
            "/user/runners",
            json!({ "runner_type": "instance_type" }),
        ))
        .await;
        if status != 201 {
            return Err(format!("POST /user/runners: {status} {runner}"));
        }
        tokens.push(runner["token"].as_str().ok_or("runner token")?.to_string());
    }

    let fleet = Arc::new(Fleet::new(
        server.base.trim_start_matches("http://").to_string(),
        tokens,
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let rss = sample_rss(server.pid(), stop_rx.clone());
    let connecting = Arc::new(Semaphore::new(CONNECTING));
    let mut runners = tokio::task::JoinSet::new();
    for index in 0..sizes.runners {
        runners.spawn(runner(
            fleet.clone(),
            index,
            connecting.clone(),
            stop_rx.clone(),
        ));
    }
    // Every runner has polled once (its manager row made) and holds its next poll.
    let deadline = Instant::now() + SETTLE;
    let mut held = 0;
    while Instant::now() < deadline {
        held = held_polls(&client, &server).await.unwrap_or(0);
        if held as usize >= sizes.runners {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "  {held} of {} runners hold a poll; {} pipelines of {JOBS_PER_PIPELINE} jobs over {} s ...",
        sizes.runners,
        sizes.pipelines(),
        sizes.seconds
    );

    let rss_held_kib = server.rss_kib();
    let started = Instant::now();
    let (server_cpu, own_cpu) = (server.cpu_time(), common::cpu_time(std::process::id()));
    let pg_cpu = backend.postmaster.map(postgres_cpu);
    let empty_before = fleet.empty_polls.load(Ordering::Relaxed);
    produce(fleet.clone(), &server, project, sizes).await;
    let produce_time = started.elapsed();
    let deadline = Instant::now() + SETTLE;
    while !fleet.settled() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let load_time = started.elapsed();
    let server_cpu = (server.cpu_time() - server_cpu).as_secs_f64() / load_time.as_secs_f64();
    let generator_cpu =
        (common::cpu_time(std::process::id()) - own_cpu).as_secs_f64() / load_time.as_secs_f64();
    let postgres_cpu = backend
        .postmaster
        .zip(pg_cpu)
        .map(|(pid, before)| (postgres_cpu(pid) - before).as_secs_f64() / load_time.as_secs_f64());
    let empty_polls = fleet.empty_polls.load(Ordering::Relaxed) - empty_before;
    if !fleet.settled() {
        fleet.errors.note(format!(
            "{} of {} jobs still not finished {} s after the last pipeline",
            fleet.created.load(Ordering::Relaxed) - fleet.finished.load(Ordering::Relaxed),
            fleet.created.load(Ordering::Relaxed),
            SETTLE.as_secs()
        ));
    }

    let database_bytes = match &backend.database_url {
        None => Some(folder_bytes(&data_dir, &is_sqlite_file)),
        Some(url) => match postgres_size(url).await {
            Ok(size) => Some(size),
            Err(e) => {
                eprintln!("fleet: {e}");
                None
            }
        },
    };
    let data_dir_bytes = folder_bytes(&data_dir, &|name| !is_sqlite_file(name));

    // The end: held polls dropped, jobs in hand finished (there should be none).
    let _ = stop_tx.send(true);
    let (rss_peak_kib, rss_end_kib) = rss.await.map_err(|e| e.to_string())?;
    let joined = tokio::time::timeout(Duration::from_secs(60), async {
        while runners.join_next().await.is_some() {}
    })
    .await;
    if joined.is_err() {
        fleet.errors.note("runners still busy 60 s after the stop");
        runners.abort_all();
    }
    drop(server);

    let timeline = std::mem::take(&mut *fleet.pickups.latencies.lock().expect("latencies"));
    dump_timeline(backend, started, &timeline);
    let pickup = Latencies(timeline.into_iter().map(|(_, latency)| latency).collect());
    let unmatched = fleet.pickups.open.lock().expect("pickups").len();
    let first_errors = fleet.errors.first.lock().expect("errors").clone();
    Ok(Figures {
        held_at_start: held,
        created: fleet.created.load(Ordering::Relaxed),
        picked: fleet.picked.load(Ordering::Relaxed),
        finished: fleet.finished.load(Ordering::Relaxed),
        load_time,
        produce_time,
        pickup,
        early: fleet.pickups.early.load(Ordering::Relaxed),
        unmatched,
        errors: fleet.errors.count(),
        first_errors,
        server_cpu,
        postgres_cpu,
        generator_cpu,
        rss_held_kib,
        rss_peak_kib,
        rss_end_kib,
        empty_polls_per_second: empty_polls as f64 / load_time.as_secs_f64(),
        database_bytes,
        data_dir_bytes,
    })
}

async fn postgres_column(sizes: &Sizes) -> Result<Figures, String> {
    let mut pg = Postgres::get()?;
    let result = match pg.fresh().await {
        Ok(url) => {
            let backend = Backend {
                database_url: Some(url),
                postmaster: pg.postmaster(),
            };
            run(&backend, sizes).await
        }
        Err(e) => Err(e),
    };
    pg.finish().await;
    result
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1u64 << 20) as f64)
}

fn mark(text: String, met: bool) -> String {
    format!("{text} {}", if met { "ok" } else { "MISS" })
}

/// The table's rows: label, target, and each column's cell.
fn rows(sizes: &Sizes, columns: &mut [(&str, Result<Figures, String>)]) -> Vec<Vec<String>> {
    type Cell = fn(&mut Figures, &Sizes) -> String;
    let figures: Vec<(String, &str, Cell)> = vec![
        (
            "runners holding a poll before the load".into(),
            "all",
            |f, s| {
                mark(
                    format!("{} / {}", f.held_at_start, s.runners),
                    f.held_at_start as usize >= s.runners,
                )
            },
        ),
        ("jobs created / picked / finished".into(), "all", |f, _| {
            mark(
                format!("{} / {} / {}", f.created, f.picked, f.finished),
                f.created > 0 && f.picked == f.created && f.finished == f.created,
            )
        }),
        ("jobs created per s".into(), "", |f, _| {
            format!("{:.1}", f.created as f64 / f.produce_time.as_secs_f64())
        }),
        ("pickup p50 / p99 ms".into(), "p99 <= 50", |f, _| {
            let p99 = f.pickup.percentile(99.0);
            mark(
                f.pickup.p50_p99(),
                !f.pickup.0.is_empty() && p99 <= Duration::from_millis(50),
            )
        }),
        (
            "pickup max ms (picked before pending, unmatched)".into(),
            "",
            |f, _| {
                format!(
                    "{:.1} ({}, {})",
                    load::ms(f.pickup.percentile(100.0)),
                    f.early,
                    f.unmatched
                )
            },
        ),
        ("errors".into(), "0", |f, _| {
            mark(f.errors.to_string(), f.errors == 0)
        }),
        ("server CPU, cores".into(), "<= 1", |f, _| {
            mark(format!("{:.2}", f.server_cpu), f.server_cpu <= 1.0)
        }),
        ("PostgreSQL's processes' CPU, cores".into(), "", |f, _| {
            f.postgres_cpu.map_or("n/a".into(), |c| format!("{c:.2}"))
        }),
        (
            "server RSS held polls / peak / end MiB".into(),
            "peak <= 512",
            |f, _| {
                mark(
                    format!(
                        "{} / {} / {}",
                        mib(f.rss_held_kib << 10),
                        mib(f.rss_peak_kib << 10),
                        mib(f.rss_end_kib << 10)
                    ),
                    f.rss_peak_kib <= 512 * 1024,
                )
            },
        ),
        ("job requests answered 204 per s".into(), "", |f, _| {
            format!("{:.0}", f.empty_polls_per_second)
        }),
        ("database MiB at the end".into(), "", |f, _| {
            f.database_bytes.map_or("n/a".into(), mib)
        }),
        ("data folder MiB (artifacts, logs)".into(), "", |f, _| {
            mib(f.data_dir_bytes)
        }),
        ("load generator CPU, cores".into(), "", |f, _| {
            format!("{:.2}", f.generator_cpu)
        }),
        ("load window s (pipelines made in)".into(), "", |f, _| {
            format!(
                "{:.1} ({:.1})",
                f.load_time.as_secs_f64(),
                f.produce_time.as_secs_f64()
            )
        }),
    ];
    let mut table = vec![std::iter::once("figure".to_string())
        .chain(columns.iter().map(|(name, _)| name.to_string()))
        .chain(std::iter::once("target".to_string()))
        .collect::<Vec<_>>()];
    for (label, target, cell) in figures {
        let mut line = vec![label];
        for (_, result) in columns.iter_mut() {
            line.push(match result {
                Ok(figures) => cell(figures, sizes),
                Err(_) => "n/a".into(),
            });
        }
        line.push(target.to_string());
        table.push(line);
    }
    table
}

fn main() {
    raise_open_files();
    let sizes = Sizes::from_env();
    let wanted = std::env::var("RUNWAY_FLEET_COLUMNS").unwrap_or("sqlite,postgres".into());
    let wanted: Vec<&str> = wanted.split(',').map(str::trim).collect();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let started = Instant::now();
        let mut columns: Vec<(&str, Result<Figures, String>)> = Vec::new();
        if wanted.contains(&"sqlite") {
            println!("Runway SQLite ...");
            let backend = Backend {
                database_url: None,
                postmaster: None,
            };
            columns.push(("Runway SQLite", run(&backend, &sizes).await));
        }
        if wanted.contains(&"postgres") {
            println!("Runway PostgreSQL ...");
            columns.push(("Runway PostgreSQL", postgres_column(&sizes).await));
        }
        if columns.is_empty() {
            println!("RUNWAY_FLEET_COLUMNS names no column (sqlite, postgres)");
            return;
        }
        println!();
        println!(
            "Fleet: {} runners ({} runner tokens, one system_id each), {} jobs/s for {} s \
             ({} pipelines of {JOBS_PER_PIPELINE}: build, then test downloading build's \
             artifact); per job {TRACE_PATCHES} log PATCHes of {} KiB, a {} MiB artifact; \
             polls held up to {HOLD_SECONDS} s.",
            sizes.runners,
            sizes.runner_tokens,
            sizes.jobs_per_second,
            sizes.seconds,
            sizes.pipelines(),
            TRACE_PATCH_BYTES >> 10,
            ARTIFACT_BYTES >> 20,
        );
        println!();
        let table = rows(&sizes, &mut columns);
        common::print_table(&table);
        println!();
        for (name, result) in &columns {
            match result {
                Err(reason) => println!("{name}: n/a: {reason}"),
                Ok(f) if !f.first_errors.is_empty() => {
                    println!("{name}: the first errors:");
                    for e in &f.first_errors {
                        println!("  {e}");
                    }
                }
                Ok(_) => {}
            }
        }
        println!(
            "Pickup: from the pipeline POST's 201 (build) or build's final PUT's 200 (test) to \
             the runner having read the 201 carrying the job. CPU and 204s: over the load \
             window (first pipeline to last job finished); RSS sampled every 100 ms from the \
             first connection. One run took {:.0} s.",
            started.elapsed().as_secs_f64()
        );
    });
}
