//! The real GitLab Runner (`gitlab-runner`, unmodified, built from the Go module proxy by
//! `scripts/build-gitlab-runner.sh`; `RUNWAY_TEST_GITLAB_RUNNER` names the binary) registers
//! with Runway and runs pipelines from a local git repository with the shell executor.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use tokio::process::{Child, Command};

use crate::helpers::e2e::{
    commit_branch, create_pipeline, finished_pipeline, job, names_and_statuses, pipeline_jobs,
    trace,
};
use crate::helpers::{both_backends, TestApp, REGISTRATION_TOKEN};

fn runner_binary() -> PathBuf {
    let path = std::env::var("RUNWAY_TEST_GITLAB_RUNNER").unwrap_or_else(|_| {
        panic!(
            "RUNWAY_TEST_GITLAB_RUNNER is not set: it names a gitlab-runner binary; \
             scripts/test.sh builds one with scripts/build-gitlab-runner.sh and sets it"
        )
    });
    PathBuf::from(path)
}

/// One runner's folder: config.toml, working directory (builds) and home.
pub(crate) struct RealRunner {
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl RealRunner {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("work")).expect("work dir");
        std::fs::create_dir_all(dir.path().join("home")).expect("home dir");
        RealRunner {
            bin: runner_binary(),
            dir,
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// A command with a clean environment: the runner reads `CI_SERVER_URL`,
    /// `REGISTRATION_TOKEN` and the like from it.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.bin);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path().join("home"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Runs a command to its end; returns its output (stdout then stderr).
    async fn call(&self, args: &[&str]) -> String {
        let output = tokio::time::timeout(Duration::from_secs(60), self.command(args).output())
            .await
            .expect("gitlab-runner answers within a minute")
            .expect("gitlab-runner starts");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "gitlab-runner {args:?}:\n{text}");
        text
    }

    /// `gitlab-runner --version`'s version and revision.
    async fn version(&self) -> (String, String) {
        let out = self.call(&["--version"]).await;
        let line = |prefix: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .unwrap_or_else(|| panic!("a {prefix} line in {out}"))
                .trim()
                .to_string()
        };
        (line("Version:"), line("Git revision:"))
    }

    /// `register --non-interactive` with the given credential flags, then a one-second poll
    /// interval and a 16 MiB log limit in config.toml.
    pub(crate) async fn register(&self, base: &str, credentials: &[&str]) -> String {
        let config = self.config();
        let url = format!("{base}/");
        let mut args = vec![
            "register",
            "--non-interactive",
            "--config",
            config.to_str().expect("utf-8 path"),
            "--url",
            &url,
            "--executor",
            "shell",
            "--name",
            "runway-e2e",
            "--output-limit",
            "16384",
        ];
        args.extend_from_slice(credentials);
        let out = self.call(&args).await;
        let toml = std::fs::read_to_string(&config).expect("config.toml written");
        assert!(toml.contains("output_limit = 16384"), "{toml}");
        std::fs::write(
            &config,
            toml.replace("check_interval = 0", "check_interval = 1"),
        )
        .expect("config.toml");
        out
    }

    /// Lets the runner run `jobs` jobs at once (`concurrent` and the runner's `limit`).
    pub(crate) fn set_concurrent(&self, jobs: usize) {
        let toml = std::fs::read_to_string(self.config()).expect("config.toml");
        let toml = toml.replace("concurrent = 1", &format!("concurrent = {jobs}"));
        std::fs::write(self.config(), toml).expect("config.toml");
    }

    /// The token `register` wrote into config.toml.
    fn token(&self) -> String {
        let toml = std::fs::read_to_string(self.config()).expect("config.toml");
        toml.lines()
            .find_map(|l| l.trim().strip_prefix("token = "))
            .expect("a token line")
            .trim_matches('"')
            .to_string()
    }

    /// `gitlab-runner run` in the background; its log goes to `runner.log`.
    pub(crate) fn run(&self) -> Child {
        let log = std::fs::File::create(self.dir.path().join("runner.log")).expect("log");
        let config = self.config();
        let work = self.dir.path().join("work");
        self.command(&[
            "run",
            "--config",
            config.to_str().expect("utf-8 path"),
            "--working-directory",
            work.to_str().expect("utf-8 path"),
        ])
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("gitlab-runner run starts")
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("runner.log")).unwrap_or_default()
    }
}

