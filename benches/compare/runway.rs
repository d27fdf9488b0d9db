//! The figures measured on Runway (the release binary, one backend per column). Two
//! servers per backend, each on a fresh database: one with `RUNWAY_LONG_POLL_TIMEOUT=0`
//! for the throughput figures, one holding polls for pick-up latency and held polls.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};

use crate::common::{artifact_round_trip, call, start_runway, Server, ADMIN_TOKEN};
use crate::load::{drain_queue, poll_load, trace_append, Conn, Latencies};
use crate::{Cell, Results, Row, Sizes};

const REQUEST: &str = "/api/v4/jobs/request";
/// How long the second server holds a poll: long enough to open 10,000 of them.
const HOLD_SECONDS: u64 = 120;
/// Jobs in one pipeline of the dispatch queue (5 jobs × `parallel: 200`).
const JOBS_PER_PIPELINE: usize = 1000;
/// Jobs in one pipeline of the small-pipeline queue (one job × `parallel: 10`).
const SMALL_PIPELINE: usize = 10;

/// A job request as gitlab-runner sends it, with the features jobs may require.
pub fn poll_body(token: &str, last_update: Option<&str>) -> Bytes {
    machine_poll_body(token, last_update, 0)
}

/// [`poll_body`] from runner machine number `machine` (its own `system_id`).
pub fn machine_poll_body(token: &str, last_update: Option<&str>, machine: usize) -> Bytes {
    let mut body = json!({
        "token": token,
        "system_id": format!("s_{machine:012x}"),
        "info": { "name": "gitlab-runner", "features": {
            "upload_multiple_artifacts": true, "refspecs": true, "return_exit_code": true,
            "trace_checksum": true, "trace_size": true, "cancelable": true } },
    });
    if let Some(v) = last_update {
        body["last_update"] = json!(v);
    }
    serde_json::to_vec(&body).expect("json").into()
}

/// The admin API of one server.
struct Admin<'a> {
    client: reqwest::Client,
    server: &'a Server,
}

