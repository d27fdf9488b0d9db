//! A custom runner written with the `gitlab-runner` crate, as its users write one (its
//! shell `JobHandler` is in tests/common/shell_runner.rs), runs a pipeline against Runway.
//!
//! What this client does: a `glrt-` token used as is (no register call), `system_id`
//! generated, a handful of features, trace patches with an inclusive `Content-Range`, the
//! update interval taken from `X-GitLab-Trace-Update-Interval`, a keep-alive `PUT` every
//! 30 s, cancel learned from `Job-Status: canceled`, artifacts zipped and uploaded as a
//! multipart form with `expire_in` as a form field.

use std::time::{Duration, Instant};

use gitlab_runner::{GitlabLayer, RunnerBuilder};
use reqwest::Method;
use serde_json::json;
use tracing_subscriber::prelude::*;

use crate::helpers::e2e::{finished_pipeline, job, names_and_statuses, pipeline_jobs, trace};
use crate::helpers::{both_backends, statuses, TestApp};
use crate::shell_runner::ShellJob;

const PIPELINE: &str = r#"
stages: [build, test, last]
build:
  stage: build
  script:
    - mkdir -p out && seq 1 20000 > out/numbers.txt
    - head -c 150000 /dev/urandom > out/random.bin && sha256sum out/random.bin > out/random.sha256
    - echo built
  artifacts:
    paths: [out/numbers.txt, out/random.bin, out/random.sha256]
    expire_in: 2 days
check:
  stage: test
  needs: [build]
  script:
    - sha256sum -c out/random.sha256
    - tail -n 1 out/numbers.txt
big_log:
  stage: test
  needs: []
  script:
    - seq 1 150000
allowed_to_fail:
  stage: test
  needs: []
  script:
    - echo about to fail
    - exit 3
  allow_failure: true
ticking:
  stage: last
  script:
    - for i in $(seq 1 30); do echo tick $i; sleep 1; done; touch MARKER
"#;

