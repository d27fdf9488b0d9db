//! Artifact upload (streamed multipart) and download (the dependent-job rule).

use reqwest::multipart::{Form, Part};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{both_backends, Reply, TestApp};

impl TestApp {
    /// Uploads `data` as the runner does: multipart part `file`, params in the query;
    /// `chunked` sends it with Transfer-Encoding: chunked (no Content-Length).
    pub(crate) async fn upload(
        &self,
        job: &Value,
        query: &str,
        filename: &str,
        data: Vec<u8>,
        chunked: bool,
    ) -> Reply {
        let part = if chunked {
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                data.chunks(7_000).map(|c| Ok(c.to_vec())).collect();
            Part::stream(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
        } else {
            Part::bytes(data)
        };
        let form = Form::new().part("file", part.file_name(filename.to_string()));
        self.send(
            self.request(
                Method::POST,
                &format!("/api/v4/jobs/{}/artifacts?{query}", job["id"]),
            )
            .header("Job-Token", job["token"].as_str().unwrap_or_default())
            .multipart(form),
        )
        .await
    }

    async fn download(&self, target: &Value, token: &str) -> (u16, Vec<u8>) {
        let response = self
            .request(
                Method::GET,
                &format!(
                    "/api/v4/jobs/{}/artifacts?direct_download=true",
                    target["id"]
                ),
            )
            .header("Job-Token", token)
            .send()
            .await
            .expect("download");
        let status = response.status().as_u16();
        (status, response.bytes().await.expect("body").to_vec())
    }
}

fn bytes(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 24) as u8)
        .collect()
}

