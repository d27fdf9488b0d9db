//! CI minutes: finished jobs accounted per project and runner, and a project over its
//! monthly quota gets no jobs from instance runners (`ci_quota_exceeded`).

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{both_backends, TestApp};

const ONE_JOB: &str = "work:\n  script: [make]\n";

/// Pretends `job` started `minutes` ago, so its duration is known without waiting.
async fn started_minutes_ago(app: &TestApp, job: &Value, minutes: i64) {
    let at = chrono::Utc::now().naive_utc() - chrono::TimeDelta::minutes(minutes);
    let sql = format!(
        "UPDATE jobs SET started_at = '{}' WHERE id = {}",
        at.format("%Y-%m-%d %H:%M:%S%.6f"),
        job["id"]
    );
    app.execute(&sql).await;
}

/// Takes the next job with `runner_token`, makes it `minutes` long, and finishes it.
async fn run_job(app: &TestApp, runner_token: &str, minutes: i64, state: &str) -> Value {
    let job = app.take_job(runner_token).await;
    started_minutes_ago(app, &job, minutes).await;
    let reply = app
        .update_job(
            &job,
            json!({ "state": state, "failure_reason": "script_failure" }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    job
}

async fn usage(app: &TestApp, project: i64) -> Value {
    let reply = app
        .send(app.admin(
            Method::GET,
            &format!("/api/v4/projects/{project}/ci_minutes_usage"),
        ))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()
}

fn approx(value: &Value, expected: f64) {
    let got = value.as_f64().unwrap_or(f64::NAN);
    assert!(
        // The test's own requests take time on top of the pretended start (seconds under
        // load): a small relative slack.
        (got - expected).abs() < 0.05 + expected.abs() * 0.002,
        "{got} is not about {expected}"
    );
}

both_backends! {
    async fn finished_jobs_are_accounted_per_project_and_runner(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "metered" })).await;
        let other = app.create_project(json!({ "name": "other" })).await;
        let (shared_id, shared) = app.create_runner(json!({ "runner_type": "instance_type", "run_untagged": true })).await;
        let (own_id, own) = app.create_runner(json!({ "runner_type": "project_type", "project_id": project, "tag_list": ["own"] })).await;

        app.pipeline(project, ONE_JOB).await;
        run_job(&app, &shared, 30, "success").await;
        app.pipeline(project, ONE_JOB).await;
        run_job(&app, &shared, 12, "failed").await;
        app.pipeline(project, "own:\n  tags: [own]\n  script: [make]\n").await;
        run_job(&app, &own, 45, "success").await;
        app.pipeline(other, ONE_JOB).await;
        run_job(&app, &shared, 5, "success").await;
        // A job canceled while running counts too; one canceled before it ran does not.
        app.pipeline(project, ONE_JOB).await;
        let canceled = app.take_job(&shared).await;
        started_minutes_ago(&app, &canceled, 3).await;
        let path = format!("/api/v4/projects/{project}/jobs/{}/cancel", canceled["id"]);
        assert_eq!(app.send(app.admin(Method::POST, &path)).await.status, 201);
        // The runner cancels gracefully: the job ends when it reports back.
        assert_eq!(app.update_job(&canceled, json!({ "state": "failed" })).await.status, 200);
        assert_eq!(app.runner_job(canceled["id"].as_i64().unwrap_or_default()).await.status.to_string(), "canceled");
        let pending = app.pipeline(project, ONE_JOB).await;
        let path = format!("/api/v4/projects/{project}/pipelines/{pending}/cancel");
        assert_eq!(app.send(app.admin(Method::POST, &path)).await.status, 201);

        let months = usage(&app, project).await;
        assert_eq!(months.as_array().map(Vec::len), Some(1), "{months}");
        let month = &months[0];
        let first = chrono::Utc::now().date_naive().format("%Y-%m-01").to_string();
        assert_eq!(month["month_iso8601"], first);
        assert_eq!(month["jobs"], 4);
        // Instance runner: 30 + 12 + 3 minutes at cost factor 1; the project's own: free.
        approx(&month["minutes"], 45.0);
        approx(&month["shared_runners_duration"], 45.0 * 60.0);
        approx(&month["duration"], 90.0 * 60.0);
        let runners = month["runners"].as_array().expect("runners");
        assert_eq!(runners.len(), 2, "{runners:?}");
        assert_eq!(runners[0]["runner_id"], shared_id);
        assert_eq!(runners[0]["runner_type"], "instance_type");
        assert_eq!(runners[0]["jobs"], 3);
        approx(&runners[0]["minutes"], 45.0);
        assert_eq!(runners[1]["runner_id"], own_id);
        assert_eq!(runners[1]["runner_type"], "project_type");
        assert_eq!(runners[1]["jobs"], 1);
        approx(&runners[1]["duration"], 45.0 * 60.0);
        approx(&runners[1]["minutes"], 0.0);
        let months = usage(&app, other).await;
        assert_eq!(months[0]["jobs"], 1);
        approx(&months[0]["minutes"], 5.0);
        // A project with no finished job has no months; an unknown one is a 404.
        let empty = app.create_project(json!({ "name": "idle" })).await;
        assert_eq!(usage(&app, empty).await, json!([]));
        let reply = app.send(app.admin(Method::GET, "/api/v4/projects/999/ci_minutes_usage")).await;
        reply.assert(404, json!({ "message": "404 Project Not Found" }));
    }

    async fn a_project_over_its_quota_gets_no_instance_runner(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "capped", "shared_runners_minutes_limit": 60 })).await;
        let (_, shared) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        app.pipeline(project, ONE_JOB).await;
        run_job(&app, &shared, 59, "success").await;
        // Under the limit still: the next job runs, and its 2 minutes pass the limit.
        app.pipeline(project, ONE_JOB).await;
        run_job(&app, &shared, 2, "success").await;

        // Over it: the instance runner gets nothing, and the job fails as GitLab fails it.
        let refused = app.pipeline(project, ONE_JOB).await;
        let reply = app.request_job(&shared).await;
        assert_eq!(reply.status, 204, "{}", reply.text);
        let jobs = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/pipelines/{refused}/jobs"))).await.json();
        assert_eq!(jobs[0]["status"], "failed", "{jobs}");
        assert_eq!(jobs[0]["failure_reason"], "ci_quota_exceeded");
        assert_eq!(app.pipeline_status(project, refused).await, "failed");
        // Other projects are not held back.
        let free = app.create_project(json!({ "name": "free" })).await;
        app.pipeline(free, ONE_JOB).await;
        let job = app.take_job(&shared).await;
        assert_eq!(job["job_info"]["project_id"], free);
        assert_eq!(app.update_job(&job, json!({ "state": "success" })).await.status, 200);

        // With a runner of its own, the job waits for that runner instead of failing.
        let (_, own) = app.create_runner(json!({ "runner_type": "project_type", "project_id": project })).await;
        let waiting = app.pipeline(project, ONE_JOB).await;
        assert_eq!(app.request_job(&shared).await.status, 204);
        assert_eq!(app.job_statuses(project, waiting).await, vec![("work".to_string(), "pending".to_string())]);
        let job = app.take_job(&own).await;
        assert_eq!(job["job_info"]["project_id"], project);
        assert_eq!(app.update_job(&job, json!({ "state": "success" })).await.status, 200);

        // Raising the limit (0 is no limit) lets instance runners take its jobs again.
        let reply = app.send(app.admin(Method::PUT, &format!("/api/v4/projects/{project}")).json(&json!({ "shared_runners_minutes_limit": 0 }))).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.json()["shared_runners_minutes_limit"], 0);
        app.pipeline(project, ONE_JOB).await;
        let job = app.take_job(&shared).await;
        assert_eq!(job["job_info"]["project_id"], project);
    }

    async fn quota_params_are_checked(backend) {
        let app = TestApp::spawn(backend).await;
        let reply = app.send(app.admin(Method::POST, "/api/v4/projects").json(&json!({ "name": "neg", "shared_runners_minutes_limit": -1 }))).await;
        reply.assert(400, json!({ "message": { "shared_runners_minutes_limit": ["must be greater than or equal to 0"] } }));
        let reply = app.send(app.admin(Method::POST, "/api/v4/projects").json(&json!({ "name": "txt", "shared_runners_minutes_limit": "lots" }))).await;
        reply.assert(400, json!({ "error": "shared_runners_minutes_limit is invalid" }));
        let project = app.create_project(json!({ "name": "p" })).await;
        let reply = app.send(app.admin(Method::PUT, &format!("/api/v4/projects/{project}")).json(&json!({ "build_timeout": 5 }))).await;
        reply.assert(400, json!({ "message": { "build_timeout": ["needs to be between 10 minutes and 1 month"] } }));
        let reply = app.send(app.admin(Method::PUT, "/api/v4/projects/999").json(&json!({ "build_timeout": 900 }))).await;
        reply.assert(404, json!({ "message": "404 Project Not Found" }));
        // Nothing changed by the refused calls; a good one answers the project.
        let reply = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}"))).await;
        assert_eq!(reply.json()["build_timeout"], 3600);
        assert_eq!(reply.json()["shared_runners_minutes_limit"], Value::Null);
        let reply = app.send(app.admin(Method::PUT, &format!("/api/v4/projects/{project}")).json(&json!({ "build_timeout": 900, "description": "d" }))).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.json()["build_timeout"], 900);
        assert_eq!(reply.json()["description"], "d");
        assert_eq!(reply.json()["name"], "p");
    }
}
