//! Git over smart HTTP: a job's sources fetched from Runway with the job's token, at
//! GitLab's `<namespace>/<project>.git`, with GitLab's answers for everybody else.

use std::path::Path;

use reqwest::Method;
use serde_json::json;

use crate::helpers::e2e::git;
use crate::helpers::{both_backends, TestApp};

/// A repository with two commits on `main`; its head.
fn repository(dir: &Path) -> String {
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join(".gitlab-ci.yml"), "build: { script: [make] }\n").expect("write");
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "first"]);
    std::fs::write(dir.join("README"), "hello\n").expect("write");
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "second"]);
    git(dir, &["rev-parse", "HEAD"])
}

/// `git clone` of `url` into a new folder, with the protocol `version`; the clone's head,
/// or git's complaint.
fn clone(url: &str, version: &str) -> Result<String, String> {
    let into = tempfile::tempdir().expect("tempdir");
    let target = into.path().join("clone");
    let out = std::process::Command::new("git")
        .args([
            "-c",
            &format!("protocol.version={version}"),
            "clone",
            "-q",
            "--depth",
            "1",
            url,
        ])
        .arg(&target)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("git runs");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(git(&target, &["rev-parse", "HEAD"]))
}

both_backends! {
    async fn jobs_fetch_their_projects_sources_from_runway(backend) {
        let app = TestApp::spawn(backend).await;
        let local = tempfile::tempdir().expect("tempdir");
        let head = repository(local.path());
        let upstream = tempfile::tempdir().expect("tempdir");
        let upstream_head = repository(upstream.path());
        let project = app.create_project(json!({ "name": "app", "repository_url": local.path().display().to_string() })).await;
        let mirrored = app.create_project(json!({ "name": "mirrored", "repository_url": format!("file://{}", upstream.path().display()) })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let create = |id: i64| app.send(app.admin(Method::POST, &format!("/api/v4/projects/{id}/pipeline")).json(&json!({ "ref": "main" })));
        assert_eq!(create(project).await.status, 201);
        let job = app.take_job(&runner).await;
        let url = job["git_info"]["repo_url"].as_str().expect("repo_url").to_string();
        let token = job["token"].as_str().expect("token").to_string();
        assert_eq!(url, app.base.replacen("://", &format!("://gitlab-ci-token:{token}@"), 1) + "/root/app.git");
        let variable = |key: &str| job["variables"].as_array().and_then(|v| v.iter().find(|v| v["key"] == key)).cloned();
        assert_eq!(variable("CI_REPOSITORY_URL"), Some(json!({ "key": "CI_REPOSITORY_URL", "value": url, "public": false, "masked": false })));
        // Both protocol versions, through git's own client.
        assert_eq!(clone(&url, "2"), Ok(head.clone()));
        assert_eq!(clone(&url, "0"), Ok(head.clone()));

        // The mirrored project: served from its mirror.
        assert_eq!(create(mirrored).await.status, 201);
        let other = app.take_job(&runner).await;
        let other_url = other["git_info"]["repo_url"].as_str().expect("repo_url").to_string();
        assert_eq!(clone(&other_url, "2"), Ok(upstream_head));

        // Everybody else, as GitLab answers them.
        let refs = |path: &str| app.url(&format!("/{path}.git/info/refs?service=git-upload-pack"));
        let ask = |request: reqwest::RequestBuilder| app.send(request);
        let no_credentials = ask(app.client.get(refs("root/app"))).await;
        assert_eq!(no_credentials.status, 401);
        assert_eq!(no_credentials.header("www-authenticate"), Some("Basic realm=\"GitLab\""));
        let other_token = other["token"].as_str().expect("token");
        let wrong_project = ask(app.client.get(refs("root/app")).basic_auth("gitlab-ci-token", Some(other_token))).await;
        assert_eq!(wrong_project.status, 404, "another project's job");
        let unknown = ask(app.client.get(refs("root/nope")).basic_auth("gitlab-ci-token", Some(&token))).await;
        assert_eq!(unknown.status, 404);
        let admin = ask(app.client.get(refs("root/app")).header("PRIVATE-TOKEN", crate::helpers::ADMIN_TOKEN)).await;
        assert_eq!(admin.status, 200);
        assert_eq!(admin.header("content-type"), Some("application/x-git-upload-pack-advertisement"));
        let push = ask(app.client.get(app.url("/root/app.git/info/refs?service=git-receive-pack")).header("PRIVATE-TOKEN", crate::helpers::ADMIN_TOKEN)).await;
        assert_eq!(push.status, 403, "only fetching is served");
        assert!(clone(&url.replacen(&token, "wrong", 1), "2").is_err(), "a wrong token");

        // A finished job's token opens nothing any more.
        app.update_job(&job, json!({ "state": "success" })).await;
        let finished = ask(app.client.get(refs("root/app")).basic_auth("gitlab-ci-token", Some(&token))).await;
        assert_eq!(finished.status, 401);
        assert!(clone(&url, "2").is_err(), "the job is over");
    }
}

/// `git fetch` of `refspec` from `url` into a new repository; the fetched ref's commit.
fn fetch(url: &str, refspec: &str, name: &str) -> Result<String, String> {
    let into = tempfile::tempdir().expect("tempdir");
    git(into.path(), &["init", "-q"]);
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(into.path())
        .args(["fetch", "-q", url, refspec])
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("git runs");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(git(into.path(), &["rev-parse", name]))
}

both_backends! {
    // Each pipeline's commit stays fetchable as `refs/pipelines/<id>` after its branch was
    // rewritten; a pipeline created with `ci_config` still runs at the ref's commit.
    async fn an_older_pipeline_fetches_its_own_commit(backend) {
        let app = TestApp::spawn(backend).await;
        let repo = tempfile::tempdir().expect("tempdir");
        let dir = repo.path();
        git(dir, &["init", "-q", "-b", "main"]);
        std::fs::write(dir.join(".gitlab-ci.yml"), "workflow: { auto_cancel: { on_new_commit: none } }\njob: { script: [x] }\n").expect("write");
        git(dir, &["add", "."]);
        git(dir, &["commit", "-q", "-m", "first"]);
        let first = git(dir, &["rev-parse", "HEAD"]);
        let project = app.create_project(json!({ "name": "app", "repository_url": dir.display().to_string() })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let create = |body: serde_json::Value| app.send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/pipeline")).json(&body));
        let older = create(json!({ "ref": "main" })).await;
        assert_eq!(older.status, 201, "{}", older.text);
        let older_id = older.json()["id"].as_i64().expect("id");
        // The branch is rewritten: the first commit is no longer on it.
        git(dir, &["commit", "-q", "--amend", "-m", "rewritten"]);
        let rewritten = git(dir, &["rev-parse", "HEAD"]);
        assert_eq!(create(json!({ "ref": "main" })).await.status, 201);

        let job = app.take_job(&runner).await;
        assert_eq!(job["git_info"]["sha"], first.as_str(), "the older pipeline's job comes first");
        let url = job["git_info"]["repo_url"].as_str().expect("repo_url");
        let persistent = format!("+refs/pipelines/{older_id}:refs/pipelines/{older_id}");
        assert_eq!(job["git_info"]["refspecs"][0], persistent.as_str());
        assert_eq!(fetch(url, &persistent, &format!("refs/pipelines/{older_id}")), Ok(first.clone()));
        assert_eq!(fetch(url, "+refs/heads/main:refs/heads/main", "refs/heads/main"), Ok(rewritten.clone()));

        // `ci_config` with a repository: the ref's commit, not a made-up sha.
        let sent = create(json!({ "ref": "main", "ci_config": "sent: { script: [x] }\n" })).await;
        assert_eq!(sent.status, 201, "{}", sent.text);
        assert_eq!(sent.json()["sha"], rewritten.as_str());
        let sent = create(json!({ "ref": "main", "sha": first, "ci_config": "sent: { script: [x] }\n" })).await;
        assert_eq!(sent.json()["sha"], first.as_str(), "or the sha given");
        create(json!({ "ref": "nope", "ci_config": "sent: { script: [x] }\n" }))
            .await
            .assert(400, json!({ "message": { "base": ["Reference not found"] } }));
    }
}

/// The pipelines with a `refs/pipelines/<id>` in the project's repository, and their commits.
fn pipeline_refs(app: &TestApp, project: i64) -> String {
    git(
        &app.data_dir().join(format!("repositories/{project}.git")),
        &[
            "for-each-ref",
            "--format=%(refname) %(objectname)",
            "refs/pipelines/",
        ],
    )
}

both_backends! {
    // GitLab's persistent ref lives while its pipeline does: the reaper's pass prunes it
    // once the pipeline finished, and a retry writes it back before the job is queued.
    async fn a_finished_pipelines_ref_is_pruned_and_a_retry_writes_it_back(backend) {
        let app = TestApp::builder(backend).stuck_job_timeout(60).spawn().await;
        let repo = tempfile::tempdir().expect("tempdir");
        let head = repository(repo.path());
        let project = app.create_project(json!({ "name": "pruned", "repository_url": repo.path().display().to_string() })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let created = app.send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/pipeline")).json(&json!({ "ref": "main" }))).await;
        assert_eq!(created.status, 201, "{}", created.text);
        let pipeline = created.json()["id"].as_i64().expect("id");
        let kept = format!("refs/pipelines/{pipeline} {head}");
        assert_eq!(pipeline_refs(&app, project), kept);
        let job = app.take_job(&runner).await;
        let updated = app.update_job(&job, json!({ "state": "success" })).await;
        assert_eq!(updated.status, 200, "{}", updated.text);

        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(45);
        while !pipeline_refs(&app, project).is_empty() {
            assert!(std::time::Instant::now() < deadline, "refs/pipelines/{pipeline} is still there");
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        let job_id = job["id"].as_i64().expect("id");
        let retried = app.send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/jobs/{job_id}/retry"))).await;
        assert_eq!(retried.status, 201, "{}", retried.text);
        assert_eq!(pipeline_refs(&app, project), kept, "written back with the retry");
        let job = app.take_job(&runner).await;
        let url = job["git_info"]["repo_url"].as_str().expect("repo_url");
        let persistent = format!("+refs/pipelines/{pipeline}:refs/pipelines/{pipeline}");
        assert_eq!(fetch(url, &persistent, &format!("refs/pipelines/{pipeline}")), Ok(head));
    }
}

both_backends! {
    // git asks without credentials first: that 401 is no failed authentication, so clones
    // never trip the limit; wrong passwords do, and then the address waits (429).
    async fn wrong_git_credentials_count_in_the_failed_authentication_limit(backend) {
        let app = TestApp::builder(backend).failed_auth_limit(3, 60).spawn().await;
        let repo = tempfile::tempdir().expect("tempdir");
        let head = repository(repo.path());
        app.create_project(json!({ "name": "limited", "repository_url": repo.path().display().to_string() })).await;
        let url = |password: &str| app.base.replacen("://", &format!("://root:{password}@"), 1) + "/root/limited.git";
        for _ in 0..5 {
            assert_eq!(clone(&url(crate::helpers::ADMIN_TOKEN), "2"), Ok(head.clone()));
        }
        // Three failures pass as failures; the fourth is one too many.
        for _ in 0..4 {
            let refused = clone(&url("glpat-wrong"), "2").expect_err("a wrong password");
            assert!(refused.contains("Authentication failed"), "{refused}");
        }
        let limited = clone(&url(crate::helpers::ADMIN_TOKEN), "2").expect_err("the address waits");
        assert!(limited.contains("429"), "{limited}");
        let reply = app.send(app.request(Method::GET, "/root/limited.git/info/refs?service=git-upload-pack")).await;
        assert_eq!(reply.status, 429, "{}", reply.text);
        assert!(reply.header("retry-after").is_some());
    }
}

/// `git push` with `args` (options, refspecs) to `url` from `dir`.
fn push(dir: &Path, url: &str, args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .arg("push")
        .args(args)
        .arg(url)
        .arg("main")
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("git runs");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The project's pipelines, newest first, once there are `count` (pushes start them
/// when the push is done; bounded wait).
async fn pipelines(app: &TestApp, project: i64, count: usize) -> Vec<serde_json::Value> {
    for _ in 0..100 {
        let listed = app
            .send(app.admin(
                Method::GET,
                &format!("/api/v4/projects/{project}/pipelines"),
            ))
            .await
            .json();
        let listed = listed.as_array().cloned().unwrap_or_default();
        if listed.len() >= count {
            return listed;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{count} pipelines never came");
}

both_backends! {
    // `git push` to a project without an upstream: its repository is created, and each
    // pushed branch starts a pipeline (source `push`) that fetches from Runway; GitLab's
    // `[skip ci]`, `-o ci.skip` and `-o ci.variable`.
    async fn a_push_starts_a_pipeline(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "pushed" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let work = tempfile::tempdir().expect("tempdir");
        let dir = work.path();
        git(dir, &["init", "-q", "-b", "main"]);
        std::fs::write(dir.join(".gitlab-ci.yml"), "job: { script: [echo $FROM_PUSH] }\n").expect("write");
        git(dir, &["add", "."]);
        git(dir, &["commit", "-q", "-m", "first"]);
        let first = git(dir, &["rev-parse", "HEAD"]);
        let url = app.base.replacen("://", &format!("://root:{}@", crate::helpers::ADMIN_TOKEN), 1) + "/root/pushed.git";
        push(dir, &url, &[]).expect("the admin pushes");

        let listed = pipelines(&app, project, 1).await;
        assert_eq!((listed[0]["source"].clone(), listed[0]["sha"].clone(), listed[0]["ref"].clone()), (json!("push"), json!(first), json!("main")));
        let job = app.take_job(&runner).await;
        assert_eq!(job["git_info"]["before_sha"], "0000000000000000000000000000000000000000", "a new branch");
        assert_eq!(clone(job["git_info"]["repo_url"].as_str().expect("repo_url"), "2"), Ok(first.clone()));
        app.update_job(&job, json!({ "state": "success" })).await;

        // Skipped: by the commit message, by the push option.
        git(dir, &["commit", "-q", "--allow-empty", "-m", "docs only [skip ci]"]);
        push(dir, &url, &[]).expect("pushed");
        git(dir, &["commit", "-q", "--allow-empty", "-m", "quiet"]);
        push(dir, &url, &["-o", "ci.skip"]).expect("pushed");
        let quiet = git(dir, &["rev-parse", "HEAD"]);
        // A variable for the pipeline, and the ref's old head as before_sha.
        git(dir, &["commit", "-q", "--allow-empty", "-m", "third"]);
        push(dir, &url, &["-o", "ci.variable=FROM_PUSH=pushed value"]).expect("pushed");
        let third = git(dir, &["rev-parse", "HEAD"]);
        let listed = pipelines(&app, project, 2).await;
        assert_eq!(listed.len(), 2, "skipped pushes start none");
        assert_eq!(listed[0]["sha"], third.as_str());
        let job = app.take_job(&runner).await;
        assert_eq!(job["git_info"]["before_sha"], quiet.as_str());
        let variable = job["variables"].as_array().and_then(|v| v.iter().find(|v| v["key"] == "FROM_PUSH")).map(|v| v["value"].clone());
        assert_eq!(variable, Some(json!("pushed value")));

        // Who may not push.
        let token = job["token"].as_str().expect("token");
        let as_job = app.base.replacen("://", &format!("://gitlab-ci-token:{token}@"), 1) + "/root/pushed.git";
        let refused = push(dir, &as_job, &[]).expect_err("a job cannot push");
        assert!(refused.contains("403"), "{refused}");
        let upstream = tempfile::tempdir().expect("tempdir");
        repository(upstream.path());
        app.create_project(json!({ "name": "mirrored", "repository_url": upstream.path().display().to_string() })).await;
        let mirrored = url.replace("/root/pushed.git", "/root/mirrored.git");
        let refused = push(dir, &mirrored, &["--force"]).expect_err("a mirror takes no push");
        assert!(refused.contains("403"), "{refused}");
    }
}

both_backends! {
    // A push pipeline's `changes` (rules, only/except, include:rules) read the paths the
    // push changed; a new branch's push knows none, and they hold.
    async fn push_pipelines_read_the_pushed_changes(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "mono" })).await;
        let work = tempfile::tempdir().expect("tempdir");
        let dir = work.path();
        let write = |path: &str, text: &str| {
            let file = dir.join(path);
            std::fs::create_dir_all(file.parent().expect("parent")).expect("folder");
            std::fs::write(file, text).expect("write");
        };
        git(dir, &["init", "-q", "-b", "main"]);
        write(".gitlab-ci.yml", "include:\n  - local: ci/extra.yml\n    rules:\n      - changes: [api/**/*]\n\
            docs: { script: [x], rules: [ { changes: [docs/**/*] } ] }\n\
            api: { script: [x], only: { changes: [api/**/*] } }\n\
            always: { script: [x] }\n");
        write("ci/extra.yml", "extra: { script: [x] }\n");
        write("docs/index.md", "# docs\n");
        write("api/main.go", "package main\n");
        git(dir, &["add", "."]);
        git(dir, &["commit", "-q", "-m", "first"]);
        let url = app.base.replacen("://", &format!("://root:{}@", crate::helpers::ADMIN_TOKEN), 1) + "/root/mono.git";
        push(dir, &url, &[]).expect("pushed");
        let listed = pipelines(&app, project, 1).await;
        assert_eq!(app.job_names(project, &listed[0]).await, ["always", "api", "docs", "extra"], "a new branch: every change holds");

        write("docs/index.md", "# more docs\n");
        git(dir, &["commit", "-q", "-am", "docs"]);
        push(dir, &url, &[]).expect("pushed");
        let listed = pipelines(&app, project, 2).await;
        assert_eq!(app.job_names(project, &listed[0]).await, ["always", "docs"]);

        write("api/main.go", "package main\n\nfunc main() {}\n");
        git(dir, &["commit", "-q", "-am", "api"]);
        push(dir, &url, &[]).expect("pushed");
        let listed = pipelines(&app, project, 3).await;
        assert_eq!(app.job_names(project, &listed[0]).await, ["always", "api", "extra"]);
    }
}

/// `GET /projects/:id` on `app`.
async fn project_of(app: &TestApp, project: i64) -> serde_json::Value {
    app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}")))
        .await
        .json()
}

both_backends! {
    // GitLab's `save_on_errors` for pushes: a configuration it refuses is recorded as a
    // failed pipeline without jobs, with its `yaml_errors`; rules that filter everything
    // out record nothing; the API answers 400 and records nothing.
    async fn a_pushed_invalid_configuration_records_a_failed_pipeline(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "broken" })).await;
        let work = tempfile::tempdir().expect("tempdir");
        let dir = work.path();
        git(dir, &["init", "-q", "-b", "main"]);
        std::fs::write(dir.join(".gitlab-ci.yml"), "job: { script: [x], needs: [nope] }\n").expect("write");
        git(dir, &["add", "."]);
        git(dir, &["commit", "-q", "-m", "broken"]);
        let head = git(dir, &["rev-parse", "HEAD"]);
        let url = app.base.replacen("://", &format!("://root:{}@", crate::helpers::ADMIN_TOKEN), 1) + "/root/broken.git";
        push(dir, &url, &[]).expect("pushed");
        let listed = pipelines(&app, project, 1).await;
        let id = listed[0]["id"].as_i64().expect("id");
        let shown = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/pipelines/{id}"))).await.json();
        let errors = "'job' job needs 'nope' job, but 'nope' does not exist in the pipeline. This might be because of the only, except, or rules keywords.";
        assert_eq!(
            (shown["status"].clone(), shown["source"].clone(), shown["sha"].clone(), shown["yaml_errors"].clone(), shown["finished_at"].is_string()),
            (json!("failed"), json!("push"), json!(head), json!(errors), true),
            "{shown}"
        );
        let jobs = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/pipelines/{id}/jobs"))).await.json();
        assert_eq!(jobs, json!([]));
        let (cookie, _) = crate::ui::sign_in(&app).await;
        let page = crate::ui::get(&app, Some(&cookie), &format!("/-/ui/projects/{project}/pipelines/{id}")).await;
        assert!(page.text.contains("The configuration is invalid: ") && page.text.contains("does not exist in the pipeline"), "{}", page.text);

        // Filtered out by workflow rules: nothing recorded (GitLab does not persist those).
        std::fs::write(dir.join(".gitlab-ci.yml"), "workflow: { rules: [ { if: $NEVER } ] }\njob: { script: [x] }\n").expect("write");
        git(dir, &["commit", "-q", "-am", "filtered"]);
        push(dir, &url, &[]).expect("pushed");
        // The API: 400, and no pipeline.
        let refused = app.send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/pipeline")).json(&json!({ "ref": "main", "ci_config": "job: { script: [x], needs: [nope] }\n" }))).await;
        assert_eq!(refused.status, 400, "{}", refused.text);
        git(dir, &["commit", "-q", "--allow-empty", "-m", "valid again"]);
        std::fs::write(dir.join(".gitlab-ci.yml"), "job: { script: [x] }\n").expect("write");
        git(dir, &["commit", "-q", "-am", "fixed"]);
        push(dir, &url, &[]).expect("pushed");
        let listed = pipelines(&app, project, 2).await;
        let statuses: Vec<_> = listed.iter().map(|p| (p["status"].clone(), p["yaml_errors"].clone())).collect();
        assert_eq!(statuses, [(json!("pending"), json!(null)), (json!("failed"), json!(errors))]);
    }
}

