//! GitLab's runner backoff: while migrations run on the shared database, or while the
//! `runner_backoff` flag is on for the instance, every runner route answers 429 with
//! `Retry-After: 60` before any auth or param check; admin routes are not affected.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{both_backends, TestApp};

/// Every runner route, asked with no params and no token.
const RUNNER_ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/v4/runners"),
    ("DELETE", "/api/v4/runners"),
    ("POST", "/api/v4/runners/verify"),
    ("DELETE", "/api/v4/runners/managers"),
    ("POST", "/api/v4/runners/reset_authentication_token"),
    ("GET", "/api/v4/runners/router/discovery"),
    ("POST", "/api/v4/jobs/request"),
    ("PUT", "/api/v4/jobs/1"),
    ("PATCH", "/api/v4/jobs/1/trace"),
    ("POST", "/api/v4/jobs/1/artifacts"),
    ("GET", "/api/v4/jobs/1/artifacts"),
];

async fn statuses(app: &TestApp) -> Vec<u16> {
    let mut out = Vec::new();
    for (method, path) in RUNNER_ROUTES {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        out.push(app.send(app.request(method, path)).await.status);
    }
    out
}

async fn assert_backed_off(app: &TestApp) {
    for (method, path) in RUNNER_ROUTES {
        let reply = app
            .send(app.request(Method::from_bytes(method.as_bytes()).expect("method"), path))
            .await;
        reply.assert(
            429,
            json!({ "message": "Executing database migrations. Please retry later." }),
        );
        assert_eq!(reply.header("retry-after"), Some("60"), "{method} {path}");
    }
}

both_backends! {
    async fn runner_routes_back_off_on_the_flag_and_during_migrations(backend) {
        let app = TestApp::spawn(backend).await;
        let normal = statuses(&app).await;
        assert!(normal.iter().all(|s| *s != 429), "{normal:?}");

        // The admin turns backoff on: runner routes wait, admin routes do not.
        let reply = app
            .send(app.admin(Method::POST, "/api/v4/features/runner_backoff").json(&json!({ "value": true })))
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        assert_backed_off(&app).await;
        let admin = app.send(app.admin(Method::GET, "/api/v4/runners/all")).await;
        assert_eq!(admin.status, 200);
        assert_eq!(app.send(app.admin(Method::DELETE, "/api/v4/features/runner_backoff")).await.status, 204);
        assert_eq!(statuses(&app).await, normal, "back to normal once the flag is off");

        // Another instance migrating the database leaves its marker: back off until it is
        // gone; a marker hours old is a crashed migration's and is ignored.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        app.execute(&format!(
            "INSERT INTO instance_settings (key, value, updated_at) VALUES ('migrations_running', '{now}', '2026-01-01 00:00:00')"
        ))
        .await;
        app.state.backoff.forget();
        assert_backed_off(&app).await;
        app.execute(&format!("UPDATE instance_settings SET value = '{}' WHERE key = 'migrations_running'", now - 7200)).await;
        app.state.backoff.forget();
        assert_eq!(statuses(&app).await, normal);
        app.execute("DELETE FROM instance_settings WHERE key = 'migrations_running'").await;
        app.state.backoff.forget();
        assert_eq!(statuses(&app).await, normal);
    }
}
