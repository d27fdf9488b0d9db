//! The runner-facing `/api/v4/runners…` routes.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{both_backends, TestApp, REGISTRATION_TOKEN};

fn is_time_ms(value: &serde_json::Value) -> bool {
    value.as_str().is_some_and(|s| {
        chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.3fZ").is_ok() && s.len() == 24
    })
}

both_backends! {
    async fn legacy_registration_with_a_json_body(backend) {
        let app = TestApp::spawn(backend).await;
        let reply = app
            .post_json(
                "/runners",
                json!({
                    "token": REGISTRATION_TOKEN,
                    "description": "laptop",
                    "maintenance_note": "ask Ann",
                    "tag_list": ["docker", "linux", "docker"],
                    "run_untagged": false,
                    "locked": true,
                    "access_level": "ref_protected",
                    "maximum_timeout": 3600,
                    "paused": true,
                    "info": {"name": "gitlab-runner", "version": "19.4.0"},
                    "unknown_field": {"ignored": true},
                }),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let body = reply.json();
        let id = body["id"].as_i64().expect("id");
        let token = body["token"].as_str().expect("token");
        assert!(id > 0);
        assert!(token.starts_with("t1_") && token != REGISTRATION_TOKEN, "{token}");
        assert_eq!(body["token_expires_at"], json!(null));
        assert_eq!(body.as_object().map(|o| o.len()), Some(3), "{body}");

        let runner = app.runner(id).await.expect("row");
        assert_eq!(runner.description, "laptop");
        assert_eq!(runner.maintenance_note.as_deref(), Some("ask Ann"));
        assert_eq!(runner.tags(), vec!["docker", "linux"]);
        assert!(!runner.run_untagged && runner.locked && runner.paused);
        assert_eq!(runner.access_level.as_str(), "ref_protected");
        assert_eq!(runner.maximum_timeout, Some(3600));
        assert_eq!(runner.name.as_deref(), Some("gitlab-runner"));
        assert_eq!(runner.runner_type.as_str(), "instance_type");
        assert_eq!(runner.registration_type.as_str(), "registration_token");
        assert_eq!(runner.creation_state.as_str(), "started");
        assert!(runner.contacted_at.is_none());
        // The token is stored as a digest only.
        assert_ne!(runner.token_digest, token.as_bytes());
        assert!(app.managers(id).await.is_empty(), "registration creates no manager");

        app.post_json("/runners/verify", json!({ "token": token }))
            .await
            .assert(200, json!({ "id": id, "token": token, "token_expires_at": null }));
    }

    async fn legacy_registration_with_a_form_body_and_trailing_slash(backend) {
        let app = TestApp::spawn(backend).await;
        let reply = app
            .send(app.request(Method::POST, "/api/v4/runners/").form(&[
                ("token", REGISTRATION_TOKEN),
                ("tag_list", "ruby, postgres ,,ruby"),
                ("run_untagged", "false"),
                ("maximum_timeout", ""),
                ("info[name]", "form-runner"),
            ]))
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let id = reply.json()["id"].as_i64().expect("id");
        let runner = app.runner(id).await.expect("row");
        assert_eq!(runner.tags(), vec!["ruby", "postgres"]);
        assert!(!runner.run_untagged);
        assert_eq!(runner.maximum_timeout, None);
        assert_eq!(runner.name.as_deref(), Some("form-runner"));

        // tag_list[] form arrays too.
        let reply = app
            .send(app.request(Method::POST, "/api/v4/runners").form(&[
                ("token", REGISTRATION_TOKEN),
                ("tag_list[]", "a"),
                ("tag_list[]", "b"),
            ]))
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let runner = app.runner(reply.json()["id"].as_i64().expect("id")).await.expect("row");
        assert_eq!(runner.tags(), vec!["a", "b"]);
    }

    async fn legacy_registration_refusals(backend) {
        let app = TestApp::spawn(backend).await;
        app.post_json("/runners", json!({ "token": "wrong" }))
            .await
            .assert(403, json!({ "message": "403 Forbidden - invalid token supplied" }));
        app.post_json("/runners", json!({}))
            .await
            .assert(400, json!({ "error": "token is missing" }));
        app.post_json("/runners", json!({ "token": REGISTRATION_TOKEN, "run_untagged": false }))
            .await
            .assert(400, json!({ "message": { "tags_list": ["can not be empty when runner is not allowed to pick untagged jobs"] } }));
        app.post_json("/runners", json!({ "token": REGISTRATION_TOKEN, "maximum_timeout": 599 }))
            .await
            .assert(400, json!({ "message": { "maximum_timeout": ["needs to be at least 10 minutes"] } }));
        let tags: Vec<String> = (0..51).map(|i| format!("t{i}")).collect();
        app.post_json("/runners", json!({ "token": REGISTRATION_TOKEN, "tag_list": tags }))
            .await
            .assert(400, json!({ "message": { "tags_list": ["Too many tags specified. Please limit the number of tags to 50"] } }));
        app.post_json("/runners", json!({ "token": REGISTRATION_TOKEN, "access_level": "everyone" }))
            .await
            .assert(400, json!({ "error": "access_level does not have a valid value" }));
        app.post_json("/runners", json!({ "token": REGISTRATION_TOKEN, "maintainer_note": "a", "maintenance_note": "b" }))
            .await
            .assert(400, json!({ "error": "maintainer_note, maintenance_note are mutually exclusive" }));
        app.post_json("/runners", json!({ "token": REGISTRATION_TOKEN, "active": true, "paused": true }))
            .await
            .assert(400, json!({ "error": "active, paused are mutually exclusive" }));
        assert!(app.runners().await.is_empty(), "no refused registration left a row");

        let app = TestApp::builder(backend).without_registration_token().spawn().await;
        app.post_json("/runners", json!({ "token": REGISTRATION_TOKEN }))
            .await
            .assert(403, json!({ "message": "403 Forbidden - invalid token supplied" }));
        assert!(app.runners().await.is_empty());
    }

    async fn verify_with_and_without_system_id(backend) {
        let app = TestApp::spawn(backend).await;
        let (id, token) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        assert!(token.starts_with("glrt-t1_"), "{token}");

        let info = json!({
            "name": "gitlab-runner", "version": "19.4.0", "revision": "fc1f1862",
            "platform": "linux", "architecture": "amd64", "executor": "shell", "shell": "bash",
            "features": {"cancel_gracefully": true, "trace_checksum": true},
            "config": {"gpus": "", "other": "dropped"}, "labels": {"env": "ci"},
        });
        let reply = app
            .send(
                app.request(Method::POST, "/api/v4/runners/verify")
                    .header("Runner-Token", &token)
                    .json(&json!({ "token": token, "system_id": "s_0123456789ab", "info": info })),
            )
            .await;
        reply.assert(200, json!({ "id": id, "token": token, "token_expires_at": null }));
        assert!(reply.header("x-request-id").is_some_and(|v| !v.is_empty()));

        let runner = app.runner(id).await.expect("row");
        assert!(runner.contacted_at.is_some(), "verify heartbeats the runner");
        assert_eq!(runner.creation_state.as_str(), "started", "verify leaves creation_state");
        let managers = app.managers(id).await;
        assert_eq!(managers.len(), 1);
        let m = &managers[0];
        assert_eq!(m.system_xid, "s_0123456789ab");
        assert_eq!(m.version.as_deref(), Some("19.4.0"));
        assert_eq!(m.revision.as_deref(), Some("fc1f1862"));
        assert_eq!(m.platform.as_deref(), Some("linux"));
        assert_eq!(m.architecture.as_deref(), Some("amd64"));
        assert_eq!(m.executor_type.as_deref(), Some("shell"));
        assert_eq!(m.ip_address.as_deref(), Some("127.0.0.1"));
        assert_eq!(m.config, r#"{"gpus":""}"#);
        assert_eq!(serde_json::from_str::<serde_json::Value>(&m.labels).ok(), Some(json!({"env": "ci"})));
        assert!(m.runtime_features.contains("cancel_gracefully"));
        assert!(m.contacted_at.is_some());

        // No system_id: the `<legacy>` manager.
        app.post_json("/runners/verify", json!({ "token": token }))
            .await
            .assert(200, json!({ "id": id, "token": token, "token_expires_at": null }));
        let xids: Vec<String> = app.managers(id).await.into_iter().map(|m| m.system_xid).collect();
        assert_eq!(xids, vec!["s_0123456789ab", "<legacy>"]);

        // Unknown token: 403 and nothing written.
        let before = app.snapshot().await;
        app.post_json("/runners/verify", json!({ "token": "glrt-unknown", "system_id": "s_other0000000" }))
            .await
            .assert(403, json!({ "message": "403 Forbidden" }));
        app.post_json("/runners/verify", json!({ "system_id": "s_other0000000" }))
            .await
            .assert(400, json!({ "error": "token is missing" }));
        assert_eq!(app.snapshot().await, before);
    }

    async fn heartbeats_are_throttled_but_info_changes_are_written(backend) {
        let app = TestApp::builder(backend).heartbeat_interval(3600).spawn().await;
        let (id, token) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let verify = |version: &str| {
            json!({ "token": token, "system_id": "s_aaaaaaaaaaaa", "info": {"version": version} })
        };
        app.post_json("/runners/verify", verify("19.3.0")).await.assert(200, json!({ "id": id, "token": token, "token_expires_at": null }));
        let first = app.runner(id).await.expect("row").contacted_at.expect("contacted");
        let manager_first = app.managers(id).await[0].clone();

        app.post_json("/runners/verify", verify("19.3.0")).await;
        assert_eq!(app.runner(id).await.expect("row").contacted_at, Some(first), "runner not rewritten");
        assert_eq!(app.managers(id).await[0].updated_at, manager_first.updated_at, "manager not rewritten");

        app.post_json("/runners/verify", verify("19.4.0")).await;
        let manager = app.managers(id).await[0].clone();
        assert_eq!(manager.version.as_deref(), Some("19.4.0"), "changed info is written at once");
        assert!(manager.updated_at > manager_first.updated_at);
    }

    async fn expired_tokens_are_unknown_tokens(backend) {
        let app = TestApp::builder(backend).token_expires_in(3600).spawn().await;
        let (_id, token) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let reply = app.post_json("/runners/verify", json!({ "token": token })).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert!(is_time_ms(&reply.json()["token_expires_at"]), "{}", reply.text);

        // Another runner whose token expired (aged in the database before its first use).
        let (old_id, old_token) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        app.execute(&format!("UPDATE runners SET token_expires_at = '2020-01-01 00:00:00' WHERE id = {old_id}")).await;
        let before = app.snapshot().await;
        for path in ["/runners/verify", "/runners/reset_authentication_token"] {
            app.post_json(path, json!({ "token": old_token, "system_id": "s_bbbbbbbbbbbb" }))
                .await
                .assert(403, json!({ "message": "403 Forbidden" }));
        }
        let reply = app
            .send(app.request(Method::GET, "/api/v4/runners/router/discovery").header("Runner-Token", &old_token))
            .await;
        reply.assert(403, json!({ "message": "403 Forbidden" }));
        assert_eq!(app.snapshot().await, before, "an expired token writes nothing");
        assert!(app.managers(old_id).await.is_empty());
    }
}

both_backends! {
    async fn delete_runner(backend) {
        let app = TestApp::spawn(backend).await;
        let (id, token) = app.register_runner().await;
        let (other, _) = app.register_runner().await;
        app.post_json("/runners/verify", json!({ "token": token, "system_id": "s_aaaaaaaaaaaa" })).await;
        assert_eq!(app.managers(id).await.len(), 1);

        // If-Unmodified-Since older than the runner's last change: 412, nothing deleted.
        let reply = app
            .send(
                app.request(Method::DELETE, "/api/v4/runners")
                    .header("If-Unmodified-Since", "Wed, 01 Jan 2020 00:00:00 GMT")
                    .json(&json!({ "token": token })),
            )
            .await;
        reply.assert(412, json!({ "message": "412 Precondition Failed" }));
        assert!(app.runner(id).await.is_some());

        let reply = app
            .send(app.request(Method::DELETE, "/api/v4/runners").json(&json!({ "token": token })))
            .await;
        assert_eq!(reply.status, 204, "{}", reply.text);
        assert_eq!(reply.text, "");
        assert!(app.runner(id).await.is_none(), "runner deleted");
        assert!(app.managers(id).await.is_empty(), "its managers too");
        assert!(app.runner(other).await.is_some(), "other runners stay");

        app.post_json("/runners/verify", json!({ "token": token }))
            .await
            .assert(403, json!({ "message": "403 Forbidden" }));
        let reply = app.send(app.request(Method::DELETE, "/api/v4/runners").json(&json!({ "token": token }))).await;
        reply.assert(403, json!({ "message": "403 Forbidden" }));
        let reply = app.send(app.request(Method::DELETE, "/api/v4/runners").json(&json!({}))).await;
        reply.assert(400, json!({ "error": "token is missing" }));
    }

    async fn delete_runner_writes_no_heartbeat(backend) {
        let app = TestApp::spawn(backend).await;
        let (id, token) = app.register_runner().await;
        // The query-string form of the token works as well as the body.
        let reply = app
            .send(app.request(Method::DELETE, &format!("/api/v4/runners/managers?token={token}&system_id=s_none00000000")))
            .await;
        reply.assert(404, json!({ "message": "404 Runner manager not found Not Found" }));
        assert!(app.runner(id).await.expect("row").contacted_at.is_none());
        assert!(app.managers(id).await.is_empty(), "no manager row created");
    }

    async fn delete_runner_manager(backend) {
        let app = TestApp::spawn(backend).await;
        let (id, token) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        for xid in ["s_aaaaaaaaaaaa", "s_bbbbbbbbbbbb"] {
            app.post_json("/runners/verify", json!({ "token": token, "system_id": xid })).await;
        }
        let reply = app
            .send(app.request(Method::DELETE, "/api/v4/runners/managers").json(&json!({ "token": token })))
            .await;
        reply.assert(400, json!({ "error": "system_id is missing" }));
        // If-Unmodified-Since older than the manager's last change: 412, nothing deleted.
        let reply = app
            .send(
                app.request(Method::DELETE, "/api/v4/runners/managers")
                    .header("If-Unmodified-Since", "Wed, 01 Jan 2020 00:00:00 GMT")
                    .json(&json!({ "token": token, "system_id": "s_aaaaaaaaaaaa" })),
            )
            .await;
        reply.assert(412, json!({ "message": "412 Precondition Failed" }));
        assert_eq!(app.managers(id).await.len(), 2);
        let reply = app
            .send(
                app.request(Method::DELETE, "/api/v4/runners/managers")
                    .header("If-Unmodified-Since", "Fri, 01 Jan 2100 00:00:00 GMT")
                    .json(&json!({ "token": token, "system_id": "s_aaaaaaaaaaaa" })),
            )
            .await;
        assert_eq!(reply.status, 204, "{}", reply.text);
        let xids: Vec<String> = app.managers(id).await.into_iter().map(|m| m.system_xid).collect();
        assert_eq!(xids, vec!["s_bbbbbbbbbbbb"]);
        assert!(app.runner(id).await.is_some(), "the runner remains");
        let reply = app
            .send(
                app.request(Method::DELETE, "/api/v4/runners/managers")
                    .json(&json!({ "token": "glrt-wrong", "system_id": "s_bbbbbbbbbbbb" })),
            )
            .await;
        reply.assert(403, json!({ "message": "403 Forbidden" }));
        assert_eq!(app.managers(id).await.len(), 1);
    }

    async fn reset_authentication_token(backend) {
        let app = TestApp::spawn(backend).await;
        let (id, token) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        app.post_json("/runners/verify", json!({ "token": token })).await; // warm the auth cache
        let reply = app.post_json("/runners/reset_authentication_token", json!({ "token": token })).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let body = reply.json();
        let new = body["token"].as_str().expect("token").to_string();
        assert!(new.starts_with("glrt-t1_") && new != token);
        assert_eq!(body, json!({ "token": new, "token_expires_at": null }));

        app.post_json("/runners/verify", json!({ "token": token }))
            .await
            .assert(403, json!({ "message": "403 Forbidden" }));
        app.post_json("/runners/verify", json!({ "token": new }))
            .await
            .assert(200, json!({ "id": id, "token": new, "token_expires_at": null }));
        app.post_json("/runners/reset_authentication_token", json!({ "token": token }))
            .await
            .assert(403, json!({ "message": "403 Forbidden" }));
        app.post_json("/runners/reset_authentication_token", json!({}))
            .await
            .assert(400, json!({ "error": "token is missing" }));
    }

    async fn reset_with_expiry_sets_a_new_expiry(backend) {
        let app = TestApp::builder(backend).token_expires_in(86_400).spawn().await;
        let (_, token) = app.register_runner().await;
        let reply = app.post_json("/runners/reset_authentication_token", json!({ "token": token })).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        assert!(is_time_ms(&reply.json()["token_expires_at"]), "{}", reply.text);
    }

    async fn router_discovery_follows_the_feature_flag(backend) {
        let app = TestApp::spawn(backend).await;
        let (id, token) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let (_, other) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let discover = |token: &str| {
            app.request(Method::GET, "/api/v4/runners/router/discovery").header("Runner-Token", token.to_string())
        };
        let reply = app.send(app.request(Method::GET, "/api/v4/runners/router/discovery")).await;
        reply.assert(403, json!({ "message": "403 Forbidden" }));
        // The token param does not count here: only the header.
        let reply = app.send(app.request(Method::GET, &format!("/api/v4/runners/router/discovery?token={token}"))).await;
        reply.assert(403, json!({ "message": "403 Forbidden" }));
        let not_available = json!({ "message": "Job Router is not available. Please contact your administrator." });
        app.send(discover(&token)).await.assert(501, not_available.clone());

        let reply = app
            .send(app.admin(Method::POST, "/api/v4/features/job_router").json(&json!({ "value": true, "runner": id })))
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let ws = app.base.replacen("http", "ws", 1);
        app.send(discover(&token)).await.assert(200, json!({ "server_url": ws }));
        app.send(discover(&other)).await.assert(501, not_available.clone());

        app.send(app.admin(Method::POST, "/api/v4/features/job_router").json(&json!({ "value": true }))).await;
        app.send(discover(&other)).await.assert(200, json!({ "server_url": ws }));

        let reply = app.send(app.admin(Method::DELETE, "/api/v4/features/job_router")).await;
        assert_eq!(reply.status, 204);
        app.send(discover(&token)).await.assert(501, not_available);
        assert!(app.runner(id).await.expect("row").contacted_at.is_none(), "discovery does not heartbeat");
    }
}