/// `POST /projects/:id/mirror/pull` on `app`.
async fn pull(app: &TestApp, project: i64) -> crate::helpers::Reply {
    app.send(app.admin(
        Method::POST,
        &format!("/api/v4/projects/{project}/mirror/pull"),
    ))
    .await
}

both_backends! {
    // A mirror pull starts a pipeline per branch or tag head the upstream moved, once
    // even when two instances on one database pull at the same time; the first pull only
    // records the heads.
    async fn a_mirror_pull_starts_each_moved_heads_pipeline_once(backend) {
        let first = TestApp::spawn(backend).await;
        let second = TestApp::builder(backend).same_database_as(&first).data_dir_of(&first).spawn().await;
        let upstream = tempfile::tempdir().expect("tempdir");
        let dir = upstream.path();
        let old_head = repository(dir);
        let project = first.create_project(json!({ "name": "mirrored", "repository_url": format!("file://{}", dir.display()) })).await;
        pull(&first, project).await.assert(200, json!({ "pipelines": 0 }));

        std::fs::write(dir.join("CHANGELOG"), "1.0\n").expect("write");
        git(dir, &["add", "."]);
        git(dir, &["commit", "-q", "-m", "release notes"]);
        let new_head = git(dir, &["rev-parse", "HEAD"]);
        git(dir, &["checkout", "-q", "-b", "feature"]);
        git(dir, &["commit", "-q", "--allow-empty", "-m", "feature work"]);
        let feature = git(dir, &["rev-parse", "HEAD"]);
        let (a, b) = tokio::join!(pull(&first, project), pull(&second, project));
        assert_eq!((a.status, b.status), (200, 200), "{} {}", a.text, b.text);
        let started = a.json()["pipelines"].as_i64().unwrap_or(0) + b.json()["pipelines"].as_i64().unwrap_or(0);
        assert_eq!(started, 2, "main moved, feature is new: {} {}", a.text, b.text);
        let listed = pipelines(&first, project, 2).await;
        assert_eq!(listed.len(), 2);
        let mut seen: Vec<(String, String, String)> = listed
            .iter()
            .map(|p| (p["ref"].as_str().unwrap_or_default().into(), p["sha"].as_str().unwrap_or_default().into(), p["source"].as_str().unwrap_or_default().into()))
            .collect();
        seen.sort();
        assert_eq!(seen, [("feature".into(), feature.clone(), "push".into()), ("main".into(), new_head.clone(), "push".into())]);
        let (_, runner) = first.create_runner(json!({ "runner_type": "instance_type" })).await;
        let mut befores = Vec::new();
        for _ in 0..2 {
            let job = first.take_job(&runner).await;
            befores.push((job["git_info"]["ref"].as_str().unwrap_or_default().to_string(), job["git_info"]["before_sha"].as_str().unwrap_or_default().to_string()));
        }
        befores.sort();
        assert_eq!(befores, [("feature".to_string(), "0000000000000000000000000000000000000000".to_string()), ("main".to_string(), old_head)]);
        pull(&second, project).await.assert(200, json!({ "pipelines": 0 }));

        let bare = first.create_project(json!({ "name": "bare" })).await;
        first.send(first.admin(Method::POST, &format!("/api/v4/projects/{bare}/mirror/pull")))
            .await
            .assert(400, json!({ "message": "400 Bad request - The project is not mirrored" }));
    }
}

