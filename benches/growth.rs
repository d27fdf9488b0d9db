//! Issue 25's "Growth" target: dispatch rate and pickup p99 with 1,000,000 finished jobs
//! (and their pipelines and log chunks) in the database, against the same database
//! empty; and the history's size on disk per job.
//!
//! For each backend (the release `runway serve`, rate limits off; SQLite in the data
//! folder, or a fresh PostgreSQL database):
//!
//! 1. A first server runs the migrations and makes the project, 10 runners (each has
//!    polled once, so each has a manager row) and a template pipeline of 10 jobs in three
//!    stages (canceled at once, so no runner takes it): the history copies its rows.
//! 2. Empty (on PostgreSQL settled first with a `VACUUM ANALYZE` and a `CHECKPOINT`, as
//!    the history is before its measurement: measured without statistics, the empty
//!    database ran slower than the full one with some builds, which flattered the
//!    ratios): pickup p50/p99 over `RUNWAY_BENCH_PICKUP_JOBS` (1000) jobs on a server that
//!    holds polls, then dispatch on one that answers at once: `RUNWAY_BENCH_DISPATCH_JOBS`
//!    (10000) pending jobs in pipelines of 1,000, drained by 50 runners (jobs/s, and the
//!    server's CPU µs per job). These are compare's figures 3 and 2, the same code
//!    (`compare/phases.rs`).
//! 3. The servers stopped, the history is written straight into the database with
//!    set-based SQL: `RUNWAY_GROWTH_JOBS` (1000000) finished jobs (`success`, with runner,
//!    manager, token digest, log size and timestamps over 90 days) as pipelines of 10
//!    (`success`, half on `main`, the others on 500 feature branches), each job's log
//!    archived as the archiver leaves it (a `trace` artifact row of 1 KiB; the object
//!    lives outside the database and is not written) and a CI-minutes row per job,
//!    all in the measured project. The jobs the first measurement left running are
//!    finished too, as their runners would have finished them. On PostgreSQL a
//!    `VACUUM ANALYZE` and a `CHECKPOINT` follow, as autovacuum and the checkpointer would
//!    have run many times over the months the history took to come (right after a
//!    million inserts, their first passes run on the same two cores as the measurement,
//!    with statistics that still count a thousand pipelines). SQLite is left as the inserts left it: Runway runs no
//!    `ANALYZE` there, so its planner never has statistics.
//! 4. The same measurement again, and a table per backend: both figures, their ratio
//!    (target: dispatch ≥ 90 % of the empty rate, pickup p99 ≤ 110 %), the database's size
//!    before and after the history (SQLite: the file and its `-wal` after a checkpoint;
//!    PostgreSQL: `pg_database_size`), bytes per job of history, and the seeding time.
//!
//! PostgreSQL comes from `RUNWAY_BENCH_DATABASE_URL`, else `scripts/pg.sh` starts a
//! throwaway one, stopped at the end. `RUNWAY_GROWTH_COLUMNS` (`sqlite,postgres`) picks the
//! backends; `RUNWAY_BENCH_SERVER_LOG=<file>` keeps the servers' logs.
//!
//! Run: `cargo bench --bench growth`; a quick run:
//! `RUNWAY_GROWTH_JOBS=20000 RUNWAY_BENCH_DISPATCH_JOBS=2000 RUNWAY_BENCH_PICKUP_JOBS=200 cargo bench --bench growth`.

mod common;
// Not all of it is used here.
#[allow(dead_code)]
#[path = "compare/load.rs"]
mod load;
#[allow(dead_code)]
#[path = "compare/phases.rs"]
mod phases;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::Connection;

use common::{start_runway, Postgres};
use phases::{dispatch, pickup, server_env, Admin};

/// How long a pickup server holds a poll.
const HOLD_SECONDS: u64 = 60;
const DISPATCH_RUNNERS: usize = 50;
/// Jobs in one pipeline of the dispatch queue, as compare's figure 2.
const DISPATCH_PIPELINE: usize = 1000;
/// The longest a drain may run.
const DRAIN_LIMIT: Duration = Duration::from_secs(600);
/// Runners made for the history (more come from the measurements: 51 each).
const HISTORY_RUNNERS: usize = 10;
/// Jobs per history pipeline: the template's.
const JOBS_PER_PIPELINE: usize = 10;
/// Log chunks per job of history, and the bytes of each.
const CHUNKS_PER_JOB: usize = 2;
const CHUNK_BYTES: usize = 512;

