//! Hostile requests, one at a time: each gets GitLab's 4xx (or is cut), leaves nothing
//! behind, and the server answers the next request. A new parser of client input gets
//! its cases here: a request built with [`Hostile`], sent with [`TestApp::hostile`],
//! which checks the answer and then that the server is still up.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{both_backends, Reply, TestApp, ADMIN_TOKEN, REGISTRATION_TOKEN};

/// One hostile request: what is sent, and the status it must get.
struct Hostile {
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    admin: bool,
}

impl Hostile {
    fn get(path: impl Into<String>) -> Hostile {
        Hostile {
            method: Method::GET,
            path: path.into(),
            content_type: None,
            body: Vec::new(),
            admin: false,
        }
    }

    fn post(
        path: impl Into<String>,
        content_type: &'static str,
        body: impl Into<Vec<u8>>,
    ) -> Hostile {
        Hostile {
            method: Method::POST,
            path: path.into(),
            content_type: Some(content_type),
            body: body.into(),
            admin: false,
        }
    }

    fn json(path: impl Into<String>, body: Value) -> Hostile {
        Hostile::post(path, "application/json", body.to_string())
    }

    /// With the admin token.
    fn admin(mut self) -> Hostile {
        self.admin = true;
        self
    }
}

impl TestApp {
    /// Sends `hostile`, checks its status, and that the server still answers.
    async fn hostile(&self, hostile: Hostile, status: u16) -> Reply {
        let mut request = self.request(hostile.method, &hostile.path);
        if hostile.admin {
            request = request.header("PRIVATE-TOKEN", ADMIN_TOKEN);
        }
        if let Some(content_type) = hostile.content_type {
            request = request.header("Content-Type", content_type);
        }
        let reply = self.send(request.body(hostile.body)).await;
        assert_eq!(
            reply.status,
            status,
            "{}: {}",
            hostile.path.chars().take(80).collect::<String>(),
            reply.text
        );
        self.assert_up().await;
        reply
    }

    /// The server answers an ordinary request.
    async fn assert_up(&self) {
        let reply = self.send(self.admin(Method::GET, "/api/v4/version")).await;
        assert_eq!(
            reply.status, 200,
            "the server still answers: {}",
            reply.text
        );
    }

    /// Every project, pipeline and job row, for "nothing was written" checks.
    async fn rows(&self) -> (Value, usize) {
        let projects = self
            .send(self.admin(Method::GET, "/api/v4/projects"))
            .await
            .json();
        let mut pipelines = 0;
        for p in projects.as_array().into_iter().flatten() {
            let list = self
                .send(self.admin(
                    Method::GET,
                    &format!("/api/v4/projects/{}/pipelines", p["id"]),
                ))
                .await
                .json();
            pipelines += list.as_array().map_or(0, Vec::len);
        }
        (projects, pipelines)
    }
}

/// `a[b][b]…[b]=1` with `depth` brackets.
fn nested_key(depth: usize) -> String {
    format!("a{}=1", "[b]".repeat(depth))
}

