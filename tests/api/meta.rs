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

/// Every route macro in `src/api` (`#[get("…")]` and the like) with its full path, as
/// `(METHOD, /path/{param})`; the runner and admin modules live under `/api/v4`. The web
/// pages in `src/ui` are left out on purpose: they are pages for people, not API operations,
/// and stay out of the OpenAPI document (`tests/api/ui.rs` covers them).
fn routes_in_source() -> std::collections::BTreeSet<(String, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![root.join("lib.rs")];
    let mut dirs = vec![root.join("api")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/api").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let attr =
        regex::Regex::new(r#"#\[(get|post|put|patch|delete|head)\("([^"]+)"\)\]"#).expect("regex");
    let param = regex::Regex::new(r"\{([a-z_]+)(:[^}]*)?\}").expect("regex");
    let mut routes = std::collections::BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("source");
        assert!(
            !text.contains(".route(\""),
            "{}: a route registered with .route() escapes the OpenAPI document; use a route macro with #[utoipa::path]",
            file.display()
        );
        let scoped = ["runner", "admin"]
            .iter()
            .any(|m| file.components().any(|c| c.as_os_str() == *m));
        for caps in attr.captures_iter(&text) {
            let path = param.replace_all(&caps[2], "{$1}").to_string();
            let full = if scoped {
                format!("/api/v4{path}")
            } else {
                path
            };
            routes.insert((caps[1].to_uppercase(), full));
        }
    }
    routes
}

both_backends! {
    async fn every_route_is_in_the_document_and_every_documented_route_answers(backend) {
        let app = TestApp::spawn(backend).await;
        let doc = app.send(app.request(Method::GET, "/api/openapi.json")).await.json();
        let mut documented = std::collections::BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if ["get", "post", "put", "patch", "delete", "head"].contains(&method.as_str()) {
                    documented.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        let in_source = routes_in_source();
        assert!(in_source.len() > 30, "found the routes: {in_source:?}");
        let undocumented: Vec<_> = in_source.difference(&documented).collect();
        assert!(undocumented.is_empty(), "routes missing from the document: {undocumented:?}");
        let unrouted: Vec<_> = documented.difference(&in_source).collect();
        assert!(unrouted.is_empty(), "documented operations with no route macro: {unrouted:?}");

        // And the server routes each documented operation: none meets the router's own
        // `{"error":"404 Not Found"}` or a 405.
        let any_param = regex::Regex::new(r"\{[a-z_]+\}").expect("regex");
        for (method, path) in &documented {
            let concrete = path.replace("{file}", "index.css").replace("{feature_name}", "some_flag");
            let concrete = any_param.replace_all(&concrete, "1").to_string();
            let reply = app.send(app.request(Method::from_bytes(method.as_bytes()).expect("method"), &concrete)).await;
            assert_ne!(reply.status, 405, "{method} {path}");
            assert!(
                !(reply.status == 404 && reply.text.contains(r#""error":"404 Not Found""#)),
                "{method} {path} ({concrete}) is documented but not routed: {}",
                reply.text
            );
        }
    }
}