/// The pipeline the history copies: ten jobs in three stages, as a small project's CI.
const TEMPLATE_YAML: &str = "\
stages: [build, test, deploy]
variables:
  CARGO_HOME: $CI_PROJECT_DIR/.cargo
default:
  image: rust:1.89
  cache:
    key: $CI_COMMIT_REF_SLUG
    paths: [.cargo/, target/]
build:
  stage: build
  script:
    - cargo build --release --locked
  artifacts:
    paths: [target/release/app]
    expire_in: 1 week
docs:
  stage: build
  script: [cargo doc --no-deps]
unit:
  stage: test
  parallel: 4
  script: [cargo test --lib -- --partition hash:$CI_NODE_INDEX/$CI_NODE_TOTAL]
integration:
  stage: test
  services: [postgres:16]
  variables:
    POSTGRES_PASSWORD: bench
  script: [cargo test --test api]
lint:
  stage: test
  script:
    - cargo fmt --check
    - cargo clippy --all-targets -- -D warnings
audit:
  stage: test
  allow_failure: true
  script: [cargo audit]
deploy:
  stage: deploy
  script: [./deploy.sh production]
";

struct Sizes {
    history_jobs: usize,
    dispatch_jobs: usize,
    pickup_jobs: usize,
}

impl Sizes {
    fn from_env() -> Sizes {
        let var = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        Sizes {
            // Whole pipelines of history.
            history_jobs: var("RUNWAY_GROWTH_JOBS", 1_000_000)
                .div_ceil(JOBS_PER_PIPELINE)
                .max(1)
                * JOBS_PER_PIPELINE,
            dispatch_jobs: var("RUNWAY_BENCH_DISPATCH_JOBS", 10_000).max(1),
            pickup_jobs: var("RUNWAY_BENCH_PICKUP_JOBS", 1000).max(1),
        }
    }
}

/// The SQL that differs between the backends, for the history's statements.
#[derive(Clone, Copy)]
enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// `WITH seq(i)`: the integers 0 to `n - 1`.
    fn series(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!(
                "WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < {n})"
            ),
            Dialect::Postgres => format!("WITH seq(i) AS (SELECT generate_series(0, {n} - 1))"),
        }
    }

    /// The timestamp `seconds` (an expression) before now, UTC, as the server writes one.
    fn ago(self, seconds: &str) -> String {
        match self {
            Dialect::Sqlite => {
                format!("strftime('%Y-%m-%d %H:%M:%f', julianday('now') - ({seconds}) / 86400.0)")
            }
            Dialect::Postgres => {
                format!("((now() AT TIME ZONE 'UTC') - ({seconds})::float8 * interval '1 second')")
            }
        }
    }

    /// 32 bytes unique to `id`: a job's token digest.
    fn digest(self, id: &str) -> String {
        match self {
            Dialect::Sqlite => "randomblob(32)".into(),
            Dialect::Postgres => format!("sha256(int8send(({id})::bigint))"),
        }
    }

    /// 40 hex digits: a commit.
    fn sha(self, i: &str) -> String {
        match self {
            Dialect::Sqlite => "lower(hex(randomblob(20)))".into(),
            Dialect::Postgres => format!("md5(({i})::text) || substr(md5((-({i}))::text), 1, 8)"),
        }
    }
}

