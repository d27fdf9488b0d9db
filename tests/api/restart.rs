//! Crash safety: the server is killed (SIGKILL) mid-job after acknowledged PATCHes and
//! started again on the same database; the log is intact and the job can finish. Killed
//! mid-upload, no partial artifact is visible; stopped (SIGTERM) with uploads in flight,
//! those that go on finish and stalled ones are cut within the shutdown's bound.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::{json, Value};

use crate::helpers::{both_backends, Backend, ADMIN_TOKEN};

pub(crate) struct Server {
    child: Child,
    pub(crate) base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

pub(crate) async fn start(database_url: &str, data_dir: &std::path::Path) -> Server {
    start_with(database_url, data_dir, &[]).await
}

async fn start_with(
    database_url: &str,
    data_dir: &std::path::Path,
    env: &[(&str, &str)],
) -> Server {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_runway"))
        .arg("serve")
        .env("RUNWAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUNWAY_DATABASE_URL", database_url)
        .env("RUNWAY_DATA_DIR", data_dir)
        .env("RUNWAY_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUNWAY_LONG_POLL_TIMEOUT", "0")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("server starts");
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client
            .get(format!("{}/-/readiness", server.base))
            .send()
            .await
        {
            if r.status() == 200 {
                return server;
            }
        }
        assert!(Instant::now() < deadline, "server did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fresh database for `backend` (SQLite under `dir`).
pub(crate) async fn database(backend: Backend, dir: &std::path::Path) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.join("runway.sqlite3").display()),
        Backend::Postgres => crate::helpers::fresh_postgres_database().await,
    }
}

