//! Pipelines from `.gitlab-ci.yml`: creation, refusals, progression, cancel and retry.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{both_backends, statuses, TestApp};

const THREE_STAGES: &str = r#"
stages: [build, test, deploy]
build:
  stage: build
  script: [make]
test:
  stage: test
  script: [make test]
deploy:
  stage: deploy
  script: [make deploy]
"#;

both_backends! {
    async fn stages_run_in_order_to_success(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let reply = app.create_pipeline(project, "main", THREE_STAGES).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let body = reply.json();
        let pipeline = body["id"].as_i64().expect("id");
        assert_eq!((body["status"].as_str(), body["ref"].as_str(), body["source"].as_str()), (Some("pending"), Some("main"), Some("api")));
        assert_eq!(body["sha"].as_str().map(str::len), Some(40));
        assert_eq!(app.job_statuses(project, pipeline).await, statuses(&[("build", "pending"), ("test", "created"), ("deploy", "created")]));

        for (name, next) in [("build", Some("test")), ("test", Some("deploy")), ("deploy", None)] {
            let job = app.take_job(&runner).await;
            assert_eq!(job["job_info"]["name"], name);
            let reply = app.update_job(&job, json!({ "state": "running", "output": {} })).await;
            assert_eq!((reply.status, reply.header("job-status")), (200, Some("running")));
            assert_eq!(app.pipeline_status(project, pipeline).await, "running");
            let reply = app.update_job(&job, json!({ "state": "success", "output": { "checksum": "crc32:00000000", "bytesize": 0 } })).await;
            assert_eq!((reply.status, reply.header("job-status")), (200, Some("success")));
            if let Some(next) = next {
                let jobs = app.job_statuses(project, pipeline).await;
                assert!(jobs.contains(&(next.to_string(), "pending".to_string())), "{jobs:?}");
            }
        }
        assert_eq!(app.pipeline_status(project, pipeline).await, "success");
        let reply = app.request_job(&runner).await;
        assert_eq!(reply.status, 204, "nothing left");
        let pipeline_json = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/pipelines/{pipeline}"))).await.json();
        assert!(pipeline_json["started_at"].is_string() && pipeline_json["finished_at"].is_string(), "{pipeline_json}");
    }

    async fn failures_skip_later_stages_unless_allowed(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let pipeline = app.pipeline(project, r#"
stages: [build, test, cleanup]
lint: { stage: build, script: x, allow_failure: true }
build: { stage: build, script: x }
test: { stage: test, script: x }
report: { stage: cleanup, script: x, when: on_failure }
always: { stage: cleanup, script: x, when: always }
"#).await;
        let first = app.take_job(&runner).await;
        let second = app.take_job(&runner).await;
        let (lint, build) = if first["job_info"]["name"] == "lint" { (first, second) } else { (second, first) };
        let reply = app.update_job(&lint, json!({ "state": "failed", "failure_reason": "script_failure", "exit_code": 1 })).await;
        assert_eq!((reply.status, reply.header("job-status")), (200, Some("failed")));
        app.update_job(&build, json!({ "state": "failed", "failure_reason": "script_failure", "exit_code": 2 })).await;
        assert_eq!(
            app.job_statuses(project, pipeline).await,
            statuses(&[("lint", "failed"), ("build", "failed"), ("test", "skipped"), ("report", "pending"), ("always", "pending")])
        );
        let job = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/jobs/{}", build["id"]))).await.json();
        assert_eq!((job["failure_reason"].as_str(), job["exit_code"].as_i64()), (Some("script_failure"), Some(2)));
        for _ in 0..2 {
            let job = app.take_job(&runner).await;
            app.update_job(&job, json!({ "state": "success" })).await;
        }
        assert_eq!(app.pipeline_status(project, pipeline).await, "failed");
    }

    async fn allowed_failures_and_exit_codes_keep_the_pipeline_green(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let pipeline = app.pipeline(project, "a: { script: x, allow_failure: { exit_codes: [3] } }\n").await;
        let job = app.take_job(&runner).await;
        app.update_job(&job, json!({ "state": "failed", "failure_reason": "script_failure", "exit_code": 3 })).await;
        assert_eq!(app.pipeline_status(project, pipeline).await, "success");
        let listed = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/jobs/{}", job["id"]))).await.json();
        assert_eq!((listed["status"].as_str(), listed["allow_failure"].as_bool()), (Some("failed"), Some(true)));

        let pipeline = app.pipeline(project, "a: { script: x, allow_failure: { exit_codes: [3] } }\n").await;
        let job = app.take_job(&runner).await;
        app.update_job(&job, json!({ "state": "failed", "failure_reason": "script_failure", "exit_code": 4 })).await;
        assert_eq!(app.pipeline_status(project, pipeline).await, "failed");
    }

    async fn needs_start_jobs_before_their_stage(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let pipeline = app.pipeline(project, r#"
stages: [build, test]
build_a: { stage: build, script: x }
build_b: { stage: build, script: x }
test_a: { stage: test, script: x, needs: [build_a] }
test_b: { stage: test, script: x }
"#).await;
        let mut a = app.take_job(&runner).await;
        if a["job_info"]["name"] != "build_a" {
            a = app.take_job(&runner).await;
        }
        assert_eq!(a["job_info"]["name"], "build_a");
        app.update_job(&a, json!({ "state": "success" })).await;
        let jobs = app.job_statuses(project, pipeline).await;
        assert!(jobs.contains(&("test_a".into(), "pending".into())), "{jobs:?}");
        assert!(jobs.contains(&("test_b".into(), "created".into())), "{jobs:?}");
        // build_b (older) and test_a are both pending now; test_b still waits for build_b.
        let next = [app.take_job(&runner).await, app.take_job(&runner).await];
        let test_a = next.iter().find(|j| j["job_info"]["name"] == "test_a").expect("test_a runs before its stage").clone();
        // needs → dependencies: only build_a, with the consuming job's own token.
        assert_eq!(test_a["dependencies"], json!([{ "id": a["id"], "name": "build_a", "token": test_a["token"] }]));
    }

    // A job that ends while others of its stage still run moves nothing else (the finish
    // does not read the whole pipeline then): the next stage starts with the last one,
    // and a failure among them skips it then, not before.
    async fn a_stage_moves_on_when_its_last_job_ends(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let yaml = "stages: [build, test]\nbuild: { stage: build, script: x, parallel: 3 }\ntest: { stage: test, script: x }\n";
        for last_fails in [false, true] {
            let pipeline = app.pipeline(project, yaml).await;
            let jobs = [app.take_job(&runner).await, app.take_job(&runner).await, app.take_job(&runner).await];
            for (i, job) in jobs.iter().enumerate() {
                let state = if last_fails && i == 0 { "failed" } else { "success" };
                let reply = app.update_job(job, json!({ "state": state, "failure_reason": "script_failure" })).await;
                assert_eq!((reply.status, reply.header("job-status")), (200, Some(state)));
                let test = app.job_statuses(project, pipeline).await.into_iter().find(|(n, _)| n == "test").map(|(_, s)| s);
                let status = app.pipeline_status(project, pipeline).await;
                match (i, last_fails) {
                    (0 | 1, _) => assert_eq!((test.as_deref(), status.as_str()), (Some("created"), "running")),
                    (_, false) => assert_eq!((test.as_deref(), status.as_str()), (Some("pending"), "running")),
                    (_, true) => assert_eq!((test.as_deref(), status.as_str()), (Some("skipped"), "failed")),
                }
            }
            if !last_fails {
                let test = app.take_job(&runner).await;
                assert_eq!(test["job_info"]["name"], "test");
                app.update_job(&test, json!({ "state": "success" })).await;
                assert_eq!(app.pipeline_status(project, pipeline).await, "success");
            }
            assert_eq!(app.request_job(&runner).await.status, 204, "nothing left");
        }
    }

    async fn retry_keyword_makes_a_new_try(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let pipeline = app.pipeline(project, "flaky: { script: x, retry: { max: 1, when: [script_failure] } }\n").await;
        let first = app.take_job(&runner).await;
        app.update_job(&first, json!({ "state": "failed", "failure_reason": "script_failure", "exit_code": 1 })).await;
        assert_eq!(app.job_statuses(project, pipeline).await, statuses(&[("flaky", "pending")]));
        // The status comes from the latest tries only: one pending job.
        assert_eq!(app.pipeline_status(project, pipeline).await, "pending");
        let second = app.take_job(&runner).await;
        assert_ne!(first["id"], second["id"]);
        // The claim starts the pipeline again, though the poll before it read it running.
        assert_eq!(app.pipeline_status(project, pipeline).await, "running");
        app.update_job(&second, json!({ "state": "failed", "failure_reason": "script_failure", "exit_code": 1 })).await;
        assert_eq!(app.job_statuses(project, pipeline).await, statuses(&[("flaky", "failed")]));
        assert_eq!(app.pipeline_status(project, pipeline).await, "failed");
        let all = app
            .send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/pipelines/{pipeline}/jobs?include_retried=true")))
            .await
            .json();
        assert_eq!(all.as_array().map(Vec::len), Some(2));
        assert_eq!(all[0]["retried"], true);
    }

    async fn cancel_gracefully_and_at_once(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let pipeline = app.pipeline(project, "a: { script: x }\nb: { stage: deploy, script: y }\n").await;
        let job = app.take_job(&runner).await;
        app.update_job(&job, json!({ "state": "running" })).await;
        let reply = app.send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/pipelines/{pipeline}/cancel"))).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        assert_eq!(reply.json()["status"], "canceling");
        assert_eq!(app.job_statuses(project, pipeline).await, statuses(&[("a", "canceling"), ("b", "canceled")]));
        // The runner learns it on its next update and reports after after_script.
        let reply = app.update_job(&job, json!({ "state": "running" })).await;
        assert_eq!((reply.status, reply.header("job-status")), (200, Some("canceling")));
        let reply = app.update_job(&job, json!({ "state": "failed", "failure_reason": "unknown_failure" })).await;
        assert_eq!((reply.status, reply.header("job-status")), (200, Some("canceled")));
        assert_eq!(app.pipeline_status(project, pipeline).await, "canceled");

        // A runner without cancel_gracefully: canceled at once, then 403 + Job-Status.
        let pipeline = app.pipeline(project, "a: { script: x }\n").await;
        let mut features = crate::helpers::shell_features();
        features["cancel_gracefully"] = json!(false);
        let job = app.request_job_with(&runner, json!({ "info": { "features": features } })).await.json();
        let reply = app.send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/jobs/{}/cancel", job["id"]))).await;
        assert_eq!(reply.json()["status"], "canceled");
        let reply = app.update_job(&job, json!({ "state": "running" })).await;
        reply.assert(403, json!({ "message": "403 Forbidden - Job is not processing on runner" }));
        assert_eq!(reply.header("job-status"), Some("canceled"));
        assert_eq!(app.pipeline_status(project, pipeline).await, "canceled");
    }

    async fn retry_jobs_and_pipelines(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let pipeline = app.pipeline(project, "stages: [a, b]\nfirst: { stage: a, script: x }\nsecond: { stage: b, script: y }\n").await;
        let job = app.take_job(&runner).await;
        app.update_job(&job, json!({ "state": "failed", "failure_reason": "script_failure" })).await;
        assert_eq!(app.job_statuses(project, pipeline).await, statuses(&[("first", "failed"), ("second", "skipped")]));

        let reply = app.send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/pipelines/{pipeline}/retry"))).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        assert_eq!(reply.json()["status"], "pending");
        assert_eq!(app.job_statuses(project, pipeline).await, statuses(&[("second", "created"), ("first", "pending")]));
        let job = app.take_job(&runner).await;
        app.update_job(&job, json!({ "state": "failed", "failure_reason": "script_failure" })).await;

        let reply = app.send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/jobs/{}/retry", job["id"]))).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let retried = reply.json();
        assert_ne!(retried["id"], job["id"]);
        assert_eq!(retried["status"], "pending");
        let job = app.take_job(&runner).await;
        app.update_job(&job, json!({ "state": "success" })).await;
        let job = app.take_job(&runner).await;
        assert_eq!(job["job_info"]["name"], "second");
        app.update_job(&job, json!({ "state": "success" })).await;
        assert_eq!(app.pipeline_status(project, pipeline).await, "success");
        let reply = app.send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/pipelines/{pipeline}/retry"))).await;
        reply.assert(403, json!({ "message": "403 Forbidden - Pipeline is not retryable" }));
    }

    async fn manual_jobs_wait_to_be_played(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let pipeline = app.pipeline(project, "deploy: { script: x, when: manual }\n").await;
        assert_eq!(app.job_statuses(project, pipeline).await, statuses(&[("deploy", "manual")]));
        assert_eq!(app.pipeline_status(project, pipeline).await, "manual");
        assert_eq!(app.request_job(&runner).await.status, 204);
        let jobs = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/jobs"))).await.json();
        let id = jobs[0]["id"].as_i64().expect("id");
        let reply = app.send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/jobs/{id}/play"))).await;
        assert_eq!(reply.status, 200, "GitLab's play answers 200");
        assert_eq!(reply.json()["status"], "pending");
        let again = app.send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/jobs/{id}/play"))).await;
        again.assert(400, json!({ "message": "400 Bad request - Unplayable Job" }));
        let job = app.take_job(&runner).await;
        app.update_job(&job, json!({ "state": "success" })).await;
        assert_eq!(app.pipeline_status(project, pipeline).await, "success");
    }

    // The older `only`/`except`, as GitLab evaluates them: refs (names, regexes, GitLab's
    // keywords for sources, `@project`), variables, and only's default (branches, tags).
    async fn only_and_except_choose_the_jobs(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app", "namespace": "team" })).await;
        let yaml = r#"
build: { script: x }
only-main: { script: x, only: [main] }
only-api: { script: x, only: [api] }
only-web: { script: x, only: [web, schedules] }
except-main: { script: x, except: [main] }
feature: { script: x, only: ['/^feature\/.*/'] }
deploy: { script: x, only: { refs: [branches], variables: ['$DEPLOY == "yes"'] } }
release: { script: x, only: [tags] }
here: { script: x, only: ['main@team/app'] }
elsewhere: { script: x, only: ['main@other/app'] }
"#;
        let names = |pipeline: i64| {
            let app = &app;
            async move { app.job_statuses(project, pipeline).await.into_iter().map(|(n, _)| n).collect::<Vec<_>>() }
        };
        let reply = app.send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/pipeline"))
            .json(&json!({ "ref": "main", "ci_config": yaml, "variables": [{ "key": "DEPLOY", "value": "yes" }] }))).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let mut on_main = names(reply.json()["id"].as_i64().expect("id")).await;
        on_main.sort();
        assert_eq!(on_main, ["build", "deploy", "here", "only-api", "only-main"]);
        let reply = app.create_pipeline(project, "feature/login", yaml).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let mut on_feature = names(reply.json()["id"].as_i64().expect("id")).await;
        on_feature.sort();
        assert_eq!(on_feature, ["build", "except-main", "feature", "only-api"]);
        // `workflow:rules` drops only's default; a job with no rules or only then always runs.
        let reply = app.create_pipeline(project, "main", "workflow: { rules: [{ when: always }] }
a: { script: x }
b: { script: x, except: [api] }
").await;
        assert_eq!(names(reply.json()["id"].as_i64().expect("id")).await, ["a"]);
    }

    // `environment`: the name and URL expanded at creation, GitLab's CI_ENVIRONMENT_*
    // variables in the payload, the environment in the job's JSON and on its page.
    async fn environments_reach_the_job(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let yaml = r#"
review:
  script: x
  environment:
    name: review/$CI_COMMIT_REF_SLUG
    url: https://$CI_COMMIT_REF_SLUG.example.com
    action: prepare
live: { script: x, environment: production }
regional:
  script: x
  parallel: { matrix: [ { REGION: [eu, us] } ] }
  environment: prod-$REGION
"#;
        let reply = app.create_pipeline(project, "feature/Login", yaml).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..4 {
            let job = app.take_job(&runner).await;
            let vars: std::collections::BTreeMap<String, String> = job["variables"].as_array().expect("variables").iter()
                .filter(|v| v["key"].as_str().is_some_and(|k| k.starts_with("CI_ENVIRONMENT_")))
                .map(|v| (v["key"].as_str().unwrap_or_default().to_string(), v["value"].as_str().unwrap_or_default().to_string()))
                .collect();
            seen.insert(job["job_info"]["name"].as_str().unwrap_or_default().to_string(), (job["id"].clone(), vars));
        }
        let review = &seen["review"].1;
        assert_eq!(review["CI_ENVIRONMENT_NAME"], "review/feature-login");
        assert_eq!(review["CI_ENVIRONMENT_URL"], "https://feature-login.example.com");
        assert_eq!(review["CI_ENVIRONMENT_ACTION"], "prepare");
        assert_eq!(review["CI_ENVIRONMENT_TIER"], "development");
        assert!(review["CI_ENVIRONMENT_SLUG"].starts_with("review-feature-lo-") && review["CI_ENVIRONMENT_SLUG"].len() == 24, "{review:?}");
        let live = &seen["live"].1;
        assert_eq!((live["CI_ENVIRONMENT_NAME"].as_str(), live["CI_ENVIRONMENT_SLUG"].as_str(), live["CI_ENVIRONMENT_TIER"].as_str()), ("production", "production", "production"));
        assert!(!live.contains_key("CI_ENVIRONMENT_URL"));
        assert_eq!(seen["regional: [eu]"].1["CI_ENVIRONMENT_NAME"], "prod-eu");
        assert_eq!(seen["regional: [us]"].1["CI_ENVIRONMENT_NAME"], "prod-us");

        let id = &seen["review"].0;
        let job = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/jobs/{id}"))).await.json();
        assert_eq!(job["environment"], json!({ "name": "review/feature-login", "url": "https://feature-login.example.com", "action": "prepare", "tier": "development" }));
        let (cookie, _) = crate::ui::sign_in(&app).await;
        let page = crate::ui::get(&app, Some(&cookie), &format!("/-/ui/jobs/{id}")).await;
        assert!(page.text.contains("<dd id=\"environment\">review/feature-login <span class=\"muted\">(prepare)</span> · <a href=\"https://feature-login.example.com\""), "{}", page.text);

        let reply = app.create_pipeline(project, "main", "d: { script: x, environment: { name: prod, kubernetes: { namespace: n } } }\n").await;
        assert_eq!(reply.status, 400);
        assert_eq!(reply.json()["message"]["base"][0], "jobs:d:environment uses keywords Runway does not support yet: environment:kubernetes");
    }

    // `coverage`: when the job ends, its pattern is applied to the log (the last matching
    // line wins); the number is in the job's JSON and on its page.
    async fn coverage_is_read_from_the_log(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let yaml = "unit:\n  script: x\n  coverage: '/^TOTAL.+?(\\d+\\.\\d+)%$/'\nlint: { script: y }\n";
        let reply = app.create_pipeline(project, "main", yaml).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let mut ids = std::collections::BTreeMap::new();
        for _ in 0..2 {
            let job = app.take_job(&runner).await;
            let log = b"\x1b[0KRunning tests\nTOTAL   120   30   75.00%\nretrying\nTOTAL   120   10   91.67%\nJob succeeded\n";
            assert_eq!(app.patch_trace(&job, 0, log).await.status, 202);
            app.update_job(&job, json!({ "state": "success" })).await;
            ids.insert(job["job_info"]["name"].as_str().unwrap_or_default().to_string(), job["id"].clone());
        }
        let job_json = |id: &Value| app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/jobs/{id}")));
        let waited = std::time::Instant::now();
        let mut unit = job_json(&ids["unit"]).await.json();
        while unit["coverage"].is_null() && waited.elapsed() < std::time::Duration::from_secs(10) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            unit = job_json(&ids["unit"]).await.json();
        }
        assert_eq!(unit["coverage"], json!(91.67));
        assert_eq!(job_json(&ids["lint"]).await.json()["coverage"], Value::Null, "no pattern, no coverage");
        let listed = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/jobs"))).await.json();
        assert!(listed.as_array().expect("jobs").iter().any(|j| j["coverage"] == json!(91.67)));
        let (cookie, _) = crate::ui::sign_in(&app).await;
        let page = crate::ui::get(&app, Some(&cookie), &format!("/-/ui/jobs/{}", ids["unit"])).await;
        assert!(page.text.contains("<dt>Coverage</dt><dd id=\"coverage\">91.67%</dd>"), "{}", page.text);

        let reply = app.create_pipeline(project, "main", "a: { script: x, coverage: 'TOTAL (\\d+)%' }\n").await;
        assert_eq!(reply.json()["message"]["base"][0], "jobs:a:coverage config must be a regular expression with re2 syntax");
    }

    // `workflow:name` names the pipeline (its variables expanded) in its JSON and page;
    // `workflow:rules:variables` reach the jobs.
    async fn workflow_names_the_pipeline(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let yaml = "workflow:\n  name: 'Deploy $CI_COMMIT_REF_NAME to $TARGET'\n  rules:\n    - if: $CI_COMMIT_REF_NAME == \"main\"\n      variables: { TARGET: production }\n    - when: always\nvariables: { TARGET: staging }\ndeploy: { script: x }\n";
        let reply = app.create_pipeline(project, "main", yaml).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        assert_eq!(reply.json()["name"], "Deploy main to production");
        let id = reply.json()["id"].as_i64().expect("id");
        let shown = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/pipelines/{id}"))).await.json();
        assert_eq!(shown["name"], "Deploy main to production");
        let job = app.take_job(&runner).await;
        let target = job["variables"].as_array().and_then(|v| v.iter().rev().find(|v| v["key"] == "TARGET")).map(|v| v["value"].clone());
        assert_eq!(target, Some(json!("production")));
        let (cookie, _) = crate::ui::sign_in(&app).await;
        let page = crate::ui::get(&app, Some(&cookie), &format!("/-/ui/projects/{project}/pipelines/{id}")).await;
        assert!(page.text.contains("<span class=\"muted\">Deploy main to production</span>"), "{}", page.text);
        let other = app.create_pipeline(project, "dev", yaml).await;
        assert_eq!(other.json()["name"], "Deploy dev to staging");
        let unnamed = app.create_pipeline(project, "main", "a: { script: x }\n").await;
        assert_eq!(unnamed.json()["name"], Value::Null);
    }

    // `include:remote`: fetched over HTTP when the pipeline is planned; GitLab's messages
    // for an error status and a local address (refused unless allowed).
    async fn remote_includes_are_fetched(backend) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A file server on 127.0.0.1 for three requests at most.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            for _ in 0..3 {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                let mut request = vec![0u8; 4096];
                let n = socket.read(&mut request).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&request[..n]).to_string();
                let answer = if request.starts_with("GET /ci/shared.yml ") {
                    let body = "shared: { script: [echo shared], variables: { FROM: remote } }\n";
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                };
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        let app = TestApp::builder(backend).include_remote_allow_local().spawn().await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let reply = app.create_pipeline(project, "main", &format!("include:\n  - remote: {base}/ci/shared.yml\nmain: {{ script: x }}\n")).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let mut names: Vec<String> = app.job_statuses(project, reply.json()["id"].as_i64().expect("id")).await.into_iter().map(|(n, _)| n).collect();
        names.sort();
        assert_eq!(names, ["main", "shared"]);
        let reply = app.create_pipeline(project, "main", &format!("include: {base}/ci/missing.yml\nmain: {{ script: x }}\n")).await;
        assert_eq!(reply.json()["message"]["base"][0], format!("Remote file `{base}/ci/missing.yml` could not be fetched because of HTTP code `404` error!"));

        let strict = TestApp::spawn(backend).await;
        let project = strict.create_project(json!({ "name": "app" })).await;
        let reply = strict.create_pipeline(project, "main", &format!("include: {base}/ci/shared.yml\nmain: {{ script: x }}\n")).await;
        assert_eq!(reply.status, 400);
        assert_eq!(reply.json()["message"]["base"][0], format!("Remote file `{base}/ci/shared.yml` could not be fetched because requests to the local network are not allowed!"));
    }

    async fn refused_configurations_create_nothing(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        for (yaml, message) in [
            ("a: [", "Invalid configuration format"),
            ("a: { script: x, only: main }", "jobs:a:only has to be either an array of conditions or a hash"),
            ("a: { script: x, only: [main], rules: [{ when: always }] }", "jobs:a config key may not be used with `rules`: only"),
            ("a: { script: x, wat: 1 }", "jobs:a config contains unknown keys: wat"),
            ("a: { stage: test }", "jobs:a config should implement the script:, run:, or trigger: keyword"),
            ("a: { script: x, needs: [b] }\nb: { script: y, needs: [a] }", "The pipeline has circular dependencies"),
        ] {
            let reply = app.create_pipeline(project, "main", yaml).await;
            assert_eq!(reply.status, 400, "{yaml}: {}", reply.text);
            let text = reply.json()["message"]["base"][0].as_str().unwrap_or_default().to_string();
            assert!(text.contains(message), "{yaml}: {text}");
        }
        let reply = app.send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/pipeline")).json(&json!({ "ci_config": "a: { script: x }" }))).await;
        reply.assert(400, json!({ "error": "ref is missing" }));
        let reply = app.send(app.admin(Method::POST, "/api/v4/projects/999/pipeline").json(&json!({ "ref": "main", "ci_config": "a: { script: x }" }))).await;
        reply.assert(404, json!({ "message": "404 Project Not Found" }));
        let list = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/pipelines"))).await;
        list.assert(200, json!([]));
        let jobs = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/jobs"))).await;
        jobs.assert(200, json!([]));
    }

    async fn projects_through_the_admin_api(backend) {
        let app = TestApp::spawn(backend).await;
        let id = app.create_project(json!({ "name": "My App", "namespace": "team", "repository_url": "file:///srv/app.git" })).await;
        let project = app.send(app.admin(Method::GET, "/api/v4/projects/team%2Fmy-app")).await.json();
        assert_eq!(project["id"], id);
        assert_eq!(project["path_with_namespace"], "team/my-app");
        assert_eq!(project["http_url_to_repo"], format!("{}/team/my-app.git", app.base));
        assert_eq!(project["repository_url"], "file:///srv/app.git");
        assert_eq!(project["default_branch"], "main");
        let reply = app.send(app.admin(Method::POST, "/api/v4/projects").json(&json!({ "name": "My App", "namespace": "team" }))).await;
        reply.assert(400, json!({ "message": { "name": ["has already been taken"], "path": ["has already been taken"] } }));
        let reply = app.send(app.admin(Method::POST, "/api/v4/projects").json(&json!({}))).await;
        reply.assert(400, json!({ "error": "name, path are missing, at least one parameter must be provided" }));
        app.send(app.admin(Method::GET, "/api/v4/projects/404")).await.assert(404, json!({ "message": "404 Project Not Found" }));
        let list = app.send(app.admin(Method::GET, "/api/v4/projects")).await.json();
        assert_eq!(list.as_array().map(Vec::len), Some(1));
    }

    // The last two jobs of a stage ending at once: on PostgreSQL their transactions
    // overlap, and neither may take the other for still running, or the next stage never
    // starts and the pipeline never ends.
    async fn the_last_jobs_of_a_stage_ending_at_once_start_the_next(backend) {
        let app = TestApp::builder(backend).spawn().await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let yaml = "a: { stage: build, script: x }\nb: { stage: build, script: y }\nc: { stage: test, script: z }\nd: { stage: test, script: z }\n";
        for round in 0..30 {
            let pipeline = app.pipeline(project, yaml).await;
            for stage in [["a", "b"], ["c", "d"]] {
                let first = app.request_job(&runner).await;
                assert_eq!(first.status, 201, "round {round}: stage {stage:?} did not start");
                let (first, second) = (first.json(), app.take_job(&runner).await);
                assert_eq!([&first["job_info"]["name"], &second["job_info"]["name"]], stage);
                let (ended_first, ended_second) = tokio::join!(
                    app.update_job(&first, json!({ "state": "success" })),
                    app.update_job(&second, json!({ "state": "success" })),
                );
                assert_eq!((ended_first.status, ended_second.status), (200, 200));
            }
            assert_eq!(app.pipeline_status(project, pipeline).await, "success", "round {round}");
        }
    }
}

