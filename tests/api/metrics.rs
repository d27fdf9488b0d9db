//! `/-/metrics`: Prometheus text with GitLab's runner authentication counters and
//! Runway's own figures, moving with what the server does.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::helpers::{both_backends, TestApp};

/// The value of the sample named exactly `series` (name and labels).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
}

pub async fn scrape(app: &TestApp) -> String {
    let reply = app.send(app.request(Method::GET, "/-/metrics")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    reply.text
}

both_backends! {
    async fn metrics_move_with_what_the_server_does(backend) {
        let app = TestApp::builder(backend).long_poll_timeout(20).spawn().await;
        let success = r#"gitlab_ci_runner_authentication_success_total{runner_type="instance_type"}"#;
        let failure = "gitlab_ci_runner_authentication_failure_total";
        let text = scrape(&app).await;
        assert_eq!(sample(&text, success), Some(0.0), "{text}");
        assert_eq!(sample(&text, failure), Some(0.0));
        assert!(text.contains("# TYPE gitlab_ci_runner_authentication_success_total counter"));

        // A wrong token, then a right one.
        let reply = app.post_json("/runners/verify", json!({ "token": "glrt-nope" })).await;
        assert_eq!(reply.status, 403);
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let reply = app.post_json("/runners/verify", json!({ "token": runner })).await;
        assert_eq!(reply.status, 200);
        let text = scrape(&app).await;
        assert_eq!(sample(&text, failure), Some(1.0));
        assert_eq!(sample(&text, success), Some(1.0));
        assert_eq!(
            sample(&text, r#"runway_http_request_duration_seconds_count{method="POST",route="/api/v4/runners/verify",status="403"}"#),
            Some(1.0),
            "latency by route pattern: {text}"
        );

        // A held long poll is counted while it waits; a job ends it.
        let first = app.request_job(&runner).await;
        assert_eq!(first.status, 204);
        let last_update = first.header("x-gitlab-last-update").expect("queue value").to_string();
        let app = std::sync::Arc::new(app);
        let poller = {
            let (app, runner) = (app.clone(), runner.clone());
            tokio::spawn(async move { app.request_job_with(&runner, json!({ "last_update": last_update })).await.status })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while sample(&scrape(&app).await, "runway_held_long_polls") != Some(1.0) {
            assert!(Instant::now() < deadline, "the held poll is never counted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        app.pipeline(project, "a: { script: x }\nb: { script: y }\n").await;
        assert_eq!(poller.await.expect("poller"), 201);
        let text = scrape(&app).await;
        assert_eq!(sample(&text, "runway_held_long_polls"), Some(0.0));
        assert_eq!(sample(&text, r#"runway_jobs{status="running"}"#), Some(1.0), "{text}");
        assert_eq!(sample(&text, r#"runway_jobs{status="pending"}"#), Some(1.0));
        assert_eq!(sample(&text, "runway_queue_depth"), Some(1.0));
        assert_eq!(sample(&text, "runway_job_pickup_seconds_count"), Some(1.0));
        assert!(sample(&text, r#"runway_job_pickup_seconds_bucket{le="+Inf"}"#) == Some(1.0));
        let pool = if app.backend == crate::helpers::Backend::Postgres { "postgres" } else { "sqlite_write" };
        assert!(
            sample(&text, &format!(r#"runway_db_pool_connections{{pool="{pool}",state="max"}}"#)).is_some_and(|v| v >= 1.0),
            "{text}"
        );
        // SQLite's group commit: the pipeline's creation and the claim at least, in at
        // least one commit and at most one each.
        let (groups, writes) = (sample(&text, "runway_sqlite_write_groups_total"), sample(&text, "runway_sqlite_group_writes_total"));
        if app.backend == crate::helpers::Backend::Postgres {
            assert_eq!((groups, writes), (None, None), "{text}");
            assert_eq!(sample(&text, "runway_sqlite_write_queue"), None, "{text}");
            assert_eq!(sample(&text, "runway_sqlite_checkpoints_total"), None, "{text}");
        } else {
            let (groups, writes) = (groups.expect("groups counted"), writes.expect("writes counted"));
            assert!(writes >= 2.0 && groups >= 1.0 && groups <= writes, "{text}");
            // Nothing waits for the writer once the answers are in.
            assert_eq!(sample(&text, "runway_sqlite_write_queue"), Some(0.0), "{text}");
            // The WAL those writes grew is copied back by the checkpoint thread, not by
            // the writer after a commit (its own threshold is far above a few writes).
            let by = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let mut text = text;
            while sample(&text, "runway_sqlite_checkpoints_total").unwrap_or(0.0) < 1.0 {
                assert!(std::time::Instant::now() < by, "no checkpoint within 10 s: {text}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                text = scrape(&app).await;
            }
            assert!(sample(&text, "runway_sqlite_wal_pages").is_some_and(|p| p >= 1.0), "{text}");
        }
    }
}
