//! What `compare` and `growth` measure alike on a Runway server: its admin API (projects,
//! runners, pipelines, the held-poll count), the dispatch drain (a queue of pending jobs
//! emptied by concurrent runners, with the server's CPU time) and the pickup latency of a
//! held poll. Each bench includes this file next to `common` and `load`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};

use crate::common::{append_to_file_named_by, call, Server, ADMIN_TOKEN};
use crate::load::{drain_queue, ms, Conn, Drained, Latencies};

pub const REQUEST: &str = "/api/v4/jobs/request";

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

/// The settings of a Runway server under load: its data folder, database (none: SQLite
/// in the data folder), how long it holds a poll, and every rate limit off.
pub fn server_env(
    dir: &std::path::Path,
    database_url: Option<&str>,
    hold: u64,
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("RUNWAY_DATA_DIR", dir.display().to_string()),
        ("RUNWAY_LONG_POLL_TIMEOUT", hold.to_string()),
        ("RUNWAY_RATE_LIMIT_JOBS_REQUEST", "0".into()),
        ("RUNWAY_RATE_LIMIT_TRACE", "0".into()),
        ("RUNWAY_RATE_LIMIT_JOB_API", "0".into()),
        ("RUNWAY_RATE_LIMIT_FAILED_AUTH", "0".into()),
    ];
    if let Some(url) = database_url {
        env.push(("RUNWAY_DATABASE_URL", url.to_string()));
    }
    env
}

/// The admin API of one server.
pub struct Admin<'a> {
    pub client: reqwest::Client,
    pub server: &'a Server,
}

impl Admin<'_> {
    pub fn new(server: &Server) -> Admin<'_> {
        Admin {
            client: reqwest::Client::new(),
            server,
        }
    }

    /// `POST path` with a JSON body, which must answer 201; the answer.
    pub async fn post(&self, path: &str, body: Value) -> Value {
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

    pub async fn project(&self) -> i64 {
        let project = self.post("/projects", json!({ "name": "bench" })).await;
        project["id"].as_i64().expect("project id")
    }

    /// `n` instance runners' tokens, each having polled once (its manager row exists).
    pub async fn runners(&self, n: usize) -> (Vec<String>, String) {
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

    /// A pipeline of `yaml` on `main`; its JSON.
    pub async fn pipeline(&self, project: i64, yaml: &str) -> Value {
        self.post(
            &format!("/projects/{project}/pipeline"),
            json!({ "ref": "main", "ci_config": yaml }),
        )
        .await
    }

    /// `GET /-/metrics`: job requests held open now.
    pub async fn held_polls(&self) -> i64 {
        let held = self.metric("runway_held_long_polls").await;
        held.expect("runway_held_long_polls in /-/metrics") as i64
    }

    /// `GET /-/metrics`: the sample of the series `name` (without labels), if there is one
    /// (an older build measured side by side may not have it).
    pub async fn metric(&self, name: &str) -> Option<f64> {
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
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }
}

/// One stage of `n` jobs as pipelines of up to `per_pipeline`: `parallel: 200` at most
/// per job name.
pub fn queue_yaml(n: usize, per_pipeline: usize) -> Vec<String> {
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

/// With `RUNWAY_BENCH_PROFILE` set, a line `profile: <phase> <starts|ended> pid <pid>` on
/// stderr around each dispatch phase and the pickup phase, and a second's pause before
/// it, so that a profiler can be attached to the server for that phase alone.
fn profiling_mark(server: &Server, phase: &str, what: &str) {
    if std::env::var_os("RUNWAY_BENCH_PROFILE").is_some() {
        eprintln!("profile: {phase} {what} pid {}", server.pid());
        if what == "starts" {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// Figure 2 of `compare`: `jobs` pending jobs made as pipelines of `per_pipeline` in
/// `project`, then drained by one runner per token on a server that answers at once
/// (`finish`: each job reported `success` once taken, the whole cycle); what was drained,
/// and the CPU time the server spent on it.
pub async fn dispatch(
    admin: &Admin<'_>,
    project: i64,
    tokens: &[String],
    (jobs, per_pipeline): (usize, usize),
    finish: bool,
    limit: Duration,
) -> (Drained, Duration) {
    let server = admin.server;
    for yaml in queue_yaml(jobs, per_pipeline) {
        admin.pipeline(project, &yaml).await;
    }
    let bodies = tokens.iter().map(|t| poll_body(t, None)).collect();
    let phase = format!(
        "{} {per_pipeline}",
        if finish { "cycle" } else { "dispatch" }
    );
    profiling_mark(server, &phase, "starts");
    let cpu = server.cpu_time();
    let drained = drain_queue(&server.base, bodies, limit, finish).await;
    let cpu = server.cpu_time() - cpu;
    profiling_mark(server, &phase, "ended");
    (drained, cpu)
}

/// Figure 3 of `compare`: a runner holds a poll; a pipeline of one job is created in
/// `project`; the time until the runner has read the job. The next round starts once the
/// runner's new poll is held again. The server must hold polls.
pub async fn pickup(admin: &Admin<'_>, project: i64, n: usize) -> Latencies {
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
    let mut rounds = Vec::with_capacity(n);
    profiling_mark(admin.server, "pickup", "starts");
    for _ in 0..n {
        let held_by = Instant::now() + Duration::from_secs(30);
        while admin.held_polls().await < 1 {
            assert!(Instant::now() < held_by, "the runner's poll is not held");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let created = Instant::now();
        admin.pipeline(project, "job:\n  script: [x]\n").await;
        let answered = Instant::now();
        let received = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("the job reached the runner within 30 s")
            .expect("runner task alive");
        latencies.0.push(received - created);
        rounds.push((answered - created, received - created));
    }
    profiling_mark(admin.server, "pickup", "ended");
    runner.await.expect("runner task");
    dump_rounds(&rounds);
    latencies
}

/// With `RUNWAY_BENCH_PICKUP_ROUNDS` set to a file, appends each pickup round in order
/// (the round, then milliseconds until the pipeline's POST was answered and until the
/// runner read the job), to tell a tail that repeats with the rounds from one that does
/// not.
fn dump_rounds(rounds: &[(Duration, Duration)]) {
    append_to_file_named_by("RUNWAY_BENCH_PICKUP_ROUNDS", || {
        rounds
            .iter()
            .enumerate()
            .map(|(i, (posted, received))| format!("{i} {:.3} {:.3}\n", ms(*posted), ms(*received)))
            .collect()
    });
}
