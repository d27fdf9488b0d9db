//! Pipeline trigger tokens (issue 23): GitLab's API for them, and pipelines started with
//! one — form and JSON variables, the webhook form, a wrong token's 404 — run by the real
//! gitlab-runner.

use reqwest::Method;
use serde_json::json;

use crate::helpers::e2e::{finished_pipeline, job, pipeline_jobs, trace};
use crate::helpers::{both_backends, TestApp, REGISTRATION_TOKEN};
use crate::real_runner::RealRunner;

both_backends! {
    async fn a_trigger_token_starts_a_pipeline_the_real_runner_runs(backend) {
        let app = TestApp::spawn(backend).await;
        let yaml = "triggered:\n  rules: [ { if: '$CI_PIPELINE_SOURCE == \"trigger\"' } ]\n  script: [ 'echo \"deploy=$DEPLOY triggered=$CI_PIPELINE_TRIGGERED\"' ]\nnever: { rules: [ { if: '$CI_PIPELINE_SOURCE == \"push\"' } ], script: [x] }\n";
        let repo = tempfile::tempdir().expect("tempdir");
        crate::helpers::e2e::commit_branch(repo.path(), "main", yaml);
        let project = app.create_project(json!({ "name": "triggered", "repository_url": repo.path().display().to_string() })).await;
        let base = format!("/api/v4/projects/{project}/triggers");
        let created = app.send(app.admin(Method::POST, &base).json(&json!({ "description": "from Jenkins" }))).await;
        assert_eq!(created.status, 201, "{}", created.text);
        let trigger = created.json();
        let token = trigger["token"].as_str().expect("token").to_string();
        assert!(token.starts_with("glptt-"), "{token}");
        assert_eq!((trigger["description"].clone(), trigger["last_used"].clone(), trigger["owner"]["username"].clone()), (json!("from Jenkins"), json!(null), json!("root")));
        let id = trigger["id"].as_i64().expect("id");
        app.send(app.admin(Method::POST, &base).json(&json!({}))).await.assert(400, json!({ "error": "description is missing" }));
        let listed = app.send(app.admin(Method::GET, &base)).await.json();
        assert_eq!(listed.as_array().map(Vec::len), Some(1));
        assert_eq!(listed[0]["token"], token.as_str());
        let renamed = app.send(app.admin(Method::PUT, &format!("{base}/{id}")).json(&json!({ "description": "renamed" }))).await;
        assert_eq!(renamed.json()["description"], "renamed");

        // Start a pipeline with the token (a form, as curl users do), no admin token.
        let trigger_url = app.url(&format!("/api/v4/projects/{project}/trigger/pipeline"));
        let started = app.send(app.client.post(&trigger_url).form(&[("token", token.as_str()), ("ref", "main"), ("variables[DEPLOY]", "yes")])).await;
        assert_eq!(started.status, 201, "{}", started.text);
        let pipeline = started.json();
        assert_eq!((pipeline["source"].clone(), pipeline["ref"].clone()), (json!("trigger"), json!("main")));
        let pipeline_id = pipeline["id"].as_i64().expect("id");

        // Wrong tokens: 404, nothing started; JSON and the webhook form work too.
        for wrong in ["glptt-wrong", ""] {
            let refused = app.send(app.client.post(&trigger_url).json(&json!({ "token": wrong, "ref": "main" }))).await;
            refused.assert(404, json!({ "message": "404 Not Found" }));
        }
        app.send(app.client.post(&trigger_url).json(&json!({ "ref": "main" }))).await.assert(400, json!({ "error": "token is missing" }));
        let other = app.create_project(json!({ "name": "other" })).await;
        let elsewhere = app.send(app.client.post(app.url(&format!("/api/v4/projects/{other}/trigger/pipeline"))).json(&json!({ "token": token, "ref": "main" }))).await;
        elsewhere.assert(404, json!({ "message": "404 Not Found" }));
        let by_json = app.send(app.client.post(&trigger_url).json(&json!({ "token": token, "ref": "main", "variables": { "DEPLOY": "json" } }))).await;
        assert_eq!(by_json.status, 201, "{}", by_json.text);
        let hook = app.send(app.client.post(app.url(&format!("/api/v4/projects/{project}/ref/main/trigger/pipeline?token={token}")))).await;
        assert_eq!((hook.status, hook.json()["source"].clone()), (201, json!("trigger")), "{}", hook.text);
        let shown = app.send(app.admin(Method::GET, &format!("{base}/{id}"))).await.json();
        assert!(shown["last_used"].is_string(), "{shown}");

        // The real runner runs the first one: the trigger's variable reaches the job.
        let runner = RealRunner::new();
        runner.register(&app.base, &["--registration-token", REGISTRATION_TOKEN]).await;
        let mut child = runner.run();
        let status = finished_pipeline(&app, project, pipeline_id, || runner.log()).await;
        assert_eq!(status, "success", "runner log:\n{}", runner.log());
        let jobs = pipeline_jobs(&app, project, pipeline_id).await;
        assert_eq!(jobs.len(), 1, "only the trigger rule's job");
        let log = trace(&app, project, job(&jobs, "triggered")).await;
        assert!(log.contains("deploy=yes triggered=true"), "{log}");
        // Deleted: the token starts nothing.
        assert_eq!(app.send(app.admin(Method::DELETE, &format!("{base}/{id}"))).await.status, 204);
        let gone = app.send(app.client.post(&trigger_url).json(&json!({ "token": token, "ref": "main" }))).await;
        assert_eq!(gone.status, 404);
        for other in [by_json.json()["id"].as_i64(), hook.json()["id"].as_i64()].into_iter().flatten() {
            finished_pipeline(&app, project, other, || runner.log()).await;
        }
        child.kill().await.ok();
    }
}
