//! PostgreSQL's plans for statements that read `jobs`, as the planner's statistics leave
//! them on a young instance: one pipeline's jobs, and the queue. Prepared
//! statements run on a generic plan, which estimates `pipeline_id = $1` from the
//! statistics' count of distinct pipelines. A young instance whose last `ANALYZE` saw a
//! few large pipelines counted a handful, so each pipeline seemed to hold a fifth of the
//! jobs; and `EXISTS` costs a sequential scan as if its first row matched. The finish
//! check then read the whole table on every finished job (3.9 ms on 10,000 jobs, against
//! 0.13 ms by index).

use serde_json::json;

use crate::helpers::{Backend, TestApp};
use crate::schema::postgres_url;

/// Pipelines of 1,000 jobs made before the statistics are taken.
const LARGE_PIPELINES: usize = 5;

#[tokio::test]
async fn a_pipeline_s_jobs_are_read_by_index_when_the_statistics_saw_few_large_pipelines() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let project = app.create_project(json!({ "name": "large" })).await;
    // Five jobs run 200 times each: 1,000 jobs.
    let large: String = (0..5)
        .map(|i| format!("j{i}:\n  script: [x]\n  parallel: 200\n"))
        .collect();
    for _ in 0..LARGE_PIPELINES {
        app.pipeline(project, &large).await;
    }
    let client = connect(&app).await;
    client.batch_execute("ANALYZE jobs").await.expect("ANALYZE");
    // A pipeline of one job after the statistics, as the finish check meets it.
    let pipeline = app.pipeline(project, "one:\n  script: [x]\n").await;

    client
        .batch_execute(
            "SET plan_cache_mode = force_generic_plan;
             PREPARE busy(bigint, text[]) AS
                 SELECT EXISTS (SELECT 1 FROM jobs WHERE pipeline_id = $1 AND status = ANY($2));
             PREPARE listed(bigint) AS
                 SELECT id FROM jobs WHERE pipeline_id = $1 ORDER BY id",
        )
        .await
        .expect("PREPARE");
    for execute in [
        format!("EXECUTE busy({pipeline}, '{{canceling}}')"),
        format!("EXECUTE listed({pipeline})"),
    ] {
        assert_reads_jobs_by_index(&client, &execute).await;
    }
}

/// A connection of its own to the test's database, for `PREPARE` and `EXPLAIN`.
async fn connect(app: &TestApp) -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(&postgres_url(app).await, tokio_postgres::NoTls)
            .await
            .expect("connecting");
    tokio::spawn(connection);
    client
}

/// `execute` (an `EXECUTE` of a prepared statement) run under `EXPLAIN`: its plan reads
/// `jobs` through an index, not whole.
async fn assert_reads_jobs_by_index(client: &tokio_postgres::Client, execute: &str) {
    let plan = explain(client, execute).await;
    assert!(
        !plan.contains("Seq Scan on jobs"),
        "{execute} reads the whole table:\n{plan}"
    );
}

/// `execute` run under `EXPLAIN (ANALYZE, BUFFERS)`: its plan, as lines.
async fn explain(client: &tokio_postgres::Client, execute: &str) -> String {
    let rows = client
        .query(
            &format!("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF) {execute}"),
            &[],
        )
        .await
        .expect("EXPLAIN");
    let plan: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    plan.join("\n")
}

/// A new instance's queue read, planned before autovacuum ever analyzed `jobs`, finds
/// the pending jobs by index once there are some. A migration that ran `ANALYZE jobs` on
/// the new, empty table recorded zero rows: the generic plan made while the queue was
/// empty (the first polls come before any pipeline) then scanned and sorted the whole
/// table for every poll until autovacuum analyzed again (dispatch at a quarter of its
/// speed). Without statistics the planner takes a table for at least ten pages.
#[tokio::test]
async fn a_new_instance_s_queue_read_planned_while_empty_uses_an_index() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let client = connect(&app).await;
    // Planned, and its generic plan kept, while no job exists.
    client
        .batch_execute(
            "SET plan_cache_mode = force_generic_plan;
             PREPARE queue(bigint, bigint) AS
                 SELECT id FROM jobs WHERE status = 'pending' AND runner_id IS NULL AND id > $1
                 ORDER BY id LIMIT $2;
             EXECUTE queue(0, 16)",
        )
        .await
        .expect("PREPARE");
    let project = app.create_project(json!({ "name": "new" })).await;
    app.pipeline(project, "j:\n  script: [x]\n  parallel: 100\n")
        .await;
    assert_reads_jobs_by_index(&client, "EXECUTE queue(0, 16)").await;
}

