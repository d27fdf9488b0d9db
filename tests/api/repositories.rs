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
            // Fetched from Runway with the job's token, wherever the runner runs.
            let path = format!("root/p{}", url.len());
            let served = format!("{}/{path}.git", app.base.replacen("://", &format!("://gitlab-ci-token:{}@", job["token"].as_str().expect("token")), 1));
            assert_eq!(job["git_info"]["repo_url"], served.as_str());
            assert_eq!(job["git_info"]["sha"], main_sha.as_str());
            assert!(!job["variables"].as_array().is_some_and(|v| v.iter().any(|v| v["key"] == "GIT_STRATEGY")), "a repository is cloned");
            app.update_job(&job, json!({ "state": "success" })).await;

            let reply = app.send(create(json!({ "ref": "v1" }))).await;
            assert_eq!((reply.status, reply.json()["tag"].clone()), (201, json!(true)), "{}", reply.text);
            let job = app.take_job(&runner).await;
            assert_eq!(job["git_info"]["ref_type"], "tag");
            let id = job["job_info"]["id"].clone();
            let pipeline = app.runner_job(job["id"].as_i64().expect("id")).await.pipeline_id;
            assert_eq!(job["git_info"]["refspecs"], json!([format!("+refs/pipelines/{pipeline}:refs/pipelines/{pipeline}"), "+refs/tags/v1:refs/tags/v1"]), "{id}");
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

both_backends! {
    // `include:local` reads the pipeline's own commit: wildcards, nested files, rules, and
    // the including file on top; a later commit's files do not leak into an older ref.
    async fn included_files_come_from_the_pipelines_commit(backend) {
        let app = TestApp::spawn(backend).await;
        let repo = tempfile::tempdir().expect("tempdir");
        let dir = repo.path();
        git(dir, &["init", "-q", "-b", "main"]);
        let write = |path: &str, text: &str| {
            let file = dir.join(path);
            std::fs::create_dir_all(file.parent().expect("parent")).expect("folder");
            std::fs::write(file, text).expect("write");
        };
        write(".gitlab-ci.yml", "include:\n  - local: ci/*.yml\n  - local: /ci/deploy/prod.yml\n    rules:\n      - if: $CI_COMMIT_BRANCH == \"main\"\nvariables: { WHO: main }\nlint: { extends: .base, script: [lint] }\n");
        write("ci/base.yml", "include: ci/shared/defaults.yml\n.base: { tags: [docker] }\nbuild: { script: [make] }\n");
        write("ci/test.yml", "test: { script: [make test], variables: { WHO: test } }\n");
        write("ci/shared/defaults.yml", "variables: { WHO: defaults, LEVEL: shared }\n");
        write("ci/deploy/prod.yml", "deploy: { stage: deploy, script: [ship] }\n");
        git(dir, &["add", "."]);
        git(dir, &["commit", "-q", "-m", "ci"]);
        git(dir, &["checkout", "-q", "-b", "feature"]);
        let project = app.create_project(json!({ "name": "app", "repository_url": dir.display().to_string() })).await;
        let create = |ref_: &str| app.send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/pipeline")).json(&json!({ "ref": ref_ })));
        let on_main = create("main").await;
        assert_eq!(on_main.status, 201, "{}", on_main.text);
        assert_eq!(app.job_names(project, &on_main.json()).await, ["build", "deploy", "lint", "test"]);
        let on_feature = create("feature").await;
        assert_eq!(app.job_names(project, &on_feature.json()).await, ["build", "lint", "test"], "the rule leaves deploy out");

        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type", "tag_list": ["docker"] })).await;
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..4 {
            let job = app.take_job(&runner).await;
            let var = |key: &str| job["variables"].as_array().and_then(|v| v.iter().rev().find(|v| v["key"] == key)).map(|v| v["value"].clone());
            seen.insert(job["job_info"]["name"].as_str().unwrap_or_default().to_string(), (var("WHO"), var("LEVEL")));
        }
        assert_eq!(seen["lint"], (Some(json!("main")), Some(json!("shared"))), "the including file wins over its includes");
        assert_eq!(seen["test"].0, Some(json!("test")), "a job's own variables win");

        // A missing file, as GitLab words it; nothing is created.
        write(".gitlab-ci.yml", "include: ci/missing.yml\na: { script: [x] }\n");
        git(dir, &["commit", "-q", "-am", "broken"]);
        create("feature").await.assert(400, json!({ "message": { "base": ["Local file `ci/missing.yml` does not exist!"] } }));
        assert_eq!(app.job_names(project, &create("main").await.json()).await, ["build", "deploy", "lint", "test"], "main's commit is untouched");
    }
}

