//! `PATCH /jobs/:id/trace`: appends, resumes, limits, and the final checksum.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{both_backends, TestApp};

pub(crate) async fn running_job(app: &TestApp) -> (i64, Value) {
    let project = app.create_project(json!({ "name": "app" })).await;
    let (_, runner) = app
        .create_runner(json!({ "runner_type": "instance_type" }))
        .await;
    app.pipeline(project, "a: { script: x }\n").await;
    (project, app.take_job(&runner).await)
}

impl TestApp {
    pub(crate) async fn patch_trace(
        &self,
        job: &Value,
        start: usize,
        data: &[u8],
    ) -> crate::helpers::Reply {
        let end = (start + data.len()).saturating_sub(1);
        self.send(
            self.request(
                Method::PATCH,
                &format!("/api/v4/jobs/{}/trace?debug_trace=false", job["id"]),
            )
            .header("Job-Token", job["token"].as_str().unwrap_or_default())
            .header("Content-Range", format!("{start}-{end}"))
            .header("Content-Type", "text/plain")
            .body(data.to_vec()),
        )
        .await
    }

    pub(crate) async fn trace(&self, project: i64, job: &Value) -> Vec<u8> {
        let response = self
            .admin(
                Method::GET,
                &format!("/api/v4/projects/{project}/jobs/{}/trace", job["id"]),
            )
            .send()
            .await
            .expect("trace");
        assert_eq!(response.status(), 200);
        response.bytes().await.expect("body").to_vec()
    }
}

fn crc(data: &[u8]) -> String {
    format!("crc32:{:08x}", crc32fast::hash(data))
}

