//! The `runway` binary's admin commands against a harness server with a crate runner.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use runway::testing::TestServer;

use crate::{runner, TIMEOUT};

/// What a `runway` run left: exit code, standard output and error.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl From<Output> for Ran {
    fn from(out: Output) -> Ran {
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        Ran {
            code: out.status.code(),
            stdout: text(&out.stdout),
            stderr: text(&out.stderr),
        }
    }
}

/// Runs `runway <args>` in `dir` against `server`; bounded by [`TIMEOUT`].
async fn runway(server: &TestServer, dir: &Path, args: &[&str]) -> Ran {
    let url = server.url().to_string();
    let token = server.admin_token().to_string();
    run(
        dir,
        args,
        &[("RUNWAY_URL", &url), ("RUNWAY_ADMIN_TOKEN", &token)],
    )
    .await
}

/// Runs `runway <args>` in `dir` with `env` set; bounded by [`TIMEOUT`].
async fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Ran {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_runway"))
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(TIMEOUT, child)
        .await
        .unwrap_or_else(|_| panic!("runway {args:?} still running after {TIMEOUT:?}"))
        .expect("runway runs")
        .into()
}

/// A folder named `name` holding `.gitlab-ci.yml`.
fn checkout(name: &str, ci_config: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join(name);
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join(".gitlab-ci.yml"), ci_config).expect("write");
    (root, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_run_streams_the_logs_and_exits_by_status() {
    let server = TestServer::start().await.expect("server");
    let token = server.create_runner().await.expect("runner").token;
    let _runner = runner::spawn(server.url(), &token).await;

    let passing = "stages: [build, test]\nbuild:\n  stage: build\n  script:\n    - echo compiling\n    - printf 'no newline at the end'\nunit:\n  stage: test\n  script: [echo 3 tests passed]\n";
    let (_root, dir) = checkout("my app", passing);
    let out = runway(&server, &dir, &["pipeline", "run"]).await;
    let (stdout, stderr) = (&out.stdout, &out.stderr);
    assert_eq!(out.code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let build = server
        .admin()
        .find_project("my-app")
        .await
        .expect("project")
        .expect("created from the folder's name");
    let pipeline = server
        .admin()
        .pipelines(build["id"].as_i64().expect("id"))
        .await
        .expect("pipelines")[0]["id"]
        .as_i64()
        .expect("id");
    let jobs = server.jobs(pipeline).await.expect("jobs");
    let expected = format!(
        "==> build (job {b}): running\n\
         [build] $ echo compiling\n\
         [build] compiling\n\
         [build] $ printf 'no newline at the end'\n\
         [build] no newline at the end\n\
         ==> build (job {b}): success\n",
        b = jobs[0].id
    );
    assert!(stdout.starts_with(&expected), "stdout:\n{stdout}");
    assert!(
        stdout.ends_with(&format!(
            "[unit] $ echo 3 tests passed\n[unit] 3 tests passed\n==> unit (job {}): success\n",
            jobs[1].id
        )),
        "stdout:\n{stdout}"
    );
    assert!(
        stderr.starts_with(&format!("==> pipeline {pipeline} of root/my-app on main: ")),
        "{stderr}"
    );
    assert!(
        stderr.ends_with(&format!("==> pipeline {pipeline}: success\n")),
        "{stderr}"
    );

    let failing = "unit:\n  script:\n    - echo about to fail\n    - exit 3\n";
    std::fs::write(dir.join("failing.yml"), failing).expect("write");
    let out = runway(
        &server,
        &dir,
        &[
            "pipeline",
            "run",
            "--file",
            "failing.yml",
            "--project",
            "other",
            "--ref",
            "main",
        ],
    )
    .await;
    let stdout = &out.stdout;
    assert_eq!(
        out.code,
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{}",
        out.stderr
    );
    assert!(
        stdout.contains(
            "[unit] about to fail\n[unit] $ exit 3\n[unit] exit status 3\n==> unit (job "
        ),
        "{stdout}"
    );
    // The crate sends no failure reason: GitLab's default stands.
    assert!(
        stdout.ends_with("): failed (unknown_failure)\n"),
        "{stdout}"
    );
    assert!(out.stderr.contains(": failed\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canceled_pipeline_ends_the_run_with_exit_code_2() {
    let server = TestServer::start().await.expect("server");
    let token = server.create_runner().await.expect("runner").token;
    let _runner = runner::spawn(server.url(), &token).await;
    let (_root, dir) = checkout(
        "slow",
        "slow:\n  script:\n    - echo started\n    - sleep 30\n",
    );
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_runway"))
        .args([
            "pipeline",
            "run",
            "--url",
            server.url(),
            "--token",
            server.admin_token(),
        ])
        .current_dir(&dir)
        .kill_on_drop(true)
        .output();
    let cancel = async {
        let deadline = Instant::now() + TIMEOUT;
        let pipeline = loop {
            if let Some(project) = server.admin().find_project("slow").await.expect("lookup") {
                let pipelines = server
                    .admin()
                    .pipelines(project["id"].as_i64().expect("id"))
                    .await
                    .expect("pipelines");
                if let Some(pipeline) = pipelines.first() {
                    break pipeline["id"].as_i64().expect("id");
                }
            }
            assert!(Instant::now() < deadline, "no pipeline created");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let job = server.job_named(pipeline, "slow").await.expect("job");
        server
            .wait_for_job(job.id, "running", TIMEOUT)
            .await
            .expect("running");
        // Canceled once its first line is in the log, so that there is a log to show.
        while !server
            .job_log(job.id)
            .await
            .expect("log")
            .contains("started")
        {
            assert!(Instant::now() < deadline, "no log from the slow job");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        runway(
            &server,
            &dir,
            &["pipeline", "cancel", &pipeline.to_string()],
        )
        .await
    };
    let (run, cancel) = tokio::time::timeout(TIMEOUT, async { tokio::join!(run, cancel) })
        .await
        .expect("bounded");
    let run = Ran::from(run.expect("runway runs"));
    assert_eq!(cancel.code, Some(0), "{}", cancel.stderr);
    assert!(cancel.stdout.ends_with(": canceled\n"), "{}", cancel.stdout);
    assert_eq!(
        run.code,
        Some(2),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert!(run.stdout.contains("[slow] started\n"), "{}", run.stdout);
    assert!(run.stderr.ends_with(": canceled\n"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_are_created_listed_and_deleted() {
    let server = TestServer::start().await.expect("server");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = runway(
        &server,
        dir.path(),
        &[
            "runners",
            "create",
            "--tag-list",
            "docker,linux",
            "--description",
            "from the shell",
        ],
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let token = out.stdout.trim().to_string();
    assert!(
        token.starts_with("glrt-") && !token.contains('\n'),
        "only the token on stdout: {token:?}"
    );
    let id = out
        .stderr
        .trim()
        .strip_prefix("runner ")
        .and_then(|s| s.strip_suffix(" created"))
        .expect("id on stderr")
        .to_string();

    let shown = server
        .admin()
        .runner(id.parse().expect("id"))
        .await
        .expect("runner");
    assert_eq!(shown["tag_list"], serde_json::json!(["docker", "linux"]));
    assert_eq!(shown["description"], "from the shell");
    // The token is the runner's: the crate authenticates with it.
    let verify = reqwest::Client::new()
        .post(format!("{}/api/v4/runners/verify", server.url()))
        .json(&serde_json::json!({ "token": token }))
        .send()
        .await
        .expect("verify");
    assert_eq!(verify.status(), 200);

    let out = runway(&server, dir.path(), &["runners", "list"]).await;
    let listed = &out.stdout;
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&format!("{id} ")) && l.ends_with("from the shell")),
        "{listed}"
    );

    let out = runway(&server, dir.path(), &["runners", "delete", &id]).await;
    assert_eq!(
        (out.code, out.stdout),
        (Some(0), format!("runner {id} deleted\n"))
    );
    let out = runway(&server, dir.path(), &["runners", "list"]).await;
    assert_eq!(
        out.stdout.lines().count(),
        1,
        "only the header: {}",
        out.stdout
    );
    let out = runway(&server, dir.path(), &["runners", "delete", &id]).await;
    assert_eq!(out.code, Some(3));
    assert!(out.stderr.contains("answered 404"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_worded_for_the_shell() {
    let server = TestServer::start().await.expect("server");
    let (_root, dir) = checkout("errors", "not: [valid\n");
    let out = runway(
        &server,
        &dir,
        &["pipeline", "run", "--token", "glpat-wrong"],
    )
    .await;
    let stderr = &out.stderr;
    assert_eq!(out.code, Some(3), "{stderr}");
    assert!(
        stderr.contains("answered 401") && stderr.contains("hint: the admin token was refused"),
        "{stderr}"
    );

    let out = runway(&server, &dir, &["pipeline", "run"]).await;
    let stderr = &out.stderr;
    assert_eq!(out.code, Some(3), "{stderr}");
    assert!(
        stderr.starts_with("error: POST /projects/") && stderr.contains("/pipeline answered 400"),
        "{stderr}"
    );

    let out = runway(&server, &dir, &["pipeline", "run", "--file", "missing.yml"]).await;
    assert_eq!(out.code, Some(3));
    assert!(
        out.stderr.starts_with("error: reading missing.yml"),
        "{}",
        out.stderr
    );

    let out = runway(
        &server,
        &dir,
        &["runners", "list", "--url", "http://127.0.0.1:9"],
    )
    .await;
    assert_eq!(out.code, Some(3));
    assert!(
        out.stderr
            .contains("cannot reach Runway at http://127.0.0.1:9"),
        "{}",
        out.stderr
    );
}

/// Runs `runway <args>` in `dir` with no server.
async fn runway_offline(dir: &Path, args: &[&str]) -> Ran {
    run(dir, args, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lint_checks_a_file_without_a_server() {
    let (_root, dir) = checkout(
        "app",
        "include: ci/*.yml\nbuild: { stage: build, script: [make] }\ndeploy: { stage: deploy, script: [ship], only: [main], needs: [build], when: manual }\n",
    );
    std::fs::create_dir(dir.join("ci")).expect("ci");
    std::fs::write(dir.join("ci/test.yml"), "test: { script: [make test] }\n").expect("write");
    let ran = runway_offline(&dir, &["lint", "--jobs"]).await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(
        ran.stdout
            .contains(".gitlab-ci.yml: valid (3 jobs in 3 stages)"),
        "{ran:?}"
    );
    assert!(
        ran.stdout
            .contains("  deploy (deploy, manual, allow_failure, needs: [build])"),
        "{ran:?}"
    );
    std::fs::write(
        dir.join("broken.yml"),
        "stages: [a]\n\nbuild:linux:\n  stage: a\n  script: [x]\n  bogus: 1\nother:\n  script: [y]\n  when: later\n",
    )
    .expect("write");
    let ran = runway_offline(&dir, &["lint", "broken.yml"]).await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(
        ran.stderr.contains(
            "broken.yml:3: invalid: jobs:build:linux config contains unknown keys: bogus"
        ),
        "the job's line: {ran:?}"
    );
    assert!(
        ran.stderr.contains("broken.yml:7: invalid: jobs:other"),
        "{ran:?}"
    );
    std::fs::write(dir.join("syntax.yml"), "a:\n  script: [x\nb: 1\n").expect("write");
    let ran = runway_offline(&dir, &["lint", "syntax.yml"]).await;
    assert!(
        ran.stderr
            .contains("syntax.yml:3: invalid: Invalid configuration format"),
        "{ran:?}"
    );
    let ran = runway_offline(&dir, &["lint", "--ref", "feature"]).await;
    assert!(
        ran.stdout.contains("valid (2 jobs"),
        "only: [main] leaves deploy out: {ran:?}"
    );

    std::fs::write(dir.join("broken.yml"), "a: { script: x, needs: [nope] }\n").expect("write");
    let ran = runway_offline(&dir, &["lint", "broken.yml"]).await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(
        ran.stderr.contains("broken.yml: invalid: ") && ran.stderr.contains("nope"),
        "{ran:?}"
    );
    std::fs::write(dir.join("syntax.yml"), "a: [\n").expect("write");
    let ran = runway_offline(&dir, &["lint", "syntax.yml"]).await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(
        ran.stderr.contains("line 2"),
        "the YAML error's position: {ran:?}"
    );
    let ran = runway_offline(&dir, &["lint", "missing.yml"]).await;
    assert_eq!(ran.code, Some(3), "{ran:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lint_agrees_with_every_corpus_snapshot() {
    // The reviewed plan of each corpus file (`tests/api/corpus.rs`): the jobs, or the
    // refusal. `runway lint` must find the same without a server.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ci-corpus");
    let snapshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/snapshots");
    let mut checked = 0;
    for entry in std::fs::read_dir(&root).expect("tests/ci-corpus").flatten() {
        if !entry.path().join(".gitlab-ci.yml").is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let snapshot = std::fs::read_to_string(snapshots.join(format!(
            "api__corpus__every_corpus_file_runs_as_planned__corpus__{name}.snap"
        )))
        .unwrap_or_else(|e| panic!("{name}: its snapshot: {e}"));
        let body = snapshot.splitn(3, "---\n").nth(2).expect("a snapshot body");
        let expected: serde_json::Value = serde_json::from_str(body).expect("snapshot JSON");
        // A checkout of its own, as the API test commits it: `compare_to` reads git.
        let checkout = tempfile::tempdir().expect("tempdir");
        let copied = std::process::Command::new("cp")
            .arg("-R")
            .arg(entry.path().join("."))
            .arg(checkout.path())
            .status()
            .expect("cp");
        assert!(copied.success(), "{name}: copied");
        for args in [
            &["init", "-q", "-b", "main"][..],
            &["add", "."],
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-q",
                "-m",
                "corpus",
            ],
        ] {
            let done = std::process::Command::new("git")
                .arg("-C")
                .arg(checkout.path())
                .args(args)
                .output()
                .expect("git");
            assert!(done.status.success(), "git {args:?}: {done:?}");
        }
        let ran = runway_offline(
            checkout.path(),
            &["lint", "--jobs", "--ref", "main", "--source", "api"],
        )
        .await;
        if let Some(refusal) = expected["refused"].as_array() {
            assert_eq!(ran.code, Some(1), "{name}: {ran:?}");
            // One line each, with the line of the job it is about where there is one.
            for message in refusal
                .iter()
                .filter_map(|m| m.as_str())
                .flat_map(|m| m.split("; "))
            {
                assert!(ran.stderr.contains(message), "{name}: {message}: {ran:?}");
            }
        } else {
            assert_eq!(ran.code, Some(0), "{name}: {ran:?}");
            let mut linted: Vec<&str> = ran
                .stdout
                .lines()
                .filter_map(|line| line.strip_prefix("  "))
                .filter_map(|line| line.rsplit_once(" (").map(|(job, _)| job))
                .collect();
            linted.sort_unstable();
            let mut planned: Vec<&str> = expected["jobs"]
                .as_array()
                .expect("jobs")
                .iter()
                .filter_map(|j| j["name"].as_str())
                .collect();
            planned.sort_unstable();
            assert_eq!(linted, planned, "{name}: {ran:?}");
        }
        checked += 1;
    }
    assert!(checked >= 100, "the corpus: {checked} files");
}