both_backends! {
    // `RUNWAY_MIRROR_INTERVAL`: the upstream's new commit starts its pipeline by itself.
    async fn mirrors_are_pulled_on_a_timer(backend) {
        let app = TestApp::builder(backend).mirror_interval(1).spawn().await;
        let upstream = tempfile::tempdir().expect("tempdir");
        let dir = upstream.path();
        repository(dir);
        let project = app.create_project(json!({ "name": "polled", "repository_url": format!("file://{}", dir.display()) })).await;
        // The first pull records the heads; none of them starts a pipeline.
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        let listed = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/pipelines"))).await.json();
        assert_eq!(listed, json!([]));
        git(dir, &["commit", "-q", "--allow-empty", "-m", "upstream moved"]);
        let head = git(dir, &["rev-parse", "HEAD"]);
        let listed = pipelines(&app, project, 1).await;
        assert_eq!((listed[0]["sha"].clone(), listed[0]["source"].clone()), (json!(head), json!("push")));
    }
}

both_backends! {
    // A project's own `mirror_interval` (the instance's default here is 0): two instances
    // on one database pull it on their timers, and the new upstream commit starts exactly
    // one pipeline; a project without an interval of its own is never pulled.
    async fn a_projects_interval_pulls_it_once_across_instances(backend) {
        let first = TestApp::spawn(backend).await;
        let second = TestApp::builder(backend).same_database_as(&first).data_dir_of(&first).spawn().await;
        let upstream = tempfile::tempdir().expect("tempdir");
        let dir = upstream.path();
        repository(dir);
        let url = format!("file://{}", dir.display());
        let created = first.send(first.admin(Method::POST, "/api/v4/projects").json(&json!({ "name": "timed", "repository_url": url, "mirror_interval": 1 }))).await;
        assert_eq!((created.status, created.json()["mirror_interval"].clone()), (201, json!(1)), "{}", created.text);
        let timed = created.json()["id"].as_i64().expect("id");
        let untimed = first.create_project(json!({ "name": "untimed", "repository_url": url })).await;
        // The first pull records the heads; none of them starts a pipeline.
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        assert!(project_of(&second, timed).await["mirror_last_update_at"].is_string());
        let listed = first.send(first.admin(Method::GET, &format!("/api/v4/projects/{timed}/pipelines"))).await.json();
        assert_eq!(listed, json!([]));

        git(dir, &["commit", "-q", "--allow-empty", "-m", "upstream moved"]);
        let head = git(dir, &["rev-parse", "HEAD"]);
        let listed = pipelines(&first, timed, 1).await;
        assert_eq!((listed[0]["sha"].clone(), listed[0]["source"].clone()), (json!(head), json!("push")));
        // Several more ticks of both instances: still one pipeline.
        tokio::time::sleep(std::time::Duration::from_millis(3000)).await;
        let listed = second.send(second.admin(Method::GET, &format!("/api/v4/projects/{timed}/pipelines"))).await.json();
        assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
        let untouched = project_of(&first, untimed).await;
        assert_eq!(untouched["mirror_last_update_at"], json!(null));
        let listed = first.send(first.admin(Method::GET, &format!("/api/v4/projects/{untimed}/pipelines"))).await.json();
        assert_eq!(listed, json!([]));

        // Settable and bounded through the projects API; empty gives the instance's back.
        let put = |body: serde_json::Value| first.send(first.admin(Method::PUT, &format!("/api/v4/projects/{timed}")).json(&body));
        let off = put(json!({ "mirror_interval": 0 })).await;
        assert_eq!((off.status, off.json()["mirror_interval"].clone()), (200, json!(0)), "{}", off.text);
        put(json!({ "mirror_interval": -1 })).await.assert(400, json!({ "message": { "mirror_interval": ["must be between 0 and 2592000 seconds"] } }));
        let default = put(json!({ "mirror_interval": "" })).await;
        assert_eq!((default.status, default.json()["mirror_interval"].clone()), (200, json!(null)), "{}", default.text);
    }
}