pub(crate) async fn call(
    client: &Client,
    method: reqwest::Method,
    url: String,
    body: Value,
) -> (u16, Value) {
    let r = client
        .request(method, url)
        .header("PRIVATE-TOKEN", ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn patch(client: &Client, base: &str, job: &Value, start: usize, data: &[u8]) -> u16 {
    client
        .patch(format!("{base}/api/v4/jobs/{}/trace", job["id"]))
        .header("Job-Token", job["token"].as_str().unwrap_or_default())
        .header(
            "Content-Range",
            format!("{start}-{}", start + data.len() - 1),
        )
        .body(data.to_vec())
        .send()
        .await
        .map(|r| {
            if r.status() != 202 {
                eprintln!(
                    "PATCH at {start}: {} {:?}",
                    r.status(),
                    r.headers().get("range")
                );
            }
            r.status().as_u16()
        })
        .expect("patch")
}

both_backends! {
    async fn a_killed_server_keeps_acknowledged_log_bytes(backend) {
        let dir = tempfile::tempdir().expect("tempdir");
        let database_url = database(backend, dir.path()).await;
        let client = Client::new();
        let server = start(&database_url, dir.path()).await;
        let base = server.base.clone();
        let (_, project) = call(&client, reqwest::Method::POST, format!("{base}/api/v4/projects"), json!({ "name": "app" })).await;
        let (_, runner) = call(&client, reqwest::Method::POST, format!("{base}/api/v4/user/runners"), json!({ "runner_type": "instance_type" })).await;
        let (status, _) = call(&client, reqwest::Method::POST, format!("{base}/api/v4/projects/{}/pipeline", project["id"]),
            json!({ "ref": "main", "ci_config": "a: { script: x }" })).await;
        assert_eq!(status, 201);
        let (status, job) = call(&client, reqwest::Method::POST, format!("{base}/api/v4/jobs/request"), json!({ "token": runner["token"] })).await;
        assert_eq!(status, 201, "{job}");
        assert_eq!(patch(&client, &base, &job, 0, b"first line\n").await, 202);
        assert_eq!(patch(&client, &base, &job, 11, b"second line\n").await, 202);

        // SIGKILL: no shutdown, no flush.
        drop(server);
        let server = start(&database_url, dir.path()).await;
        let base = server.base.clone();
        let trace_url = format!("{base}/api/v4/projects/{}/jobs/{}/trace", project["id"], job["id"]);
        let log = client.get(&trace_url).header("PRIVATE-TOKEN", ADMIN_TOKEN).send().await.expect("trace").bytes().await.expect("body");
        assert_eq!(&log[..], b"first line\nsecond line\n");

        // The runner goes on where it was.
        assert_eq!(patch(&client, &base, &job, 23, b"done\n").await, 202);
        let whole = b"first line\nsecond line\ndone\n";
        let checksum = format!("crc32:{:08x}", crc32fast::hash(whole));
        let (status, _) = call(&client, reqwest::Method::PUT, format!("{base}/api/v4/jobs/{}", job["id"]),
            json!({ "token": job["token"], "state": "success", "output": { "checksum": checksum, "bytesize": whole.len() } })).await;
        assert_eq!(status, 200);
        let (_, listed) = call(&client, reqwest::Method::GET, format!("{base}/api/v4/projects/{}/jobs/{}", project["id"], job["id"]), json!({})).await;
        assert_eq!(listed["status"], "success");
        let log = client.get(&trace_url).header("PRIVATE-TOKEN", ADMIN_TOKEN).send().await.expect("trace").bytes().await.expect("body");
        assert_eq!(&log[..], whole);
    }
}

both_backends! {
    async fn sigterm_answers_held_polls_and_exits(backend) {
        let dir = tempfile::tempdir().expect("tempdir");
        let database_url = database(backend, dir.path()).await;
        let client = Client::new();
        let mut server = start_with(&database_url, dir.path(), &[("RUNWAY_LONG_POLL_TIMEOUT", "50")]).await;
        let base = server.base.clone();
        let (_, runner) = call(&client, reqwest::Method::POST, format!("{base}/api/v4/user/runners"), json!({ "runner_type": "instance_type" })).await;
        let token = runner["token"].as_str().expect("token").to_string();
        let first = client.post(format!("{base}/api/v4/jobs/request")).json(&json!({ "token": token })).send().await.expect("poll");
        assert_eq!(first.status(), 204);
        let last_update = first.headers()["x-gitlab-last-update"].to_str().expect("ascii").to_string();
        let held = {
            let (client, base, token) = (client.clone(), base.clone(), token.clone());
            tokio::spawn(async move {
                let reply = client
                    .post(format!("{base}/api/v4/jobs/request"))
                    .json(&json!({ "token": token, "last_update": last_update }))
                    .send()
                    .await
                    .expect("held poll");
                (reply.status().as_u16(), Instant::now())
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!held.is_finished(), "the poll is held");

        let signalled = Instant::now();
        let killed = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().expect("kill");
        assert!(killed.success());
        let (status, answered) = held.await.expect("held poll");
        assert_eq!(status, 204, "a held poll is answered when the server stops");
        // Well before the 50 s hold would have ended (a correctness bound, not a benchmark).
        assert!(answered.duration_since(signalled) < Duration::from_secs(5));
        let deadline = Instant::now() + Duration::from_secs(runway::SHUTDOWN_TIMEOUT_SECS + 5);
        let exit = loop {
            if let Some(exit) = server.child.try_wait().expect("wait") {
                break exit;
            }
            assert!(Instant::now() < deadline, "the server did not exit after SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(exit.success(), "a clean exit: {exit:?}");
    }
}

type BodySender = futures::channel::mpsc::Sender<Result<Vec<u8>, std::io::Error>>;

/// Starts a streamed artifact upload for `job`; the returned sender feeds its body (drop
/// it to end the upload), the task answers the status or the transport error.
fn streamed_upload(
    client: &Client,
    base: &str,
    job: &Value,
) -> (BodySender, tokio::task::JoinHandle<Result<u16, String>>) {
    let (tx, rx) = futures::channel::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let part =
        reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(rx)).file_name("artifacts.zip");
    let request = client
        .post(format!(
            "{base}/api/v4/jobs/{}/artifacts?artifact_type=archive&artifact_format=zip",
            job["id"]
        ))
        .header("Job-Token", job["token"].as_str().unwrap_or_default())
        .multipart(reqwest::multipart::Form::new().part("file", part));
    let task = tokio::spawn(async move {
        request
            .send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string())
    });
    (tx, task)
}

async fn feed(
    tx: &mut futures::channel::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    data: &[u8],
) {
    use futures::SinkExt;
    for chunk in data.chunks(64 * 1024) {
        tx.send(Ok(chunk.to_vec()))
            .await
            .expect("the upload takes more");
    }
}

fn pseudo_random(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u64)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed as u64) as u8
        })
        .collect()
}

/// Files under `dir` that an artifact of `job_id` could be read from (finished uploads,
/// named after their job under `jobs/`; the object store's staging files carry a `#`).
fn stored_files(dir: &std::path::Path, job_id: i64) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().contains("/jobs/")
                && path.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.starts_with(&format!("{job_id}-")) && !n.contains('#')
                })
            {
                found.push(path);
            }
        }
    }
    found
}

