//! Pipelines read from the project's git repository (no `ci_config`).

use std::path::Path;

use reqwest::Method;
use serde_json::json;

use crate::helpers::e2e::git;
use crate::helpers::{both_backends, TestApp};

/// A repository with `.gitlab-ci.yml` on `main`, a tag `v1`, and a branch without the file.
fn repository(dir: &Path) -> (String, String) {
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(
        dir.join(".gitlab-ci.yml"),
        "from_repo:\n  script: [echo repo]\n",
    )
    .expect("write");
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "ci"]);
    let main = git(dir, &["rev-parse", "HEAD"]);
    git(dir, &["tag", "v1"]);
    git(dir, &["checkout", "-q", "-b", "empty"]);
    git(dir, &["rm", "-q", ".gitlab-ci.yml"]);
    git(dir, &["commit", "-q", "-m", "no ci"]);
    let empty = git(dir, &["rev-parse", "HEAD"]);
    (main, empty)
}

both_backends! {
    async fn pipelines_from_the_repository(backend) {
        let app = TestApp::spawn(backend).await;
        let repo = tempfile::tempdir().expect("tempdir");
        let (main_sha, _) = repository(repo.path());
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        for url in [repo.path().display().to_string(), format!("file://{}", repo.path().display())] {
            let project = app.create_project(json!({ "name": format!("p{}", url.len()), "repository_url": url })).await;
            let create = |body: serde_json::Value| app.admin(Method::POST, &format!("/api/v4/projects/{project}/pipeline")).json(&body);

            let reply = app.send(create(json!({ "ref": "main" }))).await;
            assert_eq!(reply.status, 201, "{url}: {}", reply.text);
            assert_eq!(reply.json()["sha"], main_sha.as_str());
            assert_eq!(reply.json()["tag"], false);
            let job = app.take_job(&runner).await;
            assert_eq!(job["job_info"]["name"], "from_repo");
            assert_eq!(job["git_info"]["repo_url"], url.as_str());
            assert_eq!(job["git_info"]["sha"], main_sha.as_str());
            assert!(!job["variables"].as_array().is_some_and(|v| v.iter().any(|v| v["key"] == "GIT_STRATEGY")), "a repository is cloned");
            app.update_job(&job, json!({ "state": "success" })).await;

            let reply = app.send(create(json!({ "ref": "v1" }))).await;
            assert_eq!((reply.status, reply.json()["tag"].clone()), (201, json!(true)), "{}", reply.text);
            let job = app.take_job(&runner).await;
            assert_eq!(job["git_info"]["ref_type"], "tag");
            assert_eq!(job["git_info"]["refspecs"], json!(["+refs/tags/v1:refs/tags/v1"]));
            app.update_job(&job, json!({ "state": "success" })).await;

            app.send(create(json!({ "ref": "nope" })))
                .await
                .assert(400, json!({ "message": { "base": ["Reference not found"] } }));
            app.send(create(json!({ "ref": "empty" })))
                .await
                .assert(400, json!({ "message": { "base": ["Missing CI config file"] } }));
        }
        let bare = app.create_project(json!({ "name": "no-repo" })).await;
        app.send(app.admin(Method::POST, &format!("/api/v4/projects/{bare}/pipeline")).json(&json!({ "ref": "main" })))
            .await
            .assert(400, json!({ "message": "400 Bad request - ci_config is missing and the project has no repository_url" }));
    }
}
