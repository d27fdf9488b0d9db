//! Crash safety: the server is killed (SIGKILL) mid-job after acknowledged PATCHes and
//! started again on the same database; the log is intact and the job can finish.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::{json, Value};

use crate::helpers::{both_backends, Backend, ADMIN_TOKEN};

struct Server {
    child: Child,
    base: String,
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

async fn start(database_url: &str, data_dir: &std::path::Path) -> Server {
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
async fn database(backend: Backend, dir: &std::path::Path) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.join("runway.sqlite3").display()),
        Backend::Postgres => crate::helpers::fresh_postgres_database().await,
    }
}

async fn call(client: &Client, method: reqwest::Method, url: String, body: Value) -> (u16, Value) {
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
