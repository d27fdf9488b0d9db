//! What the benches share: the release `runway` binary started as a child process on
//! 127.0.0.1, its resident memory sampled from `/proc`, and the 1 GiB artifact round trip
//! (upload by one job, download by the job that needs it) with its throughput and the
//! server's peak RSS. Each bench uses a part of it.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const ADMIN_TOKEN: &str = "glpat-bench-admin-token";
const CHUNK: usize = 256 * 1024;

/// A server running in its own process, killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}/api/v4{path}", self.base)
    }

    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// CPU time the server has used so far (user + system, all threads).
    pub fn cpu_time(&self) -> Duration {
        cpu_time(self.pid())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Starts `runway serve` on a free loopback port with `env` (on top of the listen address,
/// the admin token and `RUST_LOG=warn`) and waits for `/-/readiness`. The server's log
/// (its stdout) is appended to the file `RUNWAY_BENCH_SERVER_LOG` names, else dropped.
/// `RUNWAY_BENCH_SERVER_BIN` names another `runway` binary to measure (an earlier build,
/// to compare two builds with one bench binary); else this build's.
pub async fn start_runway(env: &[(&str, String)]) -> Server {
    let port = free_port();
    let binary = std::env::var_os("RUNWAY_BENCH_SERVER_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_runway").into());
    let mut command = Command::new(binary);
    command
        .arg("serve")
        .env("RUNWAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUNWAY_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(server_log())
        .stderr(Stdio::inherit());
    for (key, value) in env {
        command.env(key, value);
    }
    let server = Server {
        child: command.spawn().expect("server starts"),
        base: format!("http://127.0.0.1:{port}"),
    };
    wait_ready(&format!("{}/-/readiness", server.base)).await;
    server
}

/// Where a server's log goes: appended to `RUNWAY_BENCH_SERVER_LOG`, else nowhere.
fn server_log() -> Stdio {
    let Ok(path) = std::env::var("RUNWAY_BENCH_SERVER_LOG") else {
        return Stdio::null();
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("RUNWAY_BENCH_SERVER_LOG {path}: {e}"));
    Stdio::from(file)
}

/// Waits (30 s at most) until `url` answers 200.
pub async fn wait_ready(url: &str) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .get(url)
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "{url} did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// User + system CPU time of a process, from `/proc/<pid>/stat` (clock ticks of 10 ms,
/// the usual `USER_HZ`; zero if unreadable).
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces), from its closing parenthesis:
    // state is field 3, utime 14 and stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Samples the RSS of a process every 10 ms, from `start` until `stop`; keeps the peak.
pub struct PeakRss {
    running: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    handle: std::thread::JoinHandle<()>,
}

impl PeakRss {
    pub fn start(pid: u32) -> PeakRss {
        let running = Arc::new(AtomicBool::new(true));
        let peak = Arc::new(AtomicU64::new(rss_kib(pid)));
        let (r, p) = (running.clone(), peak.clone());
        let handle = std::thread::spawn(move || {
            while r.load(Ordering::SeqCst) {
                p.fetch_max(rss_kib(pid), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        PeakRss {
            running,
            peak,
            handle,
        }
    }

    /// The peak in KiB.
    pub fn stop(self) -> u64 {
        self.running.store(false, Ordering::SeqCst);
        self.handle.join().expect("sampler");
        self.peak.load(Ordering::SeqCst)
    }
}

/// Deterministic, incompressible-looking bytes: chunk `i` of an artifact or a log.
pub fn chunk(i: u64, len: usize) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub async fn call(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// `size` bytes as a multipart body streamed in 256 KiB chunks, hashed on the way out.
pub fn artifact_form(size: u64) -> (reqwest::multipart::Form, Arc<std::sync::Mutex<Sha256>>) {
    let chunks = size.div_ceil(CHUNK as u64);
    let hasher = Arc::new(std::sync::Mutex::new(Sha256::new()));
    let h = hasher.clone();
    let body = futures_util::stream::iter(0..chunks).map(move |i| {
        let len = (size - i * CHUNK as u64).min(CHUNK as u64) as usize;
        let data = chunk(i, len);
        h.lock().expect("hasher").update(&data);
        Ok::<_, std::io::Error>(data)
    });
    let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(body))
        .file_name("artifacts.zip");
    (reqwest::multipart::Form::new().part("file", part), hasher)
}

/// Reads a response body to its end: (bytes, SHA-256 in hex).
pub async fn drain(response: reqwest::Response) -> (u64, String) {
    let mut stream = response.bytes_stream();
    let mut received = 0u64;
    let mut digest = Sha256::new();
    while let Some(part) = stream.next().await {
        let part = part.expect("body");
        received += part.len() as u64;
        digest.update(&part);
    }
    (received, hex::encode(digest.finalize()))
}

/// One transfer through a server: its duration and the server's RSS before and at peak.
pub struct Transfer {
    pub time: Duration,
    pub before_kib: u64,
    pub peak_kib: u64,
}

impl Transfer {
    pub fn mb_per_s(&self, size: u64) -> f64 {
        size as f64 / self.time.as_secs_f64() / 1e6
    }

    pub fn growth_kib(&self) -> u64 {
        self.peak_kib.saturating_sub(self.before_kib)
    }
}

/// Runs `work` while sampling the server's RSS: its result and the transfer's figures.
pub async fn measure<T>(
    server: &Server,
    work: impl std::future::Future<Output = T>,
) -> (T, Transfer) {
    let before_kib = server.rss_kib();
    let sampler = PeakRss::start(server.pid());
    let started = Instant::now();
    let value = work.await;
    let time = started.elapsed();
    let transfer = Transfer {
        time,
        before_kib,
        peak_kib: sampler.stop(),
    };
    (value, transfer)
}

/// An artifact of `size` bytes uploaded by one job and downloaded by the one that needs
/// it, with each job's own token; the bytes are compared by SHA-256.
pub struct ArtifactRoundTrip {
    pub size: u64,
    pub upload: Transfer,
    pub download: Transfer,
    pub identical: bool,
}

/// A project made of `body` and an instance runner, through the admin API: the project's
/// JSON and the runner's token.
pub async fn project_and_runner(
    client: &reqwest::Client,
    server: &Server,
    body: Value,
) -> (Value, String) {
    let admin = |method: reqwest::Method, path: &str| {
        client
            .request(method, server.api(path))
            .header("PRIVATE-TOKEN", ADMIN_TOKEN)
    };
    let (_, project) = call(admin(reqwest::Method::POST, "/projects").json(&body)).await;
    let (_, runner) = call(
        admin(reqwest::Method::POST, "/user/runners")
            .json(&json!({ "runner_type": "instance_type" })),
    )
    .await;
    let runner = runner["token"].as_str().expect("runner token").to_string();
    (project, runner)
}

/// Runs the round trip on a Runway started with a max artifact size above `size`.
pub async fn artifact_round_trip(server: &Server, size: u64) -> ArtifactRoundTrip {
    let client = reqwest::Client::new();
    let admin = |method: reqwest::Method, path: &str| {
        client
            .request(method, server.api(path))
            .header("PRIVATE-TOKEN", ADMIN_TOKEN)
    };
    let (project, runner) =
        project_and_runner(&client, server, json!({ "name": "bench-artifacts" })).await;
    let yaml = "build:\n  stage: build\n  script: [x]\n  artifacts: { paths: [a] }\ntest:\n  stage: test\n  needs: [build]\n  script: [y]\n";
    let (status, _) = call(
        admin(
            reqwest::Method::POST,
            &format!("/projects/{}/pipeline", project["id"]),
        )
        .json(&json!({ "ref": "main", "ci_config": yaml })),
    )
    .await;
    assert_eq!(status, 201, "pipeline created");
    let take = || async {
        let (status, job) = call(client
                .post(server.api("/jobs/request"))
                .json(&json!({ "token": runner, "info": { "features": { "upload_multiple_artifacts": true } } })),
        )
        .await;
        assert_eq!(status, 201, "a job: {job}");
        job
    };
    let build = take().await;

    let (form, hasher) = artifact_form(size);
    let ((status, reply), upload) = measure(
        server,
        call(
            client
                .post(server.api(&format!(
                    "/jobs/{}/artifacts?artifact_type=archive&artifact_format=zip",
                    build["id"]
                )))
                .header("Job-Token", build["token"].as_str().unwrap_or_default())
                .multipart(form),
        ),
    )
    .await;
    assert_eq!(status, 201, "upload: {reply}");
    let sent = hex::encode(hasher.lock().expect("hasher").clone().finalize());

    let (status, _) = call(
        client
            .put(server.api(&format!("/jobs/{}", build["id"])))
            .json(&json!({ "token": build["token"], "state": "success" })),
    )
    .await;
    assert_eq!(status, 200, "build finished");
    let test = take().await;

    let ((received, got), download) = measure(server, async {
        let response = client
            .get(server.api(&format!("/jobs/{}/artifacts", build["id"])))
            .header("Job-Token", test["token"].as_str().unwrap_or_default())
            .send()
            .await
            .expect("download");
        assert_eq!(response.status(), 200, "download");
        drain(response).await
    })
    .await;
    assert_eq!(received, size, "downloaded size");
    ArtifactRoundTrip {
        size,
        upload,
        download,
        identical: got == sent,
    }
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Where a bench's PostgreSQL databases come from: `RUNWAY_BENCH_DATABASE_URL`, else a
/// throwaway server started by `scripts/pg.sh`.
pub struct Postgres {
    admin_url: String,
    /// A server started by `scripts/pg.sh` in this folder, stopped at the end.
    started: Option<tempfile::TempDir>,
    created: Vec<String>,
}

impl Postgres {
    pub fn get() -> Result<Postgres, String> {
        if let Ok(url) = std::env::var("RUNWAY_BENCH_DATABASE_URL") {
            return Ok(Postgres {
                admin_url: url,
                started: None,
                created: Vec::new(),
            });
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let output = std::process::Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg.sh"))
            .env("RUNWAY_PG_DIR", dir.path())
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| format!("scripts/pg.sh: {e}"))?;
        let url = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if !output.status.success() || !url.starts_with("postgres") {
            return Err("scripts/pg.sh could not start PostgreSQL".into());
        }
        Ok(Postgres {
            admin_url: url,
            started: Some(dir),
            created: Vec::new(),
        })
    }

    /// The postmaster's pid, when `scripts/pg.sh` started it here.
    pub fn postmaster(&self) -> Option<u32> {
        let dir = self.started.as_ref()?;
        let pid = std::fs::read_to_string(dir.path().join("data/postmaster.pid")).ok()?;
        pid.lines().next()?.trim().parse().ok()
    }

    /// A new empty database; its URL.
    pub async fn fresh(&mut self) -> Result<String, String> {
        let name = format!("runway_bench_{}_{}", std::process::id(), self.created.len());
        let (client, connection) = tokio_postgres::connect(&self.admin_url, tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("connecting to PostgreSQL: {e}"))?;
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .map_err(|e| format!("CREATE DATABASE: {e}"))?;
        self.created.push(name.clone());
        let (head, query) = match self.admin_url.split_once('?') {
            Some((h, q)) => (h, format!("?{q}")),
            None => (self.admin_url.as_str(), String::new()),
        };
        let server = head.rsplit_once('/').map_or(head, |(s, _)| s);
        Ok(format!("{server}/{name}{query}"))
    }

    pub async fn finish(self) {
        match self.started {
            Some(dir) => {
                let _ = std::process::Command::new("bash")
                    .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg.sh"))
                    .arg("stop")
                    .arg(dir.path())
                    .status();
            }
            None => {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&self.admin_url, tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    for name in &self.created {
                        let _ = client
                            .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
                            .await;
                    }
                }
            }
        }
    }
}

/// 10,000 held polls need 10,000 sockets here and in the server (which inherits this):
/// the open-file limit raised to the hard limit.
pub fn raise_open_files() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct passed, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// With the environment variable `var` naming a file, appends `lines()` to it (made only
/// then): the benches' per-round and per-job dumps, for a look at a tail's shape.
pub fn append_to_file_named_by(var: &str, lines: impl FnOnce() -> String) {
    let Ok(path) = std::env::var(var) else {
        return;
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{var} {path}: {e}"));
    std::io::Write::write_all(&mut file, lines().as_bytes())
        .unwrap_or_else(|e| panic!("{var} {path}: {e}"));
}

/// Prints `table` (its first row the header) as a Markdown table, the first column
/// left-aligned and the others right-aligned.
pub fn print_table(table: &[Vec<String>]) {
    let widths: Vec<usize> = (0..table[0].len())
        .map(|i| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for (n, row) in table.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, width))| match i {
                0 => format!("{cell:<width$}"),
                _ => format!("{cell:>width$}"),
            })
            .collect();
        println!("| {} |", cells.join(" | "));
        if n == 0 {
            let rule: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(i, w)| match i {
                    0 => "-".repeat(w + 2),
                    _ => format!("{}:", "-".repeat(w + 1)),
                })
                .collect();
            println!("|{}|", rule.join("|"));
        }
    }
}
