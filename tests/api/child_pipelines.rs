//! `trigger:include` (issue 24, part 3): a bridge runs on Runway and starts a child
//! pipeline from the files it includes, on the parent's commit, with the bridge's
//! variables (and the parent's when forwarded); `strategy: depend` makes the bridge end as
//! the child ends; multi-project pipelines between Runway projects; GitLab's bridges API,
//! child pipelines left out of the list unless asked for, a child that cannot be made
//! failing its bridge, a canceled parent canceling its children.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::e2e::{commit_branch, git};
use crate::helpers::{both_backends, TestApp};

const PARENT: &str = r#"
variables: { GLOBAL: from-parent }
stages: [build, children]
build:
  stage: build
  script: [ echo build ]
child_depend:
  stage: children
  variables: { GREETING: hello, PARENT_PIPELINE_ID: $CI_PIPELINE_ID }
  trigger:
    include: child.yml
    strategy: depend
    forward: { pipeline_variables: true }
child_fire:
  stage: children
  trigger: { include: [ { local: child.yml } ] }
"#;

const CHILD: &str = "child_job:\n  script: [ echo child $GREETING ]\n";

fn value_of(job: &Value, key: &str) -> Option<String> {
    job["variables"]
        .as_array()?
        .iter()
        .find(|v| v["key"] == key)
        .and_then(|v| v["value"].as_str().map(str::to_string))
}

async fn bridges(app: &TestApp, project: i64, pipeline: i64) -> Vec<Value> {
    let reply = app
        .api(
            Method::GET,
            &format!("/projects/{project}/pipelines/{pipeline}/bridges"),
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json().as_array().expect("array").clone()
}

fn named<'a>(items: &'a [Value], name: &str) -> &'a Value {
    items
        .iter()
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {items:?}"))
}