const KEYWORDS: &str = r#"
stages: [build, test]
variables:
  DEPLOY: "no"
default:
  tags: [shared]
  before_script: [echo default]
workflow:
  rules:
    - if: $CI_PIPELINE_SOURCE == "api"
.template:
  image: alpine:3
  variables: { FROM_TEMPLATE: "t" }
compile:
  extends: .template
  stage: build
  script: [make]
  parallel: 2
lint:
  stage: build
  script: [lint]
  tags: []
unit:
  stage: test
  script: [test]
  parallel:
    matrix:
      - RUBY: ["3.2", "3.3"]
  dependencies: ["compile 1/2"]
deploy:
  stage: test
  script: [deploy]
  rules:
    - if: $DEPLOY == "yes"
      when: manual
    - when: never
release:
  stage: test
  script: [release]
  rules:
    - if: $RELEASE
      variables: { CHANNEL: stable }
"#;

both_backends! {
    async fn keywords_shape_the_jobs(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type", "tag_list": "shared" })).await;
        let create = |variables: serde_json::Value| {
            app.admin(Method::POST, &format!("/api/v4/projects/{project}/pipeline"))
                .json(&json!({ "ref": "main", "ci_config": KEYWORDS, "variables": variables }))
        };
        // Pipeline variables reach rules: DEPLOY=yes makes deploy manual, RELEASE adds release.
        let reply = app.send(create(json!([{ "key": "DEPLOY", "value": "yes" }, { "key": "RELEASE", "value": "1" }]))).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let pipeline = reply.json()["id"].as_i64().expect("id");
        assert_eq!(
            app.job_statuses(project, pipeline).await,
            statuses(&[
                ("compile 1/2", "pending"), ("compile 2/2", "pending"), ("lint", "pending"),
                ("unit: [3.2]", "created"), ("unit: [3.3]", "created"),
                ("deploy", "created"), ("release", "created"),
            ])
        );
        // Without the variables, the rules leave deploy and release out.
        let reply = app.send(create(json!([]))).await;
        let other = reply.json()["id"].as_i64().expect("id");
        let names: Vec<String> = app.job_statuses(project, other).await.into_iter().map(|(n, _)| n).collect();
        assert!(!names.contains(&"deploy".to_string()) && !names.contains(&"release".to_string()), "{names:?}");
        app.send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/pipelines/{other}/cancel"))).await;

        let mut finished = Vec::new();
        for _ in 0..3 {
            let job = app.take_job(&runner).await;
            let var = |key: &str| job["variables"].as_array().and_then(|v| v.iter().find(|v| v["key"] == key)).map(|v| v["value"].clone());
            let name = job["job_info"]["name"].as_str().unwrap_or_default().to_string();
            assert_eq!(job["steps"][0]["script"][0], "echo default", "default before_script on {name}");
            if name.starts_with("compile") {
                assert_eq!(job["image"]["name"], "alpine:3");
                assert_eq!(var("FROM_TEMPLATE"), Some(json!("t")));
                assert_eq!(var("CI_NODE_TOTAL"), Some(json!("2")));
            }
            assert_eq!(var("DEPLOY"), Some(json!("yes")), "pipeline variables win over the file's");
            app.update_job(&job, json!({ "state": "success" })).await;
            finished.push((name, job["id"].clone()));
        }
        let compile_1 = finished.iter().find(|(n, _)| n == "compile 1/2").map(|(_, id)| id.clone()).expect("compile 1/2 ran");
        let mut seen = Vec::new();
        for _ in 0..3 {
            let job = app.take_job(&runner).await;
            let name = job["job_info"]["name"].as_str().unwrap_or_default().to_string();
            if name.starts_with("unit") {
                let deps: Vec<serde_json::Value> = job["dependencies"].as_array().cloned().unwrap_or_default();
                assert_eq!(deps.len(), 1, "{deps:?}");
                assert_eq!((deps[0]["id"].clone(), deps[0]["name"].clone()), (compile_1.clone(), json!("compile 1/2")));
            }
            if name == "release" {
                let channel = job["variables"].as_array().and_then(|v| v.iter().find(|v| v["key"] == "CHANNEL")).map(|v| v["value"].clone());
                assert_eq!(channel, Some(json!("stable")), "rule variables");
            }
            seen.push(name);
            app.update_job(&job, json!({ "state": "success" })).await;
        }
        seen.sort();
        assert_eq!(seen, vec!["release", "unit: [3.2]", "unit: [3.3]"]);
        assert_eq!(app.job_statuses(project, pipeline).await.iter().find(|(n, _)| n == "deploy").map(|(_, s)| s.as_str()), Some("manual"));
        assert_eq!(app.pipeline_status(project, pipeline).await, "manual");

        // workflow:rules refuse pipelines from other sources.
        let refused = KEYWORDS.replace("\"api\"", "\"web\"");
        let reply = app.create_pipeline(project, "main", &refused).await;
        reply.assert(400, json!({ "message": { "base": ["Pipeline filtered out by workflow rules."] } }));
    }
}

