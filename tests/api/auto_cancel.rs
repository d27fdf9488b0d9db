//! `workflow:auto_cancel`: a newer pipeline on the same ref cancels older ones as each
//! one's `on_new_commit` says (`Ci::PipelineCreation::CancelRedundantPipelinesService`),
//! and `on_job_failure: all` cancels the rest of a pipeline when a job fails.

use serde_json::json;

use crate::helpers::{both_backends, statuses, TestApp};

/// The sorted `(name, status)` of a pipeline's jobs.
async fn sorted(app: &TestApp, project: i64, pipeline: i64) -> Vec<(String, String)> {
    let mut jobs = app.job_statuses(project, pipeline).await;
    jobs.sort();
    jobs
}

both_backends! {
    // Two jobs failing at once, each to cancel the rest of the pipeline, or one failing as
    // the other succeeds: both runners are answered; each job ends as its runner said or,
    // when the other's cancel reached it first, canceled (its runner cancels gracefully);
    // the rest is canceled and the pipeline fails. On PostgreSQL the two ends may
    // deadlock (each holds its own job's row; the failure waits for the other's row to
    // cancel it, the other for that one's row or for the pipeline's), and one `PUT`
    // failed with 500; the end PostgreSQL aborts is now run again.
    async fn two_jobs_ending_at_once_as_one_cancels_the_rest_are_both_answered(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let yaml = "workflow:\n  auto_cancel:\n    on_job_failure: all\n\
                    a: { stage: build, script: x }\nb: { stage: build, script: x }\n\
                    c: { stage: test, script: x }\nd: { stage: test, script: x }\n";
        for round in 0..20 {
            let pipeline = app.pipeline(project, yaml).await;
            let (first, second) = (app.take_job(&runner).await, app.take_job(&runner).await);
            let failed = json!({ "state": "failed", "failure_reason": "script_failure", "exit_code": 1 });
            // Every other round the first job succeeds as the second fails.
            let state = if round % 2 == 0 { failed.clone() } else { json!({ "state": "success" }) };
            let (one, other) = tokio::join!(app.update_job(&first, state), app.update_job(&second, failed.clone()));
            assert_eq!((one.status, other.status), (200, 200), "round {round}: {} / {}", one.text, other.text);
            let ends = [one.header("job-status"), other.header("job-status")];
            let first_ends = if round % 2 == 0 { Some("failed") } else { Some("success") };
            assert!(ends[0] == first_ends || ends[0] == Some("canceled"), "round {round}: {ends:?}");
            assert!(matches!(ends[1], Some("failed" | "canceled")), "round {round}: {ends:?}");
            assert!(ends.contains(&Some("failed")), "one failure ends its job failed, round {round}: {ends:?}");
            let jobs = sorted(&app, project, pipeline).await;
            assert_eq!(jobs[2..], statuses(&[("c", "canceled"), ("d", "canceled")])[..], "round {round}");
            assert_eq!(app.pipeline_status(project, pipeline).await, "failed", "round {round}");
        }
    }

    // A pipeline canceled by an admin as one of its jobs fails, which cancels the rest
    // too: both are answered. On PostgreSQL the cancel takes the jobs' rows in turn and
    // the failure holds its own and waits for the others', so they may deadlock; the one
    // PostgreSQL aborts is run again.
    async fn a_cancel_and_a_failure_canceling_the_rest_at_once_are_both_answered(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let yaml = "workflow:\n  auto_cancel:\n    on_job_failure: all\n\
                    a: { stage: build, script: x }\nb: { stage: build, script: x }\n\
                    c: { stage: test, script: x }\n";
        for round in 0..12 {
            let pipeline = app.pipeline(project, yaml).await;
            let (_first, second) = (app.take_job(&runner).await, app.take_job(&runner).await);
            let failed = json!({ "state": "failed", "failure_reason": "script_failure", "exit_code": 1 });
            let cancel = app.admin(reqwest::Method::POST, &format!("/api/v4/projects/{project}/pipelines/{pipeline}/cancel"));
            let (canceled, ended) = tokio::join!(app.send(cancel), app.update_job(&second, failed));
            assert_eq!((canceled.status, ended.status), (201, 200), "round {round}: {} / {}", canceled.text, ended.text);
            assert!(matches!(ended.header("job-status"), Some("failed" | "canceled")), "round {round}");
            let jobs = sorted(&app, project, pipeline).await;
            assert_eq!(jobs[2], ("c".to_string(), "canceled".to_string()), "round {round}");
        }
    }

    async fn a_failed_job_cancels_the_rest_with_on_job_failure_all(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let yaml = "workflow:\n  auto_cancel:\n    on_job_failure: all\n\
                    stages: [test, deploy]\n\
                    lint: { stage: test, script: [x], allow_failure: true }\n\
                    unit: { stage: test, script: [x] }\n\
                    e2e: { stage: test, script: [x] }\n\
                    deploy: { stage: deploy, script: [x] }\n\
                    gate: { stage: test, script: [x], when: manual }\n";
        let pipeline = app.pipeline(project, yaml).await;
        // A failure that is allowed cancels nothing.
        let lint = app.take_job(&runner).await;
        assert_eq!(lint["job_info"]["name"], "lint");
        assert_eq!(app.update_job(&lint, json!({ "state": "failed", "failure_reason": "script_failure" })).await.status, 200);
        assert_eq!(
            sorted(&app, project, pipeline).await,
            statuses(&[("deploy", "created"), ("e2e", "pending"), ("gate", "manual"), ("lint", "failed"), ("unit", "pending")])
        );
        let unit = app.take_job(&runner).await;
        assert_eq!(unit["job_info"]["name"], "unit");
        app.update_job(&unit, json!({ "state": "failed", "failure_reason": "script_failure" })).await;
        assert_eq!(
            sorted(&app, project, pipeline).await,
            statuses(&[("deploy", "canceled"), ("e2e", "canceled"), ("gate", "manual"), ("lint", "failed"), ("unit", "failed")]),
            "the rest is canceled; a manual job is not cancelable"
        );
        // GitLab's composite status: a failed job makes the pipeline failed.
        assert_eq!(app.pipeline_status(project, pipeline).await, "failed");

        // Without the setting, a failure leaves the others be.
        let pipeline = app.pipeline(project, "a: { script: [x] }\nb: { script: [x] }\n").await;
        let a = app.take_job(&runner).await;
        app.update_job(&a, json!({ "state": "failed", "failure_reason": "script_failure" })).await;
        assert_eq!(sorted(&app, project, pipeline).await, statuses(&[("a", "failed"), ("b", "pending")]));
    }
}

