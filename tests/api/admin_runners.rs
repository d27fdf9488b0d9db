//! Admin runner API: `POST /user/runners`, `GET /runners/all`, `GET|PUT|DELETE /runners/:id`.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{both_backends, TestApp};

both_backends! {
    async fn admin_runner_crud(backend) {
        let app = TestApp::spawn(backend).await;
        let (id, token) = app
            .create_runner(json!({
                "runner_type": "instance_type", "description": "fleet-1", "tag_list": "linux,docker",
                "run_untagged": false, "maximum_timeout": 7200, "maintenance_note": "n",
            }))
            .await;
        assert!(token.starts_with("glrt-t1_"));

        let reply = app.send(app.admin(Method::GET, &format!("/api/v4/runners/{id}"))).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let mut body = reply.json();
        assert!(body["created_at"].as_str().is_some_and(|s| s.ends_with('Z')));
        body["created_at"] = json!("[datetime]");
        assert_eq!(body, json!({
            "id": id, "description": "fleet-1", "ip_address": null, "active": true, "paused": false,
            "is_shared": true, "runner_type": "instance_type", "name": null, "online": false,
            "status": "never_contacted", "tag_list": ["linux", "docker"], "run_untagged": false,
            "locked": false, "maximum_timeout": 7200, "access_level": "not_protected",
            "version": null, "revision": null, "platform": null, "architecture": null,
            "contacted_at": null, "maintenance_note": "n", "created_at": "[datetime]",
            "projects": [], "groups": [],
        }));

        // A heartbeat makes it online with the manager's facts.
        app.post_json("/runners/verify", json!({
            "token": token, "system_id": "s_aaaaaaaaaaaa",
            "info": {"version": "19.4.0", "revision": "fc1f1862", "platform": "linux", "architecture": "amd64"},
        })).await;
        let body = app.send(app.admin(Method::GET, &format!("/api/v4/runners/{id}"))).await.json();
        assert_eq!(body["status"], "online");
        assert_eq!(body["online"], true);
        assert_eq!(body["version"], "19.4.0");
        assert_eq!(body["ip_address"], "127.0.0.1");
        assert!(body["contacted_at"].as_str().is_some());

        // Its machines, as GitLab's `GET /runners/:id/managers` lists them.
        let reply = app.send(app.admin(Method::GET, &format!("/api/v4/runners/{id}/managers"))).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let mut managers = reply.json();
        let manager = &mut managers[0];
        assert!(manager["id"].is_i64());
        assert!(manager["created_at"].as_str().is_some_and(|s| s.ends_with('Z')));
        assert!(manager["contacted_at"].as_str().is_some_and(|s| s.ends_with('Z')));
        for volatile in ["id", "created_at", "contacted_at"] {
            manager[volatile] = json!(format!("[{volatile}]"));
        }
        assert_eq!(managers, json!([{
            "id": "[id]", "system_id": "s_aaaaaaaaaaaa", "version": "19.4.0", "revision": "fc1f1862",
            "platform": "linux", "architecture": "amd64", "created_at": "[created_at]",
            "contacted_at": "[contacted_at]", "ip_address": "127.0.0.1", "status": "online",
        }]));
        app.send(app.admin(Method::GET, "/api/v4/runners/999999/managers")).await
            .assert(404, json!({ "message": "404 Runner Not Found" }));
        assert_eq!(app.send(app.request(Method::GET, &format!("/api/v4/runners/{id}/managers"))).await.status, 401);

        let reply = app
            .send(app.admin(Method::PUT, &format!("/api/v4/runners/{id}")).json(&json!({
                "paused": true, "tag_list": ["arm"], "description": "fleet-2", "access_level": "ref_protected",
            })))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let body = reply.json();
        assert_eq!((body["paused"].clone(), body["active"].clone()), (json!(true), json!(false)));
        assert_eq!(body["tag_list"], json!(["arm"]));
        assert_eq!(body["description"], "fleet-2");
        assert_eq!(body["access_level"], "ref_protected");
        let row = app.runner(id).await.expect("row");
        assert!(row.paused);
        assert_eq!(row.tags(), vec!["arm"]);

        // Invalid changes: 400 and nothing changed.
        let before = app.snapshot().await;
        let reply = app
            .send(app.admin(Method::PUT, &format!("/api/v4/runners/{id}")).json(&json!({ "maximum_timeout": 60 })))
            .await;
        reply.assert(400, json!({ "message": { "maximum_timeout": ["needs to be at least 10 minutes"] } }));
        let reply = app
            .send(app.admin(Method::PUT, &format!("/api/v4/runners/{id}")).json(&json!({ "tag_list": [], "run_untagged": false })))
            .await;
        reply.assert(400, json!({ "message": { "tags_list": ["can not be empty when runner is not allowed to pick untagged jobs"] } }));
        let reply = app
            .send(app.admin(Method::PUT, &format!("/api/v4/runners/{id}")).json(&json!({ "locked": "sometimes" })))
            .await;
        reply.assert(400, json!({ "error": "locked is invalid" }));
        assert_eq!(app.snapshot().await, before);

        // The paused runner still verifies (pausing only stops job pick-up).
        let reply = app.post_json("/runners/verify", json!({ "token": token })).await;
        assert_eq!(reply.status, 200);

        let reply = app.send(app.admin(Method::DELETE, &format!("/api/v4/runners/{id}"))).await;
        assert_eq!(reply.status, 204, "{}", reply.text);
        assert!(app.runner(id).await.is_none());
        app.send(app.admin(Method::GET, &format!("/api/v4/runners/{id}")))
            .await
            .assert(404, json!({ "message": "404 Runner Not Found" }));
        app.send(app.admin(Method::DELETE, &format!("/api/v4/runners/{id}")))
            .await
            .assert(404, json!({ "message": "404 Runner Not Found" }));
        app.post_json("/runners/verify", json!({ "token": token }))
            .await
            .assert(403, json!({ "message": "403 Forbidden" }));
        app.send(app.admin(Method::GET, "/api/v4/runners/abc"))
            .await
            .assert(400, json!({ "error": "id is invalid" }));
    }

    async fn list_runners_filters_and_paginates(backend) {
        let app = TestApp::spawn(backend).await;
        let mut ids = Vec::new();
        for i in 0..5 {
            let (id, _) = app
                .create_runner(json!({ "runner_type": "instance_type", "tag_list": if i % 2 == 0 { "even" } else { "odd" }, "paused": i == 4 }))
                .await;
            ids.push(id);
        }
        let (_, legacy_token) = app.register_runner().await;
        app.post_json("/runners/verify", json!({ "token": legacy_token })).await;

        let reply = app.send(app.admin(Method::GET, "/api/v4/runners/all?per_page=2&page=2")).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let listed: Vec<i64> = reply.json().as_array().expect("array").iter().map(|r| r["id"].as_i64().unwrap_or(0)).collect();
        assert_eq!(listed, vec![ids[2], ids[3]]);
        assert_eq!(reply.header("x-total"), Some("6"));
        assert_eq!(reply.header("x-total-pages"), Some("3"));
        assert_eq!(reply.header("x-page"), Some("2"));
        assert_eq!(reply.header("x-per-page"), Some("2"));
        assert_eq!(reply.header("x-next-page"), Some("3"));
        assert_eq!(reply.header("x-prev-page"), Some("1"));
        let link = reply.header("link").unwrap_or("");
        assert!(link.contains("page=3") && link.contains("rel=\"next\""), "{link}");

        let tagged = app.send(app.admin(Method::GET, "/api/v4/runners/all?tag_list=even")).await.json();
        assert_eq!(tagged.as_array().map(Vec::len), Some(3));
        let paused = app.send(app.admin(Method::GET, "/api/v4/runners/all?paused=true")).await.json();
        assert_eq!(paused.as_array().map(|a| a[0]["id"].as_i64()), Some(Some(ids[4])));
        let online = app.send(app.admin(Method::GET, "/api/v4/runners/all?status=online")).await.json();
        assert_eq!(online.as_array().map(Vec::len), Some(1));
        assert_eq!(online[0]["status"], "online");
        let by_type = app.send(app.admin(Method::GET, "/api/v4/runners/all?type=project_type")).await.json();
        assert_eq!(by_type, json!([]));
        app.send(app.admin(Method::GET, "/api/v4/runners/all?type=nope"))
            .await
            .assert(400, json!({ "error": "type does not have a valid value" }));
        // A page far past the end (found by schemathesis: it overflowed): empty, not a crash.
        let far = app.send(app.admin(Method::GET, "/api/v4/runners/all?page=9223372036854775807&per_page=100")).await;
        far.assert(200, json!([]));
        assert_eq!(far.header("x-page"), Some("9223372036854775807"));
        assert_eq!(far.header("x-next-page"), Some(""));
    }

    async fn admin_routes_need_the_admin_token(backend) {
        let app = TestApp::spawn(backend).await;
        let unauthorized = json!({ "message": "401 Unauthorized" });
        for (method, path) in [
            (Method::GET, "/api/v4/runners/all"),
            (Method::GET, "/api/v4/runners/1"),
            (Method::PUT, "/api/v4/runners/1"),
            (Method::DELETE, "/api/v4/runners/1"),
            (Method::POST, "/api/v4/user/runners"),
            (Method::GET, "/api/v4/user"),
            (Method::GET, "/api/v4/version"),
            (Method::GET, "/api/v4/features"),
        ] {
            app.send(app.request(method.clone(), path)).await.assert(401, unauthorized.clone());
            app.send(app.request(method, path).header("PRIVATE-TOKEN", "wrong")).await.assert(401, unauthorized.clone());
        }
        // Bearer and the private_token param work as well as the header.
        let reply = app
            .send(app.request(Method::GET, "/api/v4/user").bearer_auth(crate::helpers::ADMIN_TOKEN))
            .await;
        assert_eq!(reply.status, 200);
        let reply = app
            .send(app.request(Method::GET, &format!("/api/v4/user?private_token={}", crate::helpers::ADMIN_TOKEN)))
            .await;
        assert_eq!(reply.status, 200);
        assert!(app.runners().await.is_empty());
    }

    async fn create_runner_refusals(backend) {
        let app = TestApp::spawn(backend).await;
        let post = |body: serde_json::Value| app.admin(Method::POST, "/api/v4/user/runners").json(&body);
        app.send(post(json!({}))).await.assert(400, json!({ "error": "runner_type is missing" }));
        app.send(post(json!({ "runner_type": "any" })))
            .await
            .assert(400, json!({ "error": "runner_type does not have a valid value" }));
        app.send(post(json!({ "runner_type": "project_type" })))
            .await
            .assert(400, json!({ "message": "400 Bad request - project_id is required for project_type runners" }));
        app.send(post(json!({ "runner_type": "project_type", "project_id": 999 })))
            .await
            .assert(404, json!({ "message": "404 Project Not Found" }));
        let reply = app.send(post(json!({ "runner_type": "group_type" }))).await;
        assert_eq!(reply.status, 400, "{}", reply.text);
        app.send(post(json!({ "runner_type": "instance_type", "tag_list": 7 })))
            .await
            .assert(400, json!({ "error": "tag_list is invalid" }));
        assert!(app.runners().await.is_empty());
    }
}