both_backends! {
    // The push webhook pulls the upstream when the forge signs it with the project's
    // secret (GitHub/Gitea HMAC, GitLab token); a bad signature fetches nothing.
    async fn a_signed_push_hook_pulls_the_upstream(backend) {
        use hmac::Mac;
        let app = TestApp::spawn(backend).await;
        let upstream = tempfile::tempdir().expect("tempdir");
        let dir = upstream.path();
        repository(dir);
        let project = app.create_project(json!({ "name": "hooked", "repository_url": format!("file://{}", dir.display()) })).await;
        let hook = |headers: &[(&str, String)], body: &'static str| {
            let mut request = app.client.post(app.url(&format!("/api/v4/projects/{project}/hooks/push"))).body(body);
            for (name, value) in headers {
                request = request.header(*name, value.as_str());
            }
            app.send(request)
        };
        // No secret set: the hook is off.
        hook(&[("X-Gitlab-Token", "anything".into())], "{}").await.assert(401, json!({ "message": "401 Unauthorized" }));
        let set = app.send(app.admin(Method::PUT, &format!("/api/v4/projects/{project}")).json(&json!({ "push_hook_secret": "s3cret" }))).await;
        assert_eq!(set.status, 200, "{}", set.text);
        assert!(!set.text.contains("s3cret"), "the secret is never shown");
        hook(&[("X-Gitlab-Token", "s3cret".into())], "{}").await.assert(200, json!({ "pipelines": 0 }));

        git(dir, &["commit", "-q", "--allow-empty", "-m", "upstream moved"]);
        let head = git(dir, &["rev-parse", "HEAD"]);
        let body = r#"{"ref":"refs/heads/main"}"#;
        let sign = |secret: &str| {
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
            mac.update(body.as_bytes());
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        };
        for bad in [vec![("X-Hub-Signature-256", sign("wrong"))], vec![("X-Gitlab-Token", "wrong".into())], vec![]] {
            hook(&bad, body).await.assert(401, json!({ "message": "401 Unauthorized" }));
        }
        let listed = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/pipelines"))).await.json();
        assert_eq!(listed, json!([]), "a refused hook fetches nothing");
        hook(&[("X-Hub-Signature-256", sign("s3cret"))], body).await.assert(200, json!({ "pipelines": 1 }));
        let listed = pipelines(&app, project, 1).await;
        assert_eq!(listed[0]["sha"], head.as_str());
    }
}