both_backends! {
    async fn artifacts_flow_from_build_to_test(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        app.pipeline(project, "build: { stage: build, script: x, artifacts: { paths: [out] } }\ntest: { stage: test, script: y, needs: [build] }\n").await;
        let build = app.take_job(&runner).await;
        let archive = bytes(3 * 1024 * 1024 + 17, 1);
        let reply = app.upload(&build, "artifact_format=zip&artifact_type=archive&expire_in=1+week", "artifacts.zip", archive.clone(), true).await;
        assert_eq!((reply.status, reply.text.as_str()), (201, "201"));
        // The upload's connection closes (its grown read buffer is not kept).
        assert_eq!(reply.header("connection"), Some("close"));
        let reply = app.upload(&build, "artifact_format=gzip&artifact_type=junit", "junit.xml.gz", bytes(1000, 2), false).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        // The same bytes again: a no-op; other bytes of the same type: 400.
        assert_eq!(app.upload(&build, "artifact_format=zip&artifact_type=archive", "artifacts.zip", archive.clone(), false).await.status, 201);
        app.upload(&build, "artifact_format=zip&artifact_type=archive", "artifacts.zip", bytes(10, 9), false)
            .await
            .assert(400, json!({ "message": "400 Bad request - another artifact of the same type already exists" }));
        app.update_job(&build, json!({ "state": "success" })).await;

        let test = app.take_job(&runner).await;
        assert_eq!(test["dependencies"], json!([{
            "id": build["id"], "name": "build", "token": test["token"],
            "artifacts_file": { "filename": "artifacts.zip", "size": archive.len() },
        }]));
        let (status, downloaded) = app.download(&build, test["token"].as_str().unwrap_or_default()).await;
        assert_eq!(status, 200);
        assert!(downloaded == archive, "identical bytes");
        // Audited, and listed through the admin API.
        let events = app.send(app.admin(Method::GET, "/api/v4/audit_events")).await.json();
        let events: Vec<Value> = events.as_array().into_iter().flatten()
            .filter(|e| e["event_name"] == "artifact_download").cloned().collect();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["event_name"], "artifact_download");
        assert_eq!(events[0]["entity_type"], "job");
        assert_eq!(events[0]["entity_id"], build["id"]);
        assert_eq!(events[0]["author_name"], format!("job:{}", test["id"]));

        // The finished build's own token no longer reads anything: 401.
        let (status, _) = app.download(&build, build["token"].as_str().unwrap_or_default()).await;
        assert_eq!(status, 401);
        let admin = app.admin(Method::GET, &format!("/api/v4/projects/{project}/jobs/{}/artifacts", build["id"])).send().await.expect("admin download");
        assert_eq!(admin.status(), 200);
        assert!(admin.bytes().await.expect("body").to_vec() == archive);
    }

    async fn the_first_stage_with_jobs_downloads_nothing_and_the_next_every_earlier_job(backend) {
        // Stages are declared that have no job: the first stage with jobs (`test`, third
        // declared) has nothing before it, `deploy` has both jobs of `test`.
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        app.pipeline(project, "stages: [lint, build, test, deploy]\nunit: { stage: test, script: x, artifacts: { paths: [out] } }\ne2e: { stage: test, script: y }\nship: { stage: deploy, script: z }\n").await;
        let unit = app.take_job(&runner).await;
        let e2e = app.take_job(&runner).await;
        assert_eq!((unit["job_info"]["name"].as_str(), unit["dependencies"].clone()), (Some("unit"), json!([])));
        assert_eq!((e2e["job_info"]["name"].as_str(), e2e["dependencies"].clone()), (Some("e2e"), json!([])));
        let archive = bytes(1000, 3);
        let reply = app.upload(&unit, "artifact_format=zip&artifact_type=archive", "artifacts.zip", archive.clone(), false).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        app.update_job(&unit, json!({ "state": "success" })).await;
        app.update_job(&e2e, json!({ "state": "success" })).await;
        let ship = app.take_job(&runner).await;
        assert_eq!(ship["job_info"]["name"], "ship");
        assert_eq!(ship["job_info"]["stage"], "deploy");
        assert_eq!(ship["dependencies"], json!([
            { "id": unit["id"], "name": "unit", "token": ship["token"],
              "artifacts_file": { "filename": "artifacts.zip", "size": archive.len() } },
            { "id": e2e["id"], "name": "e2e", "token": ship["token"] },
        ]));
    }

    async fn download_refusals(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let other = app.create_project(json!({ "name": "other" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        app.pipeline(project, "a: { script: x }\nb: { script: y }\n").await;
        app.pipeline(other, "c: { script: z }\n").await;
        let a = app.take_job(&runner).await;
        let b = app.take_job(&runner).await;
        let c = app.take_job(&runner).await;
        assert_eq!(app.upload(&a, "", "artifacts.zip", bytes(100, 3), false).await.status, 201);
        let token = |j: &Value| j["token"].as_str().unwrap_or_default().to_string();

        assert_eq!(app.download(&a, &token(&b)).await.0, 200, "a running job of the same project");
        assert_eq!(app.download(&a, "glcbt-garbage").await.0, 401);
        let reply = app.send(app.request(Method::GET, &format!("/api/v4/jobs/{}/artifacts", a["id"]))).await;
        reply.assert(401, json!({ "message": "401 Unauthorized" }));
        let reply = app.send(app.request(Method::GET, "/api/v4/jobs/999999/artifacts").header("Job-Token", token(&b))).await;
        reply.assert(403, json!({ "message": "403 Forbidden" }));
        let reply = app.send(app.request(Method::GET, &format!("/api/v4/jobs/{}/artifacts", a["id"])).header("Job-Token", token(&c))).await;
        reply.assert(403, json!({ "message": "403 Forbidden" }));
        let reply = app.send(app.request(Method::GET, &format!("/api/v4/jobs/{}/artifacts", b["id"])).header("Job-Token", token(&a))).await;
        reply.assert(404, json!({ "message": "404 Not Found" }));
        app.update_job(&b, json!({ "state": "success" })).await;
        assert_eq!(app.download(&a, &token(&b)).await.0, 401, "a finished job's token");
    }

    async fn upload_refusals(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        app.pipeline(project, "a: { script: x }\n").await;
        let job = app.take_job(&runner).await;
        for (query, error) in [
            ("artifact_type=archive&artifact_format=gzip", json!({ "message": "400 Bad request - archive artifacts must have the zip format" })),
            ("artifact_type=junit&artifact_format=raw", json!({ "message": "400 Bad request - junit artifacts must have the gzip format" })),
            ("artifact_type=nonsense", json!({ "error": "artifact_type does not have a valid value" })),
            ("artifact_type=archive&artifact_format=rar", json!({ "error": "artifact_format does not have a valid value" })),
            ("expire_in=soonish", json!({ "error": "expire_in is invalid" })),
        ] {
            app.upload(&job, query, "f", bytes(10, 4), false).await.assert(400, error);
        }
        // Every format the runner sends, with its type.
        for (query, name, data) in [
            ("artifact_type=sast&artifact_format=raw", "gl-sast-report.json", bytes(50, 5)),
            ("artifact_type=dotenv&artifact_format=gzip", ".env.gz", gzip("A=1\n")),
            ("artifact_type=archive&artifact_format=zip", "artifacts.zip", bytes(50, 5)),
        ] {
            assert_eq!(app.upload(&job, query, name, data, true).await.status, 201, "{query}");
        }
        // Without a file part.
        let reply = app
            .send(
                app.request(Method::POST, &format!("/api/v4/jobs/{}/artifacts", job["id"]))
                    .header("Job-Token", job["token"].as_str().unwrap_or_default())
                    .multipart(Form::new().text("artifact_type", "archive")),
            )
            .await;
        reply.assert(400, json!({ "error": "file is missing" }));
        // Params as multipart fields (other clients) work too.
        let form = Form::new()
            .text("artifact_type", "metadata")
            .text("artifact_format", "gzip")
            .part("file", Part::bytes(bytes(20, 6)).file_name("metadata.gz"));
        let reply = app
            .send(app.request(Method::POST, &format!("/api/v4/jobs/{}/artifacts", job["id"])).header("Job-Token", job["token"].as_str().unwrap_or_default()).multipart(form))
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        app.update_job(&job, json!({ "state": "success" })).await;
        let reply = app.upload(&job, "", "artifacts.zip", bytes(10, 7), false).await;
        assert_eq!((reply.status, reply.header("job-status")), (403, Some("success")));
    }

    async fn size_limit_and_expiry(backend) {
        let app = TestApp::builder(backend).max_artifact_size(1000).spawn().await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        app.pipeline(project, "a: { script: x }\nb: { script: y }\n").await;
        let a = app.take_job(&runner).await;
        let b = app.take_job(&runner).await;
        app.upload(&a, "", "artifacts.zip", bytes(1001, 8), true)
            .await
            .assert(413, json!({ "message": "file size has reached maximum size limit" }));
        assert_eq!(app.upload(&a, "expire_in=1+hour", "artifacts.zip", bytes(1000, 8), true).await.status, 201);
        assert_eq!(app.download(&a, b["token"].as_str().unwrap_or_default()).await.0, 200);
        app.execute(&format!("UPDATE job_artifacts SET expire_at = '2020-01-01 00:00:00' WHERE job_id = {}", a["id"])).await;
        assert_eq!(app.state.artifacts.expire().await.expect("expire"), 1);
        assert_eq!(app.download(&a, b["token"].as_str().unwrap_or_default()).await.0, 404, "expired artifacts are gone");
    }
}

fn gzip(text: &str) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(text.as_bytes()).expect("gzip");
    encoder.finish().expect("gzip")
}

both_backends! {
    async fn dotenv_reports_feed_later_jobs(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        app.pipeline(project, "variables: { VERSION: from-file }\nbuild: { stage: build, script: x, artifacts: { reports: { dotenv: build.env } } }\ndeploy: { stage: deploy, script: y }\n").await;
        let build = app.take_job(&runner).await;
        let query = "artifact_format=gzip&artifact_type=dotenv";
        app.upload(&build, query, ".env.gz", gzip("not a dotenv line\n"), false)
            .await
            .assert(400, json!({ "message": "Invalid Format" }));
        let reply = app.upload(&build, query, ".env.gz", gzip("VERSION=1.2.3\nQUOTED=\"a b\"\n\n"), false).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        app.update_job(&build, json!({ "state": "success" })).await;
        let deploy = app.take_job(&runner).await;
        let var = |key: &str| deploy["variables"].as_array().and_then(|v| v.iter().find(|v| v["key"] == key)).map(|v| v["value"].clone());
        assert_eq!(var("VERSION"), Some(json!("1.2.3")), "the dotenv report wins over the file");
        assert_eq!(var("QUOTED"), Some(json!("a b")));
    }

    async fn erase_removes_log_and_artifacts(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        app.pipeline(project, "a: { script: x }\n").await;
        let job = app.take_job(&runner).await;
        let erase = format!("/api/v4/projects/{project}/jobs/{}/erase", job["id"]);
        app.send(app.admin(Method::POST, &erase)).await.assert(403, json!({ "message": "403 Forbidden - Job is not erasable!" }));
        assert_eq!(app.upload(&job, "", "artifacts.zip", bytes(100, 1), false).await.status, 201);
        let listed = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/jobs/{}", job["id"]))).await.json();
        assert_eq!(listed["artifacts"][0]["file_type"], "archive");
        assert_eq!(listed["artifacts"][0]["size"], 100);
        app.update_job(&job, json!({ "state": "success" })).await;
        let reply = app.send(app.admin(Method::POST, &erase)).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let erased = reply.json();
        assert!(erased["erased_at"].is_string());
        assert_eq!(erased["artifacts"], json!([]));
        let admin = app.admin(Method::GET, &format!("/api/v4/projects/{project}/jobs/{}/artifacts", job["id"])).send().await.expect("download");
        assert_eq!(admin.status(), 404);
        let log = app.admin(Method::GET, &format!("/api/v4/projects/{project}/jobs/{}/trace", job["id"])).send().await.expect("trace");
        assert_eq!(log.bytes().await.expect("body").len(), 0);
    }
}

both_backends! {
    // An upload the process died in leaves `<object>#<n>` in the local store, and one it
    // died after storing leaves an object no row points at: both are swept in the
    // background from the next start once untouched for an hour; fresh ones (another
    // instance's upload in flight) and recorded objects stay, in the folder-per-thousand-
    // jobs layout and in the folder-per-job one rows written before point to.
    async fn unfinished_uploads_and_orphans_are_swept_at_start(backend) {
        let first = TestApp::spawn(backend).await;
        let project = first.create_project(json!({ "name": "app" })).await;
        let (_, runner) = first.create_runner(json!({ "runner_type": "instance_type" })).await;
        first.pipeline(project, "a: { script: x }\nb: { script: y }\n").await;
        let (job, old) = (first.take_job(&runner).await, first.take_job(&runner).await);
        assert_eq!(first.upload(&job, "", "artifacts.zip", bytes(100, 3), false).await.status, 201);
        assert_eq!(first.upload(&old, "", "artifacts.zip", bytes(100, 4), false).await.status, 201);
        let (id, old_id) = (job["id"].as_i64().expect("id"), old["id"].as_i64().expect("id"));
        let jobs = first.data_dir().join("artifacts").join("jobs");
        // A folder per thousand jobs, each object named after its job.
        let folder = jobs.join((id / 1000).to_string());
        let named = |job: i64| {
            let prefix = format!("{job}-");
            std::fs::read_dir(&folder).expect("folder").map(|e| e.expect("entry").path())
                .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix)))
                .expect("the upload")
        };
        let recorded = named(id);
        // The other job's upload moved to the layout before (a folder per job), with its row.
        let legacy = jobs.join(old_id.to_string()).join("0123456789abcdef0123456789abcdef");
        std::fs::create_dir_all(legacy.parent().expect("folder")).expect("folder");
        std::fs::rename(named(old_id), &legacy).expect("moved");
        first.execute(&format!("UPDATE job_artifacts SET store_path = 'jobs/{old_id}/0123456789abcdef0123456789abcdef' WHERE job_id = {old_id}")).await;
        // The recorded objects, aged like the others.
        let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 3600);
        for file in [&recorded, &legacy] {
            std::fs::File::options().write(true).open(file).expect("open").set_modified(two_hours_ago).expect("mtime");
        }
        for (name, hours_ago) in [("artifacts.zip#1", 2), ("artifacts.zip#2", 0), ("orphan", 2), ("fresh-orphan", 0)] {
            crate::helpers::write_file_aged(&folder.join(name), hours_ago);
        }
        let orphan = folder.join(format!("{id}-00000000000000000000000000000000"));
        crate::helpers::write_file_aged(&orphan, 2);
        // Objects of jobs that have no rows at all, in either layout.
        let gone = jobs.join("999999");
        std::fs::create_dir_all(&gone).expect("folder");
        crate::helpers::write_file_aged(&gone.join("left"), 3);
        let gone_too = jobs.join("999").join("999999-00000000000000000000000000000000");
        std::fs::create_dir_all(gone_too.parent().expect("folder")).expect("folder");
        crate::helpers::write_file_aged(&gone_too, 3);
        first.stop().await;
        let second = TestApp::builder(backend).same_database_as(&first).data_dir_of(&first).spawn().await;
        let swept = std::time::Instant::now();
        let pending = || {
            ["artifacts.zip#1", "orphan"].iter().any(|n| folder.join(n).exists())
                || [&orphan, &gone.join("left"), &gone_too].iter().any(|p| p.exists())
        };
        while pending() && swept.elapsed().as_secs() < 10 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(!folder.join("artifacts.zip#1").exists(), "an old unfinished upload is swept");
        assert!(!folder.join("orphan").exists(), "an old object without a row is swept");
        assert!(!orphan.exists(), "so is one named after a job that has other rows");
        assert!(!gone.join("left").exists(), "and those of jobs without rows, in the layout before");
        assert!(!gone_too.exists(), "and in this one");
        assert!(folder.join("artifacts.zip#2").exists(), "a fresh upload is kept");
        assert!(folder.join("fresh-orphan").exists(), "a fresh object is kept (its row may come)");
        assert!(recorded.exists() && legacy.exists(), "recorded objects are kept, in both layouts");
        for (job, content) in [(&job, bytes(100, 3)), (&old, bytes(100, 4))] {
            let path = format!("/api/v4/projects/{project}/jobs/{}/artifacts", job["id"]);
            let admin = second.admin(Method::GET, &path).send().await.expect("download");
            assert_eq!(admin.status(), 200);
            assert_eq!(admin.bytes().await.expect("body").to_vec(), content);
        }
    }
}

