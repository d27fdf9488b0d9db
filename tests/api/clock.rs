//! The clock-driven parts, with real server processes: a pipeline schedule due every
//! minute, two instances on one database and a restart (issue 23). Its own module, early
//! in the test order, so that its minutes run alongside the rest of the suite.

use std::time::Duration;

use reqwest::Client;
use serde_json::{json, Value};

use crate::helpers::both_backends;
use crate::restart::{call, database, start};

/// The minutes (`YYYY-MM-DDTHH:MM`) in which the schedule's pipelines were created.
async fn scheduled_minutes(
    client: &Client,
    base: &str,
    project: &Value,
    schedule: &Value,
) -> Vec<String> {
    let (status, listed) = call(
        client,
        reqwest::Method::GET,
        format!(
            "{base}/api/v4/projects/{}/pipeline_schedules/{}/pipelines?per_page=100",
            project["id"], schedule["id"]
        ),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    listed
        .as_array()
        .expect("list")
        .iter()
        .map(|p| {
            p["created_at"]
                .as_str()
                .unwrap_or_default()
                .chars()
                .take(16)
                .collect()
        })
        .collect()
}

/// Waits until the minute after `now` has begun, and `grace` past it.
async fn past_next_minute(grace: Duration) {
    let now = chrono::Utc::now();
    let into = Duration::from_millis(
        u64::from(now.timestamp_subsec_millis()) + 1000 * u64::from(chrono::Timelike::second(&now)),
    );
    tokio::time::sleep(Duration::from_secs(60) - into + grace).await;
}

both_backends! {
    // A schedule due every minute, two instances on one database: each minute's run
    // starts exactly once. Both stop (SIGKILL) across a due time; the two instances
    // started after run the missed time once, not again, then each minute once.
    async fn a_schedule_runs_once_per_minute_across_instances_and_a_restart(backend) {
        let dir = tempfile::tempdir().expect("tempdir");
        let database_url = database(backend, dir.path()).await;
        let repo = tempfile::tempdir().expect("tempdir");
        crate::helpers::e2e::commit_branch(repo.path(), "main", "nightly: { script: [x] }\n");
        let client = Client::new();
        let first = start(&database_url, dir.path()).await;
        let second = start(&database_url, dir.path()).await;
        let base = first.base.clone();
        let (_, project) = call(&client, reqwest::Method::POST, format!("{base}/api/v4/projects"),
            json!({ "name": "cron", "repository_url": repo.path().display().to_string() })).await;
        let (status, schedule) = call(&client, reqwest::Method::POST, format!("{base}/api/v4/projects/{}/pipeline_schedules", project["id"]),
            json!({ "description": "every minute", "ref": "main", "cron": "* * * * *" })).await;
        assert_eq!(status, 201, "{schedule}");

        // Two due times with both instances polling.
        for runs in 1..=2 {
            past_next_minute(Duration::from_secs(5)).await;
            let minutes = scheduled_minutes(&client, &second.base, &project, &schedule).await;
            let mut distinct = minutes.clone();
            distinct.dedup();
            assert_eq!((minutes.len(), distinct.len()), (runs, runs), "once per minute: {minutes:?}");
        }
        // Both stop; a due time passes with no instance up.
        drop(first);
        drop(second);
        past_next_minute(Duration::from_secs(3)).await;
        let third = start(&database_url, dir.path()).await;
        let fourth = start(&database_url, dir.path()).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let minutes = scheduled_minutes(&client, &third.base, &project, &schedule).await;
        assert_eq!(minutes.len(), 3, "the missed time ran once after the restart: {minutes:?}");
        // Not again before its next time; then once more, with both instances polling.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let again = scheduled_minutes(&client, &fourth.base, &project, &schedule).await;
        assert_eq!(again.len(), 3, "{again:?}");
        past_next_minute(Duration::from_secs(5)).await;
        let minutes = scheduled_minutes(&client, &fourth.base, &project, &schedule).await;
        let mut distinct = minutes.clone();
        distinct.dedup();
        assert_eq!((minutes.len(), distinct.len()), (4, 4), "once per minute: {minutes:?}");
    }
}