both_backends! {
    async fn gitlab_runner_crate_runs_a_pipeline(backend) {
        // A short update interval, so that a cancel reaches this runner within a second.
        let app = TestApp::builder(backend).trace_update_interval(1).spawn().await;
        let project = app.create_project(json!({ "name": "crate" })).await;
        let (runner_id, token) = app.create_runner(json!({ "runner_type": "instance_type" })).await;

        let (layer, jobs) = GitlabLayer::new();
        let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
        let builds = tempfile::tempdir().expect("tempdir");
        let mut runner = RunnerBuilder::new(app.base.as_str().try_into().expect("url"), token, builds.path(), jobs)
            .version("0.3.2-runway-test")
            .platform("linux")
            .architecture("amd64")
            .build()
            .await;

        // The ticking job leaves a marker behind if it runs to its end.
        let marker = builds.path().join("ticking-finished");
        let yaml = PIPELINE.replace("MARKER", &marker.display().to_string());
        let pipeline = app.pipeline(project, &yaml).await;
        let cancelled = std::sync::atomic::AtomicBool::new(false);
        let ticking_cancelled = async {
            let deadline = Instant::now() + Duration::from_secs(120);
            let ticking = loop {
                let jobs = pipeline_jobs(&app, project, pipeline).await;
                let job = job(&jobs, "ticking").clone();
                if job["status"] == "running" && trace(&app, project, &job).await.contains("$ for i") {
                    break job;
                }
                if ["failed", "skipped"].contains(&job["status"].as_str().unwrap_or_default()) || Instant::now() >= deadline {
                    let mut logs = String::new();
                    for other in &jobs {
                        logs += &format!("--- {} ({}):\n{}\n", other["name"], other["status"], trace(&app, project, other).await);
                    }
                    panic!("ticking never ran:\n{logs}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            let reply = app
                .send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/jobs/{}/cancel", ticking["id"])))
                .await;
            assert_eq!(reply.json()["status"], "canceled", "{}", reply.text);
            cancelled.store(true, std::sync::atomic::Ordering::SeqCst);
            ticking
        };
        // The runner takes one job at a time until the ticking job is cancelled and it has
        // stopped it (bounded: at most 600 polls).
        let run = async {
            for _ in 0..600 {
                runner.wait_for_space(1).await;
                if cancelled.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let got = runner.request_job(|job| async move { ShellJob::new(job).await }).await.expect("job request");
                if !got {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            runner.drain().await;
        };
        let (ticking, ()) = tokio::time::timeout(Duration::from_secs(150), async {
            tokio::join!(ticking_cancelled, async {
                run.await;
            })
        })
        .await
        .expect("the pipeline runs within the time limit");
        assert!(!marker.exists(), "the runner stopped the cancelled job before its end");

        assert_eq!(finished_pipeline(&app, project, pipeline, String::new).await, "canceled");
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

        // The artifact went up with the crate's own zip writer and came back whole.
        let build = job(&jobs, "build");
        assert_eq!(build["artifacts"][0]["file_type"], "archive", "{build}");
        assert_eq!(build["artifacts"][0]["file_format"], "zip", "{build}");
        assert!(build["artifacts_expire_at"].is_string(), "expire_in recorded: {build}");
        let check = trace(&app, project, job(&jobs, "check")).await;
        assert!(check.contains("unpacked the artifacts of build"), "{check}");
        assert!(check.contains("out/random.bin: OK") && check.contains("20000\n"), "{check}");

        let big = trace(&app, project, job(&jobs, "big_log")).await;
        let expected: String = (1..=150_000).map(|n| format!("{n}\n")).collect();
        assert!(big.contains(&expected), "the whole seq output in order ({} bytes)", big.len());
        let failed = job(&jobs, "allowed_to_fail");
        assert!(trace(&app, project, failed).await.contains("exit status 3"));

        // The cancelled job's log holds what came before the cancel.
        let log = trace(&app, project, &ticking).await;
        assert!(log.contains("$ for i"), "{log}");

        // What it told about itself.
        let shown = app.send(app.admin(Method::GET, &format!("/api/v4/runners/{runner_id}"))).await.json();
        assert_eq!(shown["version"], "0.3.2-runway-test");
        assert_eq!(shown["architecture"], "amd64");
        let managers = app.managers(runner_id).await;
        assert_eq!(managers.len(), 1);
        assert!(managers[0].system_xid.starts_with("s_") || managers[0].system_xid.starts_with("r_"), "{:?}", managers[0]);
    }
}

both_backends! {
    // The crate runner gets each job's sources from Runway over HTTP with the job's token
    // (`CI_REPOSITORY_URL`, the pipeline's persistent ref): the upstream is gone after
    // Runway mirrored it, so nothing else could serve them.
    async fn gitlab_runner_crate_fetches_sources_from_runway(backend) {
        let app = TestApp::spawn(backend).await;
        let upstream = tempfile::tempdir().expect("tempdir");
        let dir = upstream.path().join("upstream");
        std::fs::create_dir(&dir).expect("mkdir");
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git").arg("-C").arg(&dir).args(args).output().expect("git");
            assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        git(&["init", "-q", "-b", "main"]);
        git(&["config", "user.email", "dev@example.com"]);
        git(&["config", "user.name", "Dev"]);
        std::fs::write(dir.join("greeting.txt"), "hello from the repository\n").expect("write");
        std::fs::write(
            dir.join(".gitlab-ci.yml"),
            "build:\n  stage: build\n  script: [mkdir -p out, cp greeting.txt out/copy.txt]\n  artifacts: { paths: [out/copy.txt] }\n\
             test:\n  stage: test\n  script: [cat greeting.txt, cmp greeting.txt out/copy.txt, git log -1 --format=%s]\n",
        )
        .expect("write");
        git(&["add", "."]);
        git(&["commit", "-q", "-m", "from the upstream"]);
        let head = git(&["rev-parse", "HEAD"]);
        let project = app.create_project(json!({ "name": "sourced", "repository_url": dir.display().to_string() })).await;
        let created = app.send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/pipeline")).json(&json!({ "ref": "main" }))).await;
        assert_eq!(created.status, 201, "{}", created.text);
        let pipeline = created.json()["id"].as_i64().expect("id");
        // Mirrored when the pipeline was created; now out of anyone's reach but Runway's.
        std::fs::remove_dir_all(&dir).expect("rm");

        let (_, token) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let (layer, jobs) = GitlabLayer::new();
        let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
        let builds = tempfile::tempdir().expect("tempdir");
        let mut runner = RunnerBuilder::new(app.base.as_str().try_into().expect("url"), token, builds.path(), jobs)
            .build()
            .await;
        tokio::time::timeout(Duration::from_secs(120), async {
            // Bounded: at most 300 polls.
            for _ in 0..300 {
                if ["success", "failed", "canceled"].contains(&app.pipeline_status(project, pipeline).await.as_str()) {
                    break;
                }
                runner.wait_for_space(1).await;
                if !runner.request_job(|job| async move { ShellJob::new(job).await }).await.expect("job request") {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            runner.drain().await;
        })
        .await
        .expect("the pipeline runs within the time limit");
        let jobs = pipeline_jobs(&app, project, pipeline).await;
        let mut logs = String::new();
        for name in ["build", "test"] {
            logs += &trace(&app, project, job(&jobs, name)).await;
        }
        assert_eq!(names_and_statuses(&jobs), statuses(&[("build", "success"), ("test", "success")]), "{logs}");
        let test = trace(&app, project, job(&jobs, "test")).await;
        assert!(test.contains(&format!("fetched {head} from the server")), "{test}");
        assert!(test.contains("hello from the repository") && test.contains("from the upstream"), "{test}");
    }
}