both_backends! {
    // `rules:exists` against the commit's files, `rules:changes:compare_to` against the
    // merge base with another ref, both read with git from the project's repository.
    async fn rules_read_the_commit(backend) {
        let app = TestApp::spawn(backend).await;
        let repo = tempfile::tempdir().expect("tempdir");
        let dir = repo.path();
        git(dir, &["init", "-q", "-b", "main"]);
        std::fs::write(dir.join("Cargo.toml"), "[package]\n").expect("write");
        std::fs::write(
            dir.join(".gitlab-ci.yml"),
            "rust: { script: [x], rules: [ { exists: [Cargo.toml] } ] }\n\
             node: { script: [x], rules: [ { exists: ['**/package.json'] } ] }\n\
             code: { script: [x], rules: [ { changes: { paths: ['src/**/*'], compare_to: refs/heads/main } } ] }\n\
             docs: { script: [x], rules: [ { changes: { paths: ['docs/**/*'], compare_to: refs/heads/main } } ] }\n\
             always: { script: [x] }\n",
        )
        .expect("write");
        git(dir, &["add", "."]);
        git(dir, &["commit", "-q", "-m", "ci"]);
        git(dir, &["checkout", "-q", "-b", "feature"]);
        std::fs::create_dir_all(dir.join("src")).expect("folder");
        std::fs::write(dir.join("src/main.rs"), "fn main() {}\n").expect("write");
        git(dir, &["add", "."]);
        git(dir, &["commit", "-q", "-m", "code"]);
        let project = app.create_project(json!({ "name": "app", "repository_url": dir.display().to_string() })).await;
        let create = |ref_: &str| app.send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/pipeline")).json(&json!({ "ref": ref_ })));
        let reply = create("feature").await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let mut names: Vec<String> = app.job_statuses(project, reply.json()["id"].as_i64().expect("id")).await.into_iter().map(|(n, _)| n).collect();
        names.sort();
        assert_eq!(names, ["always", "code", "rust"]);
        let reply = create("main").await;
        let mut names: Vec<String> = app.job_statuses(project, reply.json()["id"].as_i64().expect("id")).await.into_iter().map(|(n, _)| n).collect();
        names.sort();
        assert_eq!(names, ["always", "rust"], "nothing changed on main since main");
    }
}