both_backends! {
    async fn a_newer_pipeline_cancels_older_ones_as_each_says(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let other = |n: u32| format!("newer{n}: {{ script: [x] }}\n");

        // `conservative` (the default): nothing started yet, so the whole pipeline goes.
        let waiting = app.pipeline(project, "a: { script: [x] }\nb: { script: [x], when: manual }\n").await;
        let newer = app.pipeline(project, &other(1)).await;
        assert_eq!(sorted(&app, project, waiting).await, statuses(&[("a", "canceled"), ("b", "manual")]));
        assert_eq!(sorted(&app, project, newer).await, statuses(&[("newer1", "pending")]));
        // The same commit again (the same configuration here) is not redundant.
        let again = app.pipeline(project, &other(1)).await;
        assert_eq!(sorted(&app, project, newer).await, statuses(&[("newer1", "pending")]));
        for _ in 0..2 {
            let job = app.take_job(&runner).await;
            app.update_job(&job, json!({ "state": "success" })).await;
        }
        assert_eq!(app.pipeline_status(project, again).await, "success");

        // A started job that is not interruptible keeps the pipeline.
        let started = app.pipeline(project, "stages: [a, b]\none: { stage: a, script: [x] }\ntwo: { stage: b, script: [x] }\n").await;
        let one = app.take_job(&runner).await;
        app.pipeline(project, &other(2)).await;
        assert_eq!(sorted(&app, project, started).await, statuses(&[("one", "running"), ("two", "created")]));
        app.update_job(&one, json!({ "state": "success" })).await;
        // Interruptible started jobs do not: the pipeline is canceled, its running job
        // through `canceling` (this runner cancels gracefully).
        let interruptible = app.pipeline(project, "stages: [a, b]\none: { stage: a, script: [x], interruptible: true }\ntwo: { stage: b, script: [x] }\n").await;
        let mut taken = app.take_job(&runner).await;
        while taken["job_info"]["name"] != "one" {
            app.update_job(&taken, json!({ "state": "success" })).await;
            taken = app.take_job(&runner).await;
        }
        app.pipeline(project, &other(3)).await;
        assert_eq!(sorted(&app, project, interruptible).await, statuses(&[("one", "canceling"), ("two", "canceled")]));

        // `interruptible`: only the interruptible jobs go.
        let partial = app.pipeline(project, "workflow: { auto_cancel: { on_new_commit: interruptible } }\ni: { script: [x], interruptible: true }\nn: { script: [x] }\n").await;
        app.pipeline(project, &other(4)).await;
        assert_eq!(sorted(&app, project, partial).await, statuses(&[("i", "canceled"), ("n", "pending")]));
        // `none`, set by the workflow rule that matched: nothing goes.
        let kept = app.pipeline(project, "workflow:\n  auto_cancel: { on_new_commit: interruptible }\n  rules:\n    - if: $CI_COMMIT_BRANCH\n      auto_cancel: { on_new_commit: none }\nk: { script: [x], interruptible: true }\n").await;
        app.pipeline(project, &other(5)).await;
        assert_eq!(sorted(&app, project, kept).await, statuses(&[("k", "pending")]));
        // Another ref is another line of work.
        let elsewhere = app.create_pipeline(project, "feature", "f: { script: [x] }\n").await;
        assert_eq!(elsewhere.status, 201, "{}", elsewhere.text);
        app.pipeline(project, &other(6)).await;
        let id = elsewhere.json()["id"].as_i64().expect("id");
        assert_eq!(sorted(&app, project, id).await, statuses(&[("f", "pending")]));
    }
}

