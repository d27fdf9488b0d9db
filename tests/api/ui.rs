//! The web pages under `/-/ui`: sign-in, session cookie, CSRF, and what the pages show,
//! read as plain HTML (as a browser without JavaScript reads them).

use reqwest::{redirect, Client, Method, StatusCode};
use serde_json::{json, Value};

use runway::auth::tokens::TokenDigest;
use runway::db::models::{now, UiSessionRow};

use crate::helpers::tls::{https, spawn_https, HttpsApp};
use crate::helpers::{both_backends, Backend, TestApp, ADMIN_TOKEN};

/// A browser-like client that does not follow redirects (the tests check them).
fn browser() -> Client {
    Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .expect("client")
}

pub(crate) struct Page {
    pub(crate) status: StatusCode,
    location: Option<String>,
    set_cookie: Option<String>,
    pub(crate) text: String,
}

pub(crate) async fn get(app: &TestApp, cookie: Option<&str>, path: &str) -> Page {
    send(browser().get(app.url(path)), cookie).await
}

pub(crate) async fn post(
    app: &TestApp,
    cookie: Option<&str>,
    path: &str,
    form: &[(&str, &str)],
) -> Page {
    send(browser().post(app.url(path)).form(form), cookie).await
}

async fn send(mut request: reqwest::RequestBuilder, cookie: Option<&str>) -> Page {
    if let Some(cookie) = cookie {
        request = request.header("Cookie", cookie);
    }
    let response = request.send().await.expect("request");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (status, location, set_cookie) =
        (response.status(), header("location"), header("set-cookie"));
    Page {
        status,
        location,
        set_cookie,
        text: response.text().await.expect("body"),
    }
}

/// Signs in; returns the `Cookie` header value and the session's CSRF token.
pub(crate) async fn sign_in(app: &TestApp) -> (String, String) {
    let reply = post(app, None, "/-/ui/login", &[("token", ADMIN_TOKEN)]).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.text);
    let set = reply.set_cookie.expect("a session cookie");
    let cookie = set.split(';').next().expect("name=value").to_string();
    let page = get(app, Some(&cookie), "/-/ui/runners").await;
    assert_eq!(page.status, StatusCode::OK);
    let csrf = regex::Regex::new(r#"name="csrf" value="([0-9a-f]{64})""#)
        .expect("regex")
        .captures(&page.text)
        .map(|c| c[1].to_string())
        .expect("the page carries a CSRF token");
    (cookie, csrf)
}

