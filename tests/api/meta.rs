//! `GET /version`, `GET /user`, health endpoints and the OpenAPI document.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{both_backends, TestApp};

both_backends! {
    async fn version_and_user(backend) {
        let app = TestApp::spawn(backend).await;
        let reply = app.send(app.admin(Method::GET, "/api/v4/version")).await;
        assert_eq!(reply.status, 200);
        let body = reply.json();
        assert!(body["version"].as_str().is_some_and(|v| v.starts_with("18.5.0-runway.")), "{body}");
        assert_eq!(body["enterprise"], false);
        let reply = app.send(app.admin(Method::GET, "/api/v4/user")).await;
        let mut body = reply.json();
        body["web_url"] = json!("[url]");
        assert_eq!(body, json!({
            "id": 1, "username": "root", "name": "Administrator", "state": "active",
            "is_admin": true, "bot": false, "web_url": "[url]", "avatar_url": null,
        }));
    }

    async fn health_endpoints(backend) {
        let app = TestApp::spawn(backend).await;
        app.send(app.request(Method::GET, "/-/liveness")).await.assert(200, json!({ "status": "ok" }));
        app.send(app.request(Method::GET, "/-/readiness"))
            .await
            .assert(200, json!({ "status": "ok", "db_check": [{ "status": "ok" }] }));
        let reply = app.send(app.request(Method::GET, "/-/health")).await;
        assert_eq!((reply.status, reply.text.as_str()), (200, "Runway OK"));
    }

    async fn served_openapi_matches_the_committed_file(backend) {
        let app = TestApp::spawn(backend).await;
        let reply = app.send(app.request(Method::GET, "/api/openapi.json")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .expect("openapi/openapi.json is committed");
        assert!(
            reply.text.trim() == committed.trim(),
            "the served OpenAPI document differs from openapi/openapi.json; \
             regenerate it with: cargo run -q -- openapi > openapi/openapi.json"
        );
        let doc = reply.json();
        for path in ["/api/v4/runners", "/api/v4/runners/verify", "/api/v4/runners/managers",
                     "/api/v4/runners/reset_authentication_token", "/api/v4/runners/router/discovery",
                     "/api/v4/user/runners", "/api/v4/runners/all", "/api/v4/runners/{id}"] {
            assert!(doc["paths"][path].is_object(), "{path} missing from the document");
        }
        for scheme in ["runner_token", "runner_token_header", "job_token", "private_token", "registration_token"] {
            assert!(doc["components"]["securitySchemes"][scheme].is_object(), "{scheme}");
        }
    }
}