/// Project, runner and one running job per pipeline asked for.
async fn running_jobs(client: &Client, base: &str, count: usize) -> (Value, Vec<Value>) {
    let (_, project) = call(
        client,
        reqwest::Method::POST,
        format!("{base}/api/v4/projects"),
        json!({ "name": "app" }),
    )
    .await;
    let (_, runner) = call(
        client,
        reqwest::Method::POST,
        format!("{base}/api/v4/user/runners"),
        json!({ "runner_type": "instance_type" }),
    )
    .await;
    let mut jobs = Vec::new();
    for _ in 0..count {
        let (status, _) = call(
            client,
            reqwest::Method::POST,
            format!("{base}/api/v4/projects/{}/pipeline", project["id"]),
            json!({ "ref": "main", "ci_config": "a: { script: x }" }),
        )
        .await;
        assert_eq!(status, 201);
        let (status, job) = call(
            client,
            reqwest::Method::POST,
            format!("{base}/api/v4/jobs/request"),
            json!({ "token": runner["token"] }),
        )
        .await;
        assert_eq!(status, 201, "{job}");
        jobs.push(job);
    }
    (project, jobs)
}

async fn admin_artifact(
    client: &Client,
    base: &str,
    project: &Value,
    job: &Value,
) -> (u16, Vec<u8>) {
    let r = client
        .get(format!(
            "{base}/api/v4/projects/{}/jobs/{}/artifacts",
            project["id"], job["id"]
        ))
        .header("PRIVATE-TOKEN", ADMIN_TOKEN)
        .send()
        .await
        .expect("download");
    (r.status().as_u16(), r.bytes().await.expect("body").to_vec())
}

both_backends! {
    async fn a_server_killed_mid_upload_shows_no_partial_artifact(backend) {
        let dir = tempfile::tempdir().expect("tempdir");
        let database_url = database(backend, dir.path()).await;
        let client = Client::new();
        let server = start(&database_url, dir.path()).await;
        let (project, jobs) = running_jobs(&client, &server.base, 1).await;
        let job = &jobs[0];
        let (mut tx, upload) = streamed_upload(&client, &server.base, job);
        feed(&mut tx, &pseudo_random(2 << 20, 1)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(server); // SIGKILL mid-upload
        let answer = upload.await.expect("join");
        assert!(answer != Ok(201), "the upload cannot have been accepted: {answer:?}");
        drop(tx);

        let server = start(&database_url, dir.path()).await;
        let (status, _) = admin_artifact(&client, &server.base, &project, job).await;
        assert_eq!(status, 404, "no artifact after the crash");
        assert_eq!(stored_files(dir.path(), job["id"].as_i64().unwrap_or_default()), Vec::<std::path::PathBuf>::new());
        // The runner uploads again, whole, and that is what is kept.
        let data = pseudo_random(3 << 20, 2);
        let (mut tx, upload) = streamed_upload(&client, &server.base, job);
        feed(&mut tx, &data).await;
        drop(tx);
        assert_eq!(upload.await.expect("join"), Ok(201));
        let (status, body) = admin_artifact(&client, &server.base, &project, job).await;
        assert_eq!(status, 200);
        assert!(body == data, "the stored artifact is the second upload, byte for byte");
    }

    async fn sigterm_finishes_uploads_in_flight_and_aborts_stalled_ones(backend) {
        let dir = tempfile::tempdir().expect("tempdir");
        let database_url = database(backend, dir.path()).await;
        let client = Client::new();
        let mut server = start(&database_url, dir.path()).await;
        let (project, jobs) = running_jobs(&client, &server.base, 2).await;
        let data = pseudo_random(2 << 20, 3);
        let (mut finishing, finished) = streamed_upload(&client, &server.base, &jobs[0]);
        let (mut stalled, aborted) = streamed_upload(&client, &server.base, &jobs[1]);
        feed(&mut finishing, &data[..1 << 20]).await;
        feed(&mut stalled, &data[..1 << 20]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;

        let signalled = Instant::now();
        let killed = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().expect("kill");
        assert!(killed.success());
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The upload in flight goes on to its end and is accepted.
        feed(&mut finishing, &data[1 << 20..]).await;
        drop(finishing);
        assert_eq!(finished.await.expect("join"), Ok(201), "an upload in flight at SIGTERM finishes");
        // The stalled one is cut when the shutdown's bound is reached; the server exits.
        let deadline = signalled + Duration::from_secs(runway::SHUTDOWN_TIMEOUT_SECS + 5);
        loop {
            if server.child.try_wait().expect("wait").is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "the server did not exit after SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let answer = aborted.await.expect("join");
        assert!(answer != Ok(201), "a stalled upload is not accepted: {answer:?}");
        drop(stalled);

        let server = start(&database_url, dir.path()).await;
        let (status, body) = admin_artifact(&client, &server.base, &project, &jobs[0]).await;
        assert_eq!(status, 200);
        assert!(body == data, "the finished upload is kept whole");
        let (status, _) = admin_artifact(&client, &server.base, &project, &jobs[1]).await;
        assert_eq!(status, 404, "the aborted upload left no artifact");
        assert_eq!(stored_files(dir.path(), jobs[1]["id"].as_i64().unwrap_or_default()), Vec::<std::path::PathBuf>::new());
    }
}