both_backends! {
    // `inputs` given when the pipeline is created fill the configuration's `spec:inputs`
    // header (GitLab 17.10+), typed as JSON gives them; GitLab's words for what does not fit.
    async fn pipeline_inputs_fill_the_spec_header(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let yaml = "spec:\n  inputs:\n    target:\n      options: [staging, production]\n    replicas:\n      type: number\n      default: 1\n    canary:\n      type: boolean\n      default: false\n---\n\
                    deploy-$[[ inputs.target ]]:\n  script: [deploy]\n  variables:\n    REPLICAS: $[[ inputs.replicas ]]\n    TARGET: $[[ inputs.target ]]\n\
                    canary:\n  script: [canary]\n  rules:\n    - if: '\"$[[ inputs.canary ]]\" == \"true\"'\n";
        let create = |body: Value| app.send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/pipeline")).json(&body));
        let reply = create(json!({ "ref": "main", "ci_config": yaml, "inputs": { "target": "production", "replicas": 3, "canary": true } })).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let id = reply.json()["id"].as_i64().expect("id");
        let mut names: Vec<String> = app.job_statuses(project, id).await.into_iter().map(|(n, _)| n).collect();
        names.sort();
        assert_eq!(names, ["canary", "deploy-production"]);
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let job = loop {
            let job = app.take_job(&runner).await;
            if job["job_info"]["name"] == "deploy-production" {
                break job;
            }
        };
        let var = |key: &str| job["variables"].as_array().and_then(|v| v.iter().find(|v| v["key"] == key)).map(|v| v["value"].clone());
        assert_eq!((var("REPLICAS"), var("TARGET")), (Some(json!("3")), Some(json!("production"))));

        for (body, message) in [
            (json!({ "ref": "main", "ci_config": yaml, "inputs": { "target": "production", "colour": "blue" } }), "unknown input arguments: colour"),
            (json!({ "ref": "main", "ci_config": yaml }), "`target` input: required value has not been provided"),
            (json!({ "ref": "main", "ci_config": yaml, "inputs": { "target": "production", "replicas": "many" } }), "`replicas` input: provided value is not a number"),
            (json!({ "ref": "main", "ci_config": "a: { script: [x] }\n", "inputs": { "target": "production" } }), "Given inputs not defined in the `spec` section of the included configuration file"),
        ] {
            create(body).await.assert(400, json!({ "message": { "base": [message] } }));
        }
        create(json!({ "ref": "main", "ci_config": yaml, "inputs": ["target"] }))
            .await
            .assert(400, json!({ "error": "inputs is invalid" }));
    }
}

both_backends! {
    // A pipeline is made from the project as it is now: its read is kept a short while
    // between pipelines and polls, and a change drops it at once.
    async fn a_pipeline_is_made_with_the_project_s_settings_just_changed(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        app.pipeline(project, "one:\n  script: [x]\n").await;
        let job = app.take_job(&runner).await;
        assert_eq!(job["runner_info"]["timeout"], 3600);
        let reply = app.send(app.admin(Method::PUT, &format!("/api/v4/projects/{project}")).json(&json!({ "build_timeout": 900 }))).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        app.pipeline(project, "two:\n  script: [x]\n").await;
        let job = app.take_job(&runner).await;
        assert_eq!((job["job_info"]["name"].as_str(), job["runner_info"]["timeout"].as_i64()), (Some("two"), Some(900)));
    }
}