both_backends! {
    async fn admin_actions_and_downloads_are_audited(backend) {
        let app = TestApp::spawn(backend).await;
        let reply = app.send(app.admin(Method::GET, "/api/v4/audit_events")).await;
        reply.assert(200, json!([]));
        let (runner_id, _) = app.create_runner(json!({ "runner_type": "instance_type", "description": "gone soon" })).await;
        let reply = app.send(app.admin(Method::PUT, &format!("/api/v4/runners/{runner_id}")).json(&json!({ "paused": true, "tag_list": ["a"] }))).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(app.send(app.admin(Method::DELETE, &format!("/api/v4/runners/{runner_id}"))).await.status, 204);
        let reply = app.send(app.admin(Method::POST, "/api/v4/features/job_router").json(&json!({ "value": true }))).await;
        assert_eq!(reply.status, 201);
        assert_eq!(app.send(app.admin(Method::DELETE, "/api/v4/features/job_router")).await.status, 204);
        let project = app.create_project(json!({ "name": "audited" })).await;
        let reply = app.send(app.admin(Method::PUT, &format!("/api/v4/projects/{project}")).json(&json!({ "shared_runners_minutes_limit": 100 }))).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let pipeline = app.pipeline(project, "a:\n  script: [x]\n").await;
        let jobs = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/pipelines/{pipeline}/jobs"))).await.json();
        let job = jobs[0]["id"].as_i64().expect("job id");
        let reply = app.send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/jobs/{job}/cancel"))).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let reply = app.send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/jobs/{job}/retry"))).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let retried = reply.json()["id"].as_i64().expect("new job id");
        let reply = app.send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/pipelines/{pipeline}/cancel"))).await;
        assert_eq!(reply.status, 201, "{}", reply.text);

        let reply = app.send(app.admin(Method::GET, "/api/v4/audit_events?per_page=100")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("x-total"), Some("11"));
        let events = reply.json();
        let summary: Vec<(String, String, String, i64)> = events
            .as_array()
            .expect("array")
            .iter()
            .map(|e| {
                (
                    e["event_name"].as_str().unwrap_or("").into(),
                    e["author_name"].as_str().unwrap_or("").into(),
                    e["entity_type"].as_str().unwrap_or("").into(),
                    e["entity_id"].as_i64().unwrap_or(-1),
                )
            })
            .collect();
        let admin = |kind: &str, entity: &str, id: i64| (kind.to_string(), "admin".to_string(), entity.to_string(), id);
        assert_eq!(
            summary,
            vec![
                admin("runner_created", "runner", runner_id),
                admin("runner_updated", "runner", runner_id),
                admin("runner_deleted", "runner", runner_id),
                admin("feature_flag_set", "feature_flag", 0),
                admin("feature_flag_removed", "feature_flag", 0),
                admin("project_created", "project", project),
                admin("project_updated", "project", project),
                admin("pipeline_created", "pipeline", pipeline),
                admin("job_canceled", "job", job),
                admin("job_retried", "job", job),
                admin("pipeline_canceled", "pipeline", pipeline),
            ]
        );
        assert_eq!(events[0]["details"]["description"], "gone soon");
        assert_eq!(events[1]["details"]["paused"], true);
        assert_eq!(events[1]["details"]["tag_list"], json!(["a"]));
        assert_eq!(events[1]["details"].get("description"), None);
        assert_eq!(events[2]["details"]["description"], "gone soon");
        assert_eq!(events[3]["details"]["feature"], "job_router");
        assert_eq!(events[3]["details"]["value"], true);
        assert_eq!(events[6]["details"]["shared_runners_minutes_limit"], 100);
        assert_eq!(events[9]["details"]["result_job_id"], retried);
        // Admins only.
        let reply = app.send(app.request(Method::GET, "/api/v4/audit_events")).await;
        assert_eq!(reply.status, 401);
    }
}

