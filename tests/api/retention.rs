//! Deleting pipelines: `DELETE /projects/:id/pipelines/:pipeline_id`, and automatic
//! cleanup past a retention (the project's `ci_delete_pipelines_in_seconds`, else the
//! instance's `RUNWAY_DELETE_PIPELINES_AFTER`).

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::e2e::{commit_branch, git};
use crate::helpers::{both_backends, TestApp};

/// The regular files under `dir` (none if it does not exist).
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

impl TestApp {
    async fn pipeline_ids(&self, project: i64) -> Vec<i64> {
        let listed = self
            .send(self.admin(
                Method::GET,
                &format!("/api/v4/projects/{project}/pipelines"),
            ))
            .await
            .json();
        let mut ids: Vec<i64> = listed
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["id"].as_i64())
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Moves the pipelines' creation `days` back.
    async fn age_pipelines(&self, ids: &[i64], days: i64) {
        let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
        let at = chrono::Utc::now().naive_utc() - chrono::TimeDelta::days(days);
        self.execute(&format!(
            "UPDATE pipelines SET created_at = '{}' WHERE id IN ({})",
            at.format("%Y-%m-%d %H:%M:%S"),
            ids.join(",")
        ))
        .await;
    }

    /// Runs the job to success: a log line, an artifact, the final PUT.
    async fn run_with_log_and_artifact(&self, job: &Value) {
        assert_eq!(self.patch_trace(job, 0, b"hello\n").await.status, 202);
        let archive = crate::artifacts::zip_of(&[("out/a.txt", b"a")]);
        let reply = self
            .upload(
                job,
                "artifact_format=zip&artifact_type=archive",
                "artifacts.zip",
                archive,
                false,
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        assert_eq!(
            self.update_job(job, json!({ "state": "success" }))
                .await
                .status,
            200
        );
    }
}

both_backends! {
    // A pipeline goes with its jobs, their logs and artifacts; one still running is
    // canceled first, and its runner then finds the job gone. Other pipelines stay.
    async fn deleting_a_pipeline_takes_its_jobs_logs_and_artifacts(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let yaml = "build: { stage: build, script: x, artifacts: { paths: [out] } }\ntest: { stage: test, script: y }\n";
        let doomed = app.pipeline(project, yaml).await;
        let build = app.take_job(&runner).await;
        app.run_with_log_and_artifact(&build).await;
        let test = app.take_job(&runner).await;
        assert_eq!(app.patch_trace(&test, 0, b"running\n").await.status, 202);
        let kept = app.pipeline(project, "other: { script: z }\n").await;
        let artifacts_dir = app.data_dir().join("artifacts");
        assert!(!files_under(&artifacts_dir).is_empty(), "the build's artifact is stored");

        let path = format!("/api/v4/projects/{project}/pipelines/{doomed}");
        let reply = app.send(app.admin(Method::DELETE, &path)).await;
        assert_eq!((reply.status, reply.text.as_str()), (204, ""));
        app.send(app.admin(Method::GET, &path)).await
            .assert(404, json!({ "message": "404 Pipeline Not Found" }));
        for job in [&build, &test] {
            let job_path = format!("/api/v4/projects/{project}/jobs/{}", job["id"]);
            app.send(app.admin(Method::GET, &job_path)).await
                .assert(404, json!({ "message": "404 Job Not Found" }));
        }
        // The running job's runner: its log and its final state are refused.
        assert_eq!(app.patch_trace(&test, 8, b"more\n").await.status, 403);
        assert_eq!(app.update_job(&test, json!({ "state": "success" })).await.status, 403);
        assert_eq!(files_under(&artifacts_dir), Vec::<std::path::PathBuf>::new());
        assert_eq!(files_under(&app.data_dir().join("logs")), Vec::<std::path::PathBuf>::new());
        assert_eq!(app.pipeline_ids(project).await, vec![kept]);
        // Gone: a second delete finds nothing.
        app.send(app.admin(Method::DELETE, &path)).await
            .assert(404, json!({ "message": "404 Pipeline Not Found" }));
        let events = app.send(app.admin(Method::GET, "/api/v4/audit_events")).await.json();
        let deleted = events.as_array().into_iter().flatten()
            .filter(|e| e["event_name"] == "pipeline_deleted" && e["entity_id"] == doomed)
            .count();
        assert_eq!(deleted, 1, "{events}");
    }

    // A project's `ci_delete_pipelines_in_seconds`: a day to a year. Past it, settled
    // pipelines go on the reaper's pass, oldest first; one still running stays until it
    // ends; newer ones and other projects' stay.
    async fn pipelines_past_the_projects_retention_are_deleted(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let other = app.create_project(json!({ "name": "other" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let settings = format!("/api/v4/projects/{project}");
        for refused in [json!(3600), json!(366 * 86_400)] {
            app.send(app.admin(Method::PUT, &settings).json(&json!({ "ci_delete_pipelines_in_seconds": refused }))).await
                .assert(400, json!({ "message": { "ci_delete_pipelines_in_seconds": ["must be between 1 day and 1 year"] } }));
        }
        let shown = app.send(app.admin(Method::GET, &settings)).await.json();
        assert_eq!(shown["ci_delete_pipelines_in_seconds"], Value::Null);
        let reply = app.send(app.admin(Method::PUT, &settings).json(&json!({ "ci_delete_pipelines_in_seconds": 86_400 }))).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.json()["ci_delete_pipelines_in_seconds"], 86_400);

        let old = app.pipeline(project, "a: { script: x, artifacts: { paths: [out] } }\n").await;
        let job = app.take_job(&runner).await;
        app.run_with_log_and_artifact(&job).await;
        let old_running = app.pipeline(project, "a: { script: x }\n").await;
        let running = app.take_job(&runner).await;
        let new = app.pipeline(project, "a: { script: x }\n").await;
        let elsewhere = app.pipeline(other, "a: { script: x }\n").await;
        app.age_pipelines(&[old, old_running, elsewhere], 2).await;

        let deleted = runway::service::retention::delete_old_pipelines(&app.state).await.expect("pass");
        assert_eq!(deleted, 1);
        assert_eq!(app.pipeline_ids(project).await, vec![old_running, new]);
        assert_eq!(app.pipeline_ids(other).await, vec![elsewhere]);
        assert_eq!(files_under(&app.data_dir().join("artifacts")), Vec::<std::path::PathBuf>::new());
        let log = app.admin(Method::GET, &format!("/api/v4/projects/{project}/jobs/{}/trace", job["id"]))
            .send().await.expect("trace");
        assert_eq!(log.status(), 404);

        // The running one ends; the next pass takes it. Nothing is left to take after.
        assert_eq!(app.update_job(&running, json!({ "state": "failed", "failure_reason": "script_failure" })).await.status, 200);
        let deleted = runway::service::retention::delete_old_pipelines(&app.state).await.expect("pass");
        assert_eq!(deleted, 1);
        assert_eq!(app.pipeline_ids(project).await, vec![new]);
        let deleted = runway::service::retention::delete_old_pipelines(&app.state).await.expect("pass");
        assert_eq!(deleted, 0);

        // Cleared: kept again.
        let reply = app.send(app.admin(Method::PUT, &settings).json(&json!({ "ci_delete_pipelines_in_seconds": null }))).await;
        assert_eq!(reply.json()["ci_delete_pipelines_in_seconds"], Value::Null);
        app.age_pipelines(&[new], 400).await;
        let deleted = runway::service::retention::delete_old_pipelines(&app.state).await.expect("pass");
        assert_eq!(deleted, 0);
    }

    // The instance's retention covers projects without their own; a project's own
    // setting wins over it. A parent pipeline takes its child pipelines along.
    async fn the_instance_retention_applies_where_a_project_sets_none(backend) {
        let app = TestApp::builder(backend).delete_pipelines_after("2 days").spawn().await;
        let repo = tempfile::tempdir().expect("tempdir");
        commit_branch(repo.path(), "main", "child_fire:\n  trigger: { include: [ { local: child.yml } ] }\n");
        std::fs::write(repo.path().join("child.yml"), "child_job: { script: x }\n").expect("write");
        git(repo.path(), &["add", "."]);
        git(repo.path(), &["commit", "-q", "-m", "child"]);
        let plain = app.create_project(json!({ "name": "plain", "repository_url": repo.path().display().to_string() })).await;
        let own = app.create_project(json!({ "name": "own", "ci_delete_pipelines_in_seconds": 365 * 86_400 })).await;
        let created = app.api(Method::POST, &format!("/projects/{plain}/pipeline"), Some(json!({ "ref": "main" }))).await;
        assert_eq!(created.status, 201, "{}", created.text);
        let parent = created.json()["id"].as_i64().expect("id");
        assert_eq!(app.pipeline_status(plain, parent).await, "success");
        let children = app.api(Method::GET, &format!("/projects/{plain}/pipelines?source=parent_pipeline"), None).await.json();
        assert_eq!(children.as_array().map(Vec::len), Some(1), "{children}");
        let kept = app.pipeline(own, "a: { script: x }\n").await;
        app.execute(&format!("UPDATE pipelines SET status = 'success', finished_at = created_at WHERE id = {kept}")).await;
        app.age_pipelines(&[parent, kept], 3).await;

        let deleted = runway::service::retention::delete_old_pipelines(&app.state).await.expect("pass");
        assert_eq!(deleted, 2, "the parent and its child");
        assert_eq!(app.pipeline_ids(plain).await, Vec::<i64>::new());
        let children = app.api(Method::GET, &format!("/projects/{plain}/pipelines?source=parent_pipeline"), None).await.json();
        assert_eq!(children, json!([]));
        assert_eq!(app.pipeline_ids(own).await, vec![kept]);
    }
}