/// Every new pipeline looks for its ref's unfinished pipelines to cancel as redundant
/// (`Pipeline::redundant_on_ref`). On a busy ref nearly all of them are finished: the read
/// must not pass over those. Before the partial index of unfinished pipelines, a table not
/// yet analyzed got a plan that sought the (project, ref, status, id) index by `id < $4`
/// and filtered the statuses, reading every pipeline of the ref for each new one.
#[tokio::test]
async fn a_ref_s_unfinished_pipelines_are_read_without_its_finished_ones() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let project = app.create_project(json!({ "name": "busy" })).await;
    let mut last = 0;
    for _ in 0..300 {
        last = app.pipeline(project, "one:\n  script: [x]\n").await;
    }
    let client = connect(&app).await;
    // Finished as a busy ref's history is (the runners' part is not what is measured).
    client
        .batch_execute("UPDATE pipelines SET status = 'success'")
        .await
        .expect("UPDATE");
    // The statement as `Pipeline::redundant_on_ref` writes it.
    client
        .batch_execute(
            "SET plan_cache_mode = force_generic_plan;
             PREPARE older(bigint, text, text, bigint, bigint) AS
                 SELECT id FROM pipelines
                 WHERE project_id = $1 AND ref = $2 AND sha != $3 AND id < $4
                   AND status IN ('created', 'waiting_for_resource', 'preparing', 'pending', 'running', 'scheduled')
                   AND CASE auto_cancel_on_new_commit
                     WHEN 'none' THEN FALSE
                     WHEN 'interruptible' THEN EXISTS (SELECT 1 FROM jobs
                       WHERE jobs.pipeline_id = pipelines.id AND NOT jobs.retried AND jobs.interruptible)
                     ELSE NOT EXISTS (SELECT 1
                       FROM unnest(ARRAY['running', 'success', 'failed']) AS started(status)
                       CROSS JOIN LATERAL (SELECT 1 FROM jobs
                         WHERE jobs.pipeline_id = pipelines.id AND jobs.status = started.status
                           AND NOT jobs.retried AND NOT jobs.interruptible LIMIT 1) AS one)
                   END
                 LIMIT $5",
        )
        .await
        .expect("PREPARE");
    let execute = format!(
        "EXECUTE older({project}, 'main', 'other', {}, 3000)",
        last + 1
    );
    for mode in ["force_generic_plan", "force_custom_plan"] {
        client
            .batch_execute(&format!("SET plan_cache_mode = {mode}"))
            .await
            .expect("SET");
        let plan = explain(&client, &execute).await;
        let filtered: u64 = plan
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Rows Removed by Filter: "))
            .filter_map(|n| n.trim().parse::<u64>().ok())
            .sum();
        assert!(
            filtered < 10,
            "{mode}: the read passed over the ref's finished pipelines:\n{plan}"
        );
    }
}

/// Jobs of another pipeline, `statuses` in turn (`copies` each), which the statistics do
/// not know: `pipeline`'s own jobs and 20,000 copies of them, all `analysed_as`, are
/// analysed first (autovacuum kept off the table), as a large table's statistics show
/// one status where another matters.
async fn jobs_the_statistics_do_not_know(
    client: &tokio_postgres::Client,
    pipeline: i64,
    analysed_as: &str,
    statuses: &[(&str, usize)],
) {
    let mut setup = format!(
        "ALTER TABLE jobs SET (autovacuum_enabled = false);
         DO $$ DECLARE cols text; BEGIN
           SELECT string_agg(quote_ident(column_name), ', ') INTO cols
           FROM information_schema.columns WHERE table_schema = 'public'
             AND table_name = 'jobs' AND column_name <> 'id';
           EXECUTE format('INSERT INTO jobs (%s) SELECT %s FROM jobs,
             generate_series(1, 20000) WHERE pipeline_id = {pipeline}', cols, cols);
         END $$;
         UPDATE jobs SET status = '{analysed_as}' WHERE pipeline_id = {pipeline};
         ANALYZE jobs;"
    );
    let mut from = 0;
    for (status, copies) in statuses {
        setup.push_str(&format!(
            "UPDATE jobs SET status = '{status}' WHERE id IN (SELECT id FROM jobs
               WHERE pipeline_id = {pipeline} ORDER BY id OFFSET {from} LIMIT {copies});"
        ));
        from += copies;
    }
    client.batch_execute(&setup).await.expect("setup");
}