/// A zip archive of `files` (name, bytes), deflated.
pub(crate) fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut out);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, bytes) in files {
            zip.start_file(*name, options).expect("entry");
            zip.write_all(bytes).expect("bytes");
        }
        zip.finish().expect("zip");
    }
    out.into_inner()
}

both_backends! {
    // A pages job's archive is the project's site, served read-only (sandboxed) at
    // `<project>/-/pages/`, kept past any expiry; the latest successful pages job wins.
    async fn pages_are_served_from_the_pages_jobs_archive(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "site", "namespace": "docs" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let get = |path: &str| {
            let url = app.url(path);
            async move {
                let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
                let response = client.get(url).send().await.expect("get");
                let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
                let (status, location, content_type, csp) = (response.status().as_u16(), header("location"), header("content-type"), header("content-security-policy"));
                (status, location, content_type, csp, response.text().await.expect("body"))
            }
        };
        assert_eq!(get("/docs/site/-/pages").await.0, 404, "no site yet");

        app.pipeline(project, "pages:\n  script: [make]\n  artifacts: { paths: [public], expire_in: 1 hour }\n").await;
        let job = app.take_job(&runner).await;
        let site = zip_of(&[
            ("public/index.html", b"<h1>Home</h1><link href=\"css/site.css\" rel=\"stylesheet\">"),
            ("public/css/site.css", b"h1 { color: green }"),
            ("public/guide/index.html", b"<h1>Guide</h1>"),
            ("public/404.html", b"<h1>Lost?</h1>"),
            ("secret.txt", b"outside the site"),
        ]);
        let reply = app.upload(&job, "artifact_format=zip&artifact_type=archive&expire_in=1+hour", "artifacts.zip", site, false).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        app.update_job(&job, json!({ "state": "success" })).await;
        let listed = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/jobs/{}", job["id"]))).await.json();
        assert_eq!(listed["artifacts_expire_at"], Value::Null, "a site does not expire");
        let var = |key: &str| job["variables"].as_array().and_then(|v| v.iter().find(|v| v["key"] == key)).map(|v| v["value"].clone());
        assert_eq!(var("CI_PAGES_URL"), Some(json!(app.url("/docs/site/-/pages"))));

        let (status, location, ..) = get("/docs/site/-/pages/").await;
        assert_eq!((status, location.as_deref()), (302, Some("/docs/site/-/pages/index.html")));
        let (status, _, content_type, csp, body) = get("/docs/site/-/pages/index.html").await;
        assert_eq!((status, content_type.as_deref()), (200, Some("text/html; charset=utf-8")));
        assert!(csp.as_deref().is_some_and(|c| c.starts_with("sandbox ") && !c.contains("allow-same-origin")), "{csp:?}");
        assert!(body.contains("<h1>Home</h1>"));
        let (status, _, content_type, _, body) = get("/docs/site/-/pages/css/site.css").await;
        assert_eq!((status, content_type.as_deref(), body.as_str()), (200, Some("text/css; charset=utf-8"), "h1 { color: green }"));
        let (status, location, ..) = get("/docs/site/-/pages/guide").await;
        assert_eq!((status, location.as_deref()), (302, Some("/docs/site/-/pages/guide/index.html")));
        let (status, _, _, _, body) = get("/docs/site/-/pages/nope.html").await;
        assert_eq!((status, body.as_str()), (404, "<h1>Lost?</h1>"), "the site's own 404 page");
        for outside in ["/docs/site/-/pages/../secret.txt", "/docs/site/-/pages/%2e%2e/secret.txt", "/docs/other/-/pages/index.html"] {
            let (status, _, _, _, body) = get(outside).await;
            assert!(status == 404 && !body.contains("outside the site"), "{outside}: {status}");
        }

        // A later successful pages job replaces the site.
        app.pipeline(project, "pages:\n  script: [make]\n  pages: { publish: dist }\n").await;
        let job = app.take_job(&runner).await;
        let reply = app.upload(&job, "artifact_format=zip&artifact_type=archive", "artifacts.zip", zip_of(&[("dist/index.html", b"<h1>Two</h1>")]), false).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        app.update_job(&job, json!({ "state": "success" })).await;
        assert!(get("/docs/site/-/pages/index.html").await.4.contains("<h1>Two</h1>"));
    }
}