impl Admin<'_> {
    async fn post(&self, path: &str, body: Value) -> Value {
        let (status, reply) = call(
            self.client
                .post(self.server.api(path))
                .header("PRIVATE-TOKEN", ADMIN_TOKEN)
                .json(&body),
        )
        .await;
        assert_eq!(status, 201, "POST {path}: {reply}");
        reply
    }

    async fn project(&self) -> i64 {
        let project = self.post("/projects", json!({ "name": "bench" })).await;
        project["id"].as_i64().expect("project id")
    }

    /// `n` instance runners' tokens, each having polled once (its manager row exists).
    async fn runners(&self, n: usize) -> (Vec<String>, String) {
        let mut tokens = Vec::with_capacity(n);
        let mut version = String::new();
        for _ in 0..n {
            let runner = self
                .post("/user/runners", json!({ "runner_type": "instance_type" }))
                .await;
            let token = runner["token"].as_str().expect("runner token").to_string();
            let reply = self
                .client
                .post(self.server.api("/jobs/request"))
                .body(poll_body(&token, None))
                .header("Content-Type", "application/json")
                .send()
                .await
                .expect("first poll");
            assert_eq!(reply.status(), 204, "first poll of a new runner");
            version = reply
                .headers()
                .get("X-GitLab-Last-Update")
                .and_then(|v| v.to_str().ok())
                .expect("X-GitLab-Last-Update")
                .to_string();
            tokens.push(token);
        }
        (tokens, version)
    }

    async fn pipeline(&self, project: i64, yaml: &str) {
        self.post(
            &format!("/projects/{project}/pipeline"),
            json!({ "ref": "main", "ci_config": yaml }),
        )
        .await;
    }

    /// `GET /-/metrics`: job requests held open now.
    async fn held_polls(&self) -> i64 {
        let text = self
            .client
            .get(format!("{}/-/metrics", self.server.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find_map(|l| l.strip_prefix("runway_held_long_polls "))
            .and_then(|v| v.trim().parse().ok())
            .expect("runway_held_long_polls")
    }
}

/// One stage of `n` jobs as pipelines of up to `per_pipeline`: `parallel: 200` at most
/// per job name.
fn queue_yaml(n: usize, per_pipeline: usize) -> Vec<String> {
    let mut pipelines = Vec::new();
    let mut left = n;
    while left > 0 {
        let mut yaml = String::new();
        let mut in_pipeline = left.min(per_pipeline);
        left -= in_pipeline;
        let mut name = 0;
        while in_pipeline > 0 {
            let count = in_pipeline.min(200);
            in_pipeline -= count;
            yaml.push_str(&format!("j{name}:\n  script: [x]\n  parallel: {count}\n"));
            name += 1;
        }
        pipelines.push(yaml);
    }
    pipelines
}

fn env(
    dir: &std::path::Path,
    database_url: Option<&str>,
    hold: u64,
    sizes: &Sizes,
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("RUNWAY_DATA_DIR", dir.display().to_string()),
        ("RUNWAY_LONG_POLL_TIMEOUT", hold.to_string()),
        ("RUNWAY_RATE_LIMIT_JOBS_REQUEST", "0".into()),
        ("RUNWAY_RATE_LIMIT_TRACE", "0".into()),
        ("RUNWAY_RATE_LIMIT_JOB_API", "0".into()),
        ("RUNWAY_RATE_LIMIT_FAILED_AUTH", "0".into()),
        (
            "RUNWAY_MAX_TRACE_BYTES",
            (sizes.trace_bytes_per_job() + (1 << 20)).to_string(),
        ),
        (
            "RUNWAY_MAX_ARTIFACT_SIZE_BYTES",
            (sizes.artifact_bytes + (1 << 20)).to_string(),
        ),
    ];
    if let Some(url) = database_url {
        env.push(("RUNWAY_DATABASE_URL", url.to_string()));
    }
    env
}

