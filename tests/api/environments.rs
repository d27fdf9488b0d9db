//! Environments and deployments (issue 24, part 1): a deploying job makes its environment
//! and a deployment that follows the job; a successful one sets the environment's URL and
//! auto-stop time; stopping runs the `on_stop` job and the environment is stopped when it
//! succeeds, or at once without one; `auto_stop_in` stops it by itself; GitLab's
//! environments and deployments API, and the web page with its Stop button.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{both_backends, TestApp};
use crate::ui::{get, post, sign_in};

const REVIEW: &str = r#"
stages: [deploy, cleanup]
deploy_review:
  stage: deploy
  environment:
    name: review/$CI_COMMIT_REF_SLUG
    url: https://$CI_COMMIT_REF_SLUG.example.com
    on_stop: stop_review
    auto_stop_in: 1 hour
  script: [ deploy ]
stop_review:
  stage: cleanup
  environment: { name: review/$CI_COMMIT_REF_SLUG, action: stop }
  when: manual
  script: [ stop ]
"#;

async fn environments(app: &TestApp, project: i64) -> Vec<Value> {
    let reply = app
        .api(
            Method::GET,
            &format!("/projects/{project}/environments"),
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json().as_array().expect("array").clone()
}

async fn environment(app: &TestApp, project: i64, id: i64) -> Value {
    app.api(
        Method::GET,
        &format!("/projects/{project}/environments/{id}"),
        None,
    )
    .await
    .json()
}

both_backends! {
    async fn a_review_app_deploys_and_stops_through_its_on_stop_job(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "reviews" })).await;
        let pipeline = app.pipeline(project, REVIEW).await;
        let listed = environments(&app, project).await;
        assert_eq!(listed.len(), 1, "{listed:?}");
        let env = &listed[0];
        let env_id = env["id"].as_i64().expect("id");
        assert_eq!((env["name"].clone(), env["state"].clone(), env["tier"].clone()), (json!("review/main"), json!("available"), json!("development")));
        // GitLab's slug: a name with characters other than letters and digits gets a suffix.
        assert!(env["slug"].as_str().is_some_and(|s| s.starts_with("review-main-") && s.len() == 18), "{env}");
        assert_eq!(env["last_deployment"]["status"], "created");
        let deploy_job = env["last_deployment"]["deployable"]["id"].as_i64().expect("the deploying job");

        let (_, token) = app.register_runner().await;
        let job = app.take_job(&token).await;
        assert_eq!(job["id"].as_i64(), Some(deploy_job));
        let deployments = app.api(Method::GET, &format!("/projects/{project}/deployments"), None).await.json();
        assert_eq!(deployments.as_array().map(Vec::len), Some(1));
        let deployment_id = deployments[0]["id"].as_i64().expect("id");
        assert_eq!(deployments[0]["status"], "running", "the job runs");
        assert_eq!((deployments[0]["ref"].clone(), deployments[0]["environment"]["name"].clone()), (json!("main"), json!("review/main")));
        assert_eq!(app.update_job(&job, json!({ "state": "success" })).await.status, 200);
        let deployment = app.api(Method::GET, &format!("/projects/{project}/deployments/{deployment_id}"), None).await.json();
        assert_eq!(deployment["status"], "success");
        assert!(deployment["finished_at"].is_string(), "{deployment}");
        assert_eq!(deployment["deployable"]["pipeline"]["id"], pipeline);
        let env = environment(&app, project, env_id).await;
        assert_eq!(env["external_url"], "https://main.example.com");
        let auto_stop = env["auto_stop_at"].as_str().expect("an auto-stop time");
        let at = chrono::DateTime::parse_from_rfc3339(auto_stop).expect("time");
        let left = at.signed_duration_since(chrono::Utc::now()).num_seconds();
        assert!((3500..=3600).contains(&left), "auto_stop_in: 1 hour, {left} s left");

        // A running environment is not deleted; a stop plays its `on_stop` job.
        app.api(Method::DELETE, &format!("/projects/{project}/environments/{env_id}"), None).await
            .assert(403, json!({ "message": "403 Forbidden" }));
        let stopping = app.api(Method::POST, &format!("/projects/{project}/environments/{env_id}/stop"), None).await;
        assert_eq!((stopping.status, stopping.json()["state"].clone()), (200, json!("stopping")), "{}", stopping.text);
        assert_eq!(app.pipeline_status(project, pipeline).await, "running");
        let stop = app.take_job(&token).await;
        assert_eq!(stop["job_info"]["name"], "stop_review");
        assert!(stop["variables"].as_array().expect("variables").iter().any(|v| v["key"] == "CI_ENVIRONMENT_ACTION" && v["value"] == "stop"));
        app.update_job(&stop, json!({ "state": "success" })).await;
        let env = environment(&app, project, env_id).await;
        assert_eq!((env["state"].clone(), env["auto_stop_at"].clone()), (json!("stopped"), json!(null)));
        // Stopped, it goes; a deploy makes it again.
        assert_eq!(app.api(Method::DELETE, &format!("/projects/{project}/environments/{env_id}"), None).await.status, 204);
        assert!(environments(&app, project).await.is_empty());

        // Made through the API: no stop job, so a stop is immediate; names are unique.
        let created = app.api(Method::POST, &format!("/projects/{project}/environments"), Some(json!({ "name": "staging", "external_url": "https://staging.example.com" }))).await;
        assert_eq!(created.status, 201, "{}", created.text);
        let staging = created.json();
        assert_eq!((staging["tier"].clone(), staging["state"].clone(), staging["last_deployment"].clone()), (json!("staging"), json!("available"), json!(null)));
        app.api(Method::POST, &format!("/projects/{project}/environments"), Some(json!({ "name": "staging" }))).await
            .assert(400, json!({ "message": { "name": ["has already been taken"] } }));
        app.api(Method::POST, &format!("/projects/{project}/environments"), Some(json!({}))).await
            .assert(400, json!({ "error": "name is missing" }));
        let staging_id = staging["id"].as_i64().expect("id");
        let updated = app.api(Method::PUT, &format!("/projects/{project}/environments/{staging_id}"), Some(json!({ "external_url": "https://s.example.com", "tier": "testing" }))).await.json();
        assert_eq!((updated["external_url"].clone(), updated["tier"].clone()), (json!("https://s.example.com"), json!("testing")));
        let stopped = app.api(Method::POST, &format!("/projects/{project}/environments/{staging_id}/stop"), None).await.json();
        assert_eq!(stopped["state"], "stopped");
        let filtered = app.api(Method::GET, &format!("/projects/{project}/environments?states=stopped"), None).await.json();
        assert_eq!(filtered.as_array().map(Vec::len), Some(1));
        app.api(Method::GET, &format!("/projects/{project}/environments/999999"), None).await
            .assert(404, json!({ "message": "404 Environment Not Found" }));

        // GitLab's checks of `on_stop`.
        let refused = app.create_pipeline(project, "main", "d: { script: x, environment: { name: e, on_stop: nope } }").await;
        refused.assert(400, json!({ "message": { "base": ["d job: on_stop job nope is not defined"] } }));
        let refused = app.create_pipeline(project, "main", "d: { script: x, environment: { name: e, on_stop: s } }\ns: { script: y, when: manual, environment: { name: e } }").await;
        refused.assert(400, json!({ "message": { "base": ["d job: on_stop job s needs to have action stop defined"] } }));
    }

    async fn an_environment_stops_itself_after_auto_stop_in_and_the_page_stops_one(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "ephemeral" })).await;
        let yaml = REVIEW.replace("auto_stop_in: 1 hour", "auto_stop_in: 1 second");
        app.pipeline(project, &yaml).await;
        let (_, token) = app.register_runner().await;
        let job = app.take_job(&token).await;
        app.update_job(&job, json!({ "state": "success" })).await;
        let env_id = environments(&app, project).await[0]["id"].as_i64().expect("id");
        // The per-second pass plays the stop job once the time is up.
        let start = Instant::now();
        let stop = loop {
            let reply = app.request_job(&token).await;
            if reply.status == 201 {
                break reply.json();
            }
            assert!(start.elapsed() < Duration::from_secs(20), "the environment never stopped itself");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(stop["job_info"]["name"], "stop_review");
        assert_eq!(environment(&app, project, env_id).await["state"], "stopping");
        app.update_job(&stop, json!({ "state": "success" })).await;
        assert_eq!(environment(&app, project, env_id).await["state"], "stopped");

        // The web page lists it with its last deployment; Stop works from there.
        app.api(Method::POST, &format!("/projects/{project}/environments"), Some(json!({ "name": "production" }))).await;
        let (cookie, csrf) = sign_in(&app).await;
        let page = get(&app, Some(&cookie), &format!("/-/ui/projects/{project}/environments")).await;
        assert_eq!(page.status, 200);
        assert!(page.text.contains("review/main") && page.text.contains("production") && page.text.contains(">Stop<"), "{}", page.text);
        let production = environments(&app, project).await.into_iter().find(|e| e["name"] == "production").expect("production");
        let id = production["id"].as_i64().expect("id");
        let stopped = post(&app, Some(&cookie), &format!("/-/ui/projects/{project}/environments/{id}/stop"), &[("csrf", csrf.as_str())]).await;
        assert_eq!(stopped.status, 303);
        assert_eq!(environment(&app, project, id).await["state"], "stopped");
    }
}