both_backends! {
    // `GET /projects/:id/jobs/artifacts/:ref/download?job=` and `…/raw/*path`: the job's
    // archive in the ref's latest successful pipeline (python-gitlab's
    // `project.artifacts.download(ref_name=, job=)`); a failed newer pipeline does not count.
    async fn latest_artifacts_of_a_ref(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "byref" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let url = |path: &str| format!("/projects/{project}/jobs/artifacts/{path}");
        app.api(Method::GET, &url("main/download?job=build"), None).await.assert(404, json!({ "message": "404 Not Found" }));
        // Two successful pipelines on main, then a failed one.
        for (round, outcome) in [("one", "success"), ("two", "success"), ("three", "failed")] {
            app.pipeline(project, "build: { script: [x], artifacts: { paths: [out] } }\n").await;
            let job = app.take_job(&runner).await;
            let zip = zip_of(&[("out/version.txt", round.as_bytes()), ("out/bin.dat", &[0u8, 159, 146, 150])]);
            assert_eq!(app.upload(&job, "artifact_type=archive&artifact_format=zip", "artifacts.zip", zip, false).await.status, 201);
            let done = app.update_job(&job, json!({ "state": outcome })).await;
            assert_eq!(done.status, 200, "{}", done.text);
        }
        let download = app.api(Method::GET, &url("main/download?job=build"), None).await;
        assert_eq!(download.status, 200, "{}", download.text);
        let raw = app.api(Method::GET, &url("main/raw/out/version.txt?job=build"), None).await;
        assert_eq!((raw.status, raw.text.as_str()), (200, "two"), "the latest successful pipeline's");
        let binary = app.api(Method::GET, &url("main/raw/out/bin.dat?job=build"), None).await;
        assert_eq!(binary.status, 200);
        for missing in ["main/raw/out/nope.txt?job=build", "main/raw/out?job=build", "main/download?job=test", "other/download?job=build", "main/raw/../x?job=build"] {
            assert_eq!(app.api(Method::GET, &url(missing), None).await.status, 404, "{missing}");
        }
        app.api(Method::GET, &url("main/download"), None).await.assert(400, json!({ "error": "job is missing" }));
    }
}