/// The statements that write `jobs` jobs of history into `project`, copying the rows of
/// pipeline `template`. Ids follow the highest ones there; PostgreSQL's sequences are
/// moved past them.
fn history_sql(d: Dialect, template: i64, jobs: usize) -> Vec<String> {
    let pipelines = jobs / JOBS_PER_PIPELINE;
    // Pipeline `i` was created `created(i)` seconds ago: from 90 days back to one day back.
    let step = 89.0 * 86400.0 / pipelines as f64;
    let created = |i: &str| format!("(86400 + ({pipelines} - {i}) * {step:.6})");
    let job_created = created(&format!("(i / {JOBS_PER_PIPELINE})"));
    // A job starts 4 minutes per stage after its pipeline, and runs 30 s to 5 min.
    let started = format!("({job_created} - t.stage_idx * 240 - 10)");
    let finished = format!("({started} - 30 - (i * 37) % 270)");
    // Log text as a job prints it (no quote, so it stands in an SQL string as is).
    vec![
        // What the first measurement left running, finished as its runners would have.
        "UPDATE jobs SET status = 'success', finished_at = updated_at \
         WHERE status IN ('created', 'pending', 'running')"
            .into(),
        "UPDATE pipelines SET status = 'success', finished_at = updated_at \
         WHERE status IN ('created', 'pending', 'running')"
            .into(),
        format!(
            "CREATE TEMP TABLE growth_base AS SELECT \
             (SELECT COALESCE(MAX(id), 0) FROM pipelines) AS p, \
             (SELECT COALESCE(MAX(id), 0) FROM jobs) AS j, \
             (SELECT COUNT(*) FROM runner_managers) AS m"
        ),
        format!(
            "CREATE TEMP TABLE growth_jobs AS SELECT row_number() OVER (ORDER BY id) - 1 AS k, \
             project_id, name, stage, stage_idx, when_, allow_failure, tag_list, options, \
             protected, timeout FROM jobs WHERE pipeline_id = {template}"
        ),
        "CREATE TEMP TABLE growth_managers AS \
         SELECT row_number() OVER (ORDER BY id) - 1 AS k, id, runner_id FROM runner_managers"
            .into(),
        format!(
            "{series} INSERT INTO pipelines (id, project_id, ref, sha, before_sha, tag, protected, \
             source, status, ci_config, variables, stages, created_at, updated_at, started_at, \
             finished_at, name, auto_cancel_on_new_commit, auto_cancel_on_job_failure, \
             has_sources, stage_scheduled) \
             SELECT b.p + 1 + i, t.project_id, \
             CASE WHEN i % 2 = 0 THEN 'main' ELSE 'feature-' || (i % 500) END, {sha}, \
             t.before_sha, t.tag, i % 2 = 0, 'push', 'success', t.ci_config, t.variables, \
             t.stages, {created_at}, {finished_at}, {started_at}, {finished_at}, t.name, \
             t.auto_cancel_on_new_commit, t.auto_cancel_on_job_failure, t.has_sources, \
             t.stage_scheduled \
             FROM seq JOIN growth_base b ON TRUE JOIN pipelines t ON t.id = {template}",
            series = d.series(pipelines),
            sha = d.sha("i"),
            created_at = d.ago(&created("i")),
            started_at = d.ago(&format!("{} - 5", created("i"))),
            finished_at = d.ago(&format!("{} - 900", created("i"))),
        ),
        format!(
            "{series} INSERT INTO jobs (id, pipeline_id, project_id, name, stage, stage_idx, \
             status, when_, allow_failure, tag_list, options, protected, timeout, token_digest, \
             runner_id, runner_manager_id, exit_code, created_at, updated_at, queued_at, \
             started_at, finished_at, trace_size, trace_crc32, trace_checksum_ok) \
             SELECT b.j + 1 + i, b.p + 1 + i / {JOBS_PER_PIPELINE}, t.project_id, t.name, \
             t.stage, t.stage_idx, 'success', t.when_, t.allow_failure, t.tag_list, t.options, \
             t.protected, t.timeout, {digest}, m.runner_id, m.id, 0, {created_at}, \
             {finished_at}, {queued_at}, {started_at}, {finished_at}, {log_bytes}, \
             (i * 2654435761) % 4294967296, TRUE \
             FROM seq JOIN growth_base b ON TRUE \
             JOIN growth_jobs t ON t.k = i % {JOBS_PER_PIPELINE} \
             JOIN growth_managers m ON m.k = i % b.m",
            series = d.series(jobs),
            digest = d.digest("b.j + 1 + i"),
            created_at = d.ago(&job_created),
            queued_at = d.ago(&format!("{job_created} - 1")),
            started_at = d.ago(&started),
            finished_at = d.ago(&finished),
            log_bytes = CHUNKS_PER_JOB * CHUNK_BYTES,
        ),
        // Each log archived, as the archiver leaves a finished job's: a `trace` artifact
        // row (its object, on disk or in S3, is outside the database and not written).
        format!(
            "{series} INSERT INTO job_artifacts (job_id, project_id, file_type, file_format, \
             filename, size, sha256, store_path, expire_at, created_at) \
             SELECT b.j + 1 + i, t.project_id, 'trace', 'raw', 'job.log', {log_bytes}, {sha}, \
             'jobs/' || (b.j + 1 + i) || '/trace/job.log', NULL, {finished_at} \
             FROM seq JOIN growth_base b ON TRUE \
             JOIN growth_jobs t ON t.k = i % {JOBS_PER_PIPELINE}",
            series = d.series(jobs),
            log_bytes = CHUNKS_PER_JOB * CHUNK_BYTES,
            // 64 hex digits, as a SHA-256 is written.
            sha = format!(
                "substr({} || {}, 1, 64)",
                d.sha("(b.j + 1 + i)"),
                d.sha("(i + 7)")
            ),
            finished_at = d.ago(&finished),
        ),
        "INSERT INTO ci_minutes_usages (job_id, project_id, runner_id, runner_type, \
         duration_seconds, cost_factor, minutes, finished_at) \
         SELECT id, project_id, runner_id, 'instance_type', \
         30 + ((id - b.j - 1) * 37) % 270, 1.0, (30 + ((id - b.j - 1) * 37) % 270) / 60.0, \
         finished_at FROM jobs JOIN growth_base b ON TRUE WHERE id > b.j"
            .into(),
    ]
    .into_iter()
    .chain(match d {
        Dialect::Sqlite => vec![],
        Dialect::Postgres => ["pipelines", "jobs"]
            .map(|t| {
                format!(
                    "SELECT setval(pg_get_serial_sequence('{t}', 'id'), (SELECT MAX(id) FROM {t}))"
                )
            })
            .to_vec(),
    })
    .chain(["growth_base", "growth_jobs", "growth_managers"].map(|t| format!("DROP TABLE {t}")))
    .collect()
}