both_backends! {
    async fn appends_resume_and_verify(backend) {
        let app = TestApp::spawn(backend).await;
        let (project, job) = running_job(&app).await;
        let reply = app.patch_trace(&job, 0, b"hello ").await;
        assert_eq!(reply.status, 202, "{}", reply.text);
        assert_eq!(reply.header("range"), Some("0-6"));
        assert_eq!(reply.header("job-status"), Some("running"));
        assert_eq!(reply.header("x-gitlab-trace-update-interval"), Some("60"));

        // Out of order: 416 with the stored size; the runner resumes from there.
        let reply = app.patch_trace(&job, 100, b"later").await;
        assert_eq!((reply.status, reply.header("range")), (416, Some("0-6")));
        let reply = app.patch_trace(&job, 0, b"hello again").await;
        assert_eq!((reply.status, reply.header("range")), (416, Some("0-6")));
        let reply = app.patch_trace(&job, 6, b"world\n").await;
        assert_eq!((reply.status, reply.header("range")), (202, Some("0-12")));
        assert_eq!(app.trace(project, &job).await, b"hello world\n");

        // No Content-Range: 400 in GitLab's words.
        let reply = app
            .send(app.request(Method::PATCH, &format!("/api/v4/jobs/{}/trace", job["id"])).header("Job-Token", job["token"].as_str().unwrap_or_default()).body("x"))
            .await;
        reply.assert(400, json!({ "message": "400 Missing header Content-Range" }));

        let log = b"hello world\n";
        let reply = app.update_job(&job, json!({ "state": "success", "checksum": crc(log), "output": { "checksum": crc(log), "bytesize": log.len() } })).await;
        assert_eq!(reply.status, 200);
        assert_eq!(app.runner_job(job["id"].as_i64().unwrap_or(0)).await.trace_checksum_ok, Some(true));
        // Finished: further PATCHes are refused with the status.
        let reply = app.patch_trace(&job, 12, b"more").await;
        assert_eq!((reply.status, reply.header("job-status")), (403, Some("success")));
        assert_eq!(app.trace(project, &job).await, log, "the log stays readable after the job");
    }

    async fn a_checksum_mismatch_is_recorded_not_refused(backend) {
        let app = TestApp::spawn(backend).await;
        let (_, job) = running_job(&app).await;
        app.patch_trace(&job, 0, b"abc").await;
        let reply = app.update_job(&job, json!({ "state": "success", "output": { "checksum": crc(b"abd"), "bytesize": 3 } })).await;
        assert_eq!(reply.status, 200);
        assert_eq!(app.runner_job(job["id"].as_i64().unwrap_or(0)).await.trace_checksum_ok, Some(false));
    }

    async fn a_log_of_several_megabytes_is_byte_exact(backend) {
        let app = TestApp::spawn(backend).await;
        let (project, job) = running_job(&app).await;
        // 5 MiB of varied bytes (not only text), in 1 MiB patches as the runner sends.
        let log: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        for (i, chunk) in log.chunks(1024 * 1024).enumerate() {
            let reply = app.patch_trace(&job, i * 1024 * 1024, chunk).await;
            assert_eq!(reply.status, 202, "{}", reply.text);
        }
        let stored = app.trace(project, &job).await;
        assert_eq!(stored.len(), log.len());
        assert!(stored == log, "stored bytes differ");
        app.update_job(&job, json!({ "state": "success", "output": { "checksum": crc(&log), "bytesize": log.len() } })).await;
        assert_eq!(app.runner_job(job["id"].as_i64().unwrap_or(0)).await.trace_checksum_ok, Some(true));
    }

    async fn concurrent_patches_to_one_job_are_serialised(backend) {
        let app = std::sync::Arc::new(TestApp::spawn(backend).await);
        let (project, job) = running_job(&app).await;
        // Eight writers race for offset 0 with different bytes: exactly one wins, the rest
        // get 416 with the size the winner left.
        let mut tasks = Vec::new();
        for i in 0..8u8 {
            let (app, job) = (app.clone(), job.clone());
            tasks.push(tokio::spawn(async move {
                let reply = app.patch_trace(&job, 0, &[b'a' + i; 10]).await;
                (reply.status, reply.header("range").map(str::to_string))
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.expect("task"));
        }
        assert_eq!(results.iter().filter(|(s, _)| *s == 202).count(), 1, "{results:?}");
        assert!(results.iter().all(|(_, r)| r.as_deref() == Some("0-10")), "{results:?}");
        let log = app.trace(project, &job).await;
        assert_eq!(log.len(), 10);
        assert!(log.iter().all(|b| *b == log[0]), "one writer's bytes, not interleaved");
    }

    async fn a_log_over_the_limit_fails_the_job(backend) {
        let app = TestApp::builder(backend).max_trace_bytes(1000).spawn().await;
        let (project, job) = running_job(&app).await;
        assert_eq!(app.patch_trace(&job, 0, &[b'x'; 600]).await.status, 202);
        let reply = app.patch_trace(&job, 600, &[b'y'; 600]).await;
        reply.assert(403, json!({ "message": "403 Forbidden - Job is not processing on runner" }));
        assert_eq!(reply.header("job-status"), Some("failed"));
        let listed = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/jobs/{}", job["id"]))).await.json();
        assert_eq!(listed["failure_reason"], "trace_size_exceeded");
        assert_eq!(app.trace(project, &job).await.len(), 600, "nothing past the limit is stored");
    }

    async fn the_trace_guard(backend) {
        let app = TestApp::spawn(backend).await;
        let (_, job) = running_job(&app).await;
        let mut wrong = job.clone();
        wrong["token"] = json!("glcbt-wrong");
        app.patch_trace(&wrong, 0, b"x").await.assert(403, json!({ "message": "403 Forbidden" }));
        // The token as a query param works as well as the header.
        let reply = app
            .send(
                app.request(Method::PATCH, &format!("/api/v4/jobs/{}/trace?token={}", job["id"], job["token"].as_str().unwrap_or_default()))
                    .header("Content-Range", "0-0")
                    .body("x"),
            )
            .await;
        assert_eq!(reply.status, 202, "{}", reply.text);
    }

    // A log PATCH may take its job as the previous append here left it (no read); the
    // append still sees what changed since: a cancel (Job-Status tells the runner), an end
    // (403 with the status), nothing stored then.
    async fn a_log_patch_sees_what_changed_since_the_last(backend) {
        let app = TestApp::spawn(backend).await;
        let (project, job) = running_job(&app).await;
        assert_eq!(app.patch_trace(&job, 0, b"a").await.status, 202);
        assert_eq!(app.patch_trace(&job, 1, b"b").await.header("job-status"), Some("running"));
        let cancel = format!("/api/v4/projects/{project}/jobs/{}/cancel", job["id"]);
        assert_eq!(app.send(app.admin(Method::POST, &cancel)).await.json()["status"], "canceling");
        let reply = app.patch_trace(&job, 2, b"c").await;
        assert_eq!((reply.status, reply.header("job-status"), reply.header("range")), (202, Some("canceling"), Some("0-3")));
        assert_eq!(app.send(app.admin(Method::POST, &cancel)).await.json()["status"], "canceled");
        let reply = app.patch_trace(&job, 3, b"d").await;
        assert_eq!((reply.status, reply.header("job-status")), (403, Some("canceled")));
        assert_eq!(app.trace(project, &job).await, b"abc");
    }

    // The job's token changed after the last append (as another instance's reassignment
    // would): the old token's PATCH is refused and stores nothing; the new one's lands.
    async fn a_log_patch_with_a_token_no_longer_the_jobs_is_refused(backend) {
        let app = TestApp::spawn(backend).await;
        let (project, job) = running_job(&app).await;
        assert_eq!(app.patch_trace(&job, 0, b"a").await.status, 202);
        assert_eq!(app.patch_trace(&job, 1, b"b").await.status, 202);
        let digest = runway::auth::tokens::TokenDigest::of("glcbt-new").to_hex();
        let literal = match backend {
            crate::helpers::Backend::Postgres => format!("'\\x{digest}'::bytea"),
            crate::helpers::Backend::Sqlite => format!("X'{digest}'"),
        };
        app.execute(&format!("UPDATE jobs SET token_digest = {literal} WHERE id = {}", job["id"])).await;
        app.patch_trace(&job, 2, b"c").await.assert(403, json!({ "message": "403 Forbidden" }));
        let mut renewed = job.clone();
        renewed["token"] = json!("glcbt-new");
        let reply = app.patch_trace(&renewed, 2, b"C").await;
        assert_eq!((reply.status, reply.header("range")), (202, Some("0-3")), "{}", reply.text);
        assert_eq!(app.trace(project, &job).await, b"abC");
    }
}

both_backends! {
    async fn a_watched_log_is_updated_every_three_seconds(backend) {
        let app = TestApp::spawn(backend).await;
        let (project, job) = running_job(&app).await;
        let reply = app.patch_trace(&job, 0, b"a").await;
        assert_eq!(reply.header("x-gitlab-trace-update-interval"), Some("60"));
        app.trace(project, &job).await; // someone reads the log
        let reply = app.patch_trace(&job, 1, b"b").await;
        assert_eq!(reply.header("x-gitlab-trace-update-interval"), Some("3"));
        let reply = app.update_job(&job, json!({ "state": "running" })).await;
        assert_eq!(reply.header("x-gitlab-trace-update-interval"), Some("3"));
    }
}

both_backends! {
    async fn finished_logs_are_archived_to_object_storage(backend) {
        let app = TestApp::spawn(backend).await;
        let (project, job) = running_job(&app).await;
        app.patch_trace(&job, 0, b"line one\n").await;
        app.patch_trace(&job, 9, b"line two\n").await;
        // More chunks than the archiver reads at once, of uneven sizes.
        let mut log = b"line one\nline two\n".to_vec();
        for i in 0..40u32 {
            let chunk: Vec<u8> = (0..(5_000 + i * 37)).map(|b| b"0123456789abcdef\n"[((b + i) % 17) as usize]).collect();
            let reply = app.patch_trace(&job, log.len(), &chunk).await;
            assert_eq!(reply.status, 202, "{}", reply.text);
            log.extend_from_slice(&chunk);
        }
        assert_eq!(app.state.artifacts.archive_traces().await.expect("archive"), 0, "a running job's log stays");
        app.update_job(&job, json!({ "state": "success" })).await;
        assert_eq!(app.state.artifacts.archive_traces().await.expect("archive"), 1);
        assert_eq!(app.state.artifacts.archive_traces().await.expect("archive"), 0, "once");
        let id = job["id"].as_i64().unwrap_or(0);
        assert!(app.state.traces.read(id).await.expect("chunks").is_empty(), "the chunks are gone");
        assert!(app.trace(project, &job).await == log, "read from the archive, byte for byte");
        let listed = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/jobs/{id}"))).await.json();
        assert_eq!(listed["artifacts"], json!([{ "file_type": "trace", "size": log.len(), "filename": "job.log", "file_format": "raw" }]));
    }
}

/// The folder of running logs: `<database file>-logs` on SQLite, `<data dir>/logs` on
/// PostgreSQL with artifacts on the local filesystem.
pub fn log_dir(app: &TestApp) -> std::path::PathBuf {
    match app.backend {
        crate::helpers::Backend::Sqlite => {
            let file = app.database_url.trim_start_matches("sqlite://");
            std::path::PathBuf::from(format!("{file}-logs"))
        }
        crate::helpers::Backend::Postgres => app.data_dir().join("logs"),
    }
}

/// The job's archived log: its row, its object's file in the local store, and that file's
/// inode.
pub async fn archived_log(
    app: &TestApp,
    job_id: i64,
) -> (runway::db::models::JobArtifact, Vec<u8>, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut db = app.db.read().await.expect("connection");
    let row = runway::db::models::JobArtifact::find(&mut db.conn(), job_id, "trace")
        .await
        .expect("query")
        .expect("archived");
    let file = app.data_dir().join("artifacts").join(&row.store_path);
    let inode = std::fs::metadata(&file).expect("archive's file").ino();
    (row, std::fs::read(&file).expect("archive's file"), inode)
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// The job's chunks as stored: `Some(length)` for bytes in the row, `None` for bytes in
/// the log file.
pub async fn stored_chunks(app: &TestApp, job_id: i64) -> Vec<Option<usize>> {
    let mut db = app.db.read().await.expect("connection");
    let chunks = runway::db::models::TraceChunk::page(&mut db.conn(), job_id, -1, 1000)
        .await
        .expect("chunks");
    chunks
        .into_iter()
        .map(|c| c.data.map(|d| d.len()))
        .collect()
}

both_backends! {
    // A running job's log is a file (on PostgreSQL: artifacts on the local filesystem); the
    // rows hold no bytes.
    async fn a_running_log_is_a_file_until_archived(backend) {
        let app = TestApp::spawn(backend).await;
        let (project, job) = running_job(&app).await;
        let id = job["id"].as_i64().unwrap_or(0);
        let mut log = Vec::new();
        for i in 0..5u8 {
            let chunk = vec![b'a' + i; 1000 + usize::from(i)];
            let reply = app.patch_trace(&job, log.len(), &chunk).await;
            assert_eq!(reply.status, 202, "{}", reply.text);
            log.extend_from_slice(&chunk);
        }
        let file = log_dir(&app).join(format!("{id}.log"));
        assert!(std::fs::read(&file).expect("log file") == log);
        let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&file).expect("log file"));
        assert_eq!(stored_chunks(&app, id).await, [None; 5], "no bytes in the rows");
        assert!(app.trace(project, &job).await == log, "read back from the file");
        // A page from inside the log: two chunks after the one at 1000, each at its offset.
        let page = app.state.traces.page(id, 1000, 2).await.expect("page");
        let starts: Vec<i64> = page.iter().map(|(o, _)| *o).collect();
        assert_eq!(starts, [2001, 3003]);
        assert!(page[0].1 == vec![b'c'; 1002] && page[1].1 == vec![b'd'; 1003]);

        app.update_job(&job, json!({ "state": "success", "output": { "checksum": crc(&log), "bytesize": log.len() } })).await;
        assert_eq!(app.runner_job(id).await.trace_checksum_ok, Some(true));
        assert_eq!(app.state.artifacts.archive_traces().await.expect("archive"), 1);
        assert!(!file.exists(), "the file goes with the chunks once archived");
        assert!(app.trace(project, &job).await == log, "read from the archive");
        let (row, archived, archive_inode) = archived_log(&app, id).await;
        assert!(archived == log);
        assert_eq!((row.size, row.sha256), (log.len() as i64, sha256_hex(&log)));
        // The file itself becomes the archive: a second name, no copy.
        assert_eq!(archive_inode, inode);
        // A late append is refused and changes nothing.
        let reply = app.patch_trace(&job, log.len(), b"late\n").await;
        assert_eq!(reply.status, 403, "{}", reply.text);
        assert!(archived_log(&app, id).await.1 == log);
    }

    // Bytes written to the file by an append that never committed (the process died between
    // the two) are not part of the log: the next append at the stored size replaces them.
    async fn bytes_past_the_stored_size_are_ignored(backend) {
        let app = TestApp::spawn(backend).await;
        let (project, job) = running_job(&app).await;
        let id = job["id"].as_i64().unwrap_or(0);
        app.patch_trace(&job, 0, b"first\n").await;
        let file = log_dir(&app).join(format!("{id}.log"));
        let mut torn = std::fs::read(&file).expect("log file");
        torn.extend_from_slice(b"never acknowledged, longer than what follows\n");
        std::fs::write(&file, torn).expect("write");
        assert_eq!(app.trace(project, &job).await, b"first\n");
        let reply = app.patch_trace(&job, 0, b"again").await;
        assert_eq!((reply.status, reply.header("range")), (416, Some("0-6")));
        let reply = app.patch_trace(&job, 6, b"second\n").await;
        assert_eq!((reply.status, reply.header("range")), (202, Some("0-13")));
        assert_eq!(app.trace(project, &job).await, b"first\nsecond\n");
        let reply = app.update_job(&job, json!({ "state": "success", "output": { "checksum": crc(b"first\nsecond\n"), "bytesize": 13 } })).await;
        assert_eq!(reply.status, 200);
        assert_eq!(app.runner_job(id).await.trace_checksum_ok, Some(true));
        // The file is longer than the log (the torn bytes past it): it is cut to the log
        // before it becomes the archive.
        assert_eq!(app.state.artifacts.archive_traces().await.expect("archive"), 1);
        let (row, archived, _) = archived_log(&app, id).await;
        assert_eq!(archived, b"first\nsecond\n");
        assert_eq!((row.size, row.sha256), (13, sha256_hex(b"first\nsecond\n")));
        assert_eq!(app.trace(project, &job).await, b"first\nsecond\n");
    }

    // A log begun in the rows (by a version that kept the bytes there) goes on in the file,
    // and reads as one; on restart, files whose chunks are gone are removed and the others
    // kept — on PostgreSQL only once left alone for ten minutes (another instance may be
    // writing a job's first chunk).
    async fn rows_and_file_read_as_one_log_and_orphans_are_swept(backend) {
        let first = TestApp::spawn(backend).await;
        let (project, job) = running_job(&first).await;
        let id = job["id"].as_i64().unwrap_or(0);
        let row = match backend {
            crate::helpers::Backend::Sqlite => "X'6f6c640a'",
            crate::helpers::Backend::Postgres => "'\\x6f6c640a'::bytea",
        };
        first.execute(&format!("INSERT INTO trace_chunks (job_id, \"offset\", data) VALUES ({id}, 0, {row})")).await;
        first.execute(&format!("UPDATE jobs SET trace_size = 4, trace_crc32 = {} WHERE id = {id}", crc32fast::hash(b"old\n"))).await;
        let reply = first.patch_trace(&job, 4, b"new\n").await;
        assert_eq!((reply.status, reply.header("range")), (202, Some("0-8")));
        assert_eq!(first.trace(project, &job).await, b"old\nnew\n");
        assert_eq!(stored_chunks(&first, id).await, [Some(4), None]);
        let dir = log_dir(&first);
        crate::helpers::write_file_aged(&dir.join("999998.log"), 0);
        crate::helpers::write_file_aged(&dir.join("999999.log"), 1);
        first.stop().await;

        let app = TestApp::builder(backend).same_database_as(&first).data_dir_of(&first).spawn().await;
        assert!(!dir.join("999999.log").exists(), "an old file without chunks is swept");
        assert_eq!(
            dir.join("999998.log").exists(),
            backend == crate::helpers::Backend::Postgres,
            "a fresh one is kept on PostgreSQL only"
        );
        assert!(dir.join(format!("{id}.log")).exists());
        let reply = app.patch_trace(&job, 8, b"after restart\n").await;
        assert_eq!(reply.status, 202, "{}", reply.text);
        assert_eq!(app.trace(project, &job).await, b"old\nnew\nafter restart\n");
        // A chunk's bytes in its row: the log is copied into its archive, rows and file.
        app.update_job(&job, json!({ "state": "success" })).await;
        assert_eq!(app.state.artifacts.archive_traces().await.expect("archive"), 1);
        let (row, archived, _) = archived_log(&app, id).await;
        assert_eq!(archived, b"old\nnew\nafter restart\n");
        assert_eq!(row.size, 22);
        assert!(!dir.join(format!("{id}.log")).exists());
    }
}

/// When the runner and its (one) manager were last contacted, as stored.
async fn contacts(app: &TestApp, runner_id: i64) -> (chrono::NaiveDateTime, chrono::NaiveDateTime) {
    let runner = app
        .runner(runner_id)
        .await
        .expect("row")
        .contacted_at
        .expect("contacted");
    let managers = app.managers(runner_id).await;
    (runner, managers[0].contacted_at.expect("contacted"))
}

both_backends! {
    // A log PATCH heartbeats the job's runner and its manager when a contact is due, and
    // writes nothing while none is (the decision is remembered until the next is due).
    async fn log_patches_heartbeat_when_due(backend) {
        let app = TestApp::builder(backend).heartbeat_interval(2).spawn().await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (runner_id, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        app.pipeline(project, "a: { script: x }\n").await;
        let job = app.take_job(&runner).await;
        let polled = contacts(&app, runner_id).await;
        assert_eq!(app.patch_trace(&job, 0, b"a").await.status, 202);
        assert_eq!(app.patch_trace(&job, 1, b"b").await.status, 202);
        assert_eq!(contacts(&app, runner_id).await, polled, "nothing due: nothing written");
        tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
        assert_eq!(app.patch_trace(&job, 2, b"c").await.status, 202);
        let beat = contacts(&app, runner_id).await;
        assert!(beat.0 > polled.0 && beat.1 > polled.1, "{polled:?} -> {beat:?}");
        assert_eq!(app.patch_trace(&job, 3, b"d").await.status, 202);
        assert_eq!(contacts(&app, runner_id).await, beat, "written once per interval");
    }

    // A log PATCH writes a contact once it is as old as a poll would find it due (GitLab's
    // 40–55 of 55 of the interval, drawn from the stored time), not only after the whole
    // interval: both paths decide alike.
    async fn log_patches_write_a_contact_when_a_poll_would(backend) {
        let interval = std::time::Duration::from_secs(2);
        let app = TestApp::builder(backend).heartbeat_interval(2).spawn().await;
        let project = app.create_project(json!({ "name": "app" })).await;
        // A contact whose age is well short of the interval, so that the two rules differ
        // (about three in four are).
        let mut found = None;
        for _ in 0..12 {
            let (runner_id, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
            app.pipeline(project, "a: { script: x }\n").await;
            let job = app.take_job(&runner).await;
            let polled = contacts(&app, runner_id).await;
            assert_eq!(polled.0, polled.1, "a poll writes both at one time");
            let age = runway::service::runners::contact_age(interval, polled.0);
            if age < interval.mul_f64(0.85) {
                found = Some((runner_id, job, polled, age));
                break;
            }
        }
        let (runner_id, job, polled, age) = found.expect("a contact due before the interval");
        let until = |offset: chrono::TimeDelta| {
            let at = polled.0 + chrono::TimeDelta::from_std(age).expect("age") + offset;
            (at - chrono::Utc::now().naive_utc()).to_std().unwrap_or_default()
        };
        tokio::time::sleep(until(chrono::TimeDelta::milliseconds(-150))).await;
        assert_eq!(app.patch_trace(&job, 0, b"a").await.status, 202);
        assert_eq!(contacts(&app, runner_id).await, polled, "not due yet: nothing written");
        tokio::time::sleep(until(chrono::TimeDelta::milliseconds(100))).await;
        assert_eq!(app.patch_trace(&job, 1, b"b").await.status, 202);
        let beat = contacts(&app, runner_id).await;
        assert!(beat.0 > polled.0 && beat.1 > polled.1, "due at {age:?}: {polled:?} -> {beat:?}");
    }
}

// Two instances on one PostgreSQL database and one data dir take appends to one job's log
// in turns: at each offset one of the racing PATCHes (on either instance, with different
// bytes) is stored, and the file holds exactly the stored bytes — the checksum the runner
// reports of them matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_instances_share_a_running_log() {
    let first = std::sync::Arc::new(TestApp::spawn(crate::helpers::Backend::Postgres).await);
    let second = std::sync::Arc::new(
        TestApp::builder(crate::helpers::Backend::Postgres)
            .same_database_as(&first)
            .data_dir_of(&first)
            .spawn()
            .await,
    );
    let (project, job) = running_job(&first).await;
    let id = job["id"].as_i64().unwrap_or(0);
    for round in 0..20usize {
        let mut tasks = Vec::new();
        for racer in 0..4u8 {
            let app = if racer % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            let job = job.clone();
            tasks.push(tokio::spawn(async move {
                app.patch_trace(&job, round * 10, &[b'a' + racer; 10])
                    .await
                    .status
            }));
        }
        let mut statuses = Vec::new();
        for t in tasks {
            statuses.push(t.await.expect("task"));
        }
        assert_eq!(
            statuses.iter().filter(|s| **s == 202).count(),
            1,
            "round {round}: {statuses:?}"
        );
        assert!(
            statuses.iter().all(|s| *s == 202 || *s == 416),
            "round {round}: {statuses:?}"
        );
    }
    let log = second.trace(project, &job).await;
    assert_eq!(log.len(), 200);
    assert!(
        log.chunks(10).all(|c| c.iter().all(|b| *b == c[0])),
        "one writer per offset: {log:?}"
    );
    let file = log_dir(&first).join(format!("{id}.log"));
    assert!(std::fs::read(&file).expect("log file")[..200] == log[..]);
    let reply = first
        .update_job(
            &job,
            json!({ "state": "success", "output": { "checksum": crc(&log), "bytesize": 200 } }),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(first.runner_job(id).await.trace_checksum_ok, Some(true));
}
