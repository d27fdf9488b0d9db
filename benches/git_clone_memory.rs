//! Memory while jobs fetch a big repository from Runway: the release `runway` binary is
//! started on SQLite under a temporary folder, a repository of `RUNWAY_BENCH_REPO_BYTES`
//! (default 200 MiB of incompressible files) becomes a project's upstream, a pipeline of
//! `RUNWAY_BENCH_CLONES` jobs (default 20) is created, and each job's token clones the
//! repository over HTTP (`git clone --depth 1`, all at once). The server's resident memory
//! (`/proc/<pid>/status`, sampled every 10 ms) is printed before, at its peak, and as
//! growth; the `git http-backend` processes it starts are not the server's and are not
//! counted. Every clone's head is checked. Target: growth < 64 MiB.
//!
//! Run: `cargo bench --bench git_clone_memory` (Linux, git installed).

mod common;

use std::time::Instant;

use common::{call, chunk, mib, project_and_runner, start_runway, PeakRss, ADMIN_TOKEN};
use serde_json::json;

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::main]
async fn main() {
    let var = |key: &str, default: u64| {
        std::env::var(key)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let size = var("RUNWAY_BENCH_REPO_BYTES", 200 << 20);
    let clones = var("RUNWAY_BENCH_CLONES", 20) as usize;

    // The upstream: 1 MiB files of bytes git cannot compress.
    let upstream = tempfile::tempdir().expect("tempdir");
    git(upstream.path(), &["init", "-q", "-b", "main"]);
    std::fs::create_dir(upstream.path().join("data")).expect("data");
    for i in 0..size.div_ceil(1 << 20) {
        let file = upstream.path().join(format!("data/{i:05}.bin"));
        std::fs::write(file, chunk(i, 1 << 20)).expect("write");
    }
    std::fs::write(
        upstream.path().join(".gitlab-ci.yml"),
        format!("clone:\n  script: [x]\n  parallel: {clones}\n"),
    )
    .expect("write");
    git(upstream.path(), &["add", "."]);
    git(upstream.path(), &["commit", "-q", "-m", "big"]);
    let head = git(upstream.path(), &["rev-parse", "HEAD"]);

    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_runway(&[
        ("RUNWAY_DATA_DIR", dir.path().display().to_string()),
        ("RUNWAY_LONG_POLL_TIMEOUT", "0".into()),
        ("RUNWAY_MIRROR_INTERVAL", "0".into()),
    ])
    .await;
    let client = reqwest::Client::new();
    let admin = |method: reqwest::Method, path: &str| {
        client
            .request(method, server.api(path))
            .header("PRIVATE-TOKEN", ADMIN_TOKEN)
    };
    let (project, runner) = project_and_runner(
        &client,
        &server,
        json!({ "name": "bench-clone", "repository_url": upstream.path().display().to_string() }),
    )
    .await;
    let mirrored = Instant::now();
    let (status, pipeline) = call(
        admin(
            reqwest::Method::POST,
            &format!("/projects/{}/pipeline", project["id"]),
        )
        .json(&json!({ "ref": "main" })),
    )
    .await;
    assert_eq!(status, 201, "pipeline: {pipeline}");
    let mirrored = mirrored.elapsed();
    let mut urls = Vec::new();
    for _ in 0..clones {
        let (status, job) = call(
            client
                .post(server.api("/jobs/request"))
                .json(&json!({ "token": runner, "info": { "features": { "refspecs": true } } })),
        )
        .await;
        assert_eq!(status, 201, "a job: {job}");
        urls.push(
            job["git_info"]["repo_url"]
                .as_str()
                .expect("repo_url")
                .to_string(),
        );
    }

    let before = server.rss_kib();
    let sampler = PeakRss::start(server.pid());
    let started = Instant::now();
    let targets = tempfile::tempdir().expect("tempdir");
    let handles: Vec<_> = urls
        .into_iter()
        .enumerate()
        .map(|(i, url)| {
            let target = targets.path().join(format!("clone-{i}"));
            std::thread::spawn(move || {
                let out = std::process::Command::new("git")
                    .args(["clone", "-q", "--depth", "1", &url])
                    .arg(&target)
                    .env("GIT_TERMINAL_PROMPT", "0")
                    .output()
                    .expect("git clone runs");
                assert!(out.status.success(), "clone {i}: {out:?}");
                git(&target, &["rev-parse", "HEAD"])
            })
        })
        .collect();
    let heads: Vec<String> = handles
        .into_iter()
        .map(|h| h.join().expect("clone"))
        .collect();
    let took = started.elapsed();
    let peak = sampler.stop();

    println!(
        "repository: {size} bytes ({:.0} MiB) in {} files; mirrored (a local clone) in {:.1} s",
        size as f64 / 1048576.0,
        size.div_ceil(1 << 20),
        mirrored.as_secs_f64()
    );
    println!(
        "{clones} clones at once over HTTP with job tokens: {:.1} s; server RSS {:.1} MiB before, {:.1} MiB at peak: growth {:.1} MiB",
        took.as_secs_f64(),
        mib(before),
        mib(peak),
        mib(peak.saturating_sub(before))
    );
    let growth = peak.saturating_sub(before);
    println!(
        "target: growth < 64 MiB: {} ({:.1} MiB)",
        if growth < 64 * 1024 { "met" } else { "NOT met" },
        mib(growth)
    );
    assert!(heads.iter().all(|h| *h == head), "every clone has the head");
    println!("clones: all at the upstream's head");
}
