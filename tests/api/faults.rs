//! Faults, each bounded and on 127.0.0.1: the PostgreSQL server stopped and started again
//! while runners poll and jobs run, an exhausted connection pool, and HTTPS from PEM files.
//! (A server killed or stopped mid-upload: `restart.rs`.)

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Client, Method};
use serde_json::{json, Value};

use crate::helpers::tls::{client_config, https, spawn_https, HttpsApp};
use crate::helpers::{both_backends, Backend, TestApp, ADMIN_TOKEN};

both_backends! {
    async fn an_exhausted_pool_answers_503_quickly(backend) {
        let app = TestApp::builder(backend).pool(2, 1).spawn().await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        // Every connection taken (SQLite: the readers and the one writer).
        let mut held = vec![app.db.read().await.expect("a reader"), app.db.read().await.expect("a reader")];
        if backend == Backend::Sqlite {
            held.push(app.db.write().await.expect("the writer"));
        }
        for request in [app.admin(Method::GET, "/api/v4/projects"), app.request(Method::POST, "/api/v4/jobs/request").json(&json!({ "token": runner }))] {
            let asked = Instant::now();
            let reply = app.send(request).await;
            // Within the pool's 1 s wait and a margin: a bound on hanging, not a benchmark.
            assert!(asked.elapsed() < Duration::from_secs(5), "answered after {:?}", asked.elapsed());
            reply.assert(503, json!({ "message": "503 Service Unavailable" }));
            assert!(reply.header("retry-after").is_some_and(|s| s.parse::<u64>().is_ok()));
        }
        drop(held);
        assert_eq!(app.send(app.admin(Method::GET, "/api/v4/projects")).await.status, 200);
        assert_eq!(app.request_job(&runner).await.status, 204);
    }

    async fn https_from_pem_files(backend) {
        let HttpsApp { app: _app, addr, trusting, .. } = spawn_https(backend).await;
        let api = [("PRIVATE-TOKEN", ADMIN_TOKEN), ("Content-Type", "application/json")];
        let reply = https(&trusting, &addr, "GET /api/v4/version", &api, "").await.expect("https request");
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(reply.body.contains("\"version\""), "{}", reply.body);
        let register = json!({ "token": crate::helpers::REGISTRATION_TOKEN }).to_string();
        let reply = https(&trusting, &addr, "POST /api/v4/runners", &api, &register).await.expect("register");
        assert_eq!(reply.status, 201, "{}", reply.body);
        let token = serde_json::from_str::<Value>(&reply.body).expect("json")["token"].as_str().expect("token").to_string();
        let reply = https(&trusting, &addr, "POST /api/v4/runners/verify", &api, &json!({ "token": token }).to_string()).await.expect("verify");
        assert_eq!(reply.status, 200);
        // Plain HTTP on the same port is not served; a client that does not trust the
        // certificate cannot connect.
        let answered = Client::new().get(format!("http://{addr}/-/liveness")).timeout(Duration::from_secs(10)).send().await;
        assert!(answered.as_ref().map_or(true, |r| r.status() == 400), "plain HTTP is not served: {answered:?}");
        let untrusting = client_config(rustls::RootCertStore::empty());
        assert!(https(&untrusting, &addr, "GET /-/liveness", &[], "").await.is_err());
    }
}

/// A PostgreSQL server of the test's own, stopped and started by `scripts/pg.sh`.
struct OwnPostgres {
    dir: tempfile::TempDir,
}

impl OwnPostgres {
    fn script() -> std::process::Command {
        std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg.sh"))
    }

    fn start() -> (OwnPostgres, String) {
        let dir = tempfile::Builder::new()
            .prefix("runway-pg-fault")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let output = Self::script()
            .env("RUNWAY_PG_DIR", dir.path())
            .output()
            .expect("scripts/pg.sh");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let url = String::from_utf8_lossy(&output.stdout).trim().to_string();
        (OwnPostgres { dir }, url)
    }

