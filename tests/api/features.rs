//! Feature flags through the admin API.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{both_backends, TestApp};

both_backends! {
    async fn feature_gates(backend) {
        let app = TestApp::spawn(backend).await;
        let set = |body: serde_json::Value| app.admin(Method::POST, "/api/v4/features/job_router").json(&body);
        app.send(set(json!({}))).await.assert(400, json!({ "error": "value is missing" }));
        app.send(set(json!({ "value": "perhaps" }))).await.assert(400, json!({ "error": "value is invalid" }));
        app.send(set(json!({ "value": true, "runner": 5, "namespace": "x" })))
            .await
            .assert(400, json!({ "error": "runner, namespace are mutually exclusive" }));
        app.send(set(json!({ "value": true, "runner": 5 }))).await.assert(201, json!({
            "name": "job_router", "state": "conditional",
            "gates": [{ "key": "boolean", "value": false }, { "key": "actors", "value": ["runner:5"] }],
        }));
        app.send(set(json!({ "value": "true" }))).await.assert(201, json!({
            "name": "job_router", "state": "on",
            "gates": [{ "key": "boolean", "value": true }, { "key": "actors", "value": ["runner:5"] }],
        }));
        let list = app.send(app.admin(Method::GET, "/api/v4/features")).await;
        assert_eq!(list.json()[0]["state"], "on");
        assert_eq!(app.send(app.admin(Method::DELETE, "/api/v4/features/job_router")).await.status, 204);
        app.send(app.admin(Method::GET, "/api/v4/features")).await.assert(200, json!([]));
    }
}