both_backends! {
    // CI Lint: the configuration as a pipeline on the ref would read it (includes from
    // that commit), its jobs and GitLab's errors, and nothing created.
    async fn ci_lint_checks_without_creating(backend) {
        let app = TestApp::spawn(backend).await;
        let repo = tempfile::tempdir().expect("tempdir");
        let dir = repo.path();
        git(dir, &["init", "-q", "-b", "main"]);
        std::fs::create_dir_all(dir.join("ci")).expect("ci");
        std::fs::write(dir.join("ci/a.yml"), "a: { stage: build, script: [make] }\n").expect("write");
        std::fs::write(dir.join(".gitlab-ci.yml"), "include: ci/a.yml\nb: { script: [test], needs: [a] }\n").expect("write");
        git(dir, &["add", "."]);
        git(dir, &["commit", "-q", "-m", "ci"]);
        let project = app.create_project(json!({ "name": "app", "repository_url": dir.display().to_string() })).await;
        let lint = |body: serde_json::Value| app.send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/ci/lint")).json(&body));

        let reply = lint(json!({ "content": "include: ci/a.yml\nc: { script: [x] }\n", "include_jobs": true })).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let body = reply.json();
        assert_eq!((body["valid"].clone(), body["errors"].clone(), body["warnings"].clone()), (json!(true), json!([]), json!([])));
        let merged: serde_yaml_ng::Value = serde_yaml_ng::from_str(body["merged_yaml"].as_str().expect("merged_yaml")).expect("yaml");
        assert_eq!(merged, serde_yaml_ng::from_str::<serde_yaml_ng::Value>("a: { stage: build, script: [make] }\nc: { script: [x] }\n").expect("yaml"));
        let jobs: Vec<&str> = body["jobs"].as_array().expect("jobs").iter().filter_map(|j| j["name"].as_str()).collect();
        assert_eq!(jobs, ["a", "c"]);
        assert_eq!(body["jobs"][0]["script"], json!(["make"]));
        assert_eq!(body["jobs"][0]["stage"], "build");

        let reply = lint(json!({ "content": "x: { stage: test }\n" })).await;
        assert_eq!(reply.json(), json!({
            "valid": false, "errors": ["jobs:x config should implement the script:, run:, or trigger: keyword"],
            "warnings": [], "merged_yaml": null, "includes": [],
        }));
        lint(json!({})).await.assert(400, json!({ "error": "content is missing" }));

        // The repository's own file.
        let reply = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/ci/lint?include_jobs=true"))).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let jobs: Vec<String> = reply.json()["jobs"].as_array().expect("jobs").iter().filter_map(|j| j["name"].as_str().map(str::to_string)).collect();
        assert_eq!(jobs, ["a", "b"]);
        assert_eq!(reply.json()["jobs"][1]["needs"], json!([{ "name": "a" }]));
        let pipelines = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/pipelines"))).await;
        assert_eq!(pipelines.json(), json!([]), "lint creates nothing");
    }
}

both_backends! {
    // A template with `spec:inputs`, included twice with different inputs.
    async fn included_templates_take_inputs(backend) {
        let app = TestApp::spawn(backend).await;
        let repo = tempfile::tempdir().expect("tempdir");
        let dir = repo.path();
        git(dir, &["init", "-q", "-b", "main"]);
        std::fs::create_dir_all(dir.join("templates")).expect("templates");
        std::fs::write(
            dir.join("templates/deploy.yml"),
            "spec:\n  inputs:\n    target: { options: [staging, production] }\n    replicas: { type: number, default: 1 }\n---\n\
             \"deploy-$[[ inputs.target ]]\":\n  script:\n    - ./deploy $[[ inputs.target ]]\n  variables:\n    REPLICAS: $[[ inputs.replicas ]]\n",
        )
        .expect("write");
        std::fs::write(
            dir.join(".gitlab-ci.yml"),
            "include:\n  - local: templates/deploy.yml\n    inputs: { target: staging }\n  - local: templates/deploy.yml\n    inputs: { target: production, replicas: 3 }\n",
        )
        .expect("write");
        git(dir, &["add", "."]);
        git(dir, &["commit", "-q", "-m", "ci"]);
        let project = app.create_project(json!({ "name": "app", "repository_url": dir.display().to_string() })).await;
        let reply = app.send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/pipeline")).json(&json!({ "ref": "main" }))).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..2 {
            let job = app.take_job(&runner).await;
            let replicas = job["variables"].as_array().and_then(|v| v.iter().find(|v| v["key"] == "REPLICAS")).map(|v| v["value"].clone());
            seen.insert(job["job_info"]["name"].as_str().unwrap_or_default().to_string(), (job["steps"][0]["script"].clone(), replicas));
        }
        assert_eq!(seen["deploy-staging"], (json!(["./deploy staging"]), Some(json!("1"))));
        assert_eq!(seen["deploy-production"], (json!(["./deploy production"]), Some(json!("3"))));
    }
}

