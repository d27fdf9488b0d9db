//! A custom runner written with the `gitlab-runner` crate (crates.io, pinned in
//! Cargo.toml's dev-dependencies), as its users write one: a `JobHandler` that runs each
//! script line with `sh`, unpacks the artifacts of the jobs it depends on, and offers the
//! files of its build folder for upload. It runs a pipeline against Runway.
//!
//! What this client does: a `glrt-` token used as is (no register call), `system_id`
//! generated, a handful of features, trace patches with an inclusive `Content-Range`, the
//! update interval taken from `X-GitLab-Trace-Update-Interval`, a keep-alive `PUT` every
//! 30 s, cancel learned from `Job-Status: canceled`, artifacts zipped and uploaded as a
//! multipart form with `expire_in` as a form field.

use std::borrow::Cow;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gitlab_runner::job::Job;
use gitlab_runner::{GitlabLayer, JobHandler, JobResult, Phase, RunnerBuilder, UploadableFile};
use reqwest::Method;
use serde_json::json;
use tokio::io::AsyncReadExt;
use tracing_subscriber::prelude::*;

use crate::helpers::e2e::{finished_pipeline, job, names_and_statuses, pipeline_jobs, trace};
use crate::helpers::{both_backends, statuses, TestApp};

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

/// A file of the build folder, offered for upload under its path relative to that folder.
struct BuildFile {
    relative: String,
    path: PathBuf,
}

#[async_trait::async_trait]
impl UploadableFile for BuildFile {
    type Data<'a> = futures::io::Cursor<Vec<u8>>;

    fn get_path(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.relative)
    }

    async fn get_data(&self) -> Result<Self::Data<'_>, ()> {
        tokio::fs::read(&self.path)
            .await
            .map(futures::io::Cursor::new)
            .map_err(|_| ())
    }
}

/// The custom runner's job handler: `sh -c` for each line, in the job's build folder.
struct ShellJob {
    job: Job,
}

impl ShellJob {
    async fn new(job: Job) -> Result<Self, ()> {
        // Unpack the artifacts of the jobs this one depends on, as the Go runner does.
        for dependency in job.dependencies() {
            let Some(mut artifact) = dependency.download().await.map_err(|e| {
                job.trace(format!("download of {} failed: {e}\n", dependency.name()));
            })?
            else {
                continue;
            };
            let names: Vec<String> = artifact.file_names().map(str::to_string).collect();
            for name in names {
                let mut file = artifact.file(&name).ok_or(())?;
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes).map_err(|_| ())?;
                let target = job.build_dir().join(&name);
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(|_| ())?;
                }
                std::fs::write(&target, bytes).map_err(|_| ())?;
            }
            job.trace(format!("unpacked the artifacts of {}\n", dependency.name()));
        }
        Ok(ShellJob { job })
    }
}

#[async_trait::async_trait]
impl JobHandler<BuildFile> for ShellJob {
    async fn step(&mut self, script: &[String], _phase: Phase) -> JobResult {
        for line in script {
            self.job.trace(format!("$ {line}\n"));
            // Output goes to the log as it comes, so that the server's answers (and a
            // cancel) arrive while the command runs.
            let mut child = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(format!("exec 2>&1\n{line}"))
                .current_dir(self.job.build_dir())
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|_| ())?;
            let mut stdout = child.stdout.take().ok_or(())?;
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                let n = stdout.read(&mut buffer).await.map_err(|_| ())?;
                if n == 0 {
                    break;
                }
                self.job.trace(&buffer[..n]);
            }
            let status = child.wait().await.map_err(|_| ())?;
            if !status.success() {
                self.job
                    .trace(format!("exit status {}\n", status.code().unwrap_or(-1)));
                return Err(());
            }
        }
        Ok(())
    }

    async fn get_uploadable_files(
        &mut self,
    ) -> Result<Box<dyn Iterator<Item = BuildFile> + Send>, ()> {
        let root = self.job.build_dir().to_path_buf();
        let mut files = Vec::new();
        collect_files(&root, &root, &mut files);
        Ok(Box::new(files.into_iter()))
    }
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<BuildFile>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(root, &path, out);
        } else if let Ok(relative) = path.strip_prefix(root) {
            out.push(BuildFile {
                relative: relative.to_string_lossy().into_owned(),
                path,
            });
        }
    }
}

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
                assert!(Instant::now() < deadline, "ticking never ran: {jobs:?}");
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
