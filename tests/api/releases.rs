//! `release` and releases (issue 24, part 4): a release job's payload carries GitLab's
//! release step (`release-cli create …`, for runners with `multi_build_steps`); what
//! release-cli then sends with the job's token makes the release; GitLab's releases API
//! for the admin.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{both_backends, TestApp};

const YAML: &str = r#"
release_job:
  script: [ echo releasing ]
  release:
    tag_name: v1.0.0
    name: Release $CI_COMMIT_SHORT_SHA
    description: First release
    assets:
      links:
        - { name: linux, url: "https://example.com/app-linux", link_type: package }
"#;

both_backends! {
    async fn a_release_job_makes_its_release_with_the_job_token(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "released" })).await;
        let pipeline = app.pipeline(project, YAML).await;
        let (_, token) = app.register_runner().await;
        let job = app.take_job(&token).await;
        let steps = job["steps"].as_array().expect("steps");
        assert_eq!(steps.len(), 2, "{steps:?}");
        assert_eq!((steps[1]["name"].clone(), steps[1]["when"].clone(), steps[1]["allow_failure"].clone()), (json!("release"), json!("on_success"), json!(false)));
        assert_eq!(steps[1]["script"], json!([r#"release-cli create --name "Release $CI_COMMIT_SHORT_SHA" --description "First release" --tag-name "v1.0.0" --assets-link "{\"link_type\":\"package\",\"name\":\"linux\",\"url\":\"https://example.com/app-linux\"}""#]));

        // What release-cli sends, with the job's token.
        let job_token = job["token"].as_str().expect("token");
        let base = format!("/api/v4/projects/{project}/releases");
        let body = json!({ "tag_name": "v1.0.0", "name": "Release abc", "description": "First release",
            "assets": { "links": [{ "name": "linux", "url": "https://example.com/app-linux", "link_type": "package" }] } });
        let created = app.send(app.request(Method::POST, &base).header("JOB-TOKEN", job_token).json(&body)).await;
        assert_eq!(created.status, 201, "{}", created.text);
        let release = created.json();
        assert_eq!((release["tag_name"].clone(), release["name"].clone(), release["description"].clone()), (json!("v1.0.0"), json!("Release abc"), json!("First release")));
        assert_eq!(release["commit"]["id"], job["git_info"]["sha"], "the job's commit, without a repository");
        assert_eq!(release["assets"]["links"][0]["link_type"], "package");
        assert_eq!(release["assets"]["links"][0]["direct_asset_url"], "https://example.com/app-linux");
        assert_eq!(release["upcoming_release"], false);
        let again = app.send(app.request(Method::POST, &base).header("JOB-TOKEN", job_token).json(&body)).await;
        again.assert(409, json!({ "message": "Release already exists" }));
        app.update_job(&job, json!({ "state": "success" })).await;
        assert_eq!(app.pipeline_status(project, pipeline).await, "success");
        // A finished job's token, or another project's, makes nothing.
        let finished = app.send(app.request(Method::POST, &base).header("JOB-TOKEN", job_token).json(&json!({ "tag_name": "v2", "ref": "main" }))).await;
        assert_eq!(finished.status, 401);
        let other = app.create_project(json!({ "name": "other" })).await;
        app.pipeline(other, "j: { script: x }").await;
        let other_job = app.take_job(&token).await;
        let elsewhere = app.send(app.request(Method::POST, &base).header("JOB-TOKEN", other_job["token"].as_str().unwrap()).json(&json!({ "tag_name": "v3", "ref": "main" }))).await;
        elsewhere.assert(404, json!({ "message": "404 Project Not Found" }));

        // The admin's API.
        let listed = app.api(Method::GET, &format!("/projects/{project}/releases"), None).await;
        assert_eq!((listed.status, listed.json().as_array().map(Vec::len)), (200, Some(1)));
        let shown = app.api(Method::GET, &format!("/projects/{project}/releases/v1.0.0"), None).await.json();
        assert_eq!(shown["name"], "Release abc");
        let updated = app.api(Method::PUT, &format!("/projects/{project}/releases/v1.0.0"), Some(json!({ "description": "Better notes" }))).await.json();
        assert_eq!((updated["description"].clone(), updated["assets"]["count"].clone()), (json!("Better notes"), json!(1)));
        app.api(Method::POST, &format!("/projects/{project}/releases"), Some(json!({ "tag_name": "v0.9" }))).await
            .assert(422, json!({ "message": "Ref is not specified" }));
        app.api(Method::POST, &format!("/projects/{project}/releases"), Some(json!({ "tag_name": "v0.9", "ref": "a".repeat(40), "milestones": ["m1"] }))).await
            .assert(400, json!({ "message": "Milestone(s) not found: m1" }));
        app.api(Method::POST, &format!("/projects/{project}/releases"), Some(json!({ "tag_name": "v0.9", "ref": "a".repeat(40), "assets": { "links": [{ "name": "x", "url": "file:///etc/passwd" }] } }))).await
            .assert(400, json!({ "message": { "links.url": ["is blocked: Only allowed schemes are http, https, ftp"] } }));
        let older = app.api(Method::POST, &format!("/projects/{project}/releases"), Some(json!({ "tag_name": "v0.9", "ref": "a".repeat(40), "released_at": "2026-01-01T00:00:00Z" }))).await;
        assert_eq!(older.status, 201, "{}", older.text);
        let listed = app.api(Method::GET, &format!("/projects/{project}/releases"), None).await.json();
        let tags: Vec<&str> = listed.as_array().unwrap().iter().map(|r| r["tag_name"].as_str().unwrap()).collect();
        assert_eq!(tags, ["v1.0.0", "v0.9"], "the latest release first");
        assert_eq!(app.api(Method::DELETE, &format!("/projects/{project}/releases/v0.9"), None).await.status, 200);
        app.api(Method::GET, &format!("/projects/{project}/releases/v0.9"), None).await.assert(404, json!({ "message": "404 Not Found" }));
        assert_eq!(app.send(app.request(Method::GET, &base)).await.status, 401);
    }

    async fn a_runner_without_build_steps_does_not_get_a_release_job(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "old-runner" })).await;
        let pipeline = app.pipeline(project, YAML).await;
        let (_, token) = app.register_runner().await;
        let mut features = crate::helpers::shell_features();
        features["multi_build_steps"] = json!(false);
        let reply = app.request_job_with(&token, json!({ "info": { "name": "gitlab-runner", "version": "19.4.0", "features": features } })).await;
        assert_eq!(reply.status, 204);
        let jobs = app.job_statuses(project, pipeline).await;
        assert_eq!(jobs, crate::helpers::statuses(&[("release_job", "failed")]));
        let job = app.api(Method::GET, &format!("/projects/{project}/pipelines/{pipeline}/jobs"), None).await.json();
        assert_eq!(job[0]["failure_reason"], "runner_unsupported");
    }
}