pub(crate) async fn patch_log(app: &TestApp, job: &Value, start: usize, data: &[u8]) {
    let end = (start + data.len()).saturating_sub(1);
    let reply = app
        .send(
            app.request(Method::PATCH, &format!("/api/v4/jobs/{}/trace", job["id"]))
                .header("Job-Token", job["token"].as_str().unwrap_or_default())
                .header("Content-Range", format!("{start}-{end}"))
                .body(data.to_vec()),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
}

/// A server with one running job (of a one-job pipeline), and a signed-in session.
pub(crate) async fn running_job(backend: Backend) -> (TestApp, Value, String) {
    let app = TestApp::spawn(backend).await;
    let (_, token) = app
        .create_runner(json!({ "runner_type": "instance_type" }))
        .await;
    let project = app.create_project(json!({ "name": "app" })).await;
    app.pipeline(project, "a: { script: x }\n").await;
    let job = app.take_job(&token).await;
    let (cookie, _) = sign_in(&app).await;
    (app, job, cookie)
}

both_backends! {
    async fn pages_need_a_session_made_from_the_admin_token(backend) {
        let app = TestApp::spawn(backend).await;
        for path in ["/-/ui", "/-/ui/runners", "/-/ui/runners/live", "/-/ui/projects", "/-/ui/jobs/1", "/-/ui/jobs/1/log", "/-/ui/jobs/1/raw"] {
            let page = get(&app, None, path).await;
            assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
            assert!(page.location.as_deref().is_some_and(|l| l.starts_with("/-/ui/")), "{path}: {:?}", page.location);
        }
        let page = get(&app, None, "/-/ui/runners").await;
        assert_eq!(page.location.as_deref(), Some("/-/ui/login"));
        let page = get(&app, Some("runway_session=forged"), "/-/ui/runners").await;
        assert_eq!(page.location.as_deref(), Some("/-/ui/login"), "an unknown session id is no session");

        let form = get(&app, None, "/-/ui/login").await;
        assert_eq!(form.status, StatusCode::OK);
        assert!(form.text.contains("<label for=\"token\">Admin token</label>"), "{}", form.text);

        let wrong = post(&app, None, "/-/ui/login", &[("token", "glpat-wrong")]).await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
        assert!(wrong.set_cookie.is_none(), "no cookie for a wrong token");
        assert!(wrong.text.contains("not the admin token"));

        let right = post(&app, None, "/-/ui/login", &[("token", ADMIN_TOKEN)]).await;
        assert_eq!(right.status, StatusCode::SEE_OTHER);
        assert_eq!(right.location.as_deref(), Some("/-/ui/runners"));
        let set = right.set_cookie.expect("cookie");
        let attrs: Vec<&str> = set.split("; ").collect();
        assert!(attrs[0].starts_with("runway_session=") && attrs[0].len() == "runway_session=".len() + 64, "{set}");
        for attr in ["Path=/-/ui", "HttpOnly", "SameSite=Strict"] {
            assert!(attrs.contains(&attr), "{attr} missing from {set}");
        }
        assert!(!attrs.contains(&"Secure"), "plain HTTP: a Secure cookie would never come back: {set}");
        assert!(!set.contains(ADMIN_TOKEN) && !set.contains("glpat"), "the token is not in the cookie");

        // The API still wants PRIVATE-TOKEN: the cookie is no credential there.
        let cookie = attrs[0].to_string();
        let api = send(browser().get(app.url("/api/v4/runners/all")), Some(&cookie)).await;
        assert_eq!(api.status, StatusCode::UNAUTHORIZED);

        // Signing out needs the form's token, and ends the session.
        let (cookie, csrf) = sign_in(&app).await;
        let refused = post(&app, Some(&cookie), "/-/ui/logout", &[]).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert_eq!(get(&app, Some(&cookie), "/-/ui/runners").await.status, StatusCode::OK);
        let out = post(&app, Some(&cookie), "/-/ui/logout", &[("csrf", &csrf)]).await;
        assert_eq!(out.status, StatusCode::SEE_OTHER);
        assert!(out.set_cookie.is_some_and(|c| c.contains("Max-Age=0")));
        assert_eq!(get(&app, Some(&cookie), "/-/ui/runners").await.location.as_deref(), Some("/-/ui/login"));
    }

    async fn sessions_outlive_a_restart_and_expire(backend) {
        let first = TestApp::spawn(backend).await;
        let (id, _) = first.create_runner(json!({ "runner_type": "instance_type" })).await;
        let (cookie, csrf) = sign_in(&first).await;
        first.stop().await;
        assert!(first.client.get(first.url("/-/liveness")).send().await.is_err(), "the first server is gone");

        // The same database, a new process state: the cookie still signs in, with the same
        // CSRF token (it comes from the session id, not from memory).
        let app = TestApp::builder(backend).same_database_as(&first).spawn().await;
        let page = get(&app, Some(&cookie), "/-/ui/runners").await;
        assert_eq!(page.status, StatusCode::OK, "{:?}", page.location);
        assert!(page.text.contains(&format!("name=\"csrf\" value=\"{csrf}\"")));
        let paused = post(&app, Some(&cookie), &format!("/-/ui/runners/{id}/pause"), &[("csrf", &csrf)]).await;
        assert_eq!(paused.status, StatusCode::SEE_OTHER, "{}", paused.text);
        assert!(app.runner(id).await.expect("runner").paused);

        // The database holds the id's digest, not the id.
        let session_id = cookie.trim_start_matches("runway_session=");
        let digest = TokenDigest::of(session_id);
        {
            let mut db = app.db.read().await.expect("connection");
            assert!(UiSessionRow::is_live(&mut db.conn(), &digest, now()).await.expect("query"));
            let clear = TokenDigest::from_hex(session_id).expect("64 hex digits");
            assert!(!UiSessionRow::is_live(&mut db.conn(), &clear, now()).await.expect("query"));
        }

        // An expired session is no session; signing in again makes a new one.
        app.execute("UPDATE ui_sessions SET expires_at = '2000-01-01 00:00:00'").await;
        assert_eq!(get(&app, Some(&cookie), "/-/ui/runners").await.location.as_deref(), Some("/-/ui/login"));
        let (again, _) = sign_in(&app).await;
        assert_ne!(again, cookie);
        assert_eq!(get(&app, Some(&again), "/-/ui/runners").await.status, StatusCode::OK);
        // Signing out deletes the row: the cookie is dead on every instance.
        let (out_cookie, out_csrf) = sign_in(&app).await;
        let other = TestApp::builder(backend).same_database_as(&app).spawn().await;
        assert_eq!(get(&other, Some(&out_cookie), "/-/ui/runners").await.status, StatusCode::OK);
        assert_eq!(post(&app, Some(&out_cookie), "/-/ui/logout", &[("csrf", &out_csrf)]).await.status, StatusCode::SEE_OTHER);
        assert_eq!(get(&other, Some(&out_cookie), "/-/ui/runners").await.location.as_deref(), Some("/-/ui/login"));
    }

    async fn over_https_the_session_cookie_is_secure(backend) {
        let HttpsApp { app: _app, addr, trusting, .. } = spawn_https(backend).await;
        let form = [("Content-Type", "application/x-www-form-urlencoded")];
        let body = format!("token={ADMIN_TOKEN}");
        let signed_in = https(&trusting, &addr, "POST /-/ui/login", &form, &body).await.expect("sign in over HTTPS");
        assert_eq!(signed_in.status, 303, "{}", signed_in.head);
        let set = signed_in.headers("set-cookie");
        assert_eq!(set.len(), 1, "{}", signed_in.head);
        let attrs: Vec<&str> = set[0].split("; ").collect();
        for attr in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/-/ui"] {
            assert!(attrs.contains(&attr), "{attr} missing from {}", set[0]);
        }
        let cookie = attrs[0];
        assert!(cookie.starts_with("runway_session="), "{cookie}");
        let page = https(&trusting, &addr, "GET /-/ui/runners", &[("Cookie", cookie)], "").await.expect("a page over HTTPS");
        assert_eq!(page.status, 200, "{}", page.head);
        assert!(page.body.contains("<h1>Runners</h1>"));
        // Signing out clears it the same way (Secure, or the browser would keep it).
        let csrf = regex::Regex::new(r#"name="csrf" value="([0-9a-f]{64})""#).expect("regex").captures(&page.body).map(|c| c[1].to_string()).expect("csrf");
        let out = https(&trusting, &addr, "POST /-/ui/logout", &[("Cookie", cookie), form[0]], &format!("csrf={csrf}")).await.expect("sign out");
        assert_eq!(out.status, 303, "{}", out.head);
        let cleared = out.headers("set-cookie");
        assert!(cleared.len() == 1 && cleared[0].contains("Max-Age=0") && cleared[0].ends_with("; Secure"), "{cleared:?}");
    }

    async fn forms_without_the_csrf_token_change_nothing(backend) {
        let app = TestApp::spawn(backend).await;
        let (id, _) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let (cookie, csrf) = sign_in(&app).await;
        let path = format!("/-/ui/runners/{id}/pause");
        for form in [vec![], vec![("csrf", "0".repeat(64))]] {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let reply = post(&app, Some(&cookie), &path, &form).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);
            assert!(!app.runner(id).await.expect("runner").paused);
        }
        // Another session's token is not this one's.
        let (_, other_csrf) = sign_in(&app).await;
        assert_eq!(post(&app, Some(&cookie), &path, &[("csrf", &other_csrf)]).await.status, StatusCode::FORBIDDEN);

        let reply = post(&app, Some(&cookie), &path, &[("csrf", &csrf)]).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.text);
        assert!(app.runner(id).await.expect("runner").paused);
        let page = get(&app, Some(&cookie), "/-/ui/runners").await;
        assert!(page.text.contains(&format!("action=\"/-/ui/runners/{id}/resume\"")), "{}", page.text);
        post(&app, Some(&cookie), &format!("/-/ui/runners/{id}/resume"), &[("csrf", &csrf)]).await;
        assert!(!app.runner(id).await.expect("runner").paused);

        let project = app.create_project(json!({ "name": "app" })).await;
        let reply = post(&app, Some(&cookie), "/-/ui/pipelines", &[
            ("project", &project.to_string()), ("ref", "main"), ("ci_config", "a: { script: x }\n"),
        ]).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        let pipelines = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/pipelines"))).await;
        assert_eq!(pipelines.json(), json!([]), "no pipeline was created");
    }

    async fn pages_show_runners_pipelines_and_jobs_without_scripts(backend) {
        let app = TestApp::spawn(backend).await;
        let (runner_id, token) = app
            .create_runner(json!({ "runner_type": "instance_type", "description": "laptop <1>", "tag_list": ["docker"] }))
            .await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (cookie, csrf) = sign_in(&app).await;
        let yaml = "stages: [build, test]\nbuild: { stage: build, script: make, tags: [docker] }\n\
                    unit: { stage: test, script: t, needs: [build], tags: [docker] }\nlint: { stage: test, script: l, tags: [docker] }\n";
        let created = post(&app, Some(&cookie), "/-/ui/pipelines", &[
            ("csrf", &csrf), ("project", &project.to_string()), ("ref", "main"), ("ci_config", yaml),
        ]).await;
        assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.text);
        let pipeline_page = created.location.expect("to the pipeline");
        assert!(pipeline_page.starts_with(&format!("/-/ui/projects/{project}/pipelines/")), "{pipeline_page}");
        let job = app.take_job(&token).await;

        let page = get(&app, Some(&cookie), "/-/ui/runners").await;
        assert_eq!(page.status, StatusCode::OK);
        let row = page.text.split(&format!("<tr id=\"runner-{runner_id}\">")).nth(1).expect("the runner's row");
        assert!(row.contains("laptop &lt;1&gt;"), "escaped description: {row}");
        assert!(row.contains("<span class=\"status s-online\">online</span>"), "{row}");
        assert!(row.contains("instance_type") && row.contains("<span class=\"tag\">docker</span>"), "{row}");
        assert!(row.contains("s_000000000001 19.4.0"), "the manager's version: {row}");
        // A Go runner reports its program's name ("gitlab-runner"): the page shows the
        // description, as GitLab does.
        let registered = app.post_json("/runners", json!({
            "token": crate::helpers::REGISTRATION_TOKEN, "description": "build box", "info": { "name": "gitlab-runner" }
        })).await;
        assert_eq!(registered.status, 201, "{}", registered.text);
        let page = get(&app, Some(&cookie), "/-/ui/runners").await;
        let row = page.text.split(&format!("<tr id=\"runner-{}\">", registered.json()["id"])).nth(1).expect("its row");
        let row = row.split("</tr>").next().unwrap_or_default();
        assert!(row.contains("build box") && !row.contains("gitlab-runner"), "{row}");

        let page = get(&app, Some(&cookie), &format!("/-/ui/projects/{project}")).await;
        assert!(page.text.contains("<td data-label=\"Ref\">main</td>"), "{}", page.text);
        // The clone URL, and where each pipeline came from (the form's: `web`).
        let path: String = page.text.split("<h1>").nth(1).and_then(|t| t.split("</h1>").next()).unwrap_or_default().to_string();
        assert!(page.text.contains(&format!("Clone: <code>{}/{path}.git</code>", app.base)), "{}", page.text);
        assert!(page.text.contains("<td data-label=\"Source\">web</td>"), "{}", page.text);
        let page = get(&app, Some(&cookie), &pipeline_page).await;
        assert_eq!(page.status, StatusCode::OK);
        let stages: Vec<&str> = page.text.split("<section class=\"stage\"").skip(1).collect();
        assert_eq!(stages.len(), 2, "{}", page.text);
        assert!(stages[0].contains(">build</h2>") && stages[0].contains("s-running"), "{}", stages[0]);
        assert!(stages[1].contains(">test</h2>"));
        let unit = stages[1].split("data-job=\"unit\"").nth(1).expect("unit");
        assert!(unit.contains("needs build"), "{unit}");
        assert!(page.text.contains("Cancel pipeline"));
        // Jobs still move: the page names where its changing part is rendered again.
        let live_url = format!("{pipeline_page}/live");
        assert!(page.text.contains(&format!("<div id=\"pipeline\" data-follow=\"{live_url}\" data-every=\"2000\"><h1>Pipeline #")), "{}", page.text);
        let live = get(&app, Some(&cookie), &live_url).await;
        assert_eq!(live.status, StatusCode::OK);
        assert!(live.text.starts_with("<div id=\"pipeline\" data-follow=") && live.text.ends_with("</div>"), "{}", live.text);
        assert!(!live.text.contains("<html") && live.text.contains("data-job=\"unit\"") && live.text.contains("s-running"), "{}", live.text);
        assert_eq!(get(&app, None, &live_url).await.location.as_deref(), Some("/-/ui/login"), "no session, no fragment");

        // The job's log, rendered on the server: colours, sections, escaping.
        // The job's log, rendered on the server: colours, sections with their durations,
        // line numbers, escaping; the unfinished last line shown apart.
        let log = "\x1b[0Ksection_start:1700000000:prepare[collapsed=true]\r\x1b[0K\x1b[36;1mPreparing\x1b[0;m\n\
                   Using <shell>\n\
                   \x1b[0Ksection_end:1700000083:prepare\r\x1b[0K\n\x1b[32;1m$ make\x1b[0;m\npartial";
        patch_log(&app, &job, 0, log.as_bytes()).await;
        let page = get(&app, Some(&cookie), &format!("/-/ui/jobs/{}", job["id"])).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.text.contains(
            "<details class=\"sec\" data-section=\"prepare\"><summary data-n=\"1\"><span class=\"fg6 b\">Preparing</span>\
             <span class=\"dur\">01:23</span></summary>\
             <div class=\"body\"><div class=\"ln\" data-n=\"2\">Using &lt;shell&gt;</div></div></details>\
             <div class=\"ln\" data-n=\"3\"><span class=\"fg2 b\">$ make</span></div>\
             <div class=\"ln\" id=\"log-partial\" data-n=\"4\">partial</div></div>"), "{}", page.text);
        let offset = log.len() - "partial".len();
        assert!(page.text.contains(&format!("data-live=\"true\" data-offset=\"{offset}\" data-chunk=\"0\" data-state=\"||3\"")), "{}", page.text);
        assert!(page.text.contains(&format!("<a href=\"/-/ui/jobs/{}/raw\">Raw log</a>", job["id"])) && !page.text.contains("log-cut"));

        // What the page's script asks next: only what is new, the unfinished line apart.
        let poll = |offset: usize, chunk: usize, state: &str| {
            let url = app.url(&format!("/-/ui/jobs/{}/log?offset={offset}&chunk={chunk}&state={}", job["id"], state.replace('|', "%7C")));
            let cookie = cookie.clone();
            async move {
                let reply = send(browser().get(url), Some(&cookie)).await;
                assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
                serde_json::from_str::<Value>(&reply.text).expect("json")
            }
        };
        let next = poll(offset, 0, "||3").await;
        assert_eq!((next["items"].clone(), next["offset"].clone()), (json!([]), json!(offset)), "nothing new");
        assert_eq!(next["partial"], json!({ "l": 4, "h": "partial" }), "the unfinished line at once");
        patch_log(&app, &job, log.len(), b" line\n\x1b[31mred").await;
        let next = poll(offset, 0, "||3").await;
        assert_eq!(next["items"], json!([{ "t": "l", "l": 4, "h": "partial line" }]));
        assert_eq!(next["partial"], json!({ "l": 5, "h": "<span class=\"fg1\">red</span>" }));
        let offset = log.len() + " line\n".len();
        assert_eq!(next["offset"], json!(offset));
        // The new offset is inside the runner's second PATCH: the next poll starts there.
        assert_eq!(next["chunk"], json!(log.len()));
        assert_eq!((next["live"].as_bool(), next["status"].as_str(), next["state"].as_str()), (Some(true), Some("running"), Some("||4")));
        let next = poll(offset, log.len(), "||4").await;
        assert_eq!((next["items"].clone(), next["partial"]["h"].clone()), (json!([]), json!("<span class=\"fg1\">red</span>")));
        let bad = send(browser().get(app.url(&format!("/-/ui/jobs/{}/log?offset=0&state=%3Cx%3E", job["id"]))), Some(&cookie)).await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);

        // The raw log: the bytes as the runner sent them.
        let raw = send(browser().get(app.url(&format!("/-/ui/jobs/{}/raw", job["id"]))), Some(&cookie)).await;
        assert_eq!(raw.status, StatusCode::OK);
        assert_eq!(raw.text, format!("{log} line\n\x1b[31mred"));

        // Cancelling from the page (with its token) cancels the job.
        let reply = post(&app, Some(&cookie), &format!("/-/ui/jobs/{}/cancel", job["id"]), &[("csrf", &csrf)]).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.text);
        let status = app.runner_job(job["id"].as_i64().expect("id")).await.status;
        assert!(matches!(status.as_str(), "canceled" | "canceling"), "{status:?}");

        // A pipeline whose jobs are all over: its page no longer follows it.
        let created = post(&app, Some(&cookie), "/-/ui/pipelines", &[
            ("csrf", &csrf), ("project", &project.to_string()), ("ref", "main"), ("ci_config", "only: { script: x, tags: [docker] }\n"),
        ]).await;
        let done_page = created.location.expect("to the pipeline");
        assert!(get(&app, Some(&cookie), &done_page).await.text.contains("data-follow="), "pending: followed");
        let only = app.take_job(&token).await;
        assert_eq!(only["job_info"]["name"], "only");
        assert_eq!(app.update_job(&only, json!({ "state": "success" })).await.status, 200);
        let live = get(&app, Some(&cookie), &format!("{done_page}/live")).await;
        assert!(live.text.starts_with("<div id=\"pipeline\"><h1>Pipeline #") && live.text.contains("s-success"), "{}", live.text);
        assert!(!live.text.contains("data-follow"), "all over: not followed any more");

        // The runners list follows the runners' contacts, and alone as a fragment.
        let page = get(&app, Some(&cookie), "/-/ui/runners").await;
        assert!(page.text.contains("<div id=\"runners\" data-follow=\"/-/ui/runners/live?page=1&amp;per_page=20\" data-every=\"5000\"><table"), "{}", page.text);
        let live = get(&app, Some(&cookie), "/-/ui/runners/live").await;
        assert_eq!(live.status, StatusCode::OK);
        assert!(live.text.starts_with("<div id=\"runners\"") && live.text.contains(&format!("<tr id=\"runner-{runner_id}\">")), "{}", live.text);
        assert!(!live.text.contains("<html"));

        // No page needs a script to show its content: the script only follows what changes.
        assert!(page.text.matches("<script").count() == 1 && page.text.contains("<script src=\"/-/ui/assets/ui.js\" defer>"));
        let css = get(&app, None, "/-/ui/assets/ui.css").await;
        assert!(css.status == StatusCode::OK && css.text.contains("@media"));
    }

    async fn the_new_pipeline_form_takes_a_file_a_commit_and_variables(backend) {
        let app = TestApp::spawn(backend).await;
        let (_, token) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        let (cookie, csrf) = sign_in(&app).await;
        let form = get(&app, Some(&cookie), &format!("/-/ui/pipelines/new?project={project}")).await;
        assert_eq!(form.status, StatusCode::OK);
        for field in [
            "enctype=\"multipart/form-data\"", "<input id=\"ref\" name=\"ref\" value=\"main\" required>",
            "<label for=\"sha\">Commit SHA (optional)</label>", "<input name=\"var_key\" value=\"\"",
            "<input id=\"ci_file\" name=\"ci_file\" type=\"file\"",
        ] {
            assert!(form.text.contains(field), "{field} in {}", form.text);
        }
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let multipart = |yaml_file: &str, pasted: &str, key: &str| {
            reqwest::multipart::Form::new()
                .text("csrf", csrf.clone())
                .text("project", project.to_string())
                .text("ref", "main")
                .text("sha", sha)
                .text("var_key", key.to_string()).text("var_value", "hello world")
                .text("var_key", "").text("var_value", "")
                .text("ci_config", pasted.to_string())
                .part("ci_file", reqwest::multipart::Part::bytes(yaml_file.as_bytes().to_vec()).file_name(".gitlab-ci.yml"))
        };
        let yaml = "uploaded:\r\n  script: echo $GREETING\r\n";

        // Refused: pasted and uploaded both, or a variable key the API refuses; the form
        // comes back with the reason and what was filled in, and nothing is created.
        let both = send(browser().post(app.url("/-/ui/pipelines")).multipart(multipart(yaml, "x: { script: y }", "GREETING")), Some(&cookie)).await;
        assert_eq!(both.status, StatusCode::BAD_REQUEST, "{}", both.text);
        assert!(both.text.contains("Paste the .gitlab-ci.yml or upload it, not both.") && both.text.contains("x: { script: y }"), "{}", both.text);
        let bad_key = send(browser().post(app.url("/-/ui/pipelines")).multipart(multipart(yaml, "", "BAD-KEY")), Some(&cookie)).await;
        assert_eq!(bad_key.status, StatusCode::BAD_REQUEST, "{}", bad_key.text);
        assert!(bad_key.text.contains("<p class=\"error\" role=\"alert\">Variable key &quot;BAD-KEY&quot; is invalid</p>"), "{}", bad_key.text);
        assert!(bad_key.text.contains("<input name=\"var_key\" value=\"BAD-KEY\"") && bad_key.text.contains(&format!("value=\"{sha}\"")), "kept");
        let pipelines = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/pipelines"))).await;
        assert_eq!(pipelines.json(), json!([]), "nothing was created");
        let forged = send(browser().post(app.url("/-/ui/pipelines")).multipart(multipart(yaml, "", "GREETING").text("csrf", "0".repeat(64))), Some(&cookie)).await;
        assert_eq!(forged.status, StatusCode::FORBIDDEN, "the last csrf field counts, and it is not this session's");

        // Accepted: the uploaded file, the commit, the variable, as the API would take them.
        let created = send(browser().post(app.url("/-/ui/pipelines")).multipart(multipart(yaml, "", "GREETING")), Some(&cookie)).await;
        assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.text);
        let location = created.location.expect("to the pipeline");
        let id: i64 = location.rsplit('/').next().and_then(|id| id.parse().ok()).expect("pipeline id");
        let pipeline = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/pipelines/{id}"))).await;
        assert_eq!((pipeline.json()["sha"].clone(), pipeline.json()["source"].clone(), pipeline.json()["ref"].clone()), (json!(sha), json!("web"), json!("main")));
        let job = app.take_job(&token).await;
        assert_eq!(job["job_info"]["name"], "uploaded");
        assert_eq!(job["steps"][0]["script"], json!(["echo $GREETING"]));
        let variables = job["variables"].as_array().expect("variables");
        assert!(variables.iter().any(|v| v["key"] == "GREETING" && v["value"] == "hello world"), "{variables:?}");
    }

    async fn long_lists_come_in_pages(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        for _ in 0..23 {
            app.pipeline(project, "a: { script: x }\n").await;
        }
        for name in ["second", "third"] {
            app.create_project(json!({ "name": name })).await;
        }
        for _ in 0..3 {
            app.create_runner(json!({ "runner_type": "instance_type" })).await;
        }
        let (cookie, _) = sign_in(&app).await;
        let ids = |text: &str| -> Vec<i64> {
            regex::Regex::new(r#"pipelines/(\d+)">#"#).expect("regex").captures_iter(text).map(|c| c[1].parse().expect("id")).collect()
        };
        let base = format!("/-/ui/projects/{project}");

        // 20 a page by default, newest first, with a link to the next page only.
        let first = get(&app, Some(&cookie), &base).await;
        assert_eq!(first.status, StatusCode::OK);
        assert_eq!(ids(&first.text), (4..=23).rev().collect::<Vec<_>>());
        assert!(first.text.contains(&format!("<span>Page 1 of 2 (23)</span><a href=\"{base}?page=2&per_page=20\" rel=\"next\">Next →</a></nav>")), "{}", first.text);
        assert!(!first.text.contains("rel=\"prev\""));
        let middle = get(&app, Some(&cookie), &format!("{base}?page=2&per_page=10")).await;
        assert_eq!(ids(&middle.text), (4..=13).rev().collect::<Vec<_>>());
        assert!(middle.text.contains(&format!("<a href=\"{base}?page=1&per_page=10\" rel=\"prev\">← Previous</a><span>Page 2 of 3 (23)</span>\
                                               <a href=\"{base}?page=3&per_page=10\" rel=\"next\">")), "{}", middle.text);
        let last = get(&app, Some(&cookie), &format!("{base}?page=3&per_page=10")).await;
        assert_eq!(ids(&last.text), vec![3, 2, 1]);
        assert!(last.text.contains("rel=\"prev\"") && !last.text.contains("rel=\"next\""));
        let bad = get(&app, Some(&cookie), &format!("{base}?page=first")).await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        assert!(bad.text.contains("<h1>400</h1><p role=\"alert\">") && bad.text.contains("invalid digit"), "an error page: {}", bad.text);
        let clamped = get(&app, Some(&cookie), &format!("{base}?per_page=1000")).await;
        assert_eq!(ids(&clamped.text).len(), 23, "at most 100 a page");
        assert!(!clamped.text.contains("<nav class=\"pages\""), "all on one page: no links");

        let projects = get(&app, Some(&cookie), "/-/ui/projects?per_page=2&page=2").await;
        assert_eq!(projects.text.matches("<li><a href=\"/-/ui/projects/").count(), 1, "{}", projects.text);
        assert!(projects.text.contains("third") && !projects.text.contains(">root/app<"));

        // The runners list keeps its page while it follows the runners.
        let runners = get(&app, Some(&cookie), "/-/ui/runners?per_page=2&page=2").await;
        assert_eq!(runners.text.matches("<tr id=\"runner-").count(), 1);
        assert!(runners.text.contains("<div id=\"runners\" data-follow=\"/-/ui/runners/live?page=2&amp;per_page=2\""), "{}", runners.text);
        let live = get(&app, Some(&cookie), "/-/ui/runners/live?page=2&per_page=2").await;
        assert!(live.text.contains("<tr id=\"runner-3\">") && !live.text.contains("<tr id=\"runner-1\">"), "{}", live.text);
    }

    async fn long_logs_are_read_from_where_the_page_left_off(backend) {
        let (app, job, cookie) = running_job(backend).await;
        // 2 MiB in four PATCHes of 512 KiB, 16-byte lines numbered from 0.
        const LINE: usize = 16;
        const CHUNK: usize = 512 * 1024;
        let line = |n: usize| format!("line {n:010}\n");
        for c in 0..4 {
            let text: String = (c * CHUNK / LINE..(c + 1) * CHUNK / LINE).map(line).collect();
            patch_log(&app, &job, c * CHUNK, text.as_bytes()).await;
        }
        let poll_from = |offset: usize, chunk: usize| {
            let url = app.url(&format!("/-/ui/jobs/{}/log?offset={offset}&chunk={chunk}&state=%7C%7C0", job["id"]));
            let cookie = cookie.clone();
            async move {
                let reply = send(browser().get(url), Some(&cookie)).await;
                assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
                serde_json::from_str::<Value>(&reply.text).expect("json")
            }
        };
        let expect = |reply: &Value, first: usize| {
            let items = reply["items"].as_array().expect("items");
            assert_eq!(items.len(), 4 * CHUNK / LINE - first, "lines from {first}");
            assert_eq!(items[0]["h"], json!(format!("line {first:010}")));
            assert_eq!(items[items.len() - 1]["h"], json!(format!("line {:010}", 4 * CHUNK / LINE - 1)));
            assert_eq!(reply["offset"], json!(4 * CHUNK));
        };
        let poll = |offset: usize| poll_from(offset, offset);
        // From the start, from where a chunk starts, and from inside one: with where that
        // chunk starts, as the page's script sends it, or without (read differently).
        expect(&poll(0).await, 0);
        expect(&poll(2 * CHUNK).await, 2 * CHUNK / LINE);
        expect(&poll(CHUNK + 100 * LINE).await, CHUNK / LINE + 100);
        expect(&poll_from(CHUNK + 100 * LINE, CHUNK).await, CHUNK / LINE + 100);
        expect(&poll_from(CHUNK + 100 * LINE, 3 * CHUNK).await, CHUNK / LINE + 100);
        let done = poll(4 * CHUNK).await;
        assert_eq!((done["items"].clone(), done["live"].clone()), (json!([]), json!(true)));
        assert_eq!(done["chunk"], json!(4 * CHUNK), "the runner's next chunk starts at the end");

        // The page shows the last 512 KiB; asked to, all of it, numbered.
        let page = get(&app, Some(&cookie), &format!("/-/ui/jobs/{}", job["id"])).await;
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(page.text.matches("<div class=\"ln\" data-n=\"").count(), CHUNK / LINE);
        let first = 3 * CHUNK / LINE;
        assert!(page.text.contains(&format!("<div class=\"ln\" data-n=\"{}\">line {first:010}</div>", first + 1)), "numbered from the log's start");
        let page = get(&app, Some(&cookie), &format!("/-/ui/jobs/{}?full=true", job["id"])).await;
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(page.text.matches("<div class=\"ln\" data-n=\"").count(), 4 * CHUNK / LINE);
        assert!(page.text.contains("<div class=\"ln\" data-n=\"1\">line 0000000000</div>") && !page.text.contains("log-cut"));
    }

    async fn a_long_log_opens_at_its_end(backend) {
        let (app, job, cookie) = running_job(backend).await;
        // 3 MiB: a section opens and green starts before the part the page shows, both
        // end inside it; the last line is not finished yet.
        let mut log = String::from("\x1b[0Ksection_start:1700000000:build\r\x1b[0KBuilding\n\x1b[32m");
        let lines = 3 * 1024 * 1024 / 16;
        for n in 0..lines {
            log.push_str(&format!("line {n:010}\n"));
        }
        log.push_str("\x1b[0Ksection_end:1700000125:build\r\x1b[0K\x1b[0mdone\nstill writing");
        for (i, piece) in log.as_bytes().chunks(700 * 1024).enumerate() {
            patch_log(&app, &job, i * 700 * 1024, piece).await;
        }
        let page = get(&app, Some(&cookie), &format!("/-/ui/jobs/{}", job["id"])).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.text.len() < 3 * 1024 * 1024, "the page holds the log's end only: {} bytes", page.text.len());
        assert!(page.text.contains("<p id=\"log-cut\" class=\"note\">This is the end of a long log: the last 512 KiB of 3.0 MiB."), "{}", &page.text[..3000]);
        assert!(!page.text.contains("line 0000000000") && !page.text.contains("Building"), "not the start");
        // The section opened before the cut is open again, its lines green and numbered
        // from the log's start (its header is line 1); it ends with its duration.
        let last = lines - 1;
        assert!(page.text.contains(
            "<details class=\"sec\" data-section=\"build\" open><summary>build (started earlier)<span class=\"dur\">02:05</span></summary><div class=\"body\">"), "the section reopened");
        assert!(page.text.contains(&format!(
            "<div class=\"ln\" data-n=\"{}\"><span class=\"fg2\">line {last:010}</span></div></div></details>\
             <div class=\"ln\" data-n=\"{}\">done</div><div class=\"ln\" id=\"log-partial\" data-n=\"{}\">still writing</div></div>",
            last + 2, last + 3, last + 4)), "the end, in order");
        let offset = log.len() - "still writing".len();
        assert!(page.text.contains(&format!("data-offset=\"{offset}\" data-chunk=\"{}\" data-state=\"||{}\"", offset / (700 * 1024) * 700 * 1024, last + 3)), "followed from the end");

        // Both links lead to all of it.
        let raw_link = format!("/-/ui/jobs/{}/raw", job["id"]);
        assert!(page.text.contains(&format!("<a href=\"{raw_link}\">Raw log</a>")));
        let raw = send(browser().get(app.url(&raw_link)), Some(&cookie)).await;
        assert_eq!(raw.status, StatusCode::OK);
        assert_eq!(raw.text.len(), log.len());
        assert!(raw.text == log, "the raw log is the log");
        let full_link = format!("/-/ui/jobs/{}?full=true", job["id"]);
        assert!(page.text.contains(&format!("<a href=\"{full_link}\">Show the complete log</a>")));
        let full = get(&app, Some(&cookie), &full_link).await;
        assert!(full.text.contains("<summary data-n=\"1\">Building<span class=\"dur\">02:05</span></summary>") && full.text.contains("line 0000000000"));
        assert_eq!(full.text.matches("<div class=\"ln\" data-n=\"").count(), lines + 1, "every line but the header and the unfinished one");
    }
}