both_backends! {
    // 8,000 bracketed levels in a query string overflowed a worker's stack before any
    // authentication; 20,000 in a form body the same. Now: 400 before the params exist.
    async fn deeply_nested_params_are_refused(backend) {
        let app = TestApp::spawn(backend).await;
        let too_deep = json!({ "error": "Invalid request parameters: nested deeper than 100 levels" });
        let reply = app.hostile(Hostile::get(format!("/api/v4/version?{}", nested_key(8_000))), 400).await;
        assert_eq!(reply.json(), too_deep);
        let reply = app.hostile(Hostile::post("/api/v4/runners", "application/x-www-form-urlencoded", nested_key(20_000)), 400).await;
        assert_eq!(reply.json(), too_deep);
        // The same without a route, and on a route that takes no params.
        app.hostile(Hostile::get(format!("/api/v4/nothing?{}", nested_key(8_000))), 400).await;
        app.hostile(Hostile::post("/api/v4/runners/verify", "application/x-www-form-urlencoded", format!("token=x&{}", nested_key(101))), 400).await;
        // GitLab's Rack takes 100 levels.
        let reply = app.hostile(Hostile::post("/api/v4/runners", "application/x-www-form-urlencoded",
            format!("token={REGISTRATION_TOKEN}&info{}=1", "[x]".repeat(99))), 201).await;
        assert!(reply.json()["token"].is_string());
        // JSON nested past serde_json's 128 levels is no JSON; 100,000 levels answer fast.
        let deep_json = format!("{{\"token\":{}1{}}}", "[".repeat(100_000), "]".repeat(100_000));
        let reply = app.hostile(Hostile::post("/api/v4/runners/verify", "application/json", deep_json), 400).await;
        assert_eq!(reply.json(), json!({ "error": "message body does not match declared format" }));
        // Rack's limit on the number of params.
        let many: Vec<String> = (0..5_000).map(|i| format!("k{i}=v")).collect();
        let reply = app.hostile(Hostile::post("/api/v4/runners/verify", "application/x-www-form-urlencoded", many.join("&")), 400).await;
        assert_eq!(reply.json(), json!({ "error": "Invalid request parameters: more than 4096 parameters" }));
    }

    // PostgreSQL cannot store a NUL in text and answered 500; SQLite stored it. Both now
    // answer 400 before the database, as GitLab's HandleNullBytes does, and store nothing.
    async fn null_bytes_are_refused_on_both_backends(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let before = (app.rows().await, app.send(app.admin(Method::GET, "/api/v4/features")).await.json());
        let nul = json!({ "error": "params contain a null byte" });
        for body in [
            json!({ "name": "a\u{0}b" }),
            json!({ "name": "ok", "description": "x\u{0}" }),
            json!({ "name": "ok", "protected_branches": ["main", "x\u{0}"] }),
        ] {
            let reply = app.hostile(Hostile::json("/api/v4/projects", body).admin(), 400).await;
            assert_eq!(reply.json(), nul);
        }
        let reply = app.hostile(Hostile::post("/api/v4/projects", "application/x-www-form-urlencoded", "name=a%00b").admin(), 400).await;
        assert_eq!(reply.json(), nul);
        for body in [
            json!({ "ref": "ma\u{0}in", "ci_config": "a: { script: x }" }),
            json!({ "ref": "main", "sha": "\u{0}", "ci_config": "a: { script: x }" }),
            json!({ "ref": "main", "ci_config": "a\u{0}: { script: x }" }),
        ] {
            let reply = app.hostile(Hostile::json(format!("/api/v4/projects/{project}/pipeline"), body).admin(), 400).await;
            assert_eq!(reply.json(), nul);
        }
        let reply = app.hostile(Hostile::post("/api/v4/features/flag%00x", "application/json", json!({ "value": true }).to_string()).admin(), 400).await;
        assert_eq!(reply.json(), nul);
        // The web form refuses it the same way.
        let (cookie, csrf) = crate::ui::sign_in(&app).await;
        let form = reqwest::multipart::Form::new()
            .text("csrf", csrf)
            .text("project", project.to_string())
            .text("ref", "ma\u{0}in")
            .text("ci_config", "a: { script: x }");
        let page = reqwest::Client::new().post(app.url("/-/ui/pipelines")).header("Cookie", cookie).multipart(form).send().await.expect("form");
        assert_eq!(page.status(), 400);
        assert!(page.text().await.expect("page").contains("params contain a null byte"));
        app.hostile(Hostile::get("/api/v4/projects/a%00b").admin(), 400).await;
        app.hostile(Hostile::get("/api/v4/version?x=%00").admin(), 400).await;
        let after = (app.rows().await, app.send(app.admin(Method::GET, "/api/v4/features")).await.json());
        assert_eq!(after, before, "nothing was written");
    }

    // A few thousand nested parentheses in `rules:if` overflowed the stack while the
    // pipeline was created. GitLab's lexer stops at 100 tokens; so does Runway's.
    async fn a_parenthesis_bomb_is_refused(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let bomb = format!("{}$CI_COMMIT_BRANCH{}", "(".repeat(5_000), ")".repeat(5_000));
        for yaml in [
            format!("a:\n  script: x\n  rules:\n    - if: '{bomb}'\n"),
            format!("workflow:\n  rules:\n    - if: '{bomb}'\na:\n  script: x\n"),
        ] {
            let reply = app.hostile(Hostile::json(format!("/api/v4/projects/{project}/pipeline"), json!({ "ref": "main", "ci_config": yaml })).admin(), 400).await;
            let message = reply.json()["message"]["base"][0].as_str().unwrap_or_default().to_string();
            assert!(message.contains("Too many tokens!"), "{message}");
        }
        let fits = format!("{}$CI_COMMIT_BRANCH == \"main\"{}", "(".repeat(40), ")".repeat(40));
        let reply = app.create_pipeline(project, "main", &format!("a:\n  script: x\n  rules:\n    - if: '{fits}'\n")).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        assert_eq!(app.rows().await.1, 1, "only the pipeline that fits");
    }

    // 70,000 nested flow sequences took libyaml ~20 s to refuse, on an async worker.
    // The loader now refuses past GitLab's 100 levels before parsing.
    async fn a_deeply_nested_ci_config_is_refused_at_once(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        for yaml in [
            format!("a:\n  script: {}x{}\n", "[".repeat(70_000), "]".repeat(70_000)),
            format!("a:\n  script: x\n  variables: {}{}\n", "{b: ".repeat(30_000), "}".repeat(30_000)),
            format!("a:\n  script:\n    {}x\n", "- ".repeat(150)),
        ] {
            let reply = app.hostile(Hostile::json(format!("/api/v4/projects/{project}/pipeline"), json!({ "ref": "main", "ci_config": yaml })).admin(), 400).await;
            assert_eq!(reply.json(), json!({ "message": { "base": ["The parsed YAML is too big"] } }));
        }
        // Aliases that multiply (the billion laughs) stop at the loader's budget, with the
        // words GitLab's deep-size check gives them.
        let mut laughs = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
        for (name, previous) in ["b", "c", "d", "e", "f", "g", "h", "i"].iter().zip(["a", "b", "c", "d", "e", "f", "g", "h"]) {
            laughs.push_str(&format!("{name}: &{name} [*{previous},*{previous},*{previous},*{previous},*{previous},*{previous},*{previous},*{previous},*{previous}]\n"));
        }
        laughs.push_str("job: { script: x, variables: { X: *i } }\n");
        let reply = app.hostile(Hostile::json(format!("/api/v4/projects/{project}/pipeline"), json!({ "ref": "main", "ci_config": laughs })).admin(), 400).await;
        assert_eq!(reply.json(), json!({ "message": { "base": ["The parsed YAML is too big"] } }));
        assert_eq!(app.rows().await.1, 0);
    }

    // 250 jobs × `parallel: 200` made 50,000 jobs. GitLab's `ci_pipeline_size` check runs on
    // the plan, before any row.
    async fn pipelines_past_the_size_limit_are_refused_before_any_row(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let yaml: String = (0..250).map(|i| format!("j{i}:\n  script: x\n  parallel: 200\n")).collect();
        let reply = app.hostile(Hostile::json(format!("/api/v4/projects/{project}/pipeline"), json!({ "ref": "main", "ci_config": yaml })).admin(), 400).await;
        let message = reply.json()["message"]["base"][0].as_str().unwrap_or_default().to_string();
        assert!(message.starts_with("The number of jobs has exceeded the limit of 2000."), "{message}");
        assert_eq!(app.rows().await.1, 0, "no pipeline row");

        let small = TestApp::builder(backend).max_pipeline_jobs(3).spawn().await;
        let project = small.create_project(json!({ "name": "app" })).await;
        let reply = small.create_pipeline(project, "main", "a: { script: x, parallel: 4 }\n").await;
        assert_eq!(reply.status, 400, "{}", reply.text);
        assert_eq!(small.rows().await.1, 0);
        let reply = small.create_pipeline(project, "main", "a: { script: x, parallel: 3 }\n").await;
        assert_eq!(reply.status, 201, "{}", reply.text);
    }

    // `expire_in` past what a timestamp holds panicked in chrono and left the streamed file
    // in the store with no row. Now 400, and no file, whether `expire_in` comes in the
    // query (checked before the upload is stored) or as a field after the file.
    async fn an_overflowing_expire_in_is_refused_and_leaves_no_file(backend) {
        let app = TestApp::spawn(backend).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        app.pipeline(project, "a: { script: x }\n").await;
        let job = app.take_job(&runner).await;
        // The job's objects: a folder per thousand jobs, each named after its job.
        let id = job["id"].as_i64().expect("id");
        let stored = app.data_dir().join("artifacts").join("jobs").join((id / 1000).to_string());
        let files = || {
            let named = |e: &std::fs::DirEntry| e.file_name().to_string_lossy().starts_with(&format!("{id}-"));
            std::fs::read_dir(&stored).map(|d| d.flatten().filter(named).count()).unwrap_or(0)
        };
        let upload = |query: String, field: Option<&'static str>| {
            let mut form = reqwest::multipart::Form::new()
                .part("file", reqwest::multipart::Part::bytes(vec![7u8; 64 * 1024]).file_name("a.zip"));
            if let Some(expire_in) = field {
                form = form.text("expire_in", expire_in);
            }
            app.request(Method::POST, &format!("/api/v4/jobs/{}/artifacts?{query}", job["id"]))
                .header("Job-Token", job["token"].as_str().unwrap_or_default())
                .multipart(form)
        };
        let invalid = json!({ "error": "expire_in is invalid" });
        for expire_in in ["99999999999999999 years", "9223372036854775807 seconds 9223372036854775807 seconds", "1001 years"] {
            let query = format!("expire_in={}", urlencode(expire_in));
            let reply = app.send(upload(query, None)).await;
            reply.assert(400, invalid.clone());
            assert_eq!(files(), 0, "refused before storing");
        }
        let reply = app.send(upload(String::new(), Some("99999999999999999 years"))).await;
        reply.assert(400, invalid);
        // The stored file goes with the refused request (removed in the background).
        let waited = Instant::now();
        while files() > 0 && waited.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(files(), 0, "no file left without a row");
        app.assert_up().await;
        let reply = app.send(upload("expire_in=1000%20years".into(), None)).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        assert_eq!(files(), 1);
    }

    // A body announced and then stalled kept its connection forever. Now it is cut once it
    // stalls for the body timeout, or trickles under the minimum rate past it.
    async fn a_stalled_or_trickling_body_is_cut(backend) {
        let app = TestApp::builder(backend).body_timeout(1, 1024).spawn().await;
        let addr = app.url("").trim_start_matches("http://").trim_end_matches('/').to_string();
        for trickle in [false, true] {
            let mut socket = tokio::net::TcpStream::connect(&addr).await.expect("connect");
            socket.write_all(b"POST /api/v4/runners/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"token\":").await.expect("headers");
            let started = Instant::now();
            let mut answer = Vec::new();
            // Bounded: the cut comes after about a second; 20 s is a hang.
            let read = tokio::time::timeout(Duration::from_secs(20), async {
                let mut buf = [0u8; 4096];
                loop {
                    if trickle {
                        // A byte every 200 ms: never idle for a second, far under 1 KiB/s.
                        let _ = socket.write_all(b" ").await;
                    }
                    match tokio::time::timeout(Duration::from_millis(200), socket.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
                        Err(_) => {}
                    }
                }
            })
            .await;
            assert!(read.is_ok(), "the connection was closed (trickle: {trickle})");
            let text = String::from_utf8_lossy(&answer);
            assert!(text.starts_with("HTTP/1.1 408"), "{text}");
            assert!(text.contains("408 Request Timeout"), "{text}");
            assert!(started.elapsed() >= Duration::from_millis(900), "not before the timeout");
        }
        app.assert_up().await;
        // A whole body sent slowly but steadily within the limits still goes through.
        let reply = app.send(app.request(Method::POST, "/api/v4/runners/verify").json(&json!({ "token": "glrt-nothing" }))).await;
        assert_eq!(reply.status, 403);
    }

    // A panic in a handler used to drop the connection with the worker. It is answered 500
    // and the server goes on.
    async fn a_panic_in_a_handler_answers_500(backend) {
        let app = TestApp::spawn(backend).await;
        let hits = app.state.faults.arm(Some(actix_web::http::Method::GET), "/api/v4/version", 3, runway::api::faults::FaultAction::Panic).expect("armed");
        for _ in 0..3 {
            let reply = app.send(app.admin(Method::GET, "/api/v4/version")).await;
            reply.assert(500, json!({ "message": "500 Internal Server Error" }));
        }
        assert_eq!(hits.get(), 3);
        app.assert_up().await;
    }

    // `repository_url` went to `git clone` as given: `--upload-pack=…` as an option, `ext::`
    // as a command. Only the allowed schemes (and local paths) are taken now.
    async fn repository_urls_that_git_would_run_are_refused(backend) {
        let app = TestApp::spawn(backend).await;
        let blocked = json!({ "message": { "repository_url": ["is blocked: Only allowed schemes are https, http, ssh, git, file"] } });
        for url in ["--upload-pack=touch /tmp/runway-pwned", "ext::sh -c touch% /tmp/runway-pwned", "relative/dir", "ftp://example.com/x.git"] {
            let reply = app.hostile(Hostile::json("/api/v4/projects", json!({ "name": "p", "repository_url": url })).admin(), 400).await;
            assert_eq!(reply.json(), blocked, "{url}");
        }
        let project = app.create_project(json!({ "name": "ok", "repository_url": "https://example.com/x.git" })).await;
        let reply = app.send(app.admin(Method::PUT, &format!("/api/v4/projects/{project}")).json(&json!({ "repository_url": "-u/bin/sh" }))).await;
        reply.assert(400, blocked);
        assert_eq!(app.rows().await.0.as_array().map(Vec::len), Some(1));
    }

    // `masked: true` on a pipeline variable was dropped: the value reached runners and
    // their logs unmasked. Refused now, so nobody relies on it.
    async fn a_masked_pipeline_variable_is_refused(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let reply = app.hostile(Hostile::json(format!("/api/v4/projects/{project}/pipeline"), json!({
            "ref": "main", "ci_config": "a: { script: x }",
            "variables": [{ "key": "TOKEN", "value": "s3cr3t-value", "masked": true }]
        })).admin(), 400).await;
        assert_eq!(reply.json(), json!({ "error": "variables masked is not supported: pipeline variables are never masked" }));
        assert_eq!(app.rows().await.1, 0);
        let reply = app.send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/pipeline")).json(&json!({
            "ref": "main", "ci_config": "a: { script: x }",
            "variables": [{ "key": "PLAIN", "value": "v", "masked": false }]
        }))).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
    }

    // A 24 MiB log without a newline rendered whole into the job page (20+ MB of HTML a
    // view). The page now opens at its last 512 KiB, cut inside the line with the colour
    // in force there, and the complete view is refused past 4 MiB.
    async fn a_one_line_log_page_stays_small(backend) {
        let (app, job, cookie) = crate::ui::running_job(backend).await;
        // Green from the first bytes on, then 24 MiB of text without escapes or newlines.
        let piece: Vec<u8> = b"text that never ends ".iter().copied().cycle().take(6 * 1024 * 1024).collect();
        let mut first = b"\x1b[32m".to_vec();
        first.extend_from_slice(&piece[5..]);
        crate::ui::patch_log(&app, &job, 0, &first).await;
        for i in 1..4 {
            crate::ui::patch_log(&app, &job, i * piece.len(), &piece).await;
        }
        for path in [format!("/-/ui/jobs/{}", job["id"]), format!("/-/ui/jobs/{}?full=true", job["id"])] {
            let page = crate::ui::get(&app, Some(&cookie), &path).await;
            assert_eq!(page.status, reqwest::StatusCode::OK);
            assert!(page.text.len() < 1024 * 1024, "{path}: {} bytes", page.text.len());
            assert!(page.text.contains("the last 512 KiB of 24.0 MiB"), "{path}: the page says it is the end");
            assert!(page.text.contains("too long to show here"), "{path}");
            // The colour set before the cut is carried into the piece shown.
            assert!(page.text.contains("<span class=\"fg2\">"), "{path}");
        }
        let log = format!("/-/ui/jobs/{}/log?offset=0&state=%7C%7C0", job["id"]);
        let answer = crate::ui::get(&app, Some(&cookie), &log).await;
        assert_eq!(answer.status, reqwest::StatusCode::OK);
        assert!(answer.text.len() < 8 * 1024 * 1024, "one answer renders at most 4 MiB: {}", answer.text.len());
        let answer: Value = serde_json::from_str(&answer.text).expect("json");
        assert!(answer["offset"].as_u64().is_some_and(|o| o <= 4 * 1024 * 1024), "{}", answer["offset"]);
        assert_eq!(answer["live"], true, "more to read");
    }
}

/// Percent-encodes a query value.
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