both_backends! {
    async fn a_pipeline_with_many_started_interruptible_jobs_is_kept_by_the_one_that_is_not(backend) {
        // `conservative` keeps a pipeline one of whose started jobs is not interruptible,
        // however many interruptible ones started before it (the redundant pipelines are
        // chosen in one statement, `Pipeline::redundant_on_ref`); it cancels one whose
        // started jobs all are.
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        // `n` in the later stage (started at once by `needs: []`), so the nine come first
        // by stage and by id.
        let kept = app.pipeline(project, "stages: [a, b]\ni: { stage: a, script: [x], interruptible: true, parallel: 9 }\nn: { stage: b, needs: [], script: [x] }\n").await;
        for _ in 0..10 {
            app.take_job(&runner).await;
        }
        app.pipeline(project, "newer1: { script: [x] }\n").await;
        assert_eq!(statuses_of(&app, project, kept).await, vec!["running"; 10], "kept");

        let canceled = app.pipeline(project, "j: { script: [x], interruptible: true, parallel: 9 }\n").await;
        for _ in 0..9 {
            app.take_job(&runner).await;
        }
        app.pipeline(project, "newer2: { script: [x] }\n").await;
        assert_eq!(statuses_of(&app, project, canceled).await, vec!["canceling"; 9], "canceled");
    }
}

async fn statuses_of(app: &TestApp, project: i64, pipeline: i64) -> Vec<String> {
    sorted(app, project, pipeline)
        .await
        .into_iter()
        .map(|(_, status)| status)
        .collect()
}

both_backends! {
    async fn auto_cancel_is_checked_as_gitlab_checks_it(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        for (yaml, message) in [
            ("workflow: { auto_cancel: { on_new_commit: always } }\na: { script: [x] }\n",
             "workflow:auto_cancel on new commit must be one of: conservative, interruptible, none"),
            ("workflow: { auto_cancel: { on_job_failure: some } }\na: { script: [x] }\n",
             "workflow:auto_cancel on job failure must be one of: none, all"),
            ("workflow: { rules: [ { if: $CI, auto_cancel: { later: 1 } } ] }\na: { script: [x] }\n",
             "workflow:rules:rule:auto_cancel config contains unknown keys: later"),
        ] {
            app.create_pipeline(project, "main", yaml).await.assert(400, json!({ "message": { "base": [message] } }));
        }
    }
}
