//! Hostile and malformed input: GitLab's error shapes, the right status, nothing changed.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{both_backends, TestApp, REGISTRATION_TOKEN};

both_backends! {
    async fn malformed_and_oversized_bodies(backend) {
        let app = TestApp::builder(backend).max_body_bytes(4096).spawn().await;
        let (_, token) = app.register_runner().await;
        let before = app.snapshot().await;
        let post = |path: &str| app.request(Method::POST, &format!("/api/v4{path}"));

        let reply = app.send(post("/runners").header("Content-Type", "application/json").body("{\"token\":")).await;
        reply.assert(400, json!({ "error": "message body does not match declared format" }));
        let reply = app.send(post("/runners/verify").header("Content-Type", "application/json").body("[1,2]")).await;
        reply.assert(400, json!({ "error": "message body does not match declared format" }));

        let big = "x".repeat(8192);
        let reply = app.send(post("/runners").json(&json!({ "token": REGISTRATION_TOKEN, "description": big }))).await;
        reply.assert(413, json!({ "message": "413 Request Entity Too Large" }));
        let reply = app.send(post("/runners").form(&[("token", REGISTRATION_TOKEN), ("description", big.as_str())])).await;
        reply.assert(413, json!({ "message": "413 Request Entity Too Large" }));

        // Wrong types.
        for (body, error) in [
            (json!({ "token": REGISTRATION_TOKEN, "tag_list": {"a": 1} }), "tag_list is invalid"),
            (json!({ "token": REGISTRATION_TOKEN, "run_untagged": "maybe" }), "run_untagged is invalid"),
            (json!({ "token": REGISTRATION_TOKEN, "maximum_timeout": "ten" }), "maximum_timeout is invalid"),
            (json!({ "token": REGISTRATION_TOKEN, "info": "text" }), "info is invalid"),
            (json!({ "token": ["a"] }), "token is invalid"),
            (json!({ "token": REGISTRATION_TOKEN, "locked": 2, "paused": [] }), "paused is invalid, locked is invalid"),
        ] {
            app.send(post("/runners").json(&body)).await.assert(400, json!({ "error": error }));
        }
        app.send(post("/runners/verify").json(&json!({ "token": token, "system_id": "s".repeat(65) })))
            .await
            .assert(400, json!({ "error": "system_id is invalid" }));
        app.send(post("/runners/verify").json(&json!({ "token": token, "info": [1] })))
            .await
            .assert(400, json!({ "error": "info is invalid" }));
        // A token far too long is not looked up.
        app.send(post("/runners/verify").json(&json!({ "token": "t".repeat(2_000) })))
            .await
            .assert(403, json!({ "message": "403 Forbidden" }));
        assert_eq!(app.snapshot().await, before, "no bad request changed a row");

        // Unknown routes answer Grape's 404, never HTML.
        app.send(app.request(Method::GET, "/api/v4/nothing-here")).await.assert(404, json!({ "error": "404 Not Found" }));
        app.send(app.request(Method::GET, "/nothing")).await.assert(404, json!({ "error": "404 Not Found" }));
    }
}
