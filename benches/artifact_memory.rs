//! Memory while a big artifact goes through the server: the release `runway` binary is
//! started on SQLite under a temporary folder, one job uploads an artifact of
//! `RUNWAY_BENCH_ARTIFACT_BYTES` (default 1 GiB, streamed with chunked encoding), the job
//! that needs it downloads it with its own token, and the server's resident memory
//! (`/proc/<pid>/status`, sampled every 10 ms) is printed before, at its peak during each
//! transfer, and as growth. The bytes are compared by SHA-256. Target: growth < 64 MiB.
//!
//! Run: `cargo bench --bench artifact_memory` (Linux).

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const ADMIN_TOKEN: &str = "glpat-bench-admin-token";
const CHUNK: usize = 256 * 1024;

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

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Samples the RSS of `pid` every 10 ms while the returned flag is true; keeps the peak.
fn sampler(pid: u32) -> (Arc<AtomicBool>, Arc<AtomicU64>, std::thread::JoinHandle<()>) {
    let running = Arc::new(AtomicBool::new(true));
    let peak = Arc::new(AtomicU64::new(rss_kib(pid)));
    let (r, p) = (running.clone(), peak.clone());
    let handle = std::thread::spawn(move || {
        while r.load(Ordering::SeqCst) {
            p.fetch_max(rss_kib(pid), Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    (running, peak, handle)
}

/// Deterministic, incompressible-looking bytes: chunk `i` of the artifact.
fn chunk(i: u64, len: usize) -> Vec<u8> {
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

async fn call(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::main]
async fn main() {
    let size: u64 = std::env::var("RUNWAY_BENCH_ARTIFACT_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_runway"))
        .arg("serve")
        .env("RUNWAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUNWAY_DATA_DIR", dir.path())
        .env("RUNWAY_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUNWAY_LONG_POLL_TIMEOUT", "0")
        .env(
            "RUNWAY_MAX_ARTIFACT_SIZE_BYTES",
            (size + (1 << 20)).to_string(),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("server starts");
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let pid = server.child.id();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .get(format!("{}/-/readiness", server.base))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "server did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let api = |path: &str| format!("{}/api/v4{path}", server.base);
    let admin = |method: reqwest::Method, path: &str| {
        client
            .request(method, api(path))
            .header("PRIVATE-TOKEN", ADMIN_TOKEN)
    };

    let (_, project) =
        call(admin(reqwest::Method::POST, "/projects").json(&json!({ "name": "bench" }))).await;
    let (_, runner) = call(
        admin(reqwest::Method::POST, "/user/runners")
            .json(&json!({ "runner_type": "instance_type" })),
    )
    .await;
    let runner = runner["token"].as_str().expect("runner token").to_string();
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
                .post(api("/jobs/request"))
                .json(&json!({ "token": runner, "info": { "features": { "upload_multiple_artifacts": true } } })),
        )
        .await;
        assert_eq!(status, 201, "a job: {job}");
        job
    };
    let build = take().await;

    // Upload.
    let before = rss_kib(pid);
    let (running, peak, handle) = sampler(pid);
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
    let started = Instant::now();
    let (status, reply) = call(
        client
            .post(api(&format!(
                "/jobs/{}/artifacts?artifact_type=archive&artifact_format=zip",
                build["id"]
            )))
            .header("Job-Token", build["token"].as_str().unwrap_or_default())
            .multipart(reqwest::multipart::Form::new().part("file", part)),
    )
    .await;
    let upload_time = started.elapsed();
    running.store(false, Ordering::SeqCst);
    handle.join().expect("sampler");
    assert_eq!(status, 201, "upload: {reply}");
    let upload_peak = peak.load(Ordering::SeqCst);
    let sent = hex::encode(hasher.lock().expect("hasher").clone().finalize());

    let (status, _) = call(
        client
            .put(api(&format!("/jobs/{}", build["id"])))
            .json(&json!({ "token": build["token"], "state": "success" })),
    )
    .await;
    assert_eq!(status, 200, "build finished");
    let test = take().await;

    // Download, with the consuming job's token.
    let before_download = rss_kib(pid);
    let (running, peak, handle) = sampler(pid);
    let started = Instant::now();
    let response = client
        .get(api(&format!("/jobs/{}/artifacts", build["id"])))
        .header("Job-Token", test["token"].as_str().unwrap_or_default())
        .send()
        .await
        .expect("download");
    assert_eq!(response.status(), 200, "download");
    let mut stream = response.bytes_stream();
    let mut received = 0u64;
    let mut digest = Sha256::new();
    while let Some(part) = stream.next().await {
        let part = part.expect("body");
        received += part.len() as u64;
        digest.update(&part);
    }
    let download_time = started.elapsed();
    running.store(false, Ordering::SeqCst);
    handle.join().expect("sampler");
    let download_peak = peak.load(Ordering::SeqCst);
    let got = hex::encode(digest.finalize());

    let mib = |kib: u64| kib as f64 / 1024.0;
    let rate = |d: Duration| size as f64 / d.as_secs_f64() / 1e6;
    println!(
        "artifact: {size} bytes ({:.0} MiB), SQLite, local object store",
        size as f64 / 1048576.0
    );
    println!(
        "upload:   {:.2} s, {:.0} MB/s; server RSS {:.1} MiB before, {:.1} MiB at peak: growth {:.1} MiB",
        upload_time.as_secs_f64(),
        rate(upload_time),
        mib(before),
        mib(upload_peak),
        mib(upload_peak.saturating_sub(before))
    );
    println!(
        "download: {:.2} s, {:.0} MB/s; server RSS {:.1} MiB before, {:.1} MiB at peak: growth {:.1} MiB",
        download_time.as_secs_f64(),
        rate(download_time),
        mib(before_download),
        mib(download_peak),
        mib(download_peak.saturating_sub(before_download))
    );
    let growth = upload_peak.max(download_peak).saturating_sub(before);
    println!(
        "target: growth < 64 MiB: {} ({:.1} MiB)",
        if growth < 64 * 1024 { "met" } else { "NOT met" },
        mib(growth)
    );
    assert_eq!(received, size, "downloaded size");
    assert_eq!(got, sent, "downloaded bytes are the uploaded bytes");
    println!("bytes: identical (sha256 {got})");
}
