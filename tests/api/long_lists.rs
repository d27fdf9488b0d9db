//! The admin API's lists over a long history (a project's pipelines, jobs and
//! deployments, a schedule's pipelines, a runner's jobs, the audit events): each request reads its page, not the history, and past
//! GitLab's count limit (10,000) the list is not counted, as GitLab's
//! `api_kaminari_count_with_limit` leaves it: no `X-Total`, no `X-Total-Pages`, no `last`
//! link, while `X-Next-Page` still says whether a page follows.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{both_backends, Backend, Reply, TestApp};

#[derive(diesel::QueryableByName)]
struct Text {
    #[diesel(sql_type = diesel::sql_types::Text)]
    text: String,
}

/// `copies` copies of each row of `table` that `filter` picks, each with a new id (the
/// ids of one call follow each other).
async fn copy_rows(app: &TestApp, table: &str, filter: &str, copies: usize) {
    use diesel_async::RunQueryDsl;
    let columns = match app.backend {
        Backend::Postgres => format!(
            "SELECT string_agg(quote_ident(column_name), ', ') AS text FROM information_schema.columns
             WHERE table_schema = 'public' AND table_name = '{table}' AND column_name <> 'id'"
        ),
        Backend::Sqlite => format!(
            "SELECT group_concat(name, ', ') AS text FROM pragma_table_info('{table}') WHERE name <> 'id'"
        ),
    };
    let columns = {
        let mut db = app.db.read().await.expect("connection");
        runway::db_run!(&mut db.conn(), |c| diesel::sql_query(&columns)
            .get_result::<Text>(c)
            .await)
        .expect("columns")
        .text
    };
    app.execute(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {copies})
         INSERT INTO {table} ({columns}) SELECT {columns} FROM {table}, n WHERE {filter}"
    ))
    .await;
}

async fn get(app: &TestApp, path: &str) -> Reply {
    let reply = app
        .send(app.admin(Method::GET, &format!("/api/v4{path}")))
        .await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.text);
    reply
}

fn ids(reply: &Reply) -> Vec<i64> {
    reply
        .json()
        .as_array()
        .expect("a list")
        .iter()
        .map(|item| item["id"].as_i64().expect("id"))
        .collect()
}

/// A page past GitLab's count limit: the next page is told, the length is not.
fn assert_not_counted(reply: &Reply, page: usize) {
    let headers = [
        "x-total",
        "x-total-pages",
        "x-page",
        "x-next-page",
        "x-prev-page",
    ]
    .map(|h| reply.header(h));
    let (next, prev) = ((page + 1).to_string(), (page - 1).to_string());
    assert_eq!(
        headers,
        [
            None,
            None,
            Some(&*page.to_string()),
            Some(&*next),
            Some(&*prev)
        ]
    );
    let link = reply.header("link").expect("a Link header");
    assert!(
        link.contains("rel=\"next\"") && link.contains("rel=\"first\""),
        "{link}"
    );
    assert!(
        !link.contains("rel=\"last\""),
        "no last page past the limit: {link}"
    );
}

fn counted(reply: &Reply) -> (Option<&str>, Option<&str>) {
    (reply.header("x-total"), reply.header("x-total-pages"))
}

