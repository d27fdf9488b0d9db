//! Job keywords that change what a runner gets or when it gets it (issue 24, part 6):
//! `when: delayed` with `start_in` (from the job and from a rule), `manual_confirmation`,
//! `hooks:pre_get_sources_script`, `docker:`/`kubernetes:` image options as the payload's
//! `executor_opts`, `cache:key:files` keyed by the files' last commits, `cache:unprotect`,
//! `artifacts:expose_as` and `artifacts:access`.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use sha1::Digest as _;

use crate::helpers::e2e::{commit_branch, create_pipeline, git};
use crate::helpers::{both_backends, TestApp};

const YAML: &str = r#"
stages: [build, deploy]
build:
  stage: build
  image: { name: alpine, docker: { platform: linux/arm64, user: "1000" } }
  services: [ { name: postgres, alias: db, kubernetes: { user: 1001 } } ]
  hooks: { pre_get_sources_script: [ echo hook ] }
  cache:
    - { key: { files: [ Gemfile.lock ], prefix: gems }, paths: [ vendor/ ], unprotect: true }
    - { key: plain, paths: [ x/ ] }
  artifacts: { expose_as: Build output, paths: [ out/ ], access: none }
  script: [ make ]
soon:
  stage: deploy
  when: delayed
  start_in: 2 seconds
  script: [ deploy ]
next_week:
  stage: deploy
  rules: [ { when: delayed, start_in: 1 week } ]
  script: [ later ]
confirm:
  stage: deploy
  when: manual
  manual_confirmation: Deploy to production?
  script: [ prod ]
"#;

async fn status_of(app: &TestApp, project: i64, pipeline: i64, name: &str) -> String {
    app.job_statuses(project, pipeline)
        .await
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, s)| s)
        .unwrap_or_default()
}

