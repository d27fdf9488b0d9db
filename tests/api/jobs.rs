//! `POST /jobs/request` and `PUT /jobs/:id`: matching, payload, assignment under
//! concurrency, long polling, job-token guard.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{both_backends, statuses, TestApp};

const PAYLOAD_YAML: &str = r#"
variables:
  GLOBAL: "g"
build:
  stage: build
  image: { name: "ruby:3.3", entrypoint: [""] }
  services: [ { name: "postgres:16", alias: db, variables: { POSTGRES_PASSWORD: x } } ]
  tags: [linux]
  variables: { GIT_DEPTH: "5" }
  before_script: [bundle install]
  script: [rspec]
  after_script: [echo done]
  artifacts: { name: out, paths: [out/], exclude: [out/*.tmp], expire_in: 1 week, reports: { junit: rspec.xml } }
  cache: { key: gems, paths: [vendor/] }
  timeout: 2h
test:
  script: [echo test]
  tags: [linux]
"#;

/// Replaces values that change from run to run.
fn redact(mut payload: Value) -> Value {
    let token = payload["token"].as_str().unwrap_or_default().to_string();
    assert!(token.starts_with("glcbt-"), "{token}");
    payload["token"] = json!("[job token]");
    payload["id"] = json!("[id]");
    payload["job_info"]["id"] = json!("[id]");
    payload["job_info"]["pipeline_id"] = json!("[id]");
    payload["job_info"]["project_id"] = json!("[id]");
    assert!(payload["job_info"]["time_in_queue_seconds"].is_number());
    payload["job_info"]["time_in_queue_seconds"] = json!("[seconds]");
    payload["git_info"]["sha"] = json!("[sha]");
    for var in payload["variables"].as_array_mut().into_iter().flatten() {
        let key = var["key"].as_str().unwrap_or_default().to_string();
        // Ids, times, URLs (they hold the random port), commit shas and the token.
        let volatile = key.ends_with("_ID")
            || key.ends_with("_AT")
            || key.ends_with("URL")
            || key.contains("SHA")
            || ["CI_JOB_TOKEN", "CI_SERVER_PORT", "CI_SERVER_HOST"].contains(&key.as_str());
        if volatile {
            var["value"] = json!(format!("[{key}]"));
        }
    }
    for dep in payload["dependencies"].as_array_mut().into_iter().flatten() {
        dep["id"] = json!("[id]");
        dep["token"] = json!("[job token]");
    }
    payload
}

/// Waits up to 10 s for `want` job requests to be held (`runway_held_long_polls`);
/// answers the count seen last.
async fn held_polls(app: &TestApp, want: f64) -> f64 {
    use crate::metrics::{sample, scrape};
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = sample(&scrape(app).await, "runway_held_long_polls").unwrap_or(-1.0);
        if now == want || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A poll as a long-polling runner sends it: `runner`'s first poll for the queue's
/// version, then its poll with that version, spawned (held until the queue moves).
fn held_poll(
    app: &std::sync::Arc<TestApp>,
    runner: &str,
) -> tokio::task::JoinHandle<crate::helpers::Reply> {
    let (app, runner) = (app.clone(), runner.to_string());
    tokio::spawn(async move {
        let first = app.request_job(&runner).await;
        assert_eq!(first.status, 204, "{}", first.text);
        let version = first
            .header("x-gitlab-last-update")
            .expect("queue value")
            .to_string();
        app.request_job_with(&runner, json!({ "last_update": version }))
            .await
    })
}

both_backends! {
    async fn two_phase_commit_when_enabled(backend) {
        let app = TestApp::builder(backend).two_phase_commit().spawn().await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let (_, other) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let pipeline = app.pipeline(project, "a: { script: x }\nb: { script: y }\n").await;
        let a = app.take_job(&runner).await;
        let b = app.take_job(&runner).await;
        // Assigned but pending until acknowledged; nobody else gets them.
        assert_eq!(app.job_statuses(project, pipeline).await, statuses(&[("a", "pending"), ("b", "pending")]));
        assert_eq!(app.request_job(&other).await.status, 204);
        let reply = app.update_job(&a, json!({ "state": "pending" })).await;
        assert_eq!((reply.status, reply.header("job-status")), (200, Some("pending")));
        let reply = app.update_job(&a, json!({ "state": "success" })).await;
        assert_eq!((reply.status, reply.header("job-status")), (400, Some("pending")));
        let reply = app.update_job(&a, json!({ "state": "running" })).await;
        assert_eq!((reply.status, reply.header("job-status")), (200, Some("running")));
        assert_eq!(app.pipeline_status(project, pipeline).await, "running");

        // b is never acknowledged: after the deadline it goes back to the queue.
        app.execute(&format!("UPDATE jobs SET ack_deadline = '2020-01-01 00:00:00' WHERE id = {}", b["id"])).await;
        assert_eq!(app.state.pipelines.reap(Duration::from_secs(3600)).await.expect("reap"), 1);
        let again = app.take_job(&other).await;
        assert_eq!(again["id"], b["id"]);
        assert_ne!(again["token"], b["token"]);
        app.update_job(&b, json!({ "state": "running" })).await.assert(403, json!({ "message": "403 Forbidden" }));
        let reply = app.update_job(&again, json!({ "state": "running" })).await;
        assert_eq!(reply.header("job-status"), Some("running"));
    }

    async fn the_payload_has_the_types_the_runner_decodes(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app", "namespace": "team" })).await;
        let (runner_id, runner) = app.create_runner(json!({ "runner_type": "instance_type", "tag_list": "linux", "maximum_timeout": 3600 })).await;
        let pipeline = app.pipeline(project, PAYLOAD_YAML).await;
        let reply = app.request_job(&runner).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        // Exactly application/json: the runner refuses anything else and loses the job.
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert!(reply.header("x-gitlab-last-update").is_none(), "no queue value on 201");
        let payload = reply.json();

        // The decode traps (client reference §0).
        assert!(payload.get("run").is_none(), "run must be absent");
        assert!(payload["job_info"]["project_jobs_running_on_instance_runners_count"].is_string());
        for key in ["variables", "steps", "services", "cache", "artifacts", "dependencies", "credentials", "hooks"] {
            assert!(payload[key].is_array(), "{key} is an array");
        }
        assert!(payload["image"].is_object());
        for step in payload["steps"].as_array().into_iter().flatten() {
            assert!(step["script"].as_array().is_some_and(|s| s.iter().all(Value::is_string)));
        }
        for var in payload["variables"].as_array().into_iter().flatten() {
            assert!(var["key"].is_string() && var["value"].is_string() && var["public"].is_boolean(), "{var}");
        }
        // The job's timeout (2h) is capped by the runner's maximum_timeout (1h).
        assert_eq!(payload["runner_info"]["timeout"], 3600);
        let var = |key: &str| {
            payload["variables"].as_array().and_then(|vars| vars.iter().find(|v| v["key"] == key)).map(|v| v["value"].clone())
        };
        assert_eq!(var("CI_JOB_ID"), Some(json!(payload["id"].to_string())));
        assert_eq!(var("CI_PIPELINE_ID"), Some(json!(pipeline.to_string())));
        assert_eq!(var("CI_RUNNER_ID"), Some(json!(runner_id.to_string())));
        assert_eq!(var("CI_JOB_TOKEN"), Some(payload["token"].clone()));
        assert_eq!(var("CI_SERVER_URL"), Some(json!(app.base)));
        assert_eq!(var("GIT_STRATEGY"), Some(json!("none")), "no repository: nothing to clone");

        // The document's example payload has the shape of a real one.
        let example: Value = serde_json::from_str(include_str!("../../openapi/examples/job-payload.json")).expect("example");
        let shape = |v: &Value| -> Vec<String> {
            let mut keys = Vec::new();
            for (k, inner) in v.as_object().into_iter().flatten() {
                keys.push(k.clone());
                for sub in inner.as_object().into_iter().flat_map(|o| o.keys()) {
                    keys.push(format!("{k}.{sub}"));
                }
            }
            keys.sort();
            keys
        };
        assert_eq!(shape(&example), shape(&payload), "openapi/examples/job-payload.json is out of date");

        insta::assert_json_snapshot!("job_payload", redact(payload));
    }

    async fn matching_rules(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let other = app.create_project(json!({ "name": "other", "shared_runners_enabled": false })).await;
        let (_, untagged_only) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let (_, linux_only) = app.create_runner(json!({ "runner_type": "instance_type", "tag_list": "linux,docker", "run_untagged": false })).await;
        let (_, protected_only) = app.create_runner(json!({ "runner_type": "instance_type", "access_level": "ref_protected", "tag_list": "prot", "run_untagged": false })).await;
        let (_, project_runner) = app.create_runner(json!({ "runner_type": "project_type", "project_id": other })).await;
        let (paused_id, paused) = app.create_runner(json!({ "runner_type": "instance_type", "paused": true })).await;

        app.pipeline(project, "tagged: { script: x, tags: [linux] }\n").await;
        assert_eq!(app.request_job(&untagged_only).await.status, 204, "tags must be a subset of the runner's");
        assert_eq!(app.request_job(&paused).await.status, 204, "paused runners get nothing");
        assert_eq!(app.take_job(&linux_only).await["job_info"]["name"], "tagged");

        app.pipeline(project, "untagged: { script: x }\n").await;
        assert_eq!(app.request_job(&linux_only).await.status, 204, "run_untagged=false");
        assert_eq!(app.take_job(&untagged_only).await["job_info"]["name"], "untagged");

        // ref_protected runners only run jobs of protected refs (the default branch here).
        let reply = app.create_pipeline(project, "feature", "p: { script: x, tags: [prot] }\n").await;
        assert_eq!(reply.status, 201);
        assert_eq!(app.request_job(&protected_only).await.status, 204);
        app.pipeline(project, "p: { script: x, tags: [prot] }\n").await;
        let job = app.take_job(&protected_only).await;
        assert_eq!(job["git_info"]["ref"], "main");
        assert_eq!(job["git_info"]["protected"], true);

        // Instance runners skip projects without shared runners; project runners take them.
        app.pipeline(other, "mine: { script: x }\n").await;
        assert_eq!(app.request_job(&untagged_only).await.status, 204, "shared runners are off for that project");
        assert_eq!(app.take_job(&project_runner).await["job_info"]["name"], "mine");
        // A project's change reaches the next poll at once, though the polls before it
        // read the project as it was.
        let reply = app.send(app.admin(Method::PUT, &format!("/api/v4/projects/{other}")).json(&json!({ "shared_runners_enabled": true }))).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        app.pipeline(other, "shared: { script: x }\n").await;
        assert_eq!(app.take_job(&untagged_only).await["job_info"]["name"], "shared");

        // Paused through the admin API, then resumed.
        app.pipeline(project, "late: { script: x }\n").await;
        assert_eq!(app.request_job(&paused).await.status, 204);
        app.send(app.admin(Method::PUT, &format!("/api/v4/runners/{paused_id}")).json(&json!({ "paused": false }))).await;
        assert_eq!(app.take_job(&paused).await["job_info"]["name"], "late");
    }

    async fn jobs_a_runner_cannot_run_are_dropped(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let pipeline = app.pipeline(project, "reports: { script: x, artifacts: { reports: { junit: r.xml } } }\n").await;
        let lacking = json!({ "info": { "features": { "upload_multiple_artifacts": false } } });
        let reply = app.request_job_with(&runner, lacking.clone()).await;
        assert_eq!(reply.status, 204, "{}", reply.text);
        assert_eq!(app.job_statuses(project, pipeline).await, statuses(&[("reports", "failed")]));
        let job = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/jobs"))).await.json();
        assert_eq!(job[0]["failure_reason"], "runner_unsupported");
        assert_eq!(job[0]["runner"], Value::Null, "dropped without being assigned");
        let reply = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/pipelines/{pipeline}"))).await.json();
        assert_eq!(reply["status"], "failed");

        // A job it cannot run ahead of one it can: dropped on the way, the next one given
        // out in the same poll.
        let pipeline = app.pipeline(project, "a_reports: { script: x, artifacts: { reports: { junit: r.xml } } }\nb_plain: { script: x }\n").await;
        let reply = app.request_job_with(&runner, lacking).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        assert_eq!(reply.json()["job_info"]["name"], "b_plain");
        assert_eq!(app.job_statuses(project, pipeline).await, statuses(&[("a_reports", "failed"), ("b_plain", "running")]));
    }

    async fn a_job_request_finishes_the_runners_creation(backend) {
        let app = TestApp::spawn(backend).await;
        let (id, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let reply = app.request_job(&runner).await;
        assert_eq!(reply.status, 204);
        assert!(reply.header("x-gitlab-last-update").is_some_and(|v| !v.is_empty()));
        let row = app.runner(id).await.expect("runner");
        assert_eq!(row.creation_state.as_str(), "finished");
        assert!(row.contacted_at.is_some());
        let managers = app.managers(id).await;
        assert_eq!(managers.len(), 1);
        assert_eq!(managers[0].creation_state.as_str(), "finished");
        assert!(managers[0].runtime_features.contains("cancel_gracefully"));
        app.request_job("glrt-wrong").await.assert(403, json!({ "message": "403 Forbidden" }));
        let reply = app.send(app.request(Method::POST, "/api/v4/jobs/request").json(&json!({}))).await;
        reply.assert(400, json!({ "error": "token is missing" }));
    }

    async fn every_job_is_assigned_exactly_once(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        const JOBS: usize = 40;
        const RUNNERS: usize = 8;
        let yaml: String = (0..JOBS).map(|i| format!("job{i}: {{ script: x }}\n")).collect();
        app.pipeline(project, &yaml).await;
        let mut tokens = Vec::new();
        for _ in 0..RUNNERS {
            tokens.push(app.create_runner(json!({ "runner_type": "instance_type" })).await.1);
        }
        let app = std::sync::Arc::new(app);
        let mut tasks = Vec::new();
        for token in tokens {
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                // Bounded: every runner stops after it sees an empty queue or 2×JOBS polls.
                for _ in 0..JOBS * 2 {
                    let reply = app.request_job(&token).await;
                    match reply.status {
                        201 => got.push(reply.json()["id"].as_i64().expect("id")),
                        204 => break,
                        other => panic!("unexpected {other}: {}", reply.text),
                    }
                }
                got
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.expect("runner task"));
        }
        all.sort();
        let unique: std::collections::BTreeSet<i64> = all.iter().copied().collect();
        assert_eq!(all.len(), unique.len(), "a job was handed out twice: {all:?}");
        assert_eq!(unique.len(), JOBS, "every job was handed out");
    }

    async fn a_job_made_pending_behind_newer_ones_is_found(backend) {
        // The dispatcher starts its look above the oldest pending job it last saw; a job of
        // a lower id that becomes pending later (its stage's turn) must still be found.
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        // The first pipeline opts out of being canceled by the second (GitLab's default
        // would cancel it: nothing of it has started).
        app.pipeline(project, "workflow: { auto_cancel: { on_new_commit: none } }\nstages: [one, two]\na: { stage: one, script: x }\nb: { stage: two, script: x }\n").await;
        app.pipeline(project, "c: { script: x }\nd: { script: x }\n").await;
        let a = app.take_job(&runner).await;
        assert_eq!(a["job_info"]["name"], "a");
        assert_eq!(app.take_job(&runner).await["job_info"]["name"], "c");
        assert_eq!(app.update_job(&a, json!({ "state": "success" })).await.status, 200);
        assert_eq!(app.take_job(&runner).await["job_info"]["name"], "b", "b (lower id than d) is pending now");
        assert_eq!(app.take_job(&runner).await["job_info"]["name"], "d");
        assert_eq!(app.request_job(&runner).await.status, 204);
    }

    async fn a_held_poll_answers_as_soon_as_a_job_arrives(backend) {
        let app = TestApp::builder(backend).long_poll_timeout(30).spawn().await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let first = app.request_job(&runner).await;
        assert_eq!(first.status, 204);
        let last_update = first.header("x-gitlab-last-update").expect("queue value").to_string();

        let app = std::sync::Arc::new(app);
        let poller = {
            let app = app.clone();
            let runner = runner.clone();
            tokio::spawn(async move {
                let reply = app.request_job_with(&runner, json!({ "last_update": last_update })).await;
                (reply.status, Instant::now())
            })
        };
        // The poll is held: it has not answered while nothing changed.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!poller.is_finished(), "a poll with the current last_update is held");
        let created = Instant::now();
        app.pipeline(project, "a: { script: x }\n").await;
        let (status, answered) = poller.await.expect("poller");
        assert_eq!(status, 201);
        let latency = answered.saturating_duration_since(created);
        // Generous bound for a correctness check; the benchmark measures the real figure.
        assert!(latency < Duration::from_secs(2), "answered {latency:?} after the pipeline was created");
    }

    // A held poll woken for a job another runner takes first is held again, on the same
    // request, and takes the next job (GitLab answers it 204, and the runner then waits
    // for its next `check_interval` tick, 3 s by default, before it polls again).
    async fn a_held_poll_that_loses_its_job_stays_held_and_takes_the_next(backend) {
        let app = std::sync::Arc::new(TestApp::builder(backend).long_poll_timeout(30).spawn().await);
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, one) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let (_, two) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let polls = [held_poll(&app, &one), held_poll(&app, &two)];
        assert_eq!(held_polls(&app, 2.0).await, 2.0, "both polls held");
        // A bump wakes the first two held polls: both search, one takes the job.
        app.pipeline(project, "a: { script: x }\n").await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !polls.iter().any(|p| p.is_finished()) {
            assert!(Instant::now() < deadline, "a poll took the job");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let [first, second] = polls;
        let (taken, other) = if first.is_finished() { (first, second) } else { (second, first) };
        let taken = taken.await.expect("poll");
        assert_eq!(taken.status, 201, "{}", taken.text);
        assert_eq!(taken.json()["job_info"]["name"], "a");
        // The other searched and found nothing: held again, not answered.
        assert_eq!(held_polls(&app, 1.0).await, 1.0, "the other poll is held again");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!other.is_finished(), "the poll that lost the job is held");
        assert_eq!(app.state.queue.held(), 1);
        app.pipeline(project, "b: { script: x }\n").await;
        let reply = tokio::time::timeout(Duration::from_secs(5), other)
            .await
            .expect("the held poll took the next job at once")
            .expect("poll");
        assert_eq!(reply.status, 201, "{}", reply.text);
        assert_eq!(reply.json()["job_info"]["name"], "b");
    }

    // A poll carrying an older version searches at once; finding nothing (another runner
    // took the job that moved the version), it is held on the version read before its
    // search, as the runner's next poll would be, and takes the next job.
    async fn a_poll_with_an_older_version_that_finds_nothing_is_held(backend) {
        let app = std::sync::Arc::new(TestApp::builder(backend).long_poll_timeout(30).spawn().await);
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let (_, other) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let first = app.request_job(&runner).await;
        assert_eq!(first.status, 204, "a poll without a version is answered at once");
        let older = first.header("x-gitlab-last-update").expect("queue value").to_string();
        app.pipeline(project, "a: { script: x }\n").await;
        assert_ne!(app.state.queue.current(), older);
        assert_eq!(app.take_job(&other).await["job_info"]["name"], "a");
        let poll = {
            let (app, runner) = (app.clone(), runner.clone());
            tokio::spawn(async move { app.request_job_with(&runner, json!({ "last_update": older })).await })
        };
        assert_eq!(held_polls(&app, 1.0).await, 1.0, "held after a search that found nothing");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!poll.is_finished(), "held, not answered");
        app.pipeline(project, "b: { script: x }\n").await;
        let reply = tokio::time::timeout(Duration::from_secs(5), poll)
            .await
            .expect("the held poll took the next job at once")
            .expect("poll");
        assert_eq!(reply.status, 201, "{}", reply.text);
        assert_eq!(reply.json()["job_info"]["name"], "b");
    }

    // A held poll woken by a change to its runner searches as the runner is now: here it
    // was given the tag of the job that waits (GitLab's Workhorse hands the poll to Rails,
    // which authenticates it again).
    async fn a_held_poll_searches_with_its_runner_as_it_is_when_woken(backend) {
        let app = std::sync::Arc::new(TestApp::builder(backend).long_poll_timeout(30).spawn().await);
        let project = app.create_project(json!({ "name": "app" })).await;
        let (runner_id, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        app.pipeline(project, "g: { script: x, tags: [gpu] }\n").await;
        let poll = held_poll(&app, &runner);
        assert_eq!(held_polls(&app, 1.0).await, 1.0, "held: the job waiting needs a tag it lacks");
        let reply = app.api(Method::PUT, &format!("/runners/{runner_id}"), Some(json!({ "tag_list": ["gpu"] }))).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let reply = tokio::time::timeout(Duration::from_secs(5), poll)
            .await
            .expect("the held poll answered at once")
            .expect("poll");
        assert_eq!(reply.status, 201, "{}", reply.text);
        assert_eq!(reply.json()["job_info"]["name"], "g");
    }

    // A runner machine deleted by another instance (here, straight in the database) while
    // this one still has it cached, as it may for the heartbeat interval: its claim records
    // no manager, as the foreign key's `ON DELETE SET NULL` would have a moment later,
    // instead of failing on the key; and its next poll makes the row again, as GitLab does.
    async fn a_claim_by_a_machine_deleted_meanwhile_records_none_and_the_next_poll_makes_it_again(backend) {
        let app = TestApp::builder(backend).heartbeat_interval(3600).spawn().await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (runner_id, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        assert_eq!(app.request_job(&runner).await.status, 204);
        let before = app.managers(runner_id).await;
        assert_eq!(before.len(), 1, "the machine's row");
        app.execute("DELETE FROM runner_managers").await;
        app.pipeline(project, "a: { script: x }\nb: { script: y }\n").await;
        let reply = app.request_job(&runner).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let job = app.runner_job(reply.json()["id"].as_i64().expect("id")).await;
        assert_eq!((job.runner_id, job.runner_manager_id), (Some(runner_id), None));
        let reply = app.request_job(&runner).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let after = app.managers(runner_id).await;
        assert_eq!(after.len(), 1, "the machine's row made again");
        assert_eq!(after[0].system_xid, before[0].system_xid);
        assert_ne!(after[0].id, before[0].id);
        let job = app.runner_job(reply.json()["id"].as_i64().expect("id")).await;
        assert_eq!(job.runner_manager_id, Some(after[0].id));
    }

    // The jobs a pipeline makes pending reach polls without a read of the queue: the
    // server knows every job waiting (a read saw the queue whole, and each bump since
    // carried its jobs). Such a claim is a read's: oldest first, the payload whole with its
    // dependencies; a bump without its jobs (a change to a runner) sends polls back to
    // reading, and a runner that cannot run the jobs known reads past them.
    async fn polls_claim_the_jobs_known_to_wait_without_reading_the_queue(backend) {
        use crate::metrics::{sample, scrape};
        let app = std::sync::Arc::new(TestApp::builder(backend).long_poll_timeout(30).spawn().await);
        let project = app.create_project(json!({ "name": "app" })).await;
        let (runner_id, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let (_, gpu) = app.create_runner(json!({ "runner_type": "instance_type", "tag_list": ["gpu"], "run_untagged": false })).await;
        let unread = || {
            let app = app.clone();
            async move { sample(&scrape(&app).await, "runway_queue_unread_claims_total").expect("counted") }
        };
        // The queue read whole: empty.
        let first = app.request_job(&runner).await;
        assert_eq!(first.status, 204);
        assert_eq!(unread().await, 0.0);
        let last_update = first.header("x-gitlab-last-update").expect("queue value").to_string();
        let poller = {
            let (app, runner) = (app.clone(), runner.clone());
            tokio::spawn(async move { app.request_job_with(&runner, json!({ "last_update": last_update })).await })
        };
        assert_eq!(held_polls(&app, 1.0).await, 1.0, "the poll is held");
        let yaml = "a: { stage: build, script: x }\nb: { stage: build, script: y }\nc: { stage: test, script: z }\n";
        app.pipeline(project, yaml).await;
        let reply = poller.await.expect("poller");
        assert_eq!(reply.status, 201, "{}", reply.text);
        let a = reply.json();
        assert_eq!(a["job_info"]["name"], "a", "the oldest first");
        assert!(a["token"].as_str().is_some_and(|t| t.starts_with("glcbt-")), "{a}");
        assert_eq!(unread().await, 1.0, "the held poll took its job without a read");
        // A runner that cannot run b reads past it, and b stays for the next.
        assert_eq!(app.request_job(&gpu).await.status, 204);
        let b = app.take_job(&runner).await;
        assert_eq!(b["job_info"]["name"], "b");
        assert_eq!(unread().await, 2.0);
        // Nothing known to wait: read, and nothing there.
        assert_eq!(app.request_job(&runner).await.status, 204);
        // The finish that makes c pending carries it; its claim reads its dependencies.
        assert_eq!(app.update_job(&a, json!({ "state": "success" })).await.status, 200);
        assert_eq!(app.update_job(&b, json!({ "state": "success" })).await.status, 200);
        let c = app.take_job(&runner).await;
        assert_eq!(c["job_info"]["name"], "c");
        let needs: Vec<&str> = c["dependencies"].as_array().expect("dependencies").iter().filter_map(|d| d["name"].as_str()).collect();
        assert_eq!(needs, ["a", "b"], "{c}");
        assert_eq!(unread().await, 3.0);
        // A change to a runner may let it take anything: the next claim reads.
        let reply = app.send(app.admin(Method::PUT, &format!("/api/v4/runners/{runner_id}")).json(&json!({ "maximum_timeout": 3600 }))).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        app.pipeline(project, "d: { script: x }\n").await;
        assert_eq!(app.take_job(&runner).await["job_info"]["name"], "d");
        assert_eq!(unread().await, 3.0, "read, not taken from the jobs known");
        assert_eq!(app.request_job(&runner).await.status, 204);
    }

    // A backlog is read once for a batch of claims, not once per job: the polls claim
    // from the head a read saw. A job arriving meanwhile is known too, but is not claimed
    // before the older jobs the read did not reach: jobs go out oldest first throughout.
    async fn a_backlog_is_claimed_oldest_first_from_the_head_a_read_saw(backend) {
        use crate::metrics::{sample, scrape};
        let app = TestApp::builder(backend).spawn().await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let counted = |text: &str, name: &str| sample(text, name).expect("counted");
        app.pipeline(project, "a: { script: x, parallel: 150 }\n").await;
        let mut ids = vec![app.take_job(&runner).await["id"].as_i64().expect("id")];
        app.pipeline(project, "b: { script: x }\n").await;
        loop {
            let reply = app.request_job(&runner).await;
            if reply.status != 201 {
                assert_eq!(reply.status, 204);
                break;
            }
            ids.push(reply.json()["id"].as_i64().expect("id"));
        }
        assert_eq!(ids.len(), 151, "{ids:?}");
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first: {ids:?}");
        let text = scrape(&app).await;
        // A poll's first read takes 32 jobs on SQLite, 128 on PostgreSQL: five reads or
        // two. Every job not claimed by a read was claimed unread, and the last poll was
        // answered from the jobs known, which were every job waiting: none.
        let reads = counted(&text, "runway_queue_reads_total");
        assert!(reads <= 5.0, "{reads} reads for 151 jobs");
        assert_eq!(counted(&text, "runway_queue_unread_claims_total") + reads, 151.0, "{text}");
    }

    // A fleet polling at once (a backlog, a restart, holds ending together) on a small
    // pool: the searches are admitted a few at a time, the others wait without a
    // connection, and the machines of one runner write its contact once. No poll is
    // refused with 503; every job goes out once. (The fleet bench measures the load.)
    async fn polls_arriving_together_wait_their_turn_instead_of_failing(backend) {
        let app = std::sync::Arc::new(TestApp::builder(backend).pool(4, 5).spawn().await);
        let project = app.create_project(json!({ "name": "app" })).await;
        app.pipeline(project, "a: { script: x, parallel: 120 }\n").await;
        let mut tokens = Vec::new();
        for _ in 0..20 {
            tokens.push(app.create_runner(json!({ "runner_type": "instance_type" })).await.1);
        }
        let mut taken = Vec::new();
        for round in 0..2 {
            let polls: Vec<_> = (0..600)
                .map(|i| {
                    let app = app.clone();
                    let token = tokens[i % tokens.len()].clone();
                    tokio::spawn(async move {
                        let body = json!({ "system_id": format!("s_{round}_{:08x}", i % 40) });
                        let reply = app.request_job_with(&token, body).await;
                        let id = (reply.status == 201).then(|| reply.json()["id"].as_i64()).flatten();
                        (reply.status, id)
                    })
                })
                .collect();
            for poll in polls {
                let (status, id) = poll.await.expect("poll");
                assert!(status == 201 || status == 204, "answered {status}");
                taken.extend(id);
            }
        }
        let mut distinct = taken.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!((taken.len(), distinct.len()), (120, 120), "every job once");
    }

    // A new job wakes a few held polls, not all (thousands of runners would each search
    // for it); the searches pass the wake on, so a job only some runners can run still
    // reaches one of them at once.
    async fn a_new_job_wakes_a_few_held_polls_and_reaches_a_runner_that_can_run_it(backend) {
        let app = std::sync::Arc::new(TestApp::builder(backend).long_poll_timeout(30).spawn().await);
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, gpu) = app.create_runner(json!({ "runner_type": "instance_type", "tag_list": "gpu", "run_untagged": false })).await;
        let mut plain = Vec::new();
        for _ in 0..12 {
            plain.push(app.create_runner(json!({ "runner_type": "instance_type" })).await.1);
        }
        let hold = |token: String, machine: usize| {
            let app = app.clone();
            tokio::spawn(async move {
                let system_id = format!("s_{machine:012x}");
                let first = app.request_job_with(&token, json!({ "system_id": system_id })).await;
                let last_update = first.header("x-gitlab-last-update").expect("queue value").to_string();
                let reply = app.request_job_with(&token, json!({ "system_id": system_id, "last_update": last_update })).await;
                reply.status
            })
        };
        let polls: Vec<_> = plain.iter().enumerate().map(|(i, t)| hold(t.clone(), i + 1)).collect();
        assert_eq!(held_polls(&app, 12.0).await, 12.0, "twelve polls held");

        app.pipeline(project, "a: { script: x }\n").await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while polls.iter().filter(|p| p.is_finished()).count() == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (done, waiting): (Vec<_>, Vec<_>) = polls.into_iter().partition(|p| p.is_finished());
        let mut answers = Vec::new();
        for poll in done {
            answers.push(poll.await.expect("poll"));
        }
        assert_eq!(answers.iter().filter(|s| **s == 201).count(), 1, "one poll took the job: {answers:?}");
        assert!(answers.len() <= 3, "a few polls woke, not all twelve: {answers:?}");
        assert_eq!(held_polls(&app, waiting.len() as f64).await, waiting.len() as f64);

        // A job only the gpu runner can run: the plain runners woken pass the wake on.
        let gpu_poll = hold(gpu.clone(), 100);
        assert_eq!(held_polls(&app, waiting.len() as f64 + 1.0).await, waiting.len() as f64 + 1.0);
        let created = Instant::now();
        app.pipeline(project, "b: { script: x, tags: [gpu] }\n").await;
        let status = tokio::time::timeout(Duration::from_secs(5), gpu_poll)
            .await
            .expect("the gpu runner's held poll answered within 5 s")
            .expect("poll");
        assert_eq!(status, 201, "answered after {:?}", created.elapsed());
        for poll in waiting {
            poll.abort();
        }
    }

    // A wave passed on wakes a held poll without moving the queue's version (the polls
    // searching meanwhile need not all look again), and the poll woken searches even
    // though the version it carries is still current: held on the whole path, and held
    // before routing (a body the server answered before, after a hold that ended).
    // The jobs here become pending behind the server's back, so the jobs it knows to wait
    // are behind until the once-a-second survey of the queue reads them (a poll answers
    // from that list when it holds every job waiting).
    // Polls are held 8–10 s: long enough for two of the survey's passes after a change.
    async fn a_poll_woken_by_a_wave_searches_though_the_version_did_not_move(backend) {
        use crate::metrics::{sample, scrape};
        let app = std::sync::Arc::new(TestApp::builder(backend).long_poll_timeout(10).spawn().await);
        let reads = || {
            let app = app.clone();
            async move { sample(&scrape(&app).await, "runway_queue_reads_total").expect("counted") }
        };
        // The survey of the queue has read the jobs made pending before this is called,
        // and kept what it read. The count of reads moves when a read starts: the first
        // read counted from here started after the change, and the one after it starts
        // once the first has set the jobs known (the survey's passes follow each other).
        // Waiting for the first alone let a woken poll answer from the list before it
        // was set, under a loaded machine.
        let surveyed = || {
            async move {
                let since = reads().await;
                let deadline = Instant::now() + Duration::from_secs(10);
                while reads().await < since + 2.0 {
                    assert!(Instant::now() < deadline, "the queue is surveyed while polls are held");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        // Jobs that wait without being pending: made pending below without a bump.
        app.pipeline(project, "m: { script: x, when: manual }
n: { script: y, when: manual }
").await;
        let held = || async { assert_eq!(held_polls(&app, 1.0).await, 1.0, "the poll is held") };
        let poll = |last_update: String| {
            let app = app.clone();
            let runner = runner.clone();
            tokio::spawn(async move { app.request_job_with(&runner, json!({ "last_update": last_update })).await })
        };
        let first = app.request_job(&runner).await;
        assert_eq!(first.status, 204);
        // A bump while the poll is held opens a wave of one; the poll finds nothing and is
        // held again until its hold ends.
        let waiting = poll(first.header("x-gitlab-last-update").expect("version").to_string());
        held().await;
        app.state.queue.bump_local();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "held again after a search that found nothing");
        held().await;
        let woken = waiting.await.expect("poll");
        assert_eq!(woken.status, 204);
        let version = woken.header("x-gitlab-last-update").expect("version").to_string();
        assert_eq!(version, app.state.queue.current());

        let make_pending = |name: &str| {
            format!("UPDATE jobs SET status = 'pending', queued_at = CURRENT_TIMESTAMP WHERE name = '{name}'")
        };
        // Held on the whole path, woken by the wave: it takes the job at once.
        let waiting = poll(version.clone());
        held().await;
        app.execute(&make_pending("m")).await;
        surveyed().await;
        app.state.queue.pass_on(1);
        assert_eq!(app.state.queue.current(), version, "a wave passed on keeps the version");
        let taken = tokio::time::timeout(Duration::from_secs(2), waiting).await.expect("answered at once").expect("poll");
        assert_eq!(taken.status, 201, "{}", taken.text);
        assert_eq!(taken.json()["job_info"]["name"], "m");

        // Held before routing (a body the server answered before: after a hold that ended
        // with the version unchanged, the same body comes again), woken by a wave.
        let (_, other) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let other_first = app.request_job(&other).await;
        let other_waiting = {
            let app = app.clone();
            let (other, seen) = (other.clone(), other_first.header("x-gitlab-last-update").expect("version").to_string());
            tokio::spawn(async move { app.request_job_with(&other, json!({ "last_update": seen })).await })
        };
        held().await;
        // A bump opens a wave of one (one poll held: the other runner's, which finds nothing
        // and is held again until its hold ends).
        app.state.queue.bump_local();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!other_waiting.is_finished(), "held again after a search that found nothing");
        assert_eq!(other_waiting.await.expect("poll").status, 204);
        let version = app.state.queue.current();
        let timed_out = poll(version.clone()).await.expect("poll");
        assert_eq!((timed_out.status, timed_out.header("x-gitlab-last-update")), (204, Some(version.as_str())));
        let waiting = poll(version.clone());
        held().await;
        app.execute(&make_pending("n")).await;
        surveyed().await;
        app.state.queue.pass_on(1);
        assert_eq!(app.state.queue.current(), version);
        let taken = tokio::time::timeout(Duration::from_secs(2), waiting).await.expect("answered at once").expect("poll");
        assert_eq!(taken.status, 201, "{}", taken.text);
        assert_eq!(taken.json()["job_info"]["name"], "n");
    }

    async fn a_poll_that_waited_for_its_turn_to_search_is_held_on_the_version_its_search_saw(backend) {
        use crate::metrics::{sample, scrape};
        let app = std::sync::Arc::new(TestApp::builder(backend).long_poll_timeout(6).spawn().await);
        let gauge = |series: &'static str| {
            let app = app.clone();
            async move { sample(&scrape(&app).await, series).expect(series) }
        };
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let first = app.request_job(&runner).await;
        assert_eq!(first.status, 204);
        let seen = first.header("x-gitlab-last-update").expect("version").to_string();
        // The instance busy: every turn to search is taken. A job came since the runner's
        // last look, so its poll must search, and waits for a turn.
        let turns = app.state.dispatcher.take_every_turn().await;
        app.state.queue.bump_local();
        let searches = gauge("runway_job_searches_total").await;
        let waiting = {
            let (app, runner) = (app.clone(), runner.clone());
            tokio::spawn(async move { app.request_job_with(&runner, json!({ "last_update": seen })).await })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while gauge("runway_job_searches_waiting").await != 1.0 {
            assert!(Instant::now() < deadline, "the poll waits for its turn");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(gauge("runway_job_searches").await >= 1.0, "every turn taken: counted as searching");
        // More jobs come (and go to other runners) while it waits.
        app.state.queue.bump_local();
        app.state.queue.bump_local();
        let version = app.state.queue.current();
        drop(turns);
        // Its search, once its turn came, saw everything up to `version` and found nothing:
        // the poll is held on it. Held on the version of its arrival, it would search
        // again at once, and in a busy fleet queue again behind every other poll.
        assert_eq!(held_polls(&app, 1.0).await, 1.0, "held after its search");
        assert_eq!(gauge("runway_job_searches_total").await, searches + 1.0, "one search");
        assert_eq!(gauge("runway_job_searches_waiting").await, 0.0);
        let answered = waiting.await.expect("poll");
        assert_eq!(answered.status, 204);
        assert_eq!(answered.header("x-gitlab-last-update"), Some(version.as_str()));
        assert_eq!(gauge("runway_job_searches_total").await, searches + 1.0, "no other search");
    }

    async fn a_read_of_the_queue_that_waited_for_a_connection_is_kept(backend) {
        use crate::metrics::{sample, scrape};
        let app = std::sync::Arc::new(TestApp::builder(backend).pool(2, 10).spawn().await);
        let reads = || {
            let app = app.clone();
            async move { sample(&scrape(&app).await, "runway_queue_reads_total").expect("counted") }
        };
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, first) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let (_, second) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        // Known to the server (their next polls read nothing to authenticate).
        assert_eq!(app.request_job(&first).await.status, 204);
        assert_eq!(app.request_job(&second).await.status, 204);
        app.pipeline(project, "a: { script: x }\n").await;
        // The jobs known forgotten (as after another instance's bump): a search reads.
        app.state.queue.bump_local();
        let before = reads().await;
        // The first runner's poll waits for its turn to search, then, every connection
        // for reads taken, for one to read the queue; a job becomes pending meanwhile.
        let turns = app.state.dispatcher.take_every_turn().await;
        let polling = {
            let (app, first) = (app.clone(), first.clone());
            tokio::spawn(async move { app.request_job(&first).await })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while sample(&scrape(&app).await, "runway_job_searches_waiting") != Some(1.0) {
            assert!(Instant::now() < deadline, "the poll waits for its turn");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let connections = [app.state.db.read().await.expect("a connection"), app.state.db.read().await.expect("a connection")];
        drop(turns);
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.state.queue.bump_local();
        drop(connections);
        let taken = polling.await.expect("poll");
        assert_eq!(taken.status, 201, "{}", taken.text);
        // Its read began after the bump, once it had a connection: kept as every job
        // waiting, so the second runner learns there is none without reading the queue.
        let answered = app.request_job(&second).await;
        assert_eq!(answered.status, 204);
        assert_eq!(reads().await, before + 1.0, "one read, kept");
    }

    async fn the_job_token_guard(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        app.pipeline(project, "a: { script: x }\nb: { script: y }\n").await;
        let a = app.take_job(&runner).await;
        let b = app.take_job(&runner).await;
        let put = |id: &Value, body: Value| app.request(Method::PUT, &format!("/api/v4/jobs/{id}")).json(&body);

        app.send(put(&a["id"], json!({ "state": "running" }))).await.assert(400, json!({ "error": "token is missing" }));
        app.send(put(&a["id"], json!({ "token": "glcbt-wrong", "state": "running" }))).await.assert(403, json!({ "message": "403 Forbidden" }));
        app.send(put(&a["id"], json!({ "token": b["token"], "state": "running" }))).await.assert(403, json!({ "message": "403 Forbidden" }));
        app.send(put(&json!(999_999), json!({ "token": a["token"], "state": "running" }))).await.assert(403, json!({ "message": "403 Forbidden" }));

        let reply = app.update_job(&a, json!({ "state": "bogus" })).await;
        assert_eq!((reply.status, reply.text.as_str(), reply.header("job-status")), (400, "400", Some("running")));
        let reply = app.update_job(&a, json!({ "state": "running", "unknown": true })).await;
        assert_eq!((reply.status, reply.header("x-gitlab-trace-update-interval")), (200, Some("60")));
        let reply = app.update_job(&a, json!({ "state": "failed", "failure_reason": "made_up_reason" })).await;
        assert_eq!(reply.status, 200);
        let job = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/jobs/{}", a["id"]))).await.json();
        assert_eq!(job["failure_reason"], "unknown_failure");

        // Finished: 403 with its status, so the runner stops.
        let reply = app.update_job(&a, json!({ "state": "running" })).await;
        reply.assert(403, json!({ "message": "403 Forbidden - Job is not processing on runner" }));
        assert_eq!(reply.header("job-status"), Some("failed"));
        let _ = b;
    }

    async fn silent_and_overdue_jobs_are_ended(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let pipeline = app.pipeline(project, "silent: { script: x }\nlate: { script: y, timeout: 10m }\nfine: { script: z }\n").await;
        let mut jobs = Vec::new();
        for _ in 0..3 {
            jobs.push(app.take_job(&runner).await);
        }
        let id_of = |name: &str| jobs.iter().find(|j| j["job_info"]["name"] == name).map(|j| j["id"].clone()).expect("job");
        app.execute(&format!("UPDATE jobs SET updated_at = '2020-01-01 00:00:00' WHERE id = {}", id_of("silent"))).await;
        app.execute(&format!("UPDATE jobs SET started_at = '2020-01-01 00:00:00' WHERE id = {}", id_of("late"))).await;
        let ended = app.state.pipelines.reap(Duration::from_secs(3600)).await.expect("reap");
        assert_eq!(ended, 2);
        let listed = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/pipelines/{pipeline}/jobs"))).await.json();
        let reason = |name: &str| listed.as_array().and_then(|a| a.iter().find(|j| j["name"] == name)).map(|j| (j["status"].clone(), j["failure_reason"].clone()));
        assert_eq!(reason("silent"), Some((json!("failed"), json!("stuck_or_timeout_failure"))));
        assert_eq!(reason("late"), Some((json!("failed"), json!("job_execution_server_timeout"))));
        assert_eq!(reason("fine").map(|r| r.0), Some(json!("running")));
    }

    async fn updates_keep_a_job_alive_without_a_write_each(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        app.pipeline(project, "a: { script: x }\n").await;
        let job = app.take_job(&runner).await;
        let id = job["id"].as_i64().expect("id");

        // The stored time is old: the keep-alive writes it (the job is not silent).
        app.execute(&format!("UPDATE jobs SET updated_at = '2020-01-01 00:00:00' WHERE id = {id}")).await;
        assert_eq!(app.update_job(&job, json!({ "state": "running" })).await.status, 200);
        let touched = app.runner_job(id).await.updated_at;
        assert!(touched.to_string().as_str() > "2020-01-01 00:00:00", "touched: {touched}");
        assert_eq!(app.state.pipelines.reap(Duration::from_secs(3600)).await.expect("reap"), 0);

        // Within the heartbeat interval (60 s) an update writes nothing more.
        assert_eq!(app.update_job(&job, json!({ "state": "running" })).await.status, 200);
        assert_eq!(app.runner_job(id).await.updated_at, touched, "no write for a fresh contact");
    }
}

/// Two servers on one PostgreSQL database, the first holding polls; a project and an
/// instance runner made through the first (their ids: the project's, the runner's token).
async fn two_instances() -> (TestApp, TestApp, i64, String) {
    let first = TestApp::builder(crate::helpers::Backend::Postgres)
        .long_poll_timeout(30)
        .spawn()
        .await;
    let second = TestApp::builder(crate::helpers::Backend::Postgres)
        .same_database_as(&first)
        .spawn()
        .await;
    let project = first.create_project(json!({ "name": "app" })).await;
    let (_, runner) = first
        .create_runner(json!({ "runner_type": "instance_type" }))
        .await;
    (first, second, project, runner)
}

/// Two servers on one PostgreSQL database: a poll held by one wakes when the other
/// creates a job (LISTEN/NOTIFY).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_on_one_postgres_database_wake_each_other() {
    let (first, second, project, runner) = two_instances().await;
    let empty = first.request_job(&runner).await;
    let last_update = empty
        .header("x-gitlab-last-update")
        .expect("queue value")
        .to_string();
    // Let the listener of the first server subscribe before anything is sent.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let first = std::sync::Arc::new(first);
    let poller = {
        let first = first.clone();
        tokio::spawn(async move {
            let reply = first
                .request_job_with(&runner, json!({ "last_update": last_update }))
                .await;
            (reply.status, reply.text, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poller.is_finished(), "the poll is held");
    let created = Instant::now();
    second.pipeline(project, "a: { script: x }\n").await;
    let (status, text, answered) = poller.await.expect("poller");
    assert_eq!(status, 201, "{text}");
    let latency = answered.saturating_duration_since(created);
    assert!(
        latency < Duration::from_secs(2),
        "woken {latency:?} after the other instance created the job"
    );
}

/// Two servers on one PostgreSQL database: a job that the other instance makes pending
/// (its stage's turn) below the jobs this one's polls last met is found once its
/// notification comes, before newer ones. The first instance's reads start above the
/// first pending job they met; a bump, here a notification, must move that start back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_another_instance_makes_pending_behind_newer_ones_is_found() {
    let (first, second, project, runner) = two_instances().await;
    first.pipeline(project, "workflow: { auto_cancel: { on_new_commit: none } }\nstages: [one, two]\na: { stage: one, script: x }\nb: { stage: two, script: x }\n").await;
    first
        .pipeline(project, "c: { script: x }\nd: { script: x }\n")
        .await;
    // Let the listener of the first server subscribe before anything is sent.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = first.take_job(&runner).await;
    assert_eq!(a["job_info"]["name"], "a");
    assert_eq!(first.take_job(&runner).await["job_info"]["name"], "c");

    // Held on the first instance: it searches only once the second one's bump arrives.
    let last_update = first.state.queue.current();
    let first = std::sync::Arc::new(first);
    let poller = {
        let (first, runner) = (first.clone(), runner.clone());
        tokio::spawn(async move {
            first
                .request_job_with(&runner, json!({ "last_update": last_update }))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !poller.is_finished(),
        "the poll is held while nothing became pending"
    );
    assert_eq!(
        second
            .update_job(&a, json!({ "state": "success" }))
            .await
            .status,
        200
    );
    let woken = tokio::time::timeout(Duration::from_secs(10), poller)
        .await
        .expect("the other instance's notification wakes the poll")
        .expect("poller");
    assert_eq!(woken.status, 201, "{}", woken.text);
    assert_eq!(
        woken.json()["job_info"]["name"],
        "b",
        "b (lower id than d) is pending now"
    );
    assert_eq!(first.take_job(&runner).await["job_info"]["name"], "d");
    assert_eq!(first.request_job(&runner).await.status, 204);
}

/// `runway_job_requests_answered_early_total` now.
async fn answered_early(app: &TestApp) -> u64 {
    let reply = app.send(app.request(Method::GET, "/-/metrics")).await;
    assert_eq!(reply.status, 200);
    reply
        .text
        .lines()
        .find_map(|l| l.strip_prefix("runway_job_requests_answered_early_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the early-answer counter")
}

both_backends! {
    // A poll whose exact body was answered lately, with nothing changed since, is answered
    // before parsing (as Workhorse answers it before Rails): held the same, counted under
    // the same route, and a job arriving during its hold still reaches it.
    async fn a_repeated_poll_is_answered_early_and_held_the_same(backend) {
        let app = TestApp::builder(backend).long_poll_timeout(1).spawn().await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let first = app.request_job(&runner).await;
        assert_eq!(first.status, 204);
        let last_update = first.header("x-gitlab-last-update").expect("queue value").to_string();
        let body = json!({ "last_update": last_update });
        for early in [0, 1] {
            let started = Instant::now();
            let reply = app.request_job_with(&runner, body.clone()).await;
            assert_eq!(reply.status, 204, "{}", reply.text);
            assert_eq!(reply.header("x-gitlab-last-update"), Some(last_update.as_str()));
            assert!(reply.header("x-request-id").is_some());
            // Held to the end of the hold, less up to a fifth (the spread of a fleet's polls).
            assert!(started.elapsed() >= Duration::from_millis(780), "held until the hold ends");
            assert_eq!(answered_early(&app).await, early, "the first goes the whole way");
        }

        let app = std::sync::Arc::new(app);
        let poller = {
            let (app, runner, body) = (app.clone(), runner.clone(), body.clone());
            tokio::spawn(async move { app.request_job_with(&runner, body).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!poller.is_finished(), "held");
        app.pipeline(project, "a: { script: x }\n").await;
        let reply = poller.await.expect("poller");
        assert_eq!(reply.status, 201, "the queue moved during the hold: the whole way, a job");
        assert_eq!(answered_early(&app).await, 1);
        let metrics = app.send(app.request(Method::GET, "/-/metrics")).await.text;
        let count = |status: u16| {
            let series = format!("runway_http_request_duration_seconds_count{{method=\"POST\",route=\"/api/v4/jobs/request\",status=\"{status}\"}} ");
            metrics.lines().find_map(|l| l.strip_prefix(series.as_str()).map(str::to_string))
        };
        assert_eq!((count(204).as_deref(), count(201).as_deref()), (Some("3"), Some("1")), "{metrics}");
    }

    // Pausing, resuming or deleting the runner is seen by the next poll, however often its
    // body was answered early before.
    async fn an_early_answer_follows_changes_to_the_runner(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (id, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let last_update = app.request_job(&runner).await.header("x-gitlab-last-update").expect("queue value").to_string();
        let body = json!({ "last_update": last_update });
        for _ in 0..3 {
            assert_eq!(app.request_job_with(&runner, body.clone()).await.status, 204);
        }
        assert_eq!(answered_early(&app).await, 2);

        let paused = app.send(app.admin(Method::PUT, &format!("/api/v4/runners/{id}")).json(&json!({ "paused": true }))).await;
        assert_eq!(paused.status, 200, "{}", paused.text);
        app.pipeline(project, "a: { script: x }\n").await;
        let reply = app.request_job_with(&runner, json!({})).await;
        assert_eq!(reply.status, 204, "paused: no job");
        let current = reply.header("x-gitlab-last-update").expect("queue value").to_string();
        let body = json!({ "last_update": current });
        assert_eq!(app.request_job_with(&runner, body.clone()).await.status, 204);
        assert_eq!(app.request_job_with(&runner, body.clone()).await.status, 204);
        let early = answered_early(&app).await;
        assert_eq!(early, 3, "a paused runner's poll is answered early too");

        let resumed = app.send(app.admin(Method::PUT, &format!("/api/v4/runners/{id}")).json(&json!({ "paused": false }))).await;
        assert_eq!(resumed.status, 200, "{}", resumed.text);
        let reply = app.request_job_with(&runner, body.clone()).await;
        assert_eq!(reply.status, 201, "resumed: the same body takes the job waiting for it");
        assert_eq!(answered_early(&app).await, early);

        let last_update = app.request_job(&runner).await.header("x-gitlab-last-update").expect("queue value").to_string();
        let body = json!({ "last_update": last_update });
        for _ in 0..2 {
            assert_eq!(app.request_job_with(&runner, body.clone()).await.status, 204);
        }
        assert_eq!(answered_early(&app).await, early + 1);
        let deleted = app.send(app.admin(Method::DELETE, &format!("/api/v4/runners/{id}"))).await;
        assert_eq!(deleted.status, 204, "{}", deleted.text);
        assert_eq!(app.request_job_with(&runner, body).await.status, 403, "a deleted runner's poll is refused");
        assert_eq!(answered_early(&app).await, early + 1);
    }

    // An early answer writes nothing, so it is given only while no contact is due: once
    // the heartbeat interval has passed, the poll goes the whole way and is recorded.
    async fn a_due_heartbeat_takes_the_whole_way(backend) {
        let app = TestApp::builder(backend).heartbeat_interval(2).spawn().await;
        let (id, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let last_update = app.request_job(&runner).await.header("x-gitlab-last-update").expect("queue value").to_string();
        let body = json!({ "last_update": last_update });
        app.request_job_with(&runner, body.clone()).await;
        let contacted = app.runner(id).await.expect("row").contacted_at.expect("contacted");
        assert_eq!(app.request_job_with(&runner, body.clone()).await.status, 204);
        assert_eq!(answered_early(&app).await, 1);
        tokio::time::sleep(Duration::from_millis(2200)).await;
        assert_eq!(app.request_job_with(&runner, body.clone()).await.status, 204);
        assert_eq!(answered_early(&app).await, 1, "the whole way");
        let now = app.runner(id).await.expect("row").contacted_at.expect("contacted");
        assert!(now > contacted, "the contact was written: {contacted} -> {now}");
    }
}

#[derive(diesel::QueryableByName, Debug, PartialEq, Eq)]
struct ClaimsAlone {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    claims_alone: bool,
}

async fn claims_alone(app: &TestApp, pipeline: i64) -> Vec<(String, bool)> {
    use diesel_async::RunQueryDsl;
    let query = diesel::sql_query(format!(
        "SELECT name, claims_alone FROM jobs WHERE pipeline_id = {pipeline} ORDER BY id"
    ));
    let mut db = app.db.read().await.expect("connection");
    let rows: Vec<ClaimsAlone> = match db.conn() {
        runway::db::Conn::Postgres(c) => query.load(c).await,
        runway::db::Conn::Sqlite(c) => query.load(c).await,
    }
    .expect("jobs");
    rows.into_iter().map(|r| (r.name, r.claims_alone)).collect()
}

both_backends! {
    // A job is written as claiming alone only when its assignment needs nothing beyond
    // the claim: no runner feature, no deployment, no dependency to read. Those jobs are
    // taken (on PostgreSQL by one statement committed by itself) as any other, and a
    // retry of one claims alone too.
    async fn a_job_claims_alone_only_when_its_assignment_needs_nothing_more(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let yaml = "stages: [build, test]\n\
            plain: { stage: build, script: x }\n\
            reports: { stage: build, script: x, artifacts: { reports: { junit: r.xml } } }\n\
            exit_codes: { stage: build, script: x, allow_failure: { exit_codes: [3] } }\n\
            deploy: { stage: build, script: x, environment: production }\n\
            later: { stage: test, script: x }\n\
            later_needs_none: { stage: test, script: x, needs: [] }\n\
            later_needs_no_artifacts: { stage: test, script: x, needs: [{ job: plain, artifacts: false }] }\n\
            later_needs: { stage: test, script: x, needs: [plain] }\n\
            later_no_dependencies: { stage: test, script: x, dependencies: [] }\n";
        let reply = app.create_pipeline(project, "main", yaml).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let pipeline = reply.json()["id"].as_i64().expect("id");
        let expected = [
            ("plain", true),
            ("reports", false),
            ("exit_codes", false),
            ("deploy", false),
            ("later", false),
            ("later_needs_none", true),
            ("later_needs_no_artifacts", true),
            ("later_needs", false),
            ("later_no_dependencies", true),
        ];
        let expected: Vec<(String, bool)> = expected.iter().map(|(n, a)| (n.to_string(), *a)).collect();
        assert_eq!(claims_alone(&app, pipeline).await, expected);

        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let features = json!({ "info": { "features": { "upload_multiple_artifacts": true, "return_exit_code": true } } });
        let mut taken = Vec::new();
        for _ in 0..4 {
            let reply = app.request_job_with(&runner, features.clone()).await;
            assert_eq!(reply.status, 201, "{}", reply.text);
            let job = reply.json();
            taken.push(job["job_info"]["name"].as_str().expect("name").to_string());
            let put = app.send(app.request(Method::PUT, &format!("/api/v4/jobs/{}", job["id"])).json(&json!({ "token": job["token"], "state": "success" }))).await;
            assert_eq!(put.status, 200, "{}", put.text);
            if taken.len() == 1 {
                // The pipeline runs once its first job is taken.
                let read = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/pipelines/{pipeline}"))).await;
                assert_eq!(read.json()["status"], "running");
            }
        }
        assert_eq!(taken, ["plain", "reports", "exit_codes", "deploy"]);

        let plain = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/pipelines/{pipeline}/jobs?scope[]=success"))).await;
        let plain_id = plain.json().as_array().expect("jobs").iter().find(|j| j["name"] == "plain").expect("plain")["id"].as_i64().expect("id");
        let retried = app.send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/jobs/{plain_id}/retry"))).await;
        assert_eq!(retried.status, 201, "{}", retried.text);
        let rows = claims_alone(&app, pipeline).await;
        assert_eq!(rows.last(), Some(&("plain".to_string(), true)), "{rows:?}");
    }
}

/// `(status, usage rows)` of a job, read from its row and from the CI minutes' table.
async fn status_and_usage(app: &TestApp, job_id: i64) -> (String, i64) {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        status: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        usages: i64,
    }
    use diesel_async::RunQueryDsl;
    let sql = format!(
        "SELECT status, (SELECT COUNT(*) FROM ci_minutes_usages WHERE job_id = {job_id}) AS usages \
         FROM jobs WHERE id = {job_id}"
    );
    let mut db = app.db.read().await.expect("connection");
    let row: Row = runway::db_run!(&mut db.conn(), |c| diesel::sql_query(&sql)
        .get_result(c)
        .await)
    .expect("job row");
    (row.status, row.usages)
}

fn outcome(success: bool, checksum: Option<String>) -> runway::service::pipelines::JobOutcome {
    runway::service::pipelines::JobOutcome {
        success,
        failure_reason: (!success).then(|| "script_failure".to_string()),
        exit_code: (!success).then_some(1),
        bytesize: checksum.as_ref().map(|_| 5),
        checksum,
    }
}

both_backends! {
    // The runner's final PUT ends its job as the request's guard read it, without reading
    // it again, unless the job changed in between: then the end applies to the job as it
    // is. A log appended since is what the checksum is compared with; a cancel since ends
    // it canceled; a job ended since is not ended twice. Each end counts its minutes once.
    async fn a_finish_ends_the_job_as_it_is_when_it_changed_after_it_was_read(backend) {
        use runway::db::enums::JobStatus;
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let pipeline = app.pipeline(project, "a: { script: x }\nb: { script: y }\nc: { stage: deploy, script: z }\n").await;
        let a = app.take_job(&runner).await;
        let b = app.take_job(&runner).await;
        let (a_id, b_id) = (a["id"].as_i64().expect("id"), b["id"].as_i64().expect("id"));

        // As read: ends at once, the log as it was read.
        let seen = app.runner_job(a_id).await;
        assert_eq!(app.patch_trace(&a, 0, b"hello").await.status, 202);
        let checksum = runway::service::traces::checksum_text(crc32fast::hash(b"hello"));
        let ended = app.state.pipelines.finish(seen, outcome(true, Some(checksum))).await.expect("finish");
        assert_eq!((ended.status, ended.trace_size, ended.trace_checksum_ok), (JobStatus::Success, 5, Some(true)));
        assert_eq!(status_and_usage(&app, a_id).await, ("success".to_string(), 1));

        // Canceled after it was read (the runner cancels gracefully): the runner's
        // `success` ends it canceled.
        let seen = app.runner_job(b_id).await;
        let cancel = format!("/api/v4/projects/{project}/jobs/{b_id}/cancel");
        assert_eq!(app.send(app.admin(Method::POST, &cancel)).await.json()["status"], "canceling");
        let ended = app.state.pipelines.finish(seen.clone(), outcome(true, None)).await.expect("finish");
        assert_eq!(ended.status, JobStatus::Canceled);
        assert_eq!(status_and_usage(&app, b_id).await, ("canceled".to_string(), 1));

        // Ended since: refused, and nothing changes.
        let again = app.state.pipelines.finish(seen, outcome(false, None)).await;
        assert!(matches!(again, Err(runway::error::ApiError::Conflict)), "{:?}", again.map(|j| j.status));
        assert_eq!(status_and_usage(&app, b_id).await, ("canceled".to_string(), 1));
        assert_eq!(app.job_statuses(project, pipeline).await, statuses(&[("a", "success"), ("b", "canceled"), ("c", "skipped")]));
        assert_eq!(app.pipeline_status(project, pipeline).await, "canceled");
    }
}

/// PostgreSQL: a job's end holds another busy job of its stage `FOR SHARE` until it
/// commits. A poll whose claim meets that job's row then waits for the end's transaction
/// and takes the job: it does not answer 204 and leave the job out of the jobs known, held
/// polls waiting for a change that never comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_poll_takes_a_job_whose_row_a_job_s_end_holds() {
    use diesel_async::RunQueryDsl;
    let app = std::sync::Arc::new(TestApp::spawn(crate::helpers::Backend::Postgres).await);
    let project = app.create_project(json!({ "name": "app" })).await;
    let (_, runner) = app
        .create_runner(json!({ "runner_type": "instance_type" }))
        .await;
    let pipeline = app.pipeline(project, "a: { script: x }\n").await;
    // The transaction of another job's end, holding this one as its stage's busy job.
    let mut end = app.state.db.read().await.expect("a connection");
    {
        let runway::db::Conn::Postgres(c) = end.conn() else {
            panic!("not PostgreSQL")
        };
        diesel::sql_query("BEGIN").execute(c).await.expect("begin");
        let held = diesel::sql_query(format!(
            "SELECT id FROM jobs WHERE pipeline_id = {pipeline} FOR SHARE"
        ))
        .execute(c)
        .await
        .expect("share lock");
        assert_eq!(held, 1);
    }
    let polling = {
        let (app, runner) = (app.clone(), runner.clone());
        tokio::spawn(async move { app.request_job(&runner).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !polling.is_finished(),
        "the claim waits for the end's transaction"
    );
    {
        let runway::db::Conn::Postgres(c) = end.conn() else {
            panic!("not PostgreSQL")
        };
        diesel::sql_query("COMMIT")
            .execute(c)
            .await
            .expect("commit");
    }
    drop(end);
    let taken = polling.await.expect("poll");
    assert_eq!(taken.status, 201, "{}", taken.text);
    assert_eq!(
        taken.json()["job_info"]["pipeline_id"].as_i64(),
        Some(pipeline)
    );
    let metrics = crate::metrics::scrape(&app).await;
    assert_eq!(
        crate::metrics::sample(&metrics, "runway_queue_waited_claims_total"),
        Some(1.0)
    );
}