both_backends! {
    // `artifacts:reports:junit`: read when uploaded; the pipeline's `test_report` and
    // `test_report_summary` as GitLab's; a report that is not XML is its suite's
    // `suite_error`, the upload stands.
    async fn junit_reports_make_the_pipelines_test_report(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "tested" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let pipeline = app.pipeline(project, "unit: { script: [x] }\nbroken: { script: [x] }\n").await;
        let xml = r#"<testsuites><testsuite name="math">
<testcase classname="math" name="adds" time="0.25"/>
<testcase classname="math" name="divides" time="1.5"><failure message="expected 2">got 3</failure></testcase>
<testcase classname="math" name="later"><skipped/></testcase>
</testsuite></testsuites>"#;
        for (bytes, outcome) in [(gzip(xml), "failed"), (gzip("this is not xml <<<"), "success")] {
            let job = app.take_job(&runner).await;
            let up = app.upload(&job, "artifact_type=junit&artifact_format=gzip", "junit.xml.gz", bytes, false).await;
            assert_eq!(up.status, 201, "{}", up.text);
            assert_eq!(app.update_job(&job, json!({ "state": outcome })).await.status, 200);
        }
        let report = app.api(Method::GET, &format!("/projects/{project}/pipelines/{pipeline}/test_report"), None).await;
        assert_eq!(report.status, 200, "{}", report.text);
        let report = report.json();
        assert_eq!(
            [&report["total_count"], &report["success_count"], &report["failed_count"], &report["skipped_count"], &report["error_count"], &report["total_time"]],
            [&json!(3), &json!(1), &json!(1), &json!(1), &json!(0), &json!(1.75)]
        );
        let broken = &report["test_suites"][0];
        assert_eq!((broken["name"].clone(), broken["total_count"].clone()), (json!("broken"), json!(0)));
        assert!(broken["suite_error"].as_str().is_some_and(|e| e.starts_with("JUnit XML parsing failed")), "{broken}");
        let unit = &report["test_suites"][1];
        assert_eq!(unit["test_cases"][1], json!({
            "status": "failed", "name": "divides", "classname": "math", "file": null, "execution_time": 1.5,
            "system_output": "expected 2", "stack_trace": "got 3"
        }));
        let summary = app.api(Method::GET, &format!("/projects/{project}/pipelines/{pipeline}/test_report_summary"), None).await.json();
        assert_eq!(summary["total"]["count"], 3);
        assert_eq!(summary["total"]["failed"], 1);
        assert!(summary["total"]["suite_error"].is_string());
        assert_eq!(summary["test_suites"][1]["build_ids"].as_array().map(Vec::len), Some(1));
        assert!(summary["test_suites"][1].get("test_cases").is_none());
        app.api(Method::GET, &format!("/projects/{project}/pipelines/999/test_report"), None).await
            .assert(404, json!({ "message": "404 Pipeline Not Found" }));
    }
}