/// One backend's database and data folder.
struct Store {
    dir: tempfile::TempDir,
    /// PostgreSQL's URL; none: SQLite in the data folder.
    postgres: Option<String>,
}

/// What writing the history took and made.
struct Seeded {
    /// The first job of history.
    first_job: i64,
    jobs: usize,
    time: Duration,
    bytes_before: u64,
    bytes_after: u64,
}

impl Store {
    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn sqlite_file(&self) -> PathBuf {
        self.data_dir().join("runway.sqlite3")
    }

    fn env(&self, hold: u64) -> Vec<(&'static str, String)> {
        server_env(&self.data_dir(), self.postgres.as_deref(), hold)
    }

    /// PostgreSQL: the empty database settled as the history will be
    /// ([`settle_postgres`]), so that both measurements start from statistics and a
    /// checkpoint, not the first from none.
    async fn settle(&self) -> Result<(), String> {
        let Some(url) = &self.postgres else {
            return Ok(());
        };
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("connecting to PostgreSQL: {e}"))?;
        tokio::spawn(connection);
        settle_postgres(&client).await
    }

    /// Writes the history (no server running); its size before and after.
    async fn seed(&self, template: i64, jobs: usize) -> Result<Seeded, String> {
        match &self.postgres {
            None => {
                let file = self.sqlite_file();
                tokio::task::spawn_blocking(move || seed_sqlite(&file, template, jobs))
                    .await
                    .map_err(|e| e.to_string())?
            }
            Some(url) => seed_postgres(url, template, jobs).await,
        }
    }
}

/// The id the history's first job gets.
const FIRST_JOB: &str = "(SELECT COALESCE(MAX(id), 0) + 1 FROM jobs)";

/// The file and its `-wal` (after a checkpoint that empties the `-wal`).
fn sqlite_bytes(conn: &mut diesel::SqliteConnection, file: &Path) -> Result<u64, String> {
    conn.batch_execute("PRAGMA wal_checkpoint(TRUNCATE)")
        .map_err(|e| format!("checkpoint: {e}"))?;
    let mut wal = file.as_os_str().to_owned();
    wal.push("-wal");
    Ok([file.as_os_str(), &wal]
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum())
}