    async fn run(&self, verb: &str) {
        let mut command = Self::script();
        command.args([verb, &self.dir.path().display().to_string()]);
        let status = tokio::task::spawn_blocking(move || command.status())
            .await
            .expect("join")
            .expect("pg.sh");
        assert!(status.success(), "pg.sh {verb}");
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = Self::script()
            .args(["stop", &self.dir.path().display().to_string()])
            .status();
    }
}

/// What the runners saw.
#[derive(Default)]
struct Seen {
    /// Job ids received, one entry per 201 (a job twice would be a double assignment).
    received: Vec<i64>,
    finished: usize,
    /// Status codes of refused requests.
    refused: BTreeMap<u16, usize>,
    /// Requests that got no answer within the client's timeout, or no connection.
    unanswered: Vec<String>,
}

/// Sends until an answer other than a 5xx comes (the database may be down), recording what
/// was refused; gives up at `deadline`.
async fn until_answered(
    seen: &Mutex<Seen>,
    deadline: Instant,
    send: impl Fn() -> reqwest::RequestBuilder,
) -> Option<(u16, Value)> {
    while Instant::now() < deadline {
        match send().send().await {
            Ok(r) if r.status().is_server_error() => {
                *seen
                    .lock()
                    .expect("lock")
                    .refused
                    .entry(r.status().as_u16())
                    .or_default() += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(r) => {
                let status = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                return Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)));
            }
            Err(e) => {
                seen.lock().expect("lock").unanswered.push(e.to_string());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    None
}

/// One runner: polls, and runs each job it gets (a log line, then success).
async fn runner_loop(
    client: Client,
    base: String,
    token: String,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    deadline: Instant,
) {
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let poll = until_answered(&seen, deadline, || {
            client
                .post(format!("{base}/api/v4/jobs/request"))
                .json(&json!({ "token": token }))
        })
        .await;
        let Some((status, job)) = poll else { return };
        if status != 201 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let id = job["id"].as_i64().expect("job id");
        seen.lock().expect("lock").received.push(id);
        let job_token = job["token"].as_str().expect("token").to_string();
        let line = format!("job {id} ran\n");
        let patched = until_answered(&seen, deadline, || {
            client
                .patch(format!("{base}/api/v4/jobs/{id}/trace"))
                .header("Job-Token", &job_token)
                .header("Content-Range", format!("0-{}", line.len() - 1))
                .body(line.clone())
        })
        .await;
        assert_eq!(patched.map(|p| p.0), Some(202), "trace of job {id}");
        tokio::time::sleep(Duration::from_millis(30)).await;
        let put = until_answered(&seen, deadline, || {
            client
                .put(format!("{base}/api/v4/jobs/{id}"))
                .json(&json!({ "token": job_token, "state": "success" }))
        })
        .await;
        assert_eq!(put.map(|p| p.0), Some(200), "final update of job {id}");
        seen.lock().expect("lock").finished += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_stopped_and_started_under_load() {
    const BEFORE: usize = 30;
    const DURING: usize = 10;
    let (postgres, url) = OwnPostgres::start();
    let app = TestApp::builder(Backend::Postgres)
        .database_url(&url)
        .pool(8, 2)
        .spawn()
        .await;
    let project = app.create_project(json!({ "name": "steady" })).await;
    for _ in 0..BEFORE {
        app.pipeline(project, "work:\n  script: [make]\n").await;
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(150);
    // Every request answers within 15 s or counts as a hang.
    let client = Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client");
    let mut runners = Vec::new();
    for _ in 0..4 {
        let (_, token) = app
            .create_runner(json!({ "runner_type": "instance_type" }))
            .await;
        runners.push(tokio::spawn(runner_loop(
            client.clone(),
            app.base.clone(),
            token,
            seen.clone(),
            stop.clone(),
            deadline,
        )));
    }
    while seen.lock().expect("lock").finished < 8 {
        assert!(Instant::now() < deadline, "jobs did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    postgres.run("stop").await;
    // Pipelines asked for while the database is down are refused, not hung or half made.
    let reply = client
        .post(format!("{}/api/v4/projects/{project}/pipeline", app.base))
        .header("PRIVATE-TOKEN", ADMIN_TOKEN)
        .json(&json!({ "ref": "main", "ci_config": "work:\n  script: [make]\n" }))
        .send()
        .await
        .expect("an answer while the database is down");
    assert_eq!(reply.status(), 503);
    assert!(reply.headers().contains_key("retry-after"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    postgres.run("start").await;

    // Runway recovers by itself: new pipelines are accepted once the database is back.
    for _ in 0..DURING {
        let created = until_answered(&seen, deadline, || {
            client
                .post(format!("{}/api/v4/projects/{project}/pipeline", app.base))
                .header("PRIVATE-TOKEN", ADMIN_TOKEN)
                .json(&json!({ "ref": "main", "ci_config": "work:\n  script: [make]\n" }))
        })
        .await;
        assert_eq!(created.map(|c| c.0), Some(201));
    }
    while seen.lock().expect("lock").finished < BEFORE + DURING {
        assert!(
            Instant::now() < deadline,
            "not every job finished: {} of {}",
            seen.lock().expect("lock").finished,
            BEFORE + DURING
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for runner in runners {
        runner.await.expect("runner");
    }

    let seen = std::mem::take(&mut *seen.lock().expect("lock"));
    println!("refused while the database was down: {:?}", seen.refused);
    assert!(
        seen.unanswered.is_empty(),
        "requests hung or failed to connect: {:?}",
        seen.unanswered
    );
    assert!(!seen.refused.is_empty(), "the outage was seen");
    assert_eq!(
        seen.refused.keys().copied().collect::<Vec<_>>(),
        vec![503],
        "database faults answer 503"
    );
    let distinct: HashSet<i64> = seen.received.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        seen.received.len(),
        "a job was given out twice: {:?}",
        seen.received
    );
    assert_eq!(distinct.len(), BEFORE + DURING);
    let jobs = app
        .send(app.admin(
            Method::GET,
            &format!("/api/v4/projects/{project}/jobs?per_page=100"),
        ))
        .await
        .json();
    let jobs = jobs.as_array().expect("jobs");
    assert_eq!(jobs.len(), BEFORE + DURING);
    assert!(jobs.iter().all(|j| j["status"] == "success"), "{jobs:?}");
    for job in jobs.iter().take(3) {
        let trace = app
            .send(app.admin(
                Method::GET,
                &format!("/api/v4/projects/{project}/jobs/{}/trace", job["id"]),
            ))
            .await;
        assert_eq!(trace.text, format!("job {} ran\n", job["id"]));
    }
    assert_eq!(
        app.send(app.request(Method::GET, "/-/readiness"))
            .await
            .status,
        200
    );
}

// The command line reaches an HTTPS server: trusting its self-signed certificate with
// `--ca-file`, refusing it (exit 3, a usage error, the reason said) without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_speaks_https() {
    let server = spawn_https(crate::helpers::Backend::Sqlite).await;
    let base = format!("https://{}", server.addr);
    let run = |ca_file: Option<std::path::PathBuf>| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_runway"));
        command
            .args([
                "runners",
                "list",
                "--url",
                &base,
                "--token",
                crate::helpers::ADMIN_TOKEN,
            ])
            .env_remove("RUNWAY_CA_FILE");
        if let Some(file) = ca_file {
            command.arg("--ca-file").arg(file);
        }
        command.output()
    };
    let trusted = run(Some(server.cert_file.clone())).await.expect("runs");
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    let refused = run(None).await.expect("runs");
    assert_eq!(refused.status.code(), Some(3));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("cannot reach Runway") && said.contains("hint:"),
        "{said}"
    );
}