const BUILD_AND_TEST: &str = r#"
stages: [build, test]
build:
  stage: build
  script:
    - mkdir -p out
    - printf 'hello from build\n' > out/hello.txt
    - head -c 300000 /dev/urandom > out/random.bin
    - sha256sum out/random.bin > out/random.sha256
  artifacts:
    paths: [out/]
    expire_in: 1 day
check:
  stage: test
  needs: [build]
  script:
    - cat out/hello.txt
    - sha256sum -c out/random.sha256
big_log:
  stage: test
  needs: []
  script:
    - seq 1 700000
allowed_to_fail:
  stage: test
  needs: []
  script:
    - echo about to fail
    - exit 3
  allow_failure: true
"#;

const FAILING: &str = r#"
stages: [first, second]
broken:
  stage: first
  script:
    - echo breaking now
    - exit 7
never_runs:
  stage: second
  script: [echo never]
"#;

const LONG: &str = r#"
long:
  script:
    - echo started
    - sleep 90
    - echo not reached
"#;

both_backends! {
    async fn legacy_registration_runs_a_pipeline_with_artifacts(backend) {
        let app = TestApp::spawn(backend).await;
        let repo = tempfile::tempdir().expect("tempdir");
        commit_branch(repo.path(), "pipeline", BUILD_AND_TEST);
        let project = app
            .create_project(json!({ "name": "e2e", "repository_url": repo.path().display().to_string() }))
            .await;

        let runner = RealRunner::new();
        let out = runner.register(&app.base, &["--registration-token", REGISTRATION_TOKEN]).await;
        assert!(out.contains("Registering runner... succeeded"), "{out}");
        let token = runner.token();
        let registered = app.runners().await;
        assert_eq!(registered.len(), 1, "one runner registered");
        assert_eq!(registered[0].description, "runway-e2e");

        let pipeline = create_pipeline(&app, project, "pipeline").await;
        let mut child = runner.run();
        let status = finished_pipeline(&app, project, pipeline, || runner.log()).await;
        child.kill().await.ok();
        assert_eq!(status, "success", "allow_failure keeps the pipeline green; runner log:\n{}", runner.log());

        let jobs = pipeline_jobs(&app, project, pipeline).await;
        let names = names_and_statuses(&jobs);
        assert_eq!(
            names,
            crate::helpers::statuses(&[
                ("allowed_to_fail", "failed"),
                ("big_log", "success"),
                ("build", "success"),
                ("check", "success"),
            ])
        );

        // The test job downloaded the build job's artifact and found the same bytes.
        let check = trace(&app, project, job(&jobs, "check")).await;
        assert!(check.contains("hello from build\n"), "{check}");
        assert!(check.contains("out/random.bin: OK"), "{check}");
        assert!(check.contains("Downloading artifacts from coordinator... ok"), "{check}");

        // The artifact the runner uploaded: a zip holding the paths, downloadable by an admin.
        let build = job(&jobs, "build");
        let archive = build["artifacts"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["file_type"] == "archive"))
            .unwrap_or_else(|| panic!("an archive artifact: {build}"))
            .clone();
        assert_eq!(archive["file_format"], "zip");
        let download = app
            .client
            .get(app.url(&format!("/api/v4/projects/{project}/jobs/{}/artifacts", build["id"])))
            .header("PRIVATE-TOKEN", crate::helpers::ADMIN_TOKEN)
            .send()
            .await
            .expect("download");
        assert_eq!(download.status(), 200);
        let bytes = download.bytes().await.expect("bytes");
        assert_eq!(Some(bytes.len() as u64), archive["size"].as_u64());
        assert!(bytes.starts_with(b"PK\x03\x04"), "a zip archive");
        let names_in_zip = String::from_utf8_lossy(&bytes);
        assert!(names_in_zip.contains("out/hello.txt") && names_in_zip.contains("out/random.bin"));

        // A log of several MB arrived whole and in order.
        let big = trace(&app, project, job(&jobs, "big_log")).await;
        let expected: String = (1..=700_000).map(|n| format!("{n}\n")).collect();
        assert!(expected.len() > 4 << 20, "more than the runner's default 4 MiB limit");
        assert!(big.contains(&expected), "the whole seq output, byte for byte (log is {} bytes)", big.len());
        assert!(big.contains("Job succeeded"));

        // The failing job: its output, its exit, the reason.
        let failed = job(&jobs, "allowed_to_fail");
        assert_eq!(failed["failure_reason"], "script_failure");
        assert_eq!(failed["allow_failure"], true);
        let log = trace(&app, project, failed).await;
        assert!(log.contains("about to fail"), "{log}");
        assert!(log.contains("exit status 3"), "{log}");

        // What the real runner told about itself is recorded on the runner and its manager.
        let (version, revision) = runner.version().await;
        let record = app.runners().await.remove(0);
        let shown = app.send(app.admin(Method::GET, &format!("/api/v4/runners/{}", record.id))).await;
        assert_eq!(shown.status, 200, "{}", shown.text);
        let shown = shown.json();
        assert_eq!(shown["version"], version.as_str());
        assert_eq!(shown["revision"], revision.as_str());
        assert_eq!(shown["platform"], "linux");
        assert_eq!(shown["architecture"], "amd64");
        assert_eq!(shown["status"], "online");
        assert!(record.contacted_at.is_some());
        let managers = app.managers(record.id).await;
        assert_eq!(managers.len(), 1, "{managers:?}");
        assert_eq!(managers[0].system_xid, runway::service::runners::LEGACY_SYSTEM_XID);
        assert_eq!(managers[0].version.as_deref(), Some(version.as_str()));
        assert_eq!(managers[0].executor_type.as_deref(), Some("shell"));

        // The runner's token is the one registration gave.
        assert!(app.request_job(&token).await.status == 204);
    }

    // The runner cannot read the project's upstream (it is gone once Runway mirrored it):
    // both stages fetch the sources from Runway over HTTP with their job's token.
    async fn sources_come_from_runway_when_the_upstream_is_out_of_reach(backend) {
        let app = TestApp::spawn(backend).await;
        let upstream = tempfile::tempdir().expect("tempdir");
        commit_branch(upstream.path(), "two-stages", "stages: [build, test]\n\
            build: { stage: build, script: ['grep -q \"runway e2e\" README', 'git log -1 --format=%s'] }\n\
            test: { stage: test, script: ['test -f .gitlab-ci.yml', 'echo fetched from $CI_SERVER_HOST'] }\n");
        let project = app
            .create_project(json!({ "name": "gone", "repository_url": format!("file://{}", upstream.path().display()) }))
            .await;
        let pipeline = create_pipeline(&app, project, "two-stages").await;
        drop(upstream);

        let (_, glrt) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let runner = RealRunner::new();
        let out = runner.register(&app.base, &["--token", &glrt]).await;
        assert!(out.contains("Verifying runner... is alive"), "{out}");
        let mut child = runner.run();
        let status = finished_pipeline(&app, project, pipeline, || runner.log()).await;
        child.kill().await.ok();
        assert_eq!(status, "success", "runner log:\n{}", runner.log());
        let jobs = pipeline_jobs(&app, project, pipeline).await;
        let build = trace(&app, project, job(&jobs, "build")).await;
        assert!(build.contains("two-stages"), "the branch's commit was checked out: {build}");
        assert!(!build.contains(glrt.as_str()), "no runner token in the log");
    }

    async fn authentication_token_failure_cancel_and_unregister(backend) {
        let app = TestApp::spawn(backend).await;
        let repo = tempfile::tempdir().expect("tempdir");
        commit_branch(repo.path(), "failing", FAILING);
        commit_branch(repo.path(), "long", LONG);
        let project = app
            .create_project(json!({ "name": "e2e", "repository_url": repo.path().display().to_string() }))
            .await;

        let (runner_id, glrt) = app.create_runner(json!({ "runner_type": "instance_type", "description": "made by admin" })).await;
        let runner = RealRunner::new();
        let out = runner.register(&app.base, &["--token", &glrt]).await;
        assert!(out.contains("Verifying runner... is alive"), "{out}");
        assert_eq!(runner.token(), glrt);

        // A job that exits 7 fails the pipeline; the next stage is skipped.
        let failing = create_pipeline(&app, project, "failing").await;
        let mut child = runner.run();
        assert_eq!(finished_pipeline(&app, project, failing, || runner.log()).await, "failed");
        let jobs = pipeline_jobs(&app, project, failing).await;
        assert_eq!(job(&jobs, "broken")["status"], "failed");
        assert_eq!(job(&jobs, "broken")["failure_reason"], "script_failure");
        assert_eq!(job(&jobs, "never_runs")["status"], "skipped");
        let log = trace(&app, project, job(&jobs, "broken")).await;
        assert!(log.contains("breaking now") && log.contains("exit status 7"), "{log}");

        // A running job cancelled from the admin API: the runner learns it from the answer
        // to its next update (this runner has no `cancel_gracefully`: canceled at once),
        // stops the script and says so.
        let long = create_pipeline(&app, project, "long").await;
        let deadline = Instant::now() + Duration::from_secs(60);
        let long_job = loop {
            let jobs = pipeline_jobs(&app, project, long).await;
            let job = job(&jobs, "long").clone();
            if job["status"] == "running" && trace(&app, project, &job).await.contains("started\n") {
                break job;
            }
            assert!(Instant::now() < deadline, "the long job never started: {job}\n{}", runner.log());
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let reply = app
            .send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/jobs/{}/cancel", long_job["id"])))
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        assert_eq!(reply.json()["status"], "canceled");
        let deadline = Instant::now() + Duration::from_secs(75);
        while !runner.log().contains("Job failed: canceled") {
            assert!(Instant::now() < deadline, "the runner never stopped the job:\n{}", runner.log());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert_eq!(app.pipeline_status(project, long).await, "canceled");
        let log = trace(&app, project, &long_job).await;
        assert!(!log.contains("not reached"), "{log}");
        child.kill().await.ok();

        // unregister: DELETE /runners with the token; the runner is gone.
        let config = runner.config();
        let out = runner
            .call(&["unregister", "--config", config.to_str().expect("utf-8"), "--name", "runway-e2e"])
            .await;
        assert!(out.contains("Unregistering runner from GitLab succeeded"), "{out}");
        let reply = app.send(app.admin(Method::GET, &format!("/api/v4/runners/{runner_id}"))).await;
        assert_eq!(reply.status, 404, "{}", reply.text);
        assert!(!std::fs::read_to_string(&config).expect("config").contains(&glrt));
    }
}

/// A pipeline that uses what issue 21 brought: `include:local`, `!reference`,
/// `only`/`except`, `rules:changes` with `compare_to`, `environment`, `coverage`, `pages`.
const COMPILER: &str = r#"
include:
  - local: ci/templates.yml
stages: [build, test, deploy]
build:
  stage: build
  script:
    - !reference [.setup, script]
    - echo "built on $CI_COMMIT_REF_NAME"
  only: [compiler]
not_here:
  script: [echo never]
  except: [compiler]
unit:
  stage: test
  script:
    - 'echo "Coverage: 87.5%"'
  coverage: '/Coverage: \d+\.\d+%/'
  rules:
    - changes:
        paths: ['src/**/*']
        compare_to: refs/heads/main
docs_only:
  stage: test
  script: [echo never]
  rules:
    - changes:
        paths: ['docs/**/*']
        compare_to: refs/heads/main
pages:
  stage: deploy
  script:
    - echo "env=$CI_ENVIRONMENT_NAME url=$CI_ENVIRONMENT_URL"
    - mkdir -p public
    - echo '<h1>Runway e2e site</h1>' > public/index.html
  artifacts:
    paths: [public]
  environment:
    name: review/$CI_COMMIT_REF_SLUG
    url: https://example.com/$CI_COMMIT_REF_SLUG
"#;

both_backends! {
    async fn the_pipeline_compiler_with_the_real_runner(backend) {
        let app = TestApp::spawn(backend).await;
        let repo = tempfile::tempdir().expect("tempdir");
        let dir = repo.path();
        commit_branch(dir, "compiler", COMPILER);
        std::fs::create_dir_all(dir.join("ci")).expect("ci");
        std::fs::create_dir_all(dir.join("src")).expect("src");
        std::fs::write(dir.join("ci/templates.yml"), ".setup:\n  script:\n    - echo \"from the included template\"\n").expect("write");
        std::fs::write(dir.join("src/lib.rs"), "pub fn f() {}\n").expect("write");
        crate::helpers::e2e::git(dir, &["add", "."]);
        crate::helpers::e2e::git(dir, &["commit", "-q", "-m", "templates and code"]);
        let project = app
            .create_project(json!({ "name": "e2e", "repository_url": dir.display().to_string() }))
            .await;
        let runner = RealRunner::new();
        runner.register(&app.base, &["--registration-token", REGISTRATION_TOKEN]).await;
        let pipeline = create_pipeline(&app, project, "compiler").await;
        let mut child = runner.run();
        let status = finished_pipeline(&app, project, pipeline, || runner.log()).await;
        child.kill().await.ok();
        assert_eq!(status, "success", "runner log:\n{}", runner.log());
        let jobs = pipeline_jobs(&app, project, pipeline).await;
        assert_eq!(
            names_and_statuses(&jobs),
            crate::helpers::statuses(&[("build", "success"), ("pages", "success"), ("unit", "success")])
        );
        let build = trace(&app, project, job(&jobs, "build")).await;
        assert!(build.contains("from the included template") && build.contains("built on compiler"), "{build}");
        let pages = trace(&app, project, job(&jobs, "pages")).await;
        assert!(pages.contains("env=review/compiler url=https://example.com/compiler"), "{pages}");

        // Coverage is read from the log once the job ended (in the background).
        let unit = job(&jobs, "unit")["id"].clone();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let shown = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/jobs/{unit}"))).await.json();
            if shown["coverage"] == json!(87.5) {
                break;
            }
            assert!(Instant::now() < deadline, "no coverage: {shown}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The site the pages job uploaded.
        let site = app.client.get(app.url("/root/e2e/-/pages/index.html")).send().await.expect("pages");
        assert_eq!(site.status(), 200);
        assert!(site.text().await.expect("body").contains("<h1>Runway e2e site</h1>"));
    }
}

both_backends! {
    // A masked, protected, file-type project variable reaches the real runner's job on a
    // protected ref as a file; the runner masks it, so the stored log shows `[MASKED]`
    // where the job printed it.
    async fn a_masked_file_variable_with_the_real_runner(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "secrets" })).await;
        for body in [
            json!({ "key": "DEPLOY_KEY", "value": "k3y-c0ntent-f0r-dep1oys", "variable_type": "file", "masked": true, "protected": true }),
            json!({ "key": "API_TOKEN", "value": "t0ken-v@lue-123", "masked": true }),
        ] {
            let reply = app.send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/variables")).json(&body)).await;
            assert_eq!(reply.status, 201, "{}", reply.text);
        }
        let yaml = "secret:\n  script:\n    - test -f \"$DEPLOY_KEY\" && echo \"the key is a file\"\n    - cat \"$DEPLOY_KEY\"; echo\n    - echo \"token $API_TOKEN\"\n";
        let runner = RealRunner::new();
        runner.register(&app.base, &["--registration-token", REGISTRATION_TOKEN]).await;
        let pipeline = app.pipeline(project, yaml).await;
        let mut child = runner.run();
        let status = finished_pipeline(&app, project, pipeline, || runner.log()).await;
        child.kill().await.ok();
        assert_eq!(status, "success", "runner log:\n{}", runner.log());
        let jobs = pipeline_jobs(&app, project, pipeline).await;
        let log = trace(&app, project, job(&jobs, "secret")).await;
        assert!(log.contains("the key is a file"), "{log}");
        assert!(log.contains("[MASKED]") && log.contains("token [MASKED]"), "{log}");
        assert!(!log.contains("k3y-c0ntent-f0r-dep1oys") && !log.contains("t0ken-v@lue-123"), "{log}");
    }
}