fn seed_sqlite(file: &Path, template: i64, jobs: usize) -> Result<Seeded, String> {
    let mut conn = diesel::SqliteConnection::establish(&file.display().to_string())
        .map_err(|e| format!("opening {}: {e}", file.display()))?;
    let bytes_before = sqlite_bytes(&mut conn, file)?;
    let first_job = diesel::RunQueryDsl::get_result::<i64>(
        diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(FIRST_JOB)),
        &mut conn,
    )
    .map_err(|e| format!("{e}: {FIRST_JOB}"))?;
    let started = Instant::now();
    conn.batch_execute("PRAGMA cache_size = -1048576; PRAGMA temp_store = MEMORY; BEGIN IMMEDIATE")
        .map_err(|e| format!("begin: {e}"))?;
    for statement in history_sql(Dialect::Sqlite, template, jobs) {
        let at = Instant::now();
        conn.batch_execute(&statement)
            .map_err(|e| format!("{e}: {statement}"))?;
        eprintln!(
            "  {:.1} s: {}",
            at.elapsed().as_secs_f64(),
            summary(&statement)
        );
    }
    conn.batch_execute("COMMIT")
        .map_err(|e| format!("commit: {e}"))?;
    let bytes_after = sqlite_bytes(&mut conn, file)?;
    Ok(Seeded {
        first_job,
        jobs,
        time: started.elapsed(),
        bytes_before,
        bytes_after,
    })
}

async fn seed_postgres(url: &str, template: i64, jobs: usize) -> Result<Seeded, String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("connecting to PostgreSQL: {e}"))?;
    tokio::spawn(connection);
    let size = async || -> Result<u64, String> {
        let row = client
            .query_one("SELECT pg_database_size(current_database())", &[])
            .await
            .map_err(|e| format!("pg_database_size: {e}"))?;
        Ok(row.get::<_, i64>(0) as u64)
    };
    let bytes_before = size().await?;
    let first_job: i64 = client
        .query_one(&format!("SELECT {FIRST_JOB}"), &[])
        .await
        .map_err(|e| format!("{e}: {FIRST_JOB}"))?
        .get(0);
    let started = Instant::now();
    client
        .batch_execute("BEGIN")
        .await
        .map_err(|e| e.to_string())?;
    for statement in history_sql(Dialect::Postgres, template, jobs) {
        let at = Instant::now();
        client
            .batch_execute(&statement)
            .await
            .map_err(|e| format!("{e}: {statement}"))?;
        eprintln!(
            "  {:.1} s: {}",
            at.elapsed().as_secs_f64(),
            summary(&statement)
        );
    }
    client
        .batch_execute("COMMIT")
        .await
        .map_err(|e| format!("commit: {e}"))?;
    let time = started.elapsed();
    // And the pages it wrote flushed, as they long were in a database that grew slowly.
    settle_postgres(&client).await?;
    Ok(Seeded {
        first_job,
        jobs,
        time,
        bytes_before,
        bytes_after: size().await?,
    })
}

/// `VACUUM ANALYZE` and `CHECKPOINT`: statistics on every table and no dirty pages
/// waiting, as autovacuum and the checkpointer leave a database between bursts.
async fn settle_postgres(client: &tokio_postgres::Client) -> Result<(), String> {
    for settle in ["VACUUM ANALYZE", "CHECKPOINT"] {
        let at = Instant::now();
        client
            .batch_execute(settle)
            .await
            .map_err(|e| format!("{settle}: {e}"))?;
        eprintln!("  {:.1} s: {settle}", at.elapsed().as_secs_f64());
    }
    Ok(())
}

/// A statement's first words after its `WITH`, for the progress lines.
fn summary(statement: &str) -> String {
    let body = statement
        .find(") INSERT")
        .map_or(statement, |at| &statement[at + 2..]);
    body.chars().take(60).collect()
}

/// Pickup and dispatch on one database.
struct Figures {
    pickup_p50: Duration,
    pickup_p99: Duration,
    rate: f64,
    cpu_us_per_job: f64,
    /// Every job assigned, once.
    once: bool,
}

