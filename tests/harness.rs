//! `runway::testing` used the way a runner's own test suite would: only its public API,
//! a runner built on the `gitlab-runner` crate (tests/harness/runner.rs) and plain HTTP.
//! Then `runway pipeline run` and `runway runners …`, the real binary, against it.

#[path = "harness/cli.rs"]
mod cli;
#[path = "harness/runner.rs"]
mod runner;
#[path = "common/shell_runner.rs"]
mod shell_runner;

use std::time::{Duration, Instant};

use runway::testing::{Error, TestServer};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Waits (bounded) for the pipeline to end, which must be a success.
async fn succeeds(server: &TestServer, pipeline: i64) {
    let status = server.wait_for_pipeline(pipeline, TIMEOUT).await;
    assert_eq!(status.expect("the pipeline ends"), "success");
}

const BUILD_AND_CHECK: &str = r#"
stages: [build, test]
build:
  stage: build
  script:
    - mkdir -p out && echo "artifact payload 42" > out/data.txt
    - echo built
  artifacts:
    paths: [out/data.txt]
check:
  stage: test
  script:
    - cat out/data.txt
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crate_runner_runs_a_pipeline_through_artifact_download_failures() {
    let server = TestServer::start().await.expect("server");
    let token = server.create_runner().await.expect("runner").token;
    let pipeline = server
        .enqueue_pipeline(BUILD_AND_CHECK)
        .await
        .expect("pipeline");
    // The crate retries an artifact download that answers 5xx (with backoff): two
    // failures cost the dependent job two retries, not its success.
    let downloads = server.fail_next("GET", "/api/v4/jobs/*/artifacts", 2, 500);

    let _runner = runner::spawn(server.url(), &token).await;
    succeeds(&server, pipeline).await;
    assert_eq!(downloads.hits(), 2);
    assert!(downloads.is_spent());

    let jobs = server.jobs(pipeline).await.expect("jobs");
    let names: Vec<(&str, &str)> = jobs
        .iter()
        .map(|j| (j.name.as_str(), j.status.as_str()))
        .collect();
    assert_eq!(names, [("build", "success"), ("check", "success")]);
    assert!(
        jobs.iter()
            .all(|j| j.runner_id.is_some() && j.failure_reason.is_none()),
        "{jobs:?}"
    );

    let build = &jobs[0];
    assert_eq!(
        server.job_log(build.id).await.expect("log"),
        "$ mkdir -p out && echo \"artifact payload 42\" > out/data.txt\n$ echo built\nbuilt\n"
    );
    let archive = server
        .job_artifacts(build.id)
        .await
        .expect("artifacts")
        .expect("an archive");
    assert!(archive.starts_with(b"PK\x03\x04"), "a zip");
    // The crate stores files uncompressed: name and content are in the archive as is.
    let contains = |needle: &[u8]| archive.windows(needle.len()).any(|w| w == needle);
    assert!(contains(b"out/data.txt") && contains(b"artifact payload 42\n"));

    let check = &jobs[1];
    let log = server.job_log(check.id).await.expect("log");
    assert!(
        log.ends_with("$ cat out/data.txt\nartifact payload 42\n"),
        "{log}"
    );
    assert_eq!(
        log.matches("Error getting artifacts from build").count(),
        2,
        "{log}"
    );
    assert_eq!(
        server.job_artifacts(check.id).await.expect("artifacts"),
        None
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_that_retries_its_update_gets_through_injected_500s() {
    let server = TestServer::start().await.expect("server");
    let token = server.create_runner().await.expect("runner").token;
    let pipeline = server
        .enqueue_pipeline("only:\n  script: [true]\n")
        .await
        .expect("pipeline");
    let http = reqwest::Client::new();
    let api = |path: &str| format!("{}/api/v4{path}", server.url());
    let reply = http
        .post(api("/jobs/request"))
        .json(&json!({ "token": token, "info": { "features": { "trace_reset": true } } }))
        .send()
        .await
        .expect("job request");
    assert_eq!(reply.status(), 201);
    let payload: Value = reply.json().await.expect("payload");
    let (job, job_token) = (
        payload["id"].as_i64().expect("id"),
        payload["token"].as_str().expect("token"),
    );

    let fault = server.fail_next("PUT", "/api/v4/jobs/{id}", 2, 500);
    let mut answers = Vec::new();
    for _ in 0..5 {
        let reply = http
            .put(api(&format!("/jobs/{job}")))
            .json(&json!({ "token": job_token, "state": "success" }))
            .send()
            .await
            .expect("update");
        let status = reply.status().as_u16();
        let injected = reply.headers().get("X-Runway-Fault").is_some();
        let body = reply.text().await.expect("body");
        answers.push((status, injected, body));
        if status == 200 {
            break;
        }
        // The injected answers never reached the route: the job still runs.
        assert_eq!(server.job(job).await.expect("job").status, "running");
    }
    let refused = (
        500,
        true,
        r#"{"message":"500 Internal Server Error"}"#.to_string(),
    );
    assert_eq!(answers[..2], [refused.clone(), refused]);
    assert_eq!(
        (answers.len(), answers[2].0, answers[2].1),
        (3, 200, false),
        "{answers:?}"
    );
    assert_eq!(fault.hits(), 2);
    server
        .wait_for_job(job, "success", TIMEOUT)
        .await
        .expect("job succeeds");
    succeeds(&server, pipeline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_requests_refused_then_held_reach_the_runner() {
    let server = TestServer::start().await.expect("server");
    let token = server.create_runner().await.expect("runner").token;
    let pipeline = server
        .enqueue_pipeline("one:\n  script: [echo one]\n")
        .await
        .expect("pipeline");
    let mut inline = runner::inline(server.url(), &token).await;
    let crate_runner = &mut inline.runner;

    let refused = server.fail_next("POST", "/api/v4/jobs/request", 1, 403);
    let held = server.hold_next(
        "POST",
        "/api/v4/jobs/request",
        1,
        Duration::from_millis(1500),
    );
    let error = runner::take_one(crate_runner)
        .await
        .expect_err("403 is an error to the crate");
    assert!(error.contains("403"), "{error}");
    assert_eq!(
        (refused.hits(), held.hits()),
        (1, 0),
        "faults fire in the order armed"
    );

    let started = Instant::now();
    assert_eq!(
        runner::take_one(crate_runner).await,
        Ok(true),
        "the held request gets the job"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert!(refused.is_spent() && held.is_spent());
    crate_runner.drain().await;
    succeeds(&server, pipeline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_that_cannot_succeed_say_why() {
    let server = TestServer::start().await.expect("server");
    let token = server.create_runner().await.expect("runner").token;
    let yaml = "stages: [first, second]\nfails:\n  stage: first\n  allow_failure: true\n  script:\n    - echo about to fail\n    - exit 3\nlost:\n  stage: second\n  script: [echo done]\n";
    let pipeline = server.enqueue_pipeline(yaml).await.expect("pipeline");
    let fails = server.job_named(pipeline, "fails").await.expect("job");
    let lost = server.job_named(pipeline, "lost").await.expect("job");
    assert!(matches!(
        server.wait_for_job(fails.id, "sucess", TIMEOUT).await,
        Err(Error::UnknownStatus(s)) if s == "sucess"
    ));

    let mut inline = runner::inline(server.url(), &token).await;
    let crate_runner = &mut inline.runner;
    assert_eq!(runner::take_one(crate_runner).await, Ok(true));
    crate_runner.drain().await;
    // The crate does not retry its final update: a 500 there leaves the job running.
    let lost_update = server.fail_next("PUT", "/api/v4/jobs/*", 1, 500);
    assert_eq!(runner::take_one(crate_runner).await, Ok(true));
    crate_runner.drain().await;
    assert_eq!(lost_update.hits(), 1);

    let error = server
        .wait_for_job(fails.id, "success", TIMEOUT)
        .await
        .expect_err("it failed");
    let text = error.to_string();
    assert!(matches!(error, Error::Ended { .. }), "{error:?}");
    assert!(
        text.starts_with(&format!(
            "job {} (fails) ended failed, not success",
            fails.id
        )),
        "{text}"
    );
    assert!(
        text.contains("about to fail\n$ exit 3\nexit status 3\n"),
        "the end of its log: {text}"
    );

    let started = Instant::now();
    let error = server
        .wait_for_job(lost.id, "success", Duration::from_secs(1))
        .await
        .expect_err("never ends");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded: {:?}",
        started.elapsed()
    );
    let text = error.to_string();
    assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
    assert!(
        text.starts_with(&format!(
            "job {} (lost) is still running after 1s (waiting for success)",
            lost.id
        )),
        "{text}"
    );
    assert!(text.ends_with("$ echo done\ndone\n"), "{text}");
    let error = server
        .wait_for_pipeline(pipeline, Duration::from_millis(200))
        .await
        .expect_err("still running");
    assert!(
        error
            .to_string()
            .contains("jobs: fails failed, lost running"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_legacy_registration_token_registers_a_runner() {
    let server = TestServer::start().await.expect("server");
    let http = reqwest::Client::new();
    let reply = http
        .post(format!("{}/api/v4/runners", server.url()))
        .json(&json!({ "token": server.registration_token(), "description": "legacy" }))
        .send()
        .await
        .expect("register");
    assert_eq!(reply.status(), 201);
    let registered: Value = reply.json().await.expect("json");
    let token = registered["token"].as_str().expect("token").to_string();

    let pipeline = server
        .enqueue_pipeline("legacy:\n  script: [echo legacy]\n")
        .await
        .expect("pipeline");
    let _runner = runner::spawn(server.url(), &token).await;
    succeeds(&server, pipeline).await;
    let job = server.job_named(pipeline, "legacy").await.expect("job");
    assert_eq!(job.runner_id, registered["id"].as_i64());

    server
        .delete_runner(job.runner_id.expect("runner"))
        .await
        .expect("deleted");
    let verify = http
        .post(format!("{}/api/v4/runners/verify", server.url()))
        .json(&json!({ "token": token }))
        .send()
        .await
        .expect("verify");
    assert_eq!(verify.status(), 403, "a deleted runner's token is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_folder_goes_away_with_the_server() {
    let stopped = TestServer::start().await.expect("server");
    let folder = stopped.data_dir().to_path_buf();
    assert!(folder.join("runway.sqlite3").is_file(), "{folder:?}");
    stopped.stop().await;
    assert!(!folder.exists(), "removed by stop");

    let dropped = TestServer::start().await.expect("server");
    let folder = dropped.data_dir().to_path_buf();
    let url = dropped.url().to_string();
    assert!(folder.is_dir());
    drop(dropped);
    assert!(
        !folder.exists(),
        "removed on drop: {:?}",
        std::fs::read_dir(&folder).map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
    );
    // Dropped, the server stops accepting (bounded).
    let deadline = Instant::now() + Duration::from_secs(15);
    while reqwest::get(format!("{url}/-/liveness")).await.is_ok() {
        assert!(Instant::now() < deadline, "still answering after 15 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