both_backends! {
    async fn delayed_jobs_hooks_executor_options_and_file_keyed_caches(backend) {
        let app = TestApp::spawn(backend).await;
        let repo = tempfile::tempdir().expect("tempdir");
        commit_branch(repo.path(), "main", YAML);
        std::fs::write(repo.path().join("Gemfile.lock"), "gems\n").expect("write");
        git(repo.path(), &["add", "."]);
        git(repo.path(), &["commit", "-q", "-m", "lock"]);
        let lock_commit = git(repo.path(), &["rev-parse", "HEAD"]);
        // A later commit that leaves Gemfile.lock alone does not change the key.
        std::fs::write(repo.path().join("README"), "changed\n").expect("write");
        git(repo.path(), &["commit", "-q", "-am", "readme"]);
        let project = app.create_project(json!({ "name": "keywords", "repository_url": repo.path().display().to_string() })).await;
        let pipeline = create_pipeline(&app, project, "main").await;

        let (_, token) = app.register_runner().await;
        let build = app.take_job(&token).await;
        assert_eq!(build["job_info"]["name"], "build");
        assert_eq!(build["image"]["executor_opts"], json!({ "docker": { "platform": "linux/arm64", "user": "1000" } }));
        assert_eq!(build["services"][0]["executor_opts"], json!({ "kubernetes": { "user": 1001 } }));
        assert_eq!(build["services"][0]["alias"], "db");
        assert_eq!(build["hooks"], json!([{ "name": "pre_get_sources_script", "script": ["echo hook"] }]));
        // `Seed::Build::Cache`: SHA-1 of the file's last commit, after the prefix; main is
        // protected, but `unprotect` shares the unprotected cache.
        let digest = hex::encode(sha1::Sha1::digest(lock_commit.as_bytes()));
        assert_eq!(build["cache"][0]["key"], format!("gems-{digest}-non_protected"));
        assert_eq!(build["cache"][1]["key"], "plain-protected");
        assert_eq!(build["artifacts"][0]["paths"], json!(["out/"]));
        let done = app.update_job(&build, json!({ "state": "success" })).await;
        assert_eq!(done.status, 200, "{}", done.text);

        // The delayed jobs wait in `scheduled`; the manual one in `manual`.
        assert_eq!(status_of(&app, project, pipeline, "soon").await, "scheduled");
        assert_eq!(status_of(&app, project, pipeline, "next_week").await, "scheduled");
        assert_eq!(status_of(&app, project, pipeline, "confirm").await, "manual");
        assert_eq!(app.pipeline_status(project, pipeline).await, "scheduled");
        assert_eq!(app.request_job(&token).await.status, 204, "nothing is due yet");
        // Two seconds on, `soon` is queued (by the per-second pass) and runs.
        let start = Instant::now();
        let soon = loop {
            let reply = app.request_job(&token).await;
            if reply.status == 201 {
                break reply.json();
            }
            assert!(start.elapsed() < Duration::from_secs(20), "the delayed job never came");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(soon["job_info"]["name"], "soon");
        assert_eq!(app.update_job(&soon, json!({ "state": "success" })).await.status, 200);

        // A job due next week is played now: GitLab's `playable?` takes scheduled jobs.
        let jobs = app.api(Method::GET, &format!("/projects/{project}/pipelines/{pipeline}/jobs"), None).await.json();
        let id_of = |name: &str| jobs.as_array().expect("jobs").iter().find(|j| j["name"] == name).map(|j| j["id"].as_i64().expect("id")).expect("job");
        let played = app.api(Method::POST, &format!("/projects/{project}/jobs/{}/play", id_of("next_week")), None).await;
        assert_eq!((played.status, played.json()["status"].clone()), (200, json!("pending")), "{}", played.text);
        let later = app.take_job(&token).await;
        assert_eq!(later["job_info"]["name"], "next_week");
        assert_eq!(app.update_job(&later, json!({ "state": "success" })).await.status, 200);
        // A finished job is not played again.
        let again = app.api(Method::POST, &format!("/projects/{project}/jobs/{}/play", id_of("next_week")), None).await;
        again.assert(400, json!({ "message": "400 Bad request - Unplayable Job" }));

        // `access: none`: the archive is nobody's to download through the API.
        let refused = app.api(Method::GET, &format!("/projects/{project}/jobs/{}/artifacts", id_of("build")), None).await;
        refused.assert(403, json!({ "message": "403 Forbidden" }));
    }

    // `artifacts:expose_as`: the pipeline's page links the archives its successful jobs
    // expose, by their names; one with `access: none` is neither shown nor downloaded.
    async fn exposed_artifacts_are_on_the_pipeline_page(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "exposed" })).await;
        let yaml = "report: { script: [x], artifacts: { expose_as: Coverage report, paths: [cov/] } }\nsecret: { script: [y], artifacts: { expose_as: Hidden one, paths: [s/], access: none } }\n";
        let pipeline = app.pipeline(project, yaml).await;
        let (_, token) = app.register_runner().await;
        let mut ids = std::collections::HashMap::new();
        for _ in 0..2 {
            let job = app.take_job(&token).await;
            let archive = crate::artifacts::zip_of(&[("cov/index.html", b"<p>93%</p>".as_slice())]);
            let uploaded = app.upload(&job, "artifact_format=zip&artifact_type=archive", "artifacts.zip", archive, false).await;
            assert_eq!(uploaded.status, 201, "{}", uploaded.text);
            assert_eq!(app.update_job(&job, json!({ "state": "success" })).await.status, 200);
            ids.insert(job["job_info"]["name"].as_str().expect("name").to_string(), job["id"].as_i64().expect("id"));
        }
        let (cookie, _) = crate::ui::sign_in(&app).await;
        let page = crate::ui::get(&app, Some(&cookie), &format!("/-/ui/projects/{project}/pipelines/{pipeline}")).await;
        assert_eq!(page.status, 200);
        let link = format!("<a href=\"/-/ui/jobs/{}/artifacts\">Coverage report</a>", ids["report"]);
        assert!(page.text.contains("Exposed artifacts") && page.text.contains(&link), "{}", page.text);
        assert!(!page.text.contains("Hidden one"), "{}", page.text);
        let download = crate::ui::get(&app, Some(&cookie), &format!("/-/ui/jobs/{}/artifacts", ids["report"])).await;
        assert_eq!(download.status, 200);
        let refused = crate::ui::get(&app, Some(&cookie), &format!("/-/ui/jobs/{}/artifacts", ids["secret"])).await;
        assert_eq!(refused.status, 403);
    }

    async fn the_keywords_refuse_what_gitlab_refuses(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "refusals" })).await;
        let cases = [
            ("j: { script: x, when: delayed }", "jobs:j start in should be a duration"),
            ("j: { script: x, when: delayed, start_in: 8 days }", "jobs:j start in should not exceed the limit"),
            ("j: { script: x, start_in: 1 minute }", "jobs:j start in must be blank"),
            ("j: { script: x, rules: [ { when: delayed } ] }", "jobs:j:rules:rule start in can't be blank"),
            ("j: { script: x, rules: [ { start_in: 1 minute } ] }", "jobs:j:rules:rule config contains disallowed keys: start_in"),
            ("j: { script: x, manual_confirmation: [ x ] }", "jobs:j manual confirmation should be a string"),
            ("j: { script: x, resource_group: [ x ] }", "jobs:j resource group should be a string"),
            ("j: { script: x, hooks: { post_get_sources_script: x } }", "jobs:j:hooks config contains unknown keys: post_get_sources_script"),
            ("j: { script: x, image: { name: a, ports: [ 80 ] } }", "jobs:j:image config contains disallowed keys: ports"),
            ("j: { script: x, image: { name: a, docker: { platform: 1 } } }", "jobs:j:image executor opts value at `/docker/platform` is not a string"),
            ("j: { script: x, cache: { key: { files: [ a, b, c ] } } }", "jobs:j:cache:key:files config has too many items (maximum is 2)"),
            ("j: { script: x, cache: [ {key: a}, {key: b}, {key: c}, {key: d}, {key: e} ] }", "jobs:j:cache config no more than 4 caches can be created"),
            ("j: { script: x, artifacts: { expose_as: x, paths: [ '*.txt' ] } }", "jobs:j:artifacts paths can't contain '*' when used with 'expose_as'"),
            ("j: { script: x, secrets: { A: { vault: a/b@c } } }", "jobs:j secrets is not supported: Runway reads no external secret provider; give the job CI/CD variables (masked, protected) instead"),
        ];
        for (yaml, message) in cases {
            let reply = app.create_pipeline(project, "main", yaml).await;
            reply.assert(400, json!({ "message": { "base": [message] } }));
        }
        let listed = app.api(Method::GET, &format!("/projects/{project}/pipelines"), None).await.json();
        assert_eq!(listed, json!([]), "nothing was created");
    }
}