/// Pickup on a server that holds polls, then dispatch on one that answers at once.
async fn measure(store: &Store, project: i64, sizes: &Sizes) -> Figures {
    let server = start_runway(&store.env(HOLD_SECONDS)).await;
    let mut latencies = pickup(&Admin::new(&server), project, sizes.pickup_jobs).await;
    drop(server);
    let server = start_runway(&store.env(0)).await;
    let admin = Admin::new(&server);
    let (tokens, _) = admin.runners(DISPATCH_RUNNERS).await;
    let queue = (sizes.dispatch_jobs, DISPATCH_PIPELINE);
    let (drained, cpu) = dispatch(&admin, project, &tokens, queue, false, DRAIN_LIMIT).await;
    let n = drained.ids.len();
    Figures {
        pickup_p50: latencies.percentile(50.0),
        pickup_p99: latencies.percentile(99.0),
        rate: n as f64 / drained.time.as_secs_f64(),
        cpu_us_per_job: cpu.as_secs_f64() * 1e6 / n.max(1) as f64,
        once: drained.distinct() == n && n == sizes.dispatch_jobs,
    }
}

/// The server reads a job of history as any other: the job, and its archived log listed
/// (the log's object itself is not written).
async fn check_history(store: &Store, project: i64, job: i64) {
    let server = start_runway(&store.env(0)).await;
    let admin = Admin::new(&server);
    let get = |path: String| {
        common::call(
            admin
                .client
                .get(server.api(&path))
                .header("PRIVATE-TOKEN", common::ADMIN_TOKEN),
        )
    };
    let (status, reply) = get(format!("/projects/{project}/jobs/{job}")).await;
    assert_eq!(status, 200, "a job of history: {reply}");
    assert_eq!(reply["status"], "success", "a job of history: {reply}");
    let trace = &reply["artifacts"][0];
    assert!(
        trace["file_type"] == "trace" && trace["size"] == CHUNKS_PER_JOB * CHUNK_BYTES,
        "its archived log: {reply}"
    );
}

struct Column {
    empty: Figures,
    full: Figures,
    seeded: Seeded,
}

/// One backend from its first start to both measurements.
async fn run(store: Store, sizes: Sizes) -> Result<Column, String> {
    let (project, template) = {
        let server = start_runway(&store.env(0)).await;
        let admin = Admin::new(&server);
        let project = admin.project().await;
        admin.runners(HISTORY_RUNNERS).await;
        let pipeline = admin.pipeline(project, TEMPLATE_YAML).await;
        let template = pipeline["id"].as_i64().expect("pipeline id");
        let (_, jobs) = common::call(
            admin
                .client
                .get(server.api(&format!(
                    "/projects/{project}/pipelines/{template}/jobs?per_page=100"
                )))
                .header("PRIVATE-TOKEN", common::ADMIN_TOKEN),
        )
        .await;
        let count = jobs.as_array().map_or(0, Vec::len);
        assert_eq!(count, JOBS_PER_PIPELINE, "the template's jobs: {jobs}");
        admin
            .post(
                &format!("/projects/{project}/pipelines/{template}/cancel"),
                serde_json::json!({}),
            )
            .await;
        (project, template)
    };
    store.settle().await?;
    println!("  empty database: pickup, dispatch ...");
    let empty = measure(&store, project, &sizes).await;
    println!("  writing {} jobs of history ...", sizes.history_jobs);
    let seeded = store.seed(template, sizes.history_jobs).await?;
    println!(
        "  history written in {:.1} s; measuring again ...",
        seeded.time.as_secs_f64()
    );
    let full = measure(&store, project, &sizes).await;
    check_history(&store, project, seeded.first_job).await;
    Ok(Column {
        empty,
        full,
        seeded,
    })
}

/// Runs one backend; a panic in it comes back as an error, after its PostgreSQL is
/// stopped or its databases dropped.
async fn column(postgres: bool, sizes: Sizes) -> Result<Column, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut pg = None;
    let url = if postgres {
        let mut server = Postgres::get()?;
        let url = server.fresh().await;
        pg = Some(server);
        Some(url?)
    } else {
        None
    };
    let store = Store { dir, postgres: url };
    let result = tokio::spawn(run(store, sizes))
        .await
        .unwrap_or_else(|e| Err(format!("the run failed: {e}")));
    if let Some(pg) = pg {
        pg.finish().await;
    }
    result
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / f64::from(1 << 20))
}

/// `met`: " ok" or " MISS".
fn verdict(met: bool) -> &'static str {
    if met {
        " ok"
    } else {
        " MISS"
    }
}

