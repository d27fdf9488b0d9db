//! gitlab-python-runner (PyPI, with gitlab-emulator 0.11.1, both pinned in
//! `tests/python/requirements.txt`), unchanged, registers with Runway, runs a pipeline from
//! a local git repository with its shell executor, and unregisters.
//!
//! What this client does that the Go runner does not: it registers with
//! `run_untagged=False` as a form field and only takes tagged jobs, polls with the token in
//! the JSON body only, sends `Content-Range: <start>-<start + length>` (one past the end),
//! flushes empty patches, clones with `--branch <first refspec>` unless the depth is 0 (so
//! the pipeline sets `GIT_DEPTH: "0"`), and sleeps 40 s after an empty poll (so the pipeline
//! is created before it starts), and sends a trace PATCH per KiB of output (GitLab's
//! limit of 200 per minute per job is turned off for it).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::process::Command;

use crate::helpers::e2e::{
    commit_branch, create_pipeline, finished_pipeline, job, names_and_statuses, pipeline_jobs,
    trace,
};
use crate::helpers::{both_backends, statuses, TestApp, REGISTRATION_TOKEN};

const PIPELINE: &str = r#"
variables:
  GIT_DEPTH: "0"
stages: [build, test, last]
build:
  stage: build
  tags: [python]
  script:
    - mkdir -p out
    - printf 'hello from build\n' > out/hello.txt
    - head -c 200000 /dev/urandom > out/random.bin
    - sha256sum out/random.bin > out/random.sha256
  artifacts:
    paths: [out/]
check:
  stage: test
  tags: [python]
  needs: [build]
  script:
    - cat out/hello.txt
    - sha256sum -c out/random.sha256
big_log:
  stage: test
  tags: [python]
  needs: []
  script:
    - seq 1 200000
allowed_to_fail:
  stage: test
  tags: [python]
  needs: []
  script:
    - echo about to fail
    - exit 3
  allow_failure: true
ticking:
  stage: last
  tags: [python]
  script:
    - for i in $(seq 1 15); do echo tick $i; sleep 1; done
    - echo not reached
"#;

fn python() -> String {
    std::env::var("RUNWAY_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("RUNWAY_TEST_PYTHON is not set: it names a Python with gitlab-python-runner installed; scripts/test.sh sets it")
    })
}

/// `python -m GitlabPyRunner <args>` in `dir`, output into `dir/<log>`.
fn runner(dir: &std::path::Path, args: &[&str], log: &str) -> Command {
    let log = std::fs::File::create(dir.join(log)).expect("log");
    let mut command = Command::new(python());
    command
        .arg("-m")
        .arg("GitlabPyRunner")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .kill_on_drop(true);
    command
}

async fn call(dir: &std::path::Path, args: &[&str]) -> String {
    let status = tokio::time::timeout(
        Duration::from_secs(60),
        runner(dir, args, "call.log").status(),
    )
    .await
    .expect("answers within a minute")
    .expect("python starts");
    let out = std::fs::read_to_string(dir.join("call.log")).unwrap_or_default();
    assert!(status.success(), "GitlabPyRunner {args:?}:\n{out}");
    out
}

both_backends! {
    async fn gitlab_python_runner_runs_a_pipeline(backend) {
        // This client sends a trace PATCH for every KiB of output, far past GitLab's 200 per
        // minute per job: its users turn that limit off (RUNWAY_RATE_LIMIT_TRACE=0).
        let app = TestApp::builder(backend).rate_limits(2000, 0, 200, 60).spawn().await;
        let repo = tempfile::tempdir().expect("tempdir");
        commit_branch(repo.path(), "pipeline", PIPELINE);
        let project = app
            .create_project(json!({ "name": "e2e", "repository_url": repo.path().display().to_string() }))
            .await;
        let dir = tempfile::tempdir().expect("tempdir");
        let log_path: PathBuf = dir.path().join("run.log");
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

        let out = call(dir.path(), &["--register", &app.base, "--regtoken", REGISTRATION_TOKEN, "--tag", "python", "--desc", "python e2e"]).await;
        assert!(out.contains("Registration complete"), "{out}");
        let runners = app.runners().await;
        assert_eq!(runners.len(), 1);
        assert_eq!(runners[0].description, "python e2e");
        assert!(!runners[0].run_untagged, "run_untagged=False from a form field");
        let shown = app.send(app.admin(reqwest::Method::GET, &format!("/api/v4/runners/{}", runners[0].id))).await;
        assert_eq!(shown.json()["tag_list"], json!(["python"]));

        let pipeline = create_pipeline(&app, project, "pipeline").await;
        let mut child = runner(dir.path(), &["--start", "gitlab-runner.yml"], "run.log")
            .spawn()
            .expect("runner starts");
        // The last job is cancelled while it prints: its next trace patch gets 403. This
        // client stops sending the log then, but lets the script run to its end before it
        // reports, gets 403 again and says the job was cancelled.
        let deadline = Instant::now() + Duration::from_secs(90);
        let running = loop {
            let jobs = pipeline_jobs(&app, project, pipeline).await;
            let job = job(&jobs, "ticking").clone();
            if job["status"] == "running" && trace(&app, project, &job).await.contains("tick 2\n") {
                break job;
            }
            assert!(Instant::now() < deadline, "the ticking job never started: {job}\n{}", log());
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let reply = app
            .send(app.admin(reqwest::Method::POST, &format!("/api/v4/projects/{project}/jobs/{}/cancel", running["id"])))
            .await;
        assert_eq!(reply.json()["status"], "canceled", "{}", reply.text);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !log().contains(&format!("Job {} was cancelled", running["id"])) {
            assert!(Instant::now() < deadline, "the runner never noticed the cancel:\n{}", log());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(!trace(&app, project, &running).await.contains("not reached"));
        let status = finished_pipeline(&app, project, pipeline, log).await;
        assert_eq!(status, "canceled", "{}", log());
        let jobs = pipeline_jobs(&app, project, pipeline).await;
        let names = names_and_statuses(&jobs);
        assert_eq!(
            names,
            statuses(&[
                ("allowed_to_fail", "failed"),
                ("big_log", "success"),
                ("build", "success"),
                ("check", "success"),
                ("ticking", "canceled"),
            ])
        );
        let check = trace(&app, project, job(&jobs, "check")).await;
        assert!(check.contains("Fetching artifacts from build"), "{check}");
        assert!(check.contains("hello from build\n") && check.contains("out/random.bin: OK"), "{check}");
        let build = job(&jobs, "build");
        assert_eq!(build["artifacts"][0]["file_type"], "archive", "{build}");
        let big = trace(&app, project, job(&jobs, "big_log")).await;
        let expected: String = (1..=200_000).map(|n| format!("{n}\n")).collect();
        assert!(big.contains(&expected), "the whole seq output in order ({} bytes)", big.len());
        let failed = trace(&app, project, job(&jobs, "allowed_to_fail")).await;
        assert!(failed.contains("about to fail") && failed.contains("success=False"), "{failed}");

        // What it said of itself on its polls.
        let shown = app.send(app.admin(reqwest::Method::GET, &format!("/api/v4/runners/{}", runners[0].id))).await.json();
        assert_eq!(shown["version"], "14.3.20");
        assert_eq!(shown["platform"], "linux");
        assert_eq!(shown["status"], "online");

        child.kill().await.ok();

        let out = call(dir.path(), &["--unregister"]).await;
        assert!(out.contains("De-register complete"), "{out}");
        assert!(app.runners().await.is_empty());
    }
}