both_backends! {
    // A project's CI/CD variables page: keys and flags shown, values hidden until one is
    // revealed; a hidden variable never.
    async fn the_variables_page_hides_values_until_revealed(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "secrets" })).await;
        let mut ids = Vec::new();
        for body in [
            json!({ "key": "DEPLOY_TOKEN", "value": "s3cr3t-t0ken", "masked": true, "protected": true }),
            json!({ "key": "HIDDEN_ONE", "value": "never-shown-value", "masked_and_hidden": true }),
        ] {
            let reply = app.api(Method::POST, &format!("/projects/{project}/variables"), Some(body)).await;
            assert_eq!(reply.status, 201, "{}", reply.text);
        }
        {
            let mut db = app.db.read().await.expect("connection");
            for v in runway::db::models::CiVariable::list(&mut db.conn(), Some(project)).await.expect("rows") {
                ids.push(v.id);
            }
        }
        let (cookie, _) = sign_in(&app).await;
        let page = get(&app, Some(&cookie), &format!("/-/ui/projects/{project}/variables")).await;
        assert_eq!(page.status, 200);
        assert!(page.text.contains("DEPLOY_TOKEN") && page.text.contains("protected, masked") && page.text.contains("Reveal"), "{}", page.text);
        assert!(!page.text.contains("s3cr3t-t0ken") && !page.text.contains("never-shown-value"));
        let revealed = get(&app, Some(&cookie), &format!("/-/ui/projects/{project}/variables?reveal={}", ids[0])).await;
        assert!(revealed.text.contains("<code>s3cr3t-t0ken</code>"), "{}", revealed.text);
        let hidden = get(&app, Some(&cookie), &format!("/-/ui/projects/{project}/variables?reveal={}", ids[1])).await;
        assert!(!hidden.text.contains("never-shown-value"));
        // Without a session: the sign-in page, no values.
        let anonymous = get(&app, None, &format!("/-/ui/projects/{project}/variables?reveal={}", ids[0])).await;
        assert!(!anonymous.text.contains("s3cr3t-t0ken"));
        let project_page = get(&app, Some(&cookie), &format!("/-/ui/projects/{project}")).await;
        assert!(project_page.text.contains(&format!("/-/ui/projects/{project}/variables")));
    }
}
