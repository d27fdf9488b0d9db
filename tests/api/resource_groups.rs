//! `resource_group` (issue 24, part 2): one job of a project's group runs at a time; the
//! others wait in `waiting_for_resource` and get the resource in the order of the group's
//! process mode; GitLab's resource groups API; exclusivity with two instances on one
//! database and 20 jobs competing for the group.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{both_backends, TestApp};

/// The one job of a one-job pipeline.
async fn only_job(app: &TestApp, project: i64, pipeline: i64) -> Value {
    let jobs = app
        .api(
            Method::GET,
            &format!("/projects/{project}/pipelines/{pipeline}/jobs"),
            None,
        )
        .await
        .json();
    jobs[0].clone()
}

both_backends! {
    async fn a_group_runs_one_job_at_a_time_in_its_process_modes_order(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "deploys" })).await;
        // The key is expanded when the pipeline is created. (Newer pipelines on the ref
        // leave the older ones be.)
        let yaml = "workflow: { auto_cancel: { on_new_commit: none } }\ndeploy:\n  resource_group: production-$CI_COMMIT_REF_SLUG\n  script: [deploy]\n";
        let mut pipelines = Vec::new();
        for _ in 0..3 {
            pipelines.push(app.pipeline(project, yaml).await);
        }
        let jobs: Vec<Value> = {
            let mut jobs = Vec::new();
            for p in &pipelines {
                jobs.push(only_job(&app, project, *p).await);
            }
            jobs
        };
        let statuses: Vec<&str> = jobs.iter().map(|j| j["status"].as_str().unwrap_or("")).collect();
        assert_eq!(statuses, ["pending", "waiting_for_resource", "waiting_for_resource"]);
        assert_eq!(app.pipeline_status(project, pipelines[1]).await, "waiting_for_resource");

        // GitLab's API: the group, the job holding it, the jobs to come.
        let base = format!("/projects/{project}/resource_groups");
        let listed = app.api(Method::GET, &base, None).await;
        assert_eq!(listed.status, 200);
        let group = listed.json()[0].clone();
        assert_eq!((group["key"].clone(), group["process_mode"].clone()), (json!("production-main"), json!("unordered")));
        assert!(group["id"].is_i64() && group["created_at"].is_string() && group["updated_at"].is_string(), "{group}");
        let key = "production-main";
        assert_eq!(app.api(Method::GET, &format!("{base}/{key}"), None).await.json(), group);
        let current = app.api(Method::GET, &format!("{base}/{key}/current_job"), None).await.json();
        assert_eq!(current["id"], jobs[0]["id"]);
        let ids = |v: Value| v.as_array().expect("array").iter().map(|j| j["id"].as_i64().expect("id")).collect::<Vec<_>>();
        let upcoming = app.api(Method::GET, &format!("{base}/{key}/upcoming_jobs"), None).await.json();
        assert_eq!(ids(upcoming), [jobs[1]["id"].as_i64().unwrap(), jobs[2]["id"].as_i64().unwrap()]);
        app.api(Method::GET, &format!("{base}/nope"), None).await.assert(404, json!({ "message": "404 Not Found" }));
        app.api(Method::PUT, &format!("{base}/{key}"), Some(json!({ "process_mode": "sometimes" }))).await
            .assert(400, json!({ "error": "process_mode does not have a valid value" }));
        let changed = app.api(Method::PUT, &format!("{base}/{key}"), Some(json!({ "process_mode": "newest_first" }))).await;
        assert_eq!((changed.status, changed.json()["process_mode"].clone()), (200, json!("newest_first")));
        let upcoming = app.api(Method::GET, &format!("{base}/{key}/upcoming_jobs"), None).await.json();
        assert_eq!(ids(upcoming), [jobs[2]["id"].as_i64().unwrap(), jobs[1]["id"].as_i64().unwrap()]);

        // One at a time: the holder first, then the newest pipeline's job, then the other.
        let (_, token) = app.register_runner().await;
        let mut order = Vec::new();
        for _ in 0..3 {
            let job = app.take_job(&token).await;
            assert_eq!(app.request_job(&token).await.status, 204, "only the holder is queued");
            order.push(job["id"].as_i64().expect("id"));
            let done = app.update_job(&job, json!({ "state": "success" })).await;
            assert_eq!(done.status, 200, "{}", done.text);
        }
        let expected: Vec<i64> = [0, 2, 1].iter().map(|i| jobs[*i]["id"].as_i64().unwrap()).collect();
        assert_eq!(order, expected);
        let current = app.api(Method::GET, &format!("{base}/{key}/current_job"), None).await;
        assert_eq!(current.json(), Value::Null, "the resource is free");
        for p in pipelines {
            assert_eq!(app.pipeline_status(project, p).await, "success");
        }

        // `oldest_first`: a job of an older pipeline that is not waiting yet holds the
        // newer ones back.
        app.api(Method::PUT, &format!("{base}/{key}"), Some(json!({ "process_mode": "oldest_first" }))).await;
        let staged = "workflow: { auto_cancel: { on_new_commit: none } }\nstages: [a, b]\nbuild: { stage: a, script: [b] }\ndeploy: { stage: b, resource_group: production-main, script: [d] }\n";
        let older = app.pipeline(project, staged).await;
        let newer = app.pipeline(project, yaml).await;
        assert_eq!(only_job(&app, project, newer).await["status"], "waiting_for_resource");
        let build = app.take_job(&token).await;
        assert_eq!(build["job_info"]["name"], "build");
        assert_eq!(app.request_job(&token).await.status, 204, "the newer deploy waits for the older one");
        app.update_job(&build, json!({ "state": "success" })).await;
        let deploy = app.take_job(&token).await;
        assert_eq!(deploy["job_info"]["pipeline_id"], older);
        app.update_job(&deploy, json!({ "state": "success" })).await;
        let last = app.take_job(&token).await;
        assert_eq!(last["job_info"]["pipeline_id"], newer);
        app.update_job(&last, json!({ "state": "success" })).await;
    }

    async fn twenty_jobs_hold_the_resource_one_at_a_time_across_two_instances(backend) {
        let first = TestApp::spawn(backend).await;
        let second = TestApp::builder(backend).same_database_as(&first).data_dir_of(&first).spawn().await;
        let project = first.create_project(json!({ "name": "contended" })).await;
        let yaml = "deploy:\n  parallel: 20\n  resource_group: production\n  script: [deploy]\n";
        let pipeline = first.pipeline(project, yaml).await;
        let first = Arc::new(first);
        let second = Arc::new(second);
        // Per runner: the time it took a job, and the time it began reporting it done.
        let held: Arc<Mutex<Vec<(i64, Instant, Instant)>>> = Arc::default();
        let mut runners = Vec::new();
        for i in 0..4 {
            let app = if i % 2 == 0 { first.clone() } else { second.clone() };
            let (_, token) = app.register_runner().await;
            let held = held.clone();
            runners.push(tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(120);
                while Instant::now() < deadline && held.lock().unwrap().len() < 20 {
                    let reply = app.request_job(&token).await;
                    if reply.status != 201 {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                    let job = reply.json();
                    let taken = Instant::now();
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    let ending = Instant::now();
                    held.lock().unwrap().push((job["id"].as_i64().expect("id"), taken, ending));
                    let done = app.update_job(&job, json!({ "state": "success" })).await;
                    assert_eq!(done.status, 200, "{}", done.text);
                }
            }));
        }
        for r in runners {
            r.await.expect("runner task");
        }
        let mut held = held.lock().unwrap().clone();
        assert_eq!(held.len(), 20, "every job ran once");
        held.sort_by_key(|(_, taken, _)| *taken);
        let mut ids: Vec<i64> = held.iter().map(|(id, _, _)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 20, "no job ran twice");
        // A job was handed out only after the one before it began reporting its end.
        for pair in held.windows(2) {
            assert!(pair[1].1 >= pair[0].2, "jobs {} and {} held the resource together", pair[0].0, pair[1].0);
        }
        assert_eq!(first.pipeline_status(project, pipeline).await, "success");
    }
}
