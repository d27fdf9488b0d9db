//! Hostile and malformed input: GitLab's error shapes, the right status, nothing changed.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{both_backends, TestApp, REGISTRATION_TOKEN};

both_backends! {
    async fn extra_and_trailing_slashes_reach_the_route_with_the_query_kept(backend) {
        let app = TestApp::spawn(backend).await;
        let mut token = String::new();
        for _ in 0..3 {
            token = app.create_runner(json!({ "runner_type": "instance_type" })).await.1;
        }
        let reply = app.send(app.admin(Method::GET, "/api/v4//runners/all/?per_page=2&page=2")).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.json().as_array().map(Vec::len), Some(1), "{}", reply.text);
        assert_eq!((reply.header("x-total"), reply.header("x-page")), (Some("3"), Some("2")));
        // A runner's poll the same way: no job, 204 with the queue's version.
        let reply = app.send(app.request(Method::POST, "/api/v4/jobs//request/").json(&json!({ "token": token }))).await;
        assert_eq!(reply.status, 204, "{}", reply.text);
        assert!(reply.header("x-gitlab-last-update").is_some_and(|v| !v.is_empty()));
    }

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

/// Panics seen in this process whose message is about blocking on the wrong runtime.
static BLOCKING_PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn count_blocking_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let text = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            if text.contains("blocking") {
                BLOCKING_PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

/// A SQLite query whose future is dropped while it waits on the database lock, on a
/// current-thread runtime as every actix worker runs (a handler unwinding from a panic,
/// a timeout): the drop must wait for the query, not panic. diesel-async's own spawner
/// calls `block_in_place` there, which panics on such a runtime.
#[tokio::test]
async fn a_sqlite_query_dropped_mid_wait_on_a_current_thread_runtime() {
    use diesel::{Connection, RunQueryDsl};
    let app = TestApp::spawn(crate::helpers::Backend::Sqlite).await;
    let path = app.database_url.trim_start_matches("sqlite://").to_string();
    let (locked, wait_locked) = std::sync::mpsc::channel();
    let locker = std::thread::spawn(move || {
        let mut conn = diesel::SqliteConnection::establish(&path).expect("sqlite");
        diesel::sql_query("BEGIN IMMEDIATE")
            .execute(&mut conn)
            .expect("lock");
        locked.send(()).expect("signal");
        std::thread::sleep(std::time::Duration::from_millis(800));
        diesel::sql_query("COMMIT")
            .execute(&mut conn)
            .expect("unlock");
    });
    wait_locked.recv().expect("locked");
    let write = app.execute("INSERT INTO instance_settings (key, value, updated_at) VALUES ('dropped', 'x', '2026-01-01 00:00:00')");
    let outcome = std::panic::AssertUnwindSafe(tokio::time::timeout(
        std::time::Duration::from_millis(100),
        write,
    ));
    let outcome = futures_util::FutureExt::catch_unwind(outcome).await;
    assert!(outcome.is_ok(), "dropping the waiting query panicked");
    assert!(
        outcome.expect("no panic").is_err(),
        "the write was still waiting when dropped"
    );
    locker.join().expect("locker");
    // The connection is usable again.
    app.execute("INSERT INTO instance_settings (key, value, updated_at) VALUES ('after', 'y', '2026-01-01 00:00:00')").await;
}

both_backends! {
    async fn clients_that_hang_up_mid_request_harm_nothing(backend) {
        count_blocking_panics();
        let app = TestApp::spawn(backend).await;
        for i in 0..60 {
            app.create_runner(json!({ "runner_type": "instance_type", "description": format!("r{i}") })).await;
        }
        // Requests abandoned after 1–4 ms: the server drops their handlers mid-query.
        let impatient = |ms: u64| {
            reqwest::Client::builder()
                .timeout(std::time::Duration::from_millis(ms))
                .build()
                .expect("client")
        };
        let clients: Vec<reqwest::Client> = (1..=4).map(impatient).collect();
        let mut abandoned = 0;
        for round in 0..200usize {
            let client = &clients[round % clients.len()];
            let sent = client
                .get(app.url("/api/v4/runners/all?per_page=100"))
                .header("PRIVATE-TOKEN", crate::helpers::ADMIN_TOKEN)
                .send()
                .await;
            if sent.is_err() {
                abandoned += 1;
            }
        }
        println!("{abandoned} of 200 requests abandoned by their client");
        assert_eq!(BLOCKING_PANICS.load(std::sync::atomic::Ordering::SeqCst), 0, "a worker panicked on a dropped query");
        // The server still answers, with every runner.
        let reply = app.send(app.admin(Method::GET, "/api/v4/runners/all?per_page=100")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json().as_array().map(Vec::len), Some(60));
    }
}
