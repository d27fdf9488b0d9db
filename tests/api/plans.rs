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
                     ELSE NOT EXISTS (SELECT 1 FROM jobs
                       WHERE jobs.pipeline_id = pipelines.id
                         AND jobs.status IN ('running', 'success', 'failed')
                         AND NOT jobs.retried AND NOT jobs.interruptible)
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