both_backends! {
    // `include:project`: another Runway project's files at its default branch, a branch, a
    // tag or a sha; the included file's own `local:` includes come from that project;
    // GitLab's words for a project, a ref or a file that is not there.
    async fn included_project_files_come_from_that_project(backend) {
        let app = TestApp::spawn(backend).await;
        let shared = tempfile::tempdir().expect("tempdir");
        let dir = shared.path();
        let write = |dir: &Path, path: &str, text: &str| {
            let file = dir.join(path);
            std::fs::create_dir_all(file.parent().expect("parent")).expect("folder");
            std::fs::write(file, text).expect("write");
        };
        git(dir, &["init", "-q", "-b", "main"]);
        write(dir, "templates/build.yml", "include: templates/common.yml\nbuild: { extends: .common, script: [make] }\n");
        write(dir, "templates/common.yml", ".common: { tags: [docker], variables: { FROM: shared-main } }\n");
        write(dir, "templates/lint.yml", "lint: { script: [lint] }\n");
        git(dir, &["add", "."]);
        git(dir, &["commit", "-q", "-m", "templates"]);
        let first = git(dir, &["rev-parse", "HEAD"]);
        git(dir, &["tag", "v1"]);
        write(dir, "templates/common.yml", ".common: { tags: [docker], variables: { FROM: shared-next } }\n");
        git(dir, &["commit", "-q", "-am", "next"]);
        app.create_project(json!({ "name": "ci-templates", "namespace": "platform", "repository_url": dir.display().to_string() })).await;

        let app_repo = tempfile::tempdir().expect("tempdir");
        let own = app_repo.path();
        git(own, &["init", "-q", "-b", "main"]);
        write(own, "templates/common.yml", ".common: { variables: { FROM: the-app } }\n");
        write(own, ".gitlab-ci.yml", "x: { script: [x] }\n");
        git(own, &["add", "."]);
        git(own, &["commit", "-q", "-m", "app"]);
        let project = app.create_project(json!({ "name": "app", "repository_url": own.display().to_string() })).await;

        let from = |include: &str| {
            let app = &app;
            let include = include.to_string();
            async move {
                let config = format!("include:\n{include}\ntest: {{ script: [t] }}\n");
                write(own, ".gitlab-ci.yml", &config);
                git(own, &["commit", "-q", "-am", "ci"]);
                app.send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/pipeline")).json(&json!({ "ref": "main" }))).await
            }
        };
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type", "tag_list": ["docker"] })).await;
        for (include, expected) in [
            ("  - project: platform/ci-templates\n    file: templates/build.yml", "shared-next"),
            ("  - project: platform/ci-templates\n    ref: v1\n    file: [/templates/build.yml, templates/lint.yml]", "shared-main"),
            (&format!("  - project: platform/ci-templates\n    ref: {first}\n    file: templates/build.yml"), "shared-main"),
        ] {
            let reply = from(include).await;
            assert_eq!(reply.status, 201, "{include}: {}", reply.text);
            let mut names: Vec<String> = app.job_statuses(project, reply.json()["id"].as_i64().expect("id")).await.into_iter().map(|(n, _)| n).collect();
            names.sort();
            let lint = include.contains("lint.yml");
            assert_eq!(names, if lint { vec!["build", "lint", "test"] } else { vec!["build", "test"] }, "{include}");
            // The build job: its template from the shared project, at the ref asked for.
            for _ in 0..names.len() {
                let job = app.take_job(&runner).await;
                if job["job_info"]["name"] == "build" {
                    let from = job["variables"].as_array().and_then(|v| v.iter().find(|v| v["key"] == "FROM")).map(|v| v["value"].clone());
                    assert_eq!(from, Some(json!(expected)), "{include}");
                }
                app.update_job(&job, json!({ "state": "success" })).await;
            }
        }
        for (include, message) in [
            ("  - project: platform/nope\n    file: a.yml", "Project `platform/nope` not found or access denied! Make sure any includes in the pipeline configuration are correctly defined."),
            ("  - project: platform/ci-templates\n    ref: nope\n    file: a.yml", "Project `platform/ci-templates` reference `nope` does not exist!"),
            ("  - project: platform/ci-templates\n    file: templates/missing.yml", "Project `platform/ci-templates` file `templates/missing.yml` does not exist!"),
            ("  - project: platform/ci-templates\n    file: README.md", "Included file `README.md` does not have YAML extension!"),
            ("  - project: platform/ci-templates", "include config must specify the file where to fetch the config from"),
        ] {
            from(include).await.assert(400, json!({ "message": { "base": [message] } }));
        }
        let listed = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/pipelines"))).await.json();
        assert_eq!(listed.as_array().map(Vec::len), Some(3), "no pipeline for a refused include");
    }
}
