//! Artifacts in a real S3-compatible server: moto's server mode (PyPI), started here on
//! 127.0.0.1, with the bucket made through its S3 API.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::helpers::{both_backends, TestApp};

struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// moto_server from the virtualenv of `RUNWAY_TEST_PYTHON`, on a free port.
async fn moto() -> Moto {
    let python = std::env::var("RUNWAY_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("RUNWAY_TEST_PYTHON is not set: scripts/test.sh makes a virtualenv with moto")
    });
    let server = std::path::Path::new(&python).with_file_name("moto_server");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let child = Command::new(server)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server starts");
    let moto = Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(&moto.endpoint).send().await.is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    moto
}

both_backends! {
    async fn artifacts_go_to_s3(backend) {
        let moto = moto().await;
        let client = reqwest::Client::new();
        let bucket = format!("runway-{}", uuid::Uuid::new_v4().simple());
        let made = client.put(format!("{}/{bucket}", moto.endpoint)).send().await.expect("create bucket");
        assert!(made.status().is_success(), "{}", made.status());

        let app = TestApp::builder(backend).s3(&format!("s3://{bucket}/artifacts"), &moto.endpoint).spawn().await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        app.pipeline(project, "a: { script: x }\nb: { script: y }\n").await;
        let a = app.take_job(&runner).await;
        let b = app.take_job(&runner).await;
        let data: Vec<u8> = (0..6 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(futures_util::stream::iter(
            data.chunks(100_000).map(|c| Ok::<_, std::io::Error>(c.to_vec())).collect::<Vec<_>>(),
        )))
        .file_name("artifacts.zip");
        let reply = app
            .send(
                app.request(Method::POST, &format!("/api/v4/jobs/{}/artifacts", a["id"]))
                    .header("Job-Token", a["token"].as_str().unwrap_or_default())
                    .multipart(reqwest::multipart::Form::new().part("file", part)),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);

        // The object is in the bucket, under the prefix.
        let listing = client.get(format!("{}/{bucket}?list-type=2", moto.endpoint)).send().await.expect("list").text().await.expect("xml");
        // A folder per thousand jobs, the object named after its job.
        let id = a["id"].as_i64().expect("id");
        assert!(listing.contains(&format!("<Key>artifacts/jobs/{}/{id}-", id / 1000)), "{listing}");
        assert!(listing.contains(&format!("<Size>{}</Size>", data.len())), "{listing}");

        let download = app
            .request(Method::GET, &format!("/api/v4/jobs/{}/artifacts", a["id"]))
            .header("Job-Token", b["token"].as_str().unwrap_or_default())
            .send()
            .await
            .expect("download");
        assert_eq!(download.status(), 200);
        assert!(download.bytes().await.expect("body").to_vec() == data, "identical bytes from S3");

        // direct_download=true: GitLab's redirect to a presigned URL of the object, which
        // gives the same bytes with no token; the audit event is still written.
        let no_redirects = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let direct = no_redirects
            .get(app.url(&format!("/api/v4/jobs/{}/artifacts?direct_download=true", a["id"])))
            .header("Job-Token", b["token"].as_str().unwrap_or_default())
            .send()
            .await
            .expect("download");
        assert_eq!(direct.status(), 302);
        let location = direct.headers()["location"].to_str().expect("ascii").to_string();
        assert!(
            location.starts_with(&format!("{}/{bucket}/artifacts/jobs/{}/{id}-", moto.endpoint, id / 1000)),
            "{location}"
        );
        assert!(location.contains("X-Amz-Signature=") && location.contains("X-Amz-Expires=600"), "{location}");
        let object = client.get(&location).send().await.expect("presigned get");
        assert_eq!(object.status(), 200);
        assert!(object.bytes().await.expect("body").to_vec() == data, "identical bytes from the presigned URL");
        assert!(location.contains("X-Amz-Credential=testing%2F"), "signed with the configured key: {location}");

        // A bad token still gets no URL.
        let refused = no_redirects
            .get(app.url(&format!("/api/v4/jobs/{}/artifacts?direct_download=true", a["id"])))
            .header("Job-Token", "not-a-token")
            .send()
            .await
            .expect("download");
        assert_eq!(refused.status(), 401);
        assert!(refused.headers().get("location").is_none());
    }

    // With artifacts in S3, PostgreSQL keeps a running job's log in its rows (the instances
    // then share only the database and the bucket), and concurrent appends at one offset
    // still store exactly one; SQLite (one instance) keeps its files.
    async fn running_logs_with_s3(backend) {
        let moto = moto().await;
        let bucket = format!("runway-{}", uuid::Uuid::new_v4().simple());
        let made = reqwest::Client::new().put(format!("{}/{bucket}", moto.endpoint)).send().await.expect("create bucket");
        assert!(made.status().is_success(), "{}", made.status());
        let app = std::sync::Arc::new(TestApp::builder(backend).s3(&format!("s3://{bucket}"), &moto.endpoint).spawn().await);
        let (project, job) = crate::traces::running_job(&app).await;
        let id = job["id"].as_i64().unwrap_or(0);
        let mut tasks = Vec::new();
        for i in 0..8u8 {
            let (app, job) = (app.clone(), job.clone());
            tasks.push(tokio::spawn(async move { app.patch_trace(&job, 0, &[b'a' + i; 10]).await.status }));
        }
        let mut statuses = Vec::new();
        for t in tasks {
            statuses.push(t.await.expect("task"));
        }
        assert_eq!(statuses.iter().filter(|s| **s == 202).count(), 1, "{statuses:?}");
        assert_eq!(statuses.iter().filter(|s| **s == 416).count(), 7, "{statuses:?}");
        let reply = app.patch_trace(&job, 10, b"tail\n").await;
        assert_eq!((reply.status, reply.header("range")), (202, Some("0-15")));
        let log = app.trace(project, &job).await;
        assert!(log[..10].iter().all(|b| *b == log[0]) && &log[10..] == b"tail\n", "{log:?}");
        let in_rows = crate::traces::stored_chunks(&app, id).await;
        let file = crate::traces::log_dir(&app).join(format!("{id}.log"));
        match backend {
            crate::helpers::Backend::Postgres => {
                assert_eq!(in_rows, [Some(10), Some(5)]);
                assert!(!file.exists(), "no log file");
            }
            crate::helpers::Backend::Sqlite => {
                assert_eq!(in_rows, [None, None]);
                assert!(std::fs::read(&file).expect("log file") == log);
            }
        }
    }
}
