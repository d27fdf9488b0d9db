//! GitLab's runner rate limits, per token: job requests per runner token, trace PATCHes
//! and the other job calls per job token. Over the limit: 429, GitLab's body and an
//! integer `Retry-After`; other tokens unaffected; calls pass again after the window. And
//! an address that fails authentication too often waits out a window.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{both_backends, Reply, TestApp};

fn assert_limited(reply: &Reply) {
    reply.assert(
        429,
        json!({ "message": { "error": "This endpoint has been requested too many times. Try again later." } }),
    );
    let wait: u64 = reply
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("an integer Retry-After");
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
}

async fn patch(app: &TestApp, job: &Value, start: usize, data: &str) -> Reply {
    app.send(
        app.request(Method::PATCH, &format!("/api/v4/jobs/{}/trace", job["id"]))
            .header("Job-Token", job["token"].as_str().unwrap_or_default())
            .header(
                "Content-Range",
                format!("{start}-{}", start + data.len() - 1),
            )
            .body(data.to_string()),
    )
    .await
}

both_backends! {
    async fn per_token_limits_answer_429_and_recover(backend) {
        // 3 job requests, 2 trace PATCHes, 2 other job calls per token, per 2 s.
        let app = TestApp::builder(backend).rate_limits(3, 2, 2, 2).spawn().await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, polling) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let (_, other) = app.create_runner(json!({ "runner_type": "instance_type" })).await;

        for _ in 0..3 {
            assert_eq!(app.request_job(&polling).await.status, 204);
        }
        assert_limited(&app.request_job(&polling).await);
        assert_eq!(app.request_job(&other).await.status, 204, "another runner's token is not limited");

        app.pipeline(project, "a: { script: x }\nb: { script: y }\n").await;
        let a = app.take_job(&other).await;
        let b = app.take_job(&other).await;
        assert_eq!(patch(&app, &a, 0, "one\n").await.status, 202);
        assert_eq!(patch(&app, &a, 4, "two\n").await.status, 202);
        let limited = patch(&app, &a, 8, "three\n").await;
        assert_limited(&limited);
        assert_eq!(patch(&app, &b, 0, "b\n").await.status, 202, "another job's token is not limited");
        // PUT counts against the other job limit, not the trace one.
        for _ in 0..2 {
            assert_eq!(app.update_job(&a, json!({ "state": "running" })).await.status, 200);
        }
        assert_limited(&app.update_job(&a, json!({ "state": "running" })).await);
        // Nothing of the refused calls was kept.
        assert_eq!(app.state.traces.read(a["id"].as_i64().unwrap_or(0)).await.expect("log"), b"one\ntwo\n");

        // After the window, calls pass again.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(patch(&app, &a, 8, "three\n").await.status, 202);
        assert_eq!(app.update_job(&a, json!({ "state": "success" })).await.status, 200);
        assert_eq!(app.request_job(&polling).await.status, 204);
    }

    async fn an_address_with_too_many_failed_authentications_waits(backend) {
        let app = TestApp::builder(backend).failed_auth_limit(3, 2).spawn().await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let bad_admin = || app.request(Method::GET, "/api/v4/runners/all").header("PRIVATE-TOKEN", "glpat-wrong");
        // Three failures pass as failures; the fourth is one too many.
        for _ in 0..3 {
            assert_eq!(app.send(bad_admin()).await.status, 401);
        }
        assert_eq!(app.post_json("/runners/verify", json!({ "token": "glrt-guess" })).await.status, 403);
        // Now this address waits, whatever it sends: admin, runner and registration calls.
        assert_limited(&app.send(app.admin(Method::GET, "/api/v4/runners/all")).await);
        assert_limited(&app.post_json("/runners/verify", json!({ "token": runner })).await);
        assert_limited(&app.post_json("/runners", json!({ "token": crate::helpers::REGISTRATION_TOKEN })).await);
        // Nothing was registered meanwhile.
        assert_eq!(app.runners().await.len(), 1);
        // After the window, right tokens pass again.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(app.send(app.admin(Method::GET, "/api/v4/runners/all")).await.status, 200);
        assert_eq!(app.post_json("/runners/verify", json!({ "token": runner })).await.status, 200);
    }

    async fn a_limit_of_zero_is_off(backend) {
        let app = TestApp::builder(backend).rate_limits(0, 0, 0, 60).spawn().await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        for _ in 0..50 {
            assert_eq!(app.request_job(&runner).await.status, 204);
        }
    }
}