/// How many entries of `index` PostgreSQL's scans have read, as its statistics count them:
/// this connection's own counts are flushed first; the server's connections flush theirs
/// when they end ([`end_server_connections`]).
async fn index_reads(client: &tokio_postgres::Client, index: &str) -> i64 {
    // Flushed once the statement ends, before the next reads the statistics again.
    client
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .expect("flush");
    client
        .batch_execute("SELECT pg_stat_clear_snapshot()")
        .await
        .expect("snapshot");
    client
        .query_one(
            "SELECT idx_tup_read FROM pg_stat_user_indexes WHERE indexrelname = $1",
            &[&index],
        )
        .await
        .expect("counts")
        .get(0)
}

/// The entries of `index_jobs_on_status` read before the server's request under test, to
/// give [`assert_few_status_index_reads`].
async fn status_index_reads(client: &tokio_postgres::Client) -> i64 {
    index_reads(client, "index_jobs_on_status").await
}

/// The server's statements read fewer than 200 entries of `index_jobs_on_status` since
/// [`status_index_reads`] gave `before` (its connections are ended so that they count
/// them); `what` says what read them, and what else the index holds.
async fn assert_few_status_index_reads(client: &tokio_postgres::Client, before: i64, what: &str) {
    end_server_connections(client).await;
    let read = status_index_reads(client).await - before;
    assert!(
        read < 200,
        "{what} read {read} entries of index_jobs_on_status"
    );
}

/// Ends every other connection to the database (the server's) and waits until they are
/// gone: each flushes its statistics as it ends.
async fn end_server_connections(client: &tokio_postgres::Client) {
    let others = "FROM pg_stat_activity WHERE datname = current_database() \
                  AND pid <> pg_backend_pid()";
    client
        .batch_execute(&format!("SELECT pg_terminate_backend(pid) {others}"))
        .await
        .expect("terminate");
    for _ in 0..100 {
        let left: i64 = client
            .query_one(&format!("SELECT count(*) {others}"), &[])
            .await
            .expect("connections")
            .get(0);
        if left == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the server's connections did not end");
}

/// A job's end asks whether another job keeps its stage busy, in its own pipeline. With
/// the statistics of a table analysed when every job had finished (as a large table's
/// nearly are), the planner took `index_jobs_on_status` for that question and walked
/// every running job of every pipeline, filtering on the pipeline. Here 2,000 jobs of
/// another pipeline run; the end of the last job of a pipeline reads a few entries of
/// that index, not every running job's (the old statement read 22,004, the table's dead
/// entries included).
#[tokio::test]
async fn a_job_s_end_looks_for_a_busy_job_in_its_own_pipeline_only() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let project = app.create_project(json!({ "name": "app" })).await;
    let (_, runner) = app
        .create_runner(json!({ "runner_type": "instance_type" }))
        .await;
    let other = app.pipeline(project, "b: { script: x }\n").await;
    let client = connect(&app).await;
    jobs_the_statistics_do_not_know(&client, other, "success", &[("running", 2000)]).await;
    let ending = app.pipeline(project, "a: { script: x }\n").await;
    let job = app.take_job(&runner).await;
    let before = status_index_reads(&client).await;

    let reply = app.update_job(&job, json!({ "state": "success" })).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(app.pipeline_status(project, ending).await, "success");

    let what = "the end (2,000 jobs of another pipeline run)";
    assert_few_status_index_reads(&client, before, what).await;
}

/// A new pipeline asks of each unfinished pipeline of its ref whether a started job keeps
/// it (`Pipeline::redundant_on_ref`). With the statistics of a young instance, analysed
/// while its jobs waited, the planner read every started job of every pipeline through
/// `index_jobs_on_status` (and hashed them) for that question. Here 2,000 jobs of an
/// unfinished pipeline of the ref run and 2,000 succeeded; the new pipeline reads a few
/// entries of that index, not 4,000. The older pipeline has started jobs that are not
/// interruptible: it stays.
#[tokio::test]
async fn a_new_pipeline_looks_for_started_jobs_in_each_older_pipeline_only() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let project = app.create_project(json!({ "name": "app" })).await;
    let older = app.pipeline(project, "b: { script: x }\n").await;
    let client = connect(&app).await;
    jobs_the_statistics_do_not_know(
        &client,
        older,
        "pending",
        &[("running", 2000), ("success", 2000)],
    )
    .await;
    client
        .batch_execute(&format!(
            "UPDATE pipelines SET status = 'running', sha = 'older' WHERE id = {older}"
        ))
        .await
        .expect("an older commit");
    let before = status_index_reads(&client).await;

    let newer = app
        .create_pipeline(project, "main", "a: { script: x }\n")
        .await;
    assert_eq!(newer.status, 201, "{}", newer.text);
    assert_eq!(app.pipeline_status(project, older).await, "running");

    let what = "the new pipeline (4,000 started jobs of an older pipeline)";
    assert_few_status_index_reads(&client, before, what).await;
}