fn print_table(sizes: &Sizes, columns: &[(&str, Result<Column, String>)]) {
    let k = |n: usize| {
        if n.is_multiple_of(1_000_000) {
            format!("{}M", n / 1_000_000)
        } else if n.is_multiple_of(1000) {
            format!("{}k", n / 1000)
        } else {
            n.to_string()
        }
    };
    let history = k(sizes.history_jobs);
    let labels = [
        format!(
            "dispatch {} jobs, {DISPATCH_RUNNERS} runners, empty: jobs/s (CPU µs/job)",
            sizes.dispatch_jobs
        ),
        format!("dispatch, {history} jobs of history"),
        format!("dispatch {history} / empty (CPU per job)"),
        format!("pickup p50 / p99 ms ({} jobs), empty", sizes.pickup_jobs),
        format!("pickup, {history} jobs of history"),
        format!("pickup p99 {history} / empty"),
        "database MiB, before / after the history".into(),
        "history bytes per job".into(),
        "writing the history, s".into(),
    ];
    let targets = ["", "", ">= 90%", "", "", "<= 110%", "", "", ""];
    let mut rows = vec![std::iter::once("figure".to_string())
        .chain(columns.iter().map(|(name, _)| name.to_string()))
        .chain(std::iter::once("target".to_string()))
        .collect::<Vec<_>>()];
    let dispatch = |f: &Figures| {
        let once = if f.once { "" } else { " NOT ONCE EACH" };
        format!("{:.0} ({:.0}){once}", f.rate, f.cpu_us_per_job)
    };
    let pickup = |f: &Figures| format!("{} / {}", ms(f.pickup_p50), ms(f.pickup_p99));
    for (i, label) in labels.iter().enumerate() {
        let mut row = vec![label.clone()];
        for (_, result) in columns {
            row.push(match result {
                Err(reason) => format!("n/a: {reason}"),
                Ok(c) => {
                    let s = &c.seeded;
                    let rate = c.full.rate / c.empty.rate;
                    let cpu = c.full.cpu_us_per_job / c.empty.cpu_us_per_job;
                    let p99 = c.full.pickup_p99.as_secs_f64() / c.empty.pickup_p99.as_secs_f64();
                    match i {
                        0 => dispatch(&c.empty),
                        1 => dispatch(&c.full),
                        2 => format!(
                            "{:.0}% ({:.0}%){}",
                            rate * 100.0,
                            cpu * 100.0,
                            verdict(rate >= 0.9)
                        ),
                        3 => pickup(&c.empty),
                        4 => pickup(&c.full),
                        5 => format!("{:.0}%{}", p99 * 100.0, verdict(p99 <= 1.1)),
                        6 => format!("{} / {}", mib(s.bytes_before), mib(s.bytes_after)),
                        7 => format!(
                            "{:.0}",
                            s.bytes_after.saturating_sub(s.bytes_before) as f64
                                / s.jobs.max(1) as f64
                        ),
                        _ => format!("{:.1}", s.time.as_secs_f64()),
                    }
                }
            });
        }
        row.push(targets[i].to_string());
        rows.push(row);
    }
    common::print_table(&rows);
}

fn main() {
    let sizes = Sizes::from_env();
    let wanted = std::env::var("RUNWAY_GROWTH_COLUMNS").unwrap_or("sqlite,postgres".into());
    let wanted = |name: &str| wanted.split(',').any(|c| c.trim() == name);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let started = Instant::now();
        let mut columns = Vec::new();
        for (name, title, postgres) in [
            ("sqlite", "Runway SQLite", false),
            ("postgres", "Runway PostgreSQL", true),
        ] {
            if !wanted(name) {
                continue;
            }
            println!("{title} ...");
            columns.push((title, column(postgres, Sizes::from_env()).await));
        }
        println!();
        print_table(&sizes, &columns);
        println!();
        println!(
            "History: {} finished jobs as pipelines of {JOBS_PER_PIPELINE} in the measured \
             project, its log archived ({} bytes: a trace artifact row; the object, outside the \
             database, not written) and a CI-minutes row per job; on PostgreSQL a VACUUM ANALYZE and a CHECKPOINT after writing it (as autovacuum and the checkpointer would have), none on SQLite. Pickup: from \
             sending POST /projects/:id/pipeline (one job) to the held poll's response read. \
             One run took {:.0} s.",
            sizes.history_jobs,
            CHUNKS_PER_JOB * CHUNK_BYTES,
            started.elapsed().as_secs_f64()
        );
    });
}