/// The ids of `GET /projects/:id/runners`.
async fn project_runner_ids(app: &TestApp, project: i64) -> Vec<i64> {
    let reply = app
        .api(Method::GET, &format!("/projects/{project}/runners"), None)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply
        .json()
        .as_array()
        .expect("list")
        .iter()
        .map(|r| r["id"].as_i64().unwrap_or_default())
        .collect()
}

both_backends! {
    // A project runner shared with a second project (`POST /projects/:id/runners`), the
    // project's runners (its own and the instance's), the jobs a runner ran with their
    // projects, and GitLab's refusals.
    async fn project_runners_and_runner_jobs(backend) {
        let app = TestApp::spawn(backend).await;
        let first = app.create_project(json!({ "name": "first" })).await;
        let second = app.create_project(json!({ "name": "second" })).await;
        let (instance_id, _) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let (runner_id, token) = app.create_runner(json!({ "runner_type": "project_type", "project_id": first })).await;
        assert_eq!(project_runner_ids(&app, first).await, [instance_id, runner_id]);
        assert_eq!(project_runner_ids(&app, second).await, [instance_id]);
        let only_project = app.api(Method::GET, &format!("/projects/{first}/runners?type=project_type"), None).await.json();
        assert_eq!(only_project.as_array().map(Vec::len), Some(1));

        let enabled = app.api(Method::POST, &format!("/projects/{second}/runners"), Some(json!({ "runner_id": runner_id }))).await;
        assert_eq!((enabled.status, enabled.json()["id"].clone()), (201, json!(runner_id)), "{}", enabled.text);
        app.api(Method::POST, &format!("/projects/{second}/runners"), Some(json!({ "runner_id": runner_id }))).await
            .assert(400, json!({ "message": { "runner": ["has already been taken"] } }));
        app.api(Method::POST, &format!("/projects/{second}/runners"), Some(json!({ "runner_id": instance_id }))).await
            .assert(403, json!({ "message": "403 Forbidden - Runner is instance type" }));
        app.api(Method::POST, &format!("/projects/{second}/runners"), Some(json!({}))).await
            .assert(400, json!({ "error": "runner_id is missing" }));
        assert_eq!(project_runner_ids(&app, second).await, [instance_id, runner_id]);

        // The shared runner takes the second project's job; its jobs list shows it.
        app.pipeline(second, "job: { script: [x] }\n").await;
        let job = app.take_job(&token).await;
        assert_eq!(job["job_info"]["project_id"], second);
        let jobs = app.api(Method::GET, &format!("/runners/{runner_id}/jobs"), None).await;
        assert_eq!(jobs.status, 200, "{}", jobs.text);
        let jobs = jobs.json();
        assert_eq!((jobs[0]["id"].clone(), jobs[0]["project"]["id"].clone(), jobs[0]["status"].clone()), (job["id"].clone(), json!(second), json!("running")));
        assert_eq!(app.api(Method::GET, &format!("/runners/{runner_id}/jobs?status=success"), None).await.json(), json!([]));
        app.api(Method::GET, &format!("/runners/{runner_id}/jobs?status=nope"), None).await
            .assert(400, json!({ "error": "status does not have a valid value" }));
        app.api(Method::GET, "/runners/999/jobs", None).await.assert(404, json!({ "message": "404 Runner Not Found" }));

        // Off the second project; not off its last one.
        assert_eq!(app.api(Method::DELETE, &format!("/projects/{second}/runners/{runner_id}"), None).await.status, 204);
        app.api(Method::DELETE, &format!("/projects/{second}/runners/{runner_id}"), None).await
            .assert(404, json!({ "message": "404 Runner Not Found" }));
        app.api(Method::DELETE, &format!("/projects/{first}/runners/{runner_id}"), None).await
            .assert(403, json!({ "message": "403 Forbidden - Only one project associated with the runner. Please remove the runner instead" }));
    }
}