/// Every figure on one backend; `databases` are two fresh PostgreSQL databases, or none
/// for SQLite (a file in each server's data folder).
pub async fn column(databases: Option<[String; 2]>, sizes: &Sizes) -> Results {
    let mut out = Results::default();
    let [db_a, db_b] = match &databases {
        Some([a, b]) => [Some(a.as_str()), Some(b.as_str())],
        None => [None, None],
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_runway(&env(&dir.path().join("a"), db_a, 0, sizes)).await;
    out.set(Row::IdleRss, Cell::mib(server.rss_kib(), None));
    throughput(&server, sizes, &mut out).await;
    drop(server);

    let server = start_runway(&env(&dir.path().join("b"), db_b, HOLD_SECONDS, sizes)).await;
    let admin = Admin {
        client: reqwest::Client::new(),
        server: &server,
    };
    let mut pickup = pickup(&admin, sizes.pickup_jobs).await;
    let p99 = pickup.percentile(99.0);
    out.set(
        Row::Pickup,
        Cell::value(pickup.p50_p99(), Some(p99 <= Duration::from_millis(2))),
    );
    out.set(Row::HeldRss, held_polls(&admin, sizes.held_polls).await);
    out
}

/// With `RUNWAY_BENCH_PROFILE` set, a line `profile: <phase> <starts|ended> pid <pid>` on
/// stderr around each dispatch phase, and a second's pause before it, so that a profiler
/// can be attached to the server for that phase alone.
fn profiling_mark(server: &Server, phase: &str, what: &str) {
    if std::env::var_os("RUNWAY_BENCH_PROFILE").is_some() {
        eprintln!("profile: {phase} {what} pid {}", server.pid());
        if what == "starts" {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// Figures 1, 2, 4 and 5 on a server that answers at once.
async fn throughput(server: &Server, sizes: &Sizes, out: &mut Results) {
    let admin = Admin {
        client: reqwest::Client::new(),
        server,
    };
    // 1. Empty polls carrying the current queue version: with no hold, Runway answers
    // 204 from memory. Without `last_update` it looks in the database first.
    let (tokens, version) = admin.runners(sizes.poll_runners).await;
    let bodies = tokens
        .iter()
        .map(|t| poll_body(t, Some(&version)))
        .collect();
    crate::empty_polls(out, &server.base, bodies, sizes).await;
    let bodies = tokens.iter().map(|t| poll_body(t, None)).collect();
    let mut load = poll_load(&server.base, bodies, sizes.warmup, sizes.poll_window).await;
    out.set(
        Row::PollDb,
        Cell::value(
            format!(
                "{:.0} ({:.2} ms p99)",
                load.per_second(),
                crate::load::ms(load.latencies.percentile(99.0))
            ),
            None,
        ),
    );

    // 2. Dispatch: assignment alone, then the whole cycle (each job reported `success`),
    // each from pipelines of 1,000 jobs and of 10.
    let (tokens, _) = admin.runners(sizes.dispatch_runners).await;
    let project = admin.project().await;
    let drain = |per_pipeline: usize, finish: bool| {
        let (admin, tokens) = (&admin, &tokens);
        async move {
            for yaml in queue_yaml(sizes.dispatch_jobs, per_pipeline) {
                admin.pipeline(project, &yaml).await;
            }
            let bodies = tokens.iter().map(|t| poll_body(t, None)).collect();
            let phase = format!(
                "{} {per_pipeline}",
                if finish { "cycle" } else { "dispatch" }
            );
            profiling_mark(server, &phase, "starts");
            let cpu = server.cpu_time();
            let drained = drain_queue(&server.base, bodies, sizes.limit, finish).await;
            let cpu = server.cpu_time() - cpu;
            profiling_mark(server, &phase, "ended");
            (drained, cpu)
        }
    };
    let (drained, cpu) = drain(JOBS_PER_PIPELINE, false).await;
    crate::dispatch_cells(out, &drained, sizes.dispatch_jobs, cpu);
    let (small, small_cpu) = drain(SMALL_PIPELINE, false).await;
    let rate = small.ids.len() as f64 / small.time.as_secs_f64();
    let per_job = small_cpu.as_secs_f64() * 1e6 / small.ids.len().max(1) as f64;
    out.set(
        Row::DispatchSmall,
        Cell::value(format!("{rate:.0} ({per_job:.0})"), None),
    );
    let large = drain(JOBS_PER_PIPELINE, true).await;
    let small = drain(SMALL_PIPELINE, true).await;
    crate::cycle_cells(
        out,
        (&large.0, large.1),
        Some((&small.0, small.1)),
        sizes.dispatch_jobs,
    );

    // 4. Trace.
    let yaml = format!(
        "log:\n  script: [x]\n  parallel: {}\n",
        sizes.trace_jobs.clamp(1, 200)
    );
    admin.pipeline(project, &yaml).await;
    let mut conn = Conn::open(&server.base).await;
    let mut jobs = Vec::new();
    for _ in 0..sizes.trace_jobs.clamp(1, 200) {
        let reply = conn.post_json(REQUEST, poll_body(&tokens[0], None)).await;
        assert_eq!(reply.status, 201, "a log job");
        let job: Value = serde_json::from_slice(&reply.body).expect("job");
        jobs.push((reply.job_id(), job["token"].as_str().expect("token").into()));
    }
    let trace = trace_append(
        &server.base,
        jobs,
        sizes.trace_patches,
        crate::trace_patch(),
    )
    .await;
    crate::trace_cells(out, trace);

    // 5. Artifacts.
    let trip = artifact_round_trip(server, sizes.artifact_bytes).await;
    assert!(trip.identical, "downloaded bytes are the uploaded bytes");
    crate::artifact_cells(out, &trip.upload, &trip.download, trip.size);
}

/// Figure 3: a runner holds a poll; a pipeline of one job is created; the time until the runner
/// has read the job. The next round starts once the runner's new poll is held again.
async fn pickup(admin: &Admin<'_>, n: usize) -> Latencies {
    let project = admin.project().await;
    let (tokens, version) = admin.runners(1).await;
    let token = tokens[0].clone();
    let mut conn = Conn::open(&admin.server.base).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Instant>(1);
    let base = admin.server.base.clone();
    let deadline = Instant::now() + Duration::from_secs(600);
    let runner = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut version = version;
        let mut received = 0;
        while received < n && Instant::now() < deadline {
            let reply = conn
                .post_json(REQUEST, poll_body(&token, Some(&version)))
                .await;
            match reply.status {
                201 => {
                    let at = Instant::now();
                    received += 1;
                    let job: Value = serde_json::from_slice(&reply.body).expect("job");
                    if tx.send(at).await.is_err() {
                        return;
                    }
                    let (status, _) = call(
                        client
                            .put(format!("{base}/api/v4/jobs/{}", job["id"]))
                            .json(&json!({ "token": job["token"], "state": "success" })),
                    )
                    .await;
                    assert_eq!(status, 200, "job finished");
                }
                204 => version = reply.last_update.expect("X-GitLab-Last-Update"),
                other => panic!("job request: {other}"),
            }
        }
    });
    let mut latencies = Latencies::default();
    for _ in 0..n {
        let held_by = Instant::now() + Duration::from_secs(30);
        while admin.held_polls().await < 1 {
            assert!(Instant::now() < held_by, "the runner's poll is not held");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let created = Instant::now();
        admin.pipeline(project, "job:\n  script: [x]\n").await;
        let received = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("the job reached the runner within 30 s")
            .expect("runner task alive");
        latencies.0.push(received - created);
    }
    runner.await.expect("runner task");
    latencies
}

/// Figure 6: `n` polls held at once, as a fleet holds them: 100 runner tokens, each poll from
/// a runner machine of its own (its own `system_id`, so its own manager row) on its own
/// connection; the server's RSS once `/-/metrics` counts them all.
async fn held_polls(admin: &Admin<'_>, n: usize) -> Cell {
    let idle = admin.server.rss_kib();
    let (tokens, version) = admin.runners(n.clamp(1, 100)).await;
    let connecting = Arc::new(tokio::sync::Semaphore::new(256));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (connecting, stop) = (connecting.clone(), stop.clone());
        let (base, token, mut version) = (
            admin.server.base.clone(),
            tokens[i % tokens.len()].clone(),
            version.clone(),
        );
        tasks.spawn(async move {
            let permit = connecting.acquire_owned().await.expect("semaphore");
            let mut conn = Conn::open(&base).await;
            drop(permit);
            while !stop.load(Ordering::Relaxed) {
                let reply = conn
                    .post_json(REQUEST, machine_poll_body(&token, Some(&version), i + 1))
                    .await;
                assert_eq!(reply.status, 204, "a held poll ends empty");
                version = reply.last_update.expect("X-GitLab-Last-Update");
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(HOLD_SECONDS / 2);
    let mut held = admin.held_polls().await;
    while (held as usize) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        held = admin.held_polls().await;
    }
    let rss = admin.server.rss_kib();
    stop.store(true, Ordering::Relaxed);
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    if (held as usize) < n {
        return Cell::na(format!(
            "only {held} of {n} polls held after {} s",
            HOLD_SECONDS / 2
        ));
    }
    let growth = rss.saturating_sub(idle);
    Cell::value(
        format!(
            "{:.1} (+{:.1}, {:.1} KiB each)",
            crate::common::mib(rss),
            crate::common::mib(growth),
            growth as f64 / n.max(1) as f64
        ),
        Some(growth <= 80 * 1024),
    )
}