both_backends! {
    async fn a_bridge_starts_a_child_pipeline_and_depends_on_it(backend) {
        let app = TestApp::spawn(backend).await;
        let repo = tempfile::tempdir().expect("tempdir");
        commit_branch(repo.path(), "main", PARENT);
        std::fs::write(repo.path().join("child.yml"), CHILD).expect("write");
        git(repo.path(), &["add", "."]);
        git(repo.path(), &["commit", "-q", "-m", "child"]);
        let project = app.create_project(json!({ "name": "monorepo", "repository_url": repo.path().display().to_string() })).await;
        let created = app.api(Method::POST, &format!("/projects/{project}/pipeline"), Some(json!({ "ref": "main", "variables": [{ "key": "PIPE_VAR", "value": "from-the-api" }] }))).await;
        assert_eq!(created.status, 201, "{}", created.text);
        let parent = created.json()["id"].as_i64().expect("id");
        let (_, token) = app.register_runner().await;
        let build = app.take_job(&token).await;
        assert_eq!(build["job_info"]["name"], "build");
        assert_eq!(app.update_job(&build, json!({ "state": "success" })).await.status, 200);

        // Both bridges ran on Runway and made their children; the one without a strategy
        // succeeded at once, the depending one waits.
        let listed = bridges(&app, project, parent).await;
        assert_eq!(listed.len(), 2, "{listed:?}");
        let depend = named(&listed, "child_depend");
        let fire = named(&listed, "child_fire");
        assert_eq!((depend["status"].clone(), fire["status"].clone()), (json!("running"), json!("success")));
        for bridge in [depend, fire] {
            let downstream = &bridge["downstream_pipeline"];
            assert_eq!((downstream["source"].clone(), downstream["ref"].clone(), downstream["sha"].clone()), (json!("parent_pipeline"), json!("main"), build["git_info"]["sha"].clone()), "{bridge}");
        }
        // The parent's jobs are its builds; its children are listed when asked for.
        let jobs = app.api(Method::GET, &format!("/projects/{project}/pipelines/{parent}/jobs"), None).await.json();
        assert_eq!(jobs.as_array().map(|j| j.iter().map(|j| j["name"].clone()).collect::<Vec<_>>()), Some(vec![json!("build")]));
        let shown = app.api(Method::GET, &format!("/projects/{project}/pipelines"), None).await.json();
        assert_eq!(shown.as_array().map(Vec::len), Some(1));
        let children = app.api(Method::GET, &format!("/projects/{project}/pipelines?source=parent_pipeline"), None).await.json();
        assert_eq!(children.as_array().map(Vec::len), Some(2));
        assert_eq!(app.pipeline_status(project, parent).await, "running");
        // The depending bridge has no runner to hear from: the reaper leaves it running
        // however long ago it started and was last touched.
        let bridge_id = depend["id"].as_i64().expect("bridge id");
        app.execute(&format!("UPDATE jobs SET updated_at = '2020-01-01 00:00:00', started_at = '2020-01-01 00:00:00' WHERE id = {bridge_id}")).await;
        assert_eq!(app.state.pipelines.reap(Duration::from_secs(3600)).await.expect("reap"), 0);
        assert_eq!(named(&bridges(&app, project, parent).await, "child_depend")["status"], "running");

        // The children's jobs see the bridge's variables; the depending one the parent's
        // pipeline variables too (forwarded), the other not.
        let depend_child = depend["downstream_pipeline"]["id"].as_i64().expect("id");
        for _ in 0..2 {
            let job = app.take_job(&token).await;
            assert_eq!(job["job_info"]["name"], "child_job");
            assert_eq!(value_of(&job, "CI_PIPELINE_SOURCE").as_deref(), Some("parent_pipeline"));
            assert_eq!(value_of(&job, "GLOBAL").as_deref(), Some("from-parent"));
            let forwarded = value_of(&job, "PIPE_VAR");
            if job["job_info"]["pipeline_id"] == depend_child {
                assert_eq!(value_of(&job, "GREETING").as_deref(), Some("hello"));
                assert_eq!(value_of(&job, "PARENT_PIPELINE_ID"), Some(parent.to_string()), "expanded as the bridge sees it");
                assert_eq!(forwarded.as_deref(), Some("from-the-api"));
            } else {
                assert_eq!(forwarded, None, "pipeline variables are not forwarded by default");
            }
            assert_eq!(app.update_job(&job, json!({ "state": "success" })).await.status, 200);
        }
        assert_eq!(app.pipeline_status(project, depend_child).await, "success");
        assert_eq!(named(&bridges(&app, project, parent).await, "child_depend")["status"], "success");
        assert_eq!(app.pipeline_status(project, parent).await, "success");
    }

    // `trigger: <project>`: a pipeline of another Runway project, from its own file on its
    // default branch, source `pipeline`, with the bridge's variables; a project not there
    // fails its bridge with GitLab's reason.
    async fn a_bridge_starts_another_projects_pipeline(backend) {
        let app = TestApp::spawn(backend).await;
        let repo = tempfile::tempdir().expect("tempdir");
        commit_branch(repo.path(), "main", "deploy_service:\n  script: [ echo deploying for $UPSTREAM ]\n");
        let service = app.create_project(json!({ "name": "service", "repository_url": repo.path().display().to_string() })).await;
        let upstream = app.create_project(json!({ "name": "app" })).await;
        let yaml = "downstream:\n  variables: { UPSTREAM: $CI_PROJECT_PATH }\n  trigger: { project: root/service, strategy: depend }\nmissing:\n  trigger: root/nope\n";
        let parent = app.pipeline(upstream, yaml).await;
        let listed = bridges(&app, upstream, parent).await;
        let missing = named(&listed, "missing");
        assert_eq!((missing["status"].clone(), missing["failure_reason"].clone()), (json!("failed"), json!("downstream_bridge_project_not_found")));
        let downstream = named(&listed, "downstream");
        assert_eq!(downstream["status"], "running");
        assert_eq!((downstream["downstream_pipeline"]["project_id"].clone(), downstream["downstream_pipeline"]["source"].clone()), (json!(service), json!("pipeline")));
        let (_, token) = app.register_runner().await;
        let job = app.take_job(&token).await;
        assert_eq!(job["job_info"]["project_id"], service);
        assert_eq!(value_of(&job, "UPSTREAM").as_deref(), Some("root/app"));
        assert_eq!(value_of(&job, "CI_PIPELINE_SOURCE").as_deref(), Some("pipeline"));
        app.update_job(&job, json!({ "state": "success" })).await;
        assert_eq!(named(&bridges(&app, upstream, parent).await, "downstream")["status"], "success");
        let services = app.api(Method::GET, &format!("/projects/{service}/pipelines"), None).await.json();
        assert_eq!(services.as_array().map(Vec::len), Some(1), "a downstream pipeline is its project's own");
        // Its own project is no downstream (`invalid_bridge_trigger`).
        let itself = app.pipeline(upstream, "again: { trigger: root/app }").await;
        let again = named(&bridges(&app, upstream, itself).await, "again").clone();
        assert_eq!(again["failure_reason"], "invalid_bridge_trigger");
    }

    // A dynamic child pipeline: its configuration is a file a job of the parent made
    // (`include:artifact` with `job`); without that file the bridge fails.
    async fn a_child_pipeline_runs_the_configuration_a_job_generated(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "generated" })).await;
        let yaml = "stages: [generate, children]\ngenerate:\n  stage: generate\n  script: [gen]\n  artifacts: { paths: [generated.yml] }\ndynamic:\n  stage: children\n  needs: [generate]\n  trigger: { include: [ { artifact: generated.yml, job: generate } ], strategy: depend }\n";
        let (_, token) = app.register_runner().await;
        for (generated, expected) in [(Some("generated_job: { script: [ echo generated ] }\n"), "success"), (None, "failed")] {
            let parent = app.pipeline(project, yaml).await;
            let job = app.take_job(&token).await;
            if let Some(text) = generated {
                let archive = crate::artifacts::zip_of(&[("generated.yml", text.as_bytes())]);
                let uploaded = app.upload(&job, "artifact_format=zip&artifact_type=archive", "artifacts.zip", archive, false).await;
                assert_eq!(uploaded.status, 201, "{}", uploaded.text);
            }
            app.update_job(&job, json!({ "state": "success" })).await;
            let bridge = named(&bridges(&app, project, parent).await, "dynamic").clone();
            if expected == "failed" {
                assert_eq!((bridge["status"].clone(), bridge["failure_reason"].clone()), (json!("failed"), json!("downstream_pipeline_creation_failed")));
                continue;
            }
            assert_eq!(bridge["status"], "running", "{bridge}");
            let child_job = app.take_job(&token).await;
            assert_eq!(child_job["job_info"]["name"], "generated_job");
            app.update_job(&child_job, json!({ "state": "success" })).await;
            assert_eq!(named(&bridges(&app, project, parent).await, "dynamic")["status"], "success");
            assert_eq!(app.pipeline_status(project, parent).await, "success");
        }
    }

    async fn a_child_that_cannot_be_made_fails_its_bridge_and_a_cancel_reaches_the_children(backend) {
        let app = TestApp::spawn(backend).await;
        let repo = tempfile::tempdir().expect("tempdir");
        let yaml = "broken:\n  trigger: { include: missing.yml, strategy: depend }\nworking:\n  trigger: { include: child.yml, strategy: depend }\n";
        commit_branch(repo.path(), "main", yaml);
        std::fs::write(repo.path().join("child.yml"), CHILD).expect("write");
        git(repo.path(), &["add", "."]);
        git(repo.path(), &["commit", "-q", "-m", "child"]);
        let project = app.create_project(json!({ "name": "parts", "repository_url": repo.path().display().to_string() })).await;
        let parent = crate::helpers::e2e::create_pipeline(&app, project, "main").await;
        let listed = bridges(&app, project, parent).await;
        let broken = named(&listed, "broken");
        assert_eq!((broken["status"].clone(), broken["failure_reason"].clone(), broken["downstream_pipeline"].clone()),
            (json!("failed"), json!("downstream_pipeline_creation_failed"), json!(null)));
        let child = named(&listed, "working")["downstream_pipeline"]["id"].as_i64().expect("a child");
        assert_eq!(app.pipeline_status(project, child).await, "pending");
        // Canceling the parent cancels its child, and the depending bridge follows.
        let canceled = app.api(Method::POST, &format!("/projects/{project}/pipelines/{parent}/cancel"), None).await;
        assert_eq!(canceled.status, 201, "{}", canceled.text);
        let deadline = Instant::now() + Duration::from_secs(10);
        while app.pipeline_status(project, child).await != "canceled" {
            assert!(Instant::now() < deadline, "the child was not canceled");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(app.pipeline_status(project, parent).await, "failed");

        // A manual bridge, played: it runs on Runway, never on a runner, and makes its child.
        let gated = app.pipeline(project, "gate: { when: manual, trigger: { include: child.yml } }").await;
        let gate = named(&bridges(&app, project, gated).await, "gate").clone();
        assert_eq!(gate["status"], "manual");
        let played = app.api(Method::POST, &format!("/projects/{project}/jobs/{}/play", gate["id"]), None).await;
        assert_eq!(played.status, 200, "{}", played.text);
        let gate = named(&bridges(&app, project, gated).await, "gate").clone();
        assert_eq!((gate["status"].clone(), gate["downstream_pipeline"]["source"].clone()), (json!("success"), json!("parent_pipeline")));
        let (_, token) = app.register_runner().await;
        let taken = app.take_job(&token).await;
        assert_eq!(taken["job_info"]["name"], "child_job", "a runner gets the child's job, not the bridge");

        // What GitLab refuses, and what is not built yet.
        for (yaml, message) in [
            ("b: { script: x, trigger: { include: c.yml } }", "jobs:b these keys cannot be used together: script, trigger"),
            ("b: { image: x, trigger: { include: c.yml } }", "jobs:b config contains unknown keys: image"),
            ("b: { trigger: { strategy: depend } }", "jobs:b:trigger project can't be blank"),
            ("b: { trigger: { include: [a.yml, b.yml, c.yml, d.yml] } }", "jobs:b:trigger:include config is too long (maximum is 3)"),
        ] {
            app.create_pipeline(project, "main", yaml).await.assert(400, json!({ "message": { "base": [message] } }));
        }
    }
}
