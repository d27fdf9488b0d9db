//! Pipeline schedules (issue 23): GitLab's API and validations, schedule variables, `play`
//! (source `schedule`, the schedule's variables reach the job). The timer itself, with two
//! instances and a restart, is in tests/api/restart.rs.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{both_backends, TestApp};

both_backends! {
    async fn pipeline_schedules_as_gitlabs_api(backend) {
        let app = TestApp::spawn(backend).await;
        let repo = tempfile::tempdir().expect("tempdir");
        crate::helpers::e2e::commit_branch(repo.path(), "main",
            "nightly:\n  rules: [ { if: '$CI_PIPELINE_SOURCE == \"schedule\"' } ]\n  script: [ 'echo $SUITE' ]\n");
        let project = app.create_project(json!({ "name": "scheduled", "repository_url": repo.path().display().to_string() })).await;
        let base = format!("/projects/{project}/pipeline_schedules");
        app.api(Method::POST, &base, Some(json!({ "ref": "main" }))).await
            .assert(400, json!({ "error": "description is missing, cron is missing" }));
        app.api(Method::POST, &base, Some(json!({ "description": "x", "ref": "main", "cron": "not a cron" }))).await
            .assert(400, json!({ "message": { "cron": [" is invalid syntax"] } }));
        app.api(Method::POST, &base, Some(json!({ "description": "x", "ref": "main", "cron": "0 2 * * *", "cron_timezone": "Mars/Olympus" }))).await
            .assert(400, json!({ "message": { "cron_timezone": [" is invalid syntax"] } }));
        assert_eq!(app.api(Method::GET, &base, None).await.json(), json!([]), "nothing was made");

        let created = app.api(Method::POST, &base, Some(json!({
            "description": "nightly", "ref": "main", "cron": "0 2 * * *", "cron_timezone": "Europe/Berlin", "active": false
        }))).await;
        assert_eq!(created.status, 201, "{}", created.text);
        let schedule = created.json();
        let id = schedule["id"].as_i64().expect("id");
        assert_eq!(
            (schedule["description"].clone(), schedule["ref"].clone(), schedule["cron"].clone(), schedule["cron_timezone"].clone(), schedule["active"].clone(), schedule["last_pipeline"].clone(), schedule["variables"].clone(), schedule["owner"]["username"].clone()),
            (json!("nightly"), json!("main"), json!("0 2 * * *"), json!("Europe/Berlin"), json!(false), json!(null), json!([]), json!("root"))
        );
        // 02:00 in Berlin in winter is 01:00 UTC (summer: 00:00).
        let next = schedule["next_run_at"].as_str().expect("next_run_at");
        assert!(next.ends_with("T01:00:00.000Z") || next.ends_with("T00:00:00.000Z"), "{next}");
        let inactive = app.api(Method::GET, &format!("{base}?scope=inactive"), None).await.json();
        assert_eq!(inactive.as_array().map(Vec::len), Some(1));
        assert_eq!(app.api(Method::GET, &format!("{base}?scope=active"), None).await.json(), json!([]));

        // Variables: 201, 200, 202 with what was deleted.
        let vars = format!("{base}/{id}/variables");
        app.api(Method::POST, &vars, Some(json!({ "key": "SUITE", "value": "full" }))).await
            .assert(201, json!({ "key": "SUITE", "value": "full", "variable_type": "env_var" }));
        app.api(Method::POST, &vars, Some(json!({ "key": "SUITE", "value": "again" }))).await
            .assert(400, json!({ "message": { "key": ["(SUITE) has already been taken"] } }));
        app.api(Method::POST, &vars, Some(json!({ "key": "EXTRA", "value": "1" }))).await;
        app.api(Method::PUT, &format!("{vars}/SUITE"), Some(json!({ "value": "nightly-suite" }))).await
            .assert(200, json!({ "key": "SUITE", "value": "nightly-suite", "variable_type": "env_var" }));
        app.api(Method::DELETE, &format!("{vars}/EXTRA"), None).await
            .assert(202, json!({ "key": "EXTRA", "value": "1", "variable_type": "env_var" }));
        app.api(Method::DELETE, &format!("{vars}/EXTRA"), None).await
            .assert(404, json!({ "message": "404 Pipeline Schedule Variable Not Found" }));

        // Play: a pipeline with source `schedule` and the schedule's variables.
        app.api(Method::POST, &format!("{base}/{id}/play"), None).await.assert(201, json!({ "message": "201 Created" }));
        let started = loop {
            let listed = app.api(Method::GET, &format!("{base}/{id}/pipelines"), None).await.json();
            if let Some(first) = listed.as_array().and_then(|l| l.first()) {
                break first.clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert_eq!((started["source"].clone(), started["ref"].clone()), (json!("schedule"), json!("main")));
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let job = app.take_job(&runner).await;
        assert_eq!(job["job_info"]["name"], "nightly");
        let suite = job["variables"].as_array().expect("variables").iter().find(|v| v["key"] == "SUITE").cloned();
        assert_eq!(suite.map(|v| v["value"].clone()), Some(json!("nightly-suite")));
        let detail = app.api(Method::GET, &format!("{base}/{id}"), None).await.json();
        assert_eq!((detail["last_pipeline"]["id"].clone(), detail["last_pipeline"]["source"].clone()), (started["id"].clone(), json!("schedule")));
        assert_eq!(detail["variables"], json!([{ "key": "SUITE", "value": "nightly-suite", "variable_type": "env_var" }]));

        // Update and delete.
        let updated = app.api(Method::PUT, &format!("{base}/{id}"), Some(json!({ "cron": "*/5 * * * *", "cron_timezone": "UTC", "active": true }))).await;
        assert_eq!((updated.status, updated.json()["cron"].clone(), updated.json()["active"].clone()), (200, json!("*/5 * * * *"), json!(true)), "{}", updated.text);
        app.api(Method::PUT, &format!("{base}/{id}"), Some(json!({ "cron": "99 * * * *" }))).await
            .assert(400, json!({ "message": { "cron": [" is invalid syntax"] } }));
        assert_eq!(app.api(Method::POST, &format!("{base}/{id}/take_ownership"), None).await.status, 200);
        assert_eq!(app.api(Method::DELETE, &format!("{base}/{id}"), None).await.status, 204);
        app.api(Method::GET, &format!("{base}/{id}"), None).await.assert(404, json!({ "message": "404 Pipeline Schedule Not Found" }));
    }
}