both_backends! {
    async fn a_project_s_long_history_is_listed_a_page_at_a_time(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "monorepo" })).await;
        let pipeline = app.pipeline(project, "build: { script: make, when: manual }\n").await;
        let (runner_id, _) = app.create_runner(json!({ "runner_type": "instance_type" })).await;

        // 10,001 jobs and pipelines: one past the count limit.
        copy_rows(&app, "jobs", &format!("pipeline_id = {pipeline}"), 10_000).await;
        copy_rows(&app, "pipelines", &format!("id = {pipeline}"), 10_000).await;
        app.execute(&format!("UPDATE jobs SET runner_id = {runner_id} WHERE project_id = {project}")).await;

        let first = get(&app, &format!("/projects/{project}/jobs?per_page=100")).await;
        let newest = ids(&first)[0];
        let second = get(&app, &format!("/projects/{project}/jobs?per_page=100&page=2")).await;
        assert_eq!(ids(&second), (newest - 199..=newest - 100).rev().collect::<Vec<_>>());
        assert_eq!(second.json()[0]["name"], "build");
        assert_eq!(second.json()[0]["status"], "manual");
        assert_not_counted(&second, 2);
        // The last page: one job, the first one, and no next page.
        let last = get(&app, &format!("/projects/{project}/jobs?per_page=100&page=101")).await;
        assert_eq!(ids(&last).len(), 1);
        assert_eq!((last.header("x-next-page"), counted(&last)), (Some(""), (None, None)));

        let pipelines = get(&app, &format!("/projects/{project}/pipelines?per_page=50&page=3")).await;
        let listed = ids(&pipelines);
        assert_eq!(listed.len(), 50);
        assert!(listed.windows(2).all(|w| w[0] == w[1] + 1), "newest first, one after another: {listed:?}");
        assert_not_counted(&pipelines, 3);
        // A filter is applied by the statement, and counts what it keeps.
        let children = get(&app, &format!("/projects/{project}/pipelines?source=parent_pipeline")).await;
        assert_eq!((children.json(), counted(&children)), (json!([]), (Some("0"), Some("1"))));

        // A schedule's pipelines, oldest first.
        let schedules = format!("/projects/{project}/pipeline_schedules");
        let body = json!({ "description": "every minute", "ref": "main", "cron": "* * * * *", "active": false });
        let schedule = app.api(Method::POST, &schedules, Some(body)).await;
        assert_eq!(schedule.status, 201, "{}", schedule.text);
        let schedule = schedule.json()["id"].as_i64().expect("id");
        app.execute(&format!("UPDATE pipelines SET schedule_id = {schedule} WHERE project_id = {project}")).await;
        let started = get(&app, &format!("{schedules}/{schedule}/pipelines?per_page=100&page=2")).await;
        let listed = ids(&started);
        assert_eq!(listed.len(), 100);
        assert!(listed.windows(2).all(|w| w[1] == w[0] + 1), "oldest first: {listed:?}");
        assert_not_counted(&started, 2);

        let taken = get(&app, &format!("/runners/{runner_id}/jobs?per_page=20&page=2&sort=asc")).await;
        let oldest: Vec<i64> = ids(&get(&app, &format!("/runners/{runner_id}/jobs?per_page=40&sort=asc")).await);
        assert_eq!(ids(&taken), oldest[20..]);
        assert_eq!(taken.json()[0]["project"]["id"], project);
        assert_not_counted(&taken, 2);
        let succeeded = get(&app, &format!("/runners/{runner_id}/jobs?status=success")).await;
        assert_eq!((succeeded.json(), counted(&succeeded)), (json!([]), (Some("0"), Some("1"))));
    }

    async fn a_project_s_deployments_are_listed_a_page_at_a_time(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "deployed" })).await;
        app.pipeline(project, "deploy: { script: x, environment: production }\n").await;
        let (_, token) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        app.take_job(&token).await;
        let one: Value = get(&app, &format!("/projects/{project}/deployments")).await.json();
        let first = one[0]["id"].as_i64().expect("the running job's deployment");
        copy_rows(&app, "deployments", &format!("project_id = {project}"), 10_000).await;

        // Oldest first by default.
        let page = get(&app, &format!("/projects/{project}/deployments?per_page=100&page=2")).await;
        let listed = ids(&page);
        assert_eq!(listed.len(), 100);
        assert!(listed.windows(2).all(|w| w[1] > w[0]), "oldest first: {listed:?}");
        assert!(listed[0] > first);
        assert_eq!(page.json()[0]["environment"]["name"], "production");
        assert_eq!(page.json()[0]["status"], "running");
        assert_not_counted(&page, 2);
        // None finished: ordered by `finished_at`, the ids decide, newest first here.
        let newest = get(&app, &format!("/projects/{project}/deployments?order_by=finished_at&sort=desc&per_page=3")).await;
        let newest = ids(&newest);
        assert!(newest.windows(2).all(|w| w[0] > w[1]) && newest[0] > listed[99], "{newest:?}");
        for (filter, what) in [("environment=staging", "an environment the project lacks"), ("status=success", "no deployment succeeded")] {
            let none = get(&app, &format!("/projects/{project}/deployments?{filter}")).await;
            assert_eq!((none.json(), counted(&none)), (json!([]), (Some("0"), Some("1"))), "{what}");
        }
    }

    async fn the_audit_events_are_counted_up_to_gitlab_s_limit(backend) {
        let app = TestApp::spawn(backend).await;
        app.create_project(json!({ "name": "audited" })).await;
        let first: Value = get(&app, "/audit_events").await.json();
        let one = first[0]["id"].as_i64().expect("the project's creation was recorded");
        app.execute(&format!("DELETE FROM audit_events WHERE id <> {one}")).await;
        copy_rows(&app, "audit_events", &format!("id = {one}"), 9_999).await;

        // 10,000: counted.
        let page = get(&app, "/audit_events?per_page=100&page=100").await;
        assert_eq!(counted(&page), (Some("10000"), Some("100")));
        assert_eq!(ids(&page), (one + 9_900..one + 10_000).collect::<Vec<_>>(), "oldest first");
        assert_eq!(page.header("x-next-page"), Some(""));
        assert!(page.header("link").is_some_and(|l| l.contains("rel=\"last\"")));

        // One more: no longer counted, and the page that was the last has a next one.
        copy_rows(&app, "audit_events", &format!("id = {one}"), 1).await;
        let page = get(&app, "/audit_events?per_page=100&page=100").await;
        assert_not_counted(&page, 100);
        let past = get(&app, "/audit_events?per_page=100&page=101").await;
        assert_eq!(ids(&past), vec![one + 10_000]);
        assert_eq!((past.header("x-next-page"), counted(&past)), (Some(""), (None, None)));
    }
}
