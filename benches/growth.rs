//! Issue 25's "Growth" target: dispatch rate and pickup p99 with 1,000,000 finished jobs
//! (and their pipelines and log chunks) in the database, against the same database
//! empty; and the history's size on disk per job.
//!
//! For each backend (the release `runway serve`, rate limits off; SQLite in a data
//! folder, or a fresh PostgreSQL database), two databases made alike, one left empty and
//! one given the history:
//!
//! 1. A first server on each runs the migrations and makes the project, 10 runners (each
//!    has polled once, so each has a manager row) and a template pipeline of 10 jobs in
//!    three stages (canceled at once, so no runner takes it): the history copies its rows.
//! 2. The servers stopped, the history is written straight into one database with
//!    set-based SQL: `RUNWAY_GROWTH_JOBS` (1000000) finished jobs (`success`, with runner,
//!    manager, token digest, log size and timestamps over 90 days) as pipelines of 10
//!    (`success`, half on `main`, the others on 500 feature branches), each job's log
//!    archived as the archiver leaves it (a `trace` artifact row of 1 KiB; the object
//!    lives outside the database and is not written) and a CI-minutes row per job, all in
//!    the measured project. On PostgreSQL both databases are then settled with a
//!    `VACUUM ANALYZE` and a `CHECKPOINT`, as autovacuum and the checkpointer would have
//!    left them (measured without statistics, an empty database ran slower than a full
//!    one with some builds, which flattered the ratios). SQLite is left as the inserts
//!    left it: Runway runs no `ANALYZE` there, so its planner never has statistics. Then
//!    `sync` waits for the kernel to write its dirty pages out: the history's writeback
//!    otherwise overlaps the measurement (see [`flush_to_disk`]).
//! 3. `RUNWAY_GROWTH_ROUNDS` (3) rounds, each measuring the empty database and then the
//!    full one: pickup latency over a share of `RUNWAY_BENCH_PICKUP_JOBS` (1000) jobs on a
//!    server that holds polls, then a drain on one that answers at once:
//!    `RUNWAY_BENCH_DISPATCH_JOBS` (10000) pending jobs in pipelines of 1,000, taken by 50
//!    runners (jobs/s, and the server's CPU µs per job). These are compare's figures 3 and
//!    2, the same code (`compare/phases.rs`). Taking turns puts the machine's slow swings
//!    (a quarter of the dispatch rate over minutes here) on both databases alike: measured
//!    one after the other, the ratio swung between 67 % and 145 %. The drain's pipelines
//!    are canceled after it ([`cancel_unfinished`]), so every round starts alike.
//! 4. PostgreSQL: the last `RUNWAY_GROWTH_UNVACUUMED` (50000) jobs of history taken
//!    through the queue again (pending and unassigned, then finished) with autovacuum
//!    held off the jobs table, as a busy instance runs between two of autovacuum's runs
//!    (their entries stay in the queue's partial index until a vacuum); then as many
//!    rounds again, the empty database and this one in turn.
//! 5. A table per backend: pickup p50/p99 over every round, the median drain, their
//!    ratios (target: dispatch ≥ 90 % of the empty rate, pickup p99 ≤ 110 %), the
//!    database's size before and after the history (SQLite: the file and its `-wal` after
//!    a checkpoint; PostgreSQL: `pg_database_size`), bytes per job of history, and the
//!    seeding time; and, read after the first set of rounds, a page of 100 of the
//!    history's jobs (the first and a deep one) and of its pipelines through the admin
//!    API, with the server's RSS growth over them ([`check_history`]).
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
    /// Rounds over both databases: a drain each, the pickup's jobs shared out.
    rounds: usize,
    pickup_jobs: usize,
    /// PostgreSQL: jobs of history taken through the queue since the last vacuum, for
    /// a second set of rounds ([`leave_unvacuumed`]); 0: no second set.
    unvacuumed: usize,
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
            rounds: var("RUNWAY_GROWTH_ROUNDS", 3).max(1),
            pickup_jobs: var("RUNWAY_BENCH_PICKUP_JOBS", 1000).max(1),
            unvacuumed: var("RUNWAY_GROWTH_UNVACUUMED", 50_000),
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
        // Anything left unfinished (nothing, with the template canceled), finished as its
        // runners would have: the history holds finished work only.
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
    /// "empty" or "history", for the progress lines.
    name: &'static str,
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
        let client = connect(url).await?;
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
    let client = connect(url).await?;
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
        execute(&client, &statement).await?;
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
        execute(client, settle).await?;
    }
    Ok(())
}

/// A connection to `url`, driven in the background.
async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("connecting to PostgreSQL: {e}"))?;
    tokio::spawn(connection);
    Ok(client)
}

/// Runs `statement`, with a progress line saying how long it took.
async fn execute(client: &tokio_postgres::Client, statement: &str) -> Result<(), String> {
    let at = Instant::now();
    client
        .batch_execute(statement)
        .await
        .map_err(|e| format!("{e}: {statement}"))?;
    eprintln!(
        "  {:.1} s: {}",
        at.elapsed().as_secs_f64(),
        summary(statement)
    );
    Ok(())
}

/// PostgreSQL: the last `jobs` jobs of history taken through the queue again (made
/// pending and unassigned, then finished by their runner), with the jobs table not
/// vacuumed since, as between two of autovacuum's runs. Each claim leaves its job's entry
/// in `index_jobs_queue`, pointing at a dead row, until a vacuum removes it: autovacuum
/// waits for a fifth of the table to change, 200,000 changes with a million jobs, and a
/// job makes several (created, pending, running, finished), so a busy instance runs with
/// tens of thousands of them. Autovacuum is held off the jobs table for the rounds that
/// follow, so that the state stays the same through them.
async fn leave_unvacuumed(url: &str, jobs: usize) -> Result<(), String> {
    let client = connect(url).await?;
    for statement in [
        "ALTER TABLE jobs SET (autovacuum_enabled = false)".to_string(),
        format!(
            "CREATE TEMP TABLE growth_claimed AS SELECT id, runner_id FROM jobs \
             WHERE status = 'success' AND runner_id IS NOT NULL ORDER BY id DESC LIMIT {jobs}"
        ),
        "UPDATE jobs SET status = 'pending', runner_id = NULL \
         FROM growth_claimed c WHERE jobs.id = c.id"
            .into(),
        "UPDATE jobs SET status = 'success', runner_id = c.runner_id \
         FROM growth_claimed c WHERE jobs.id = c.id"
            .into(),
        "DROP TABLE growth_claimed".into(),
        "CHECKPOINT".into(),
    ] {
        execute(&client, &statement).await?;
    }
    Ok(())
}

/// Waits until the kernel has written every dirty page out (`sync`). Right after the
/// history is written (1.5 GiB on PostgreSQL) the kernel still holds most of it in its
/// page cache and writes it back for about a minute, on the same two cores as the
/// measurement: without this, the history's measurement ran up to a third slower, by how much of
/// that writeback overlapped it, not by what the history costs a query. A database whose
/// history came over months has no such backlog.
async fn flush_to_disk() {
    let at = Instant::now();
    match tokio::process::Command::new("sync").status().await {
        Ok(status) if status.success() => {
            eprintln!("  {:.1} s: sync", at.elapsed().as_secs_f64());
        }
        other => eprintln!("  sync failed ({other:?}); measuring anyway"),
    }
}

/// A statement's first words after its `WITH`, for the progress lines.
fn summary(statement: &str) -> String {
    let body = statement
        .find(") INSERT")
        .map_or(statement, |at| &statement[at + 2..]);
    body.chars().take(60).collect()
}

/// Pickup and dispatch on one database, over every round.
struct Figures {
    pickup: load::Latencies,
    /// Each round's drain: jobs/s, and the server's CPU µs per job.
    drains: Vec<(f64, f64)>,
    /// Every job assigned, once.
    once: bool,
}

impl Default for Figures {
    /// No round yet: nothing assigned twice or missed.
    fn default() -> Figures {
        Figures {
            pickup: load::Latencies::default(),
            drains: Vec::new(),
            once: true,
        }
    }
}

impl Figures {
    /// The `p`-th percentile of every round's pickups.
    fn percentile(&self, p: f64) -> Duration {
        load::Latencies(self.pickup.0.clone()).percentile(p)
    }

    /// The median drain.
    fn drain(&self) -> (f64, f64) {
        let mut drains = self.drains.clone();
        drains.sort_by(|a, b| a.0.total_cmp(&b.0));
        drains.get(drains.len() / 2).copied().unwrap_or_default()
    }
}

/// One round on one database: pickup on a server that holds polls, then a drain on one
/// that answers at once.
async fn measure(store: &Store, project: i64, sizes: &Sizes, figures: &mut Figures) {
    let server = start_runway(&store.env(HOLD_SECONDS)).await;
    let per_round = sizes.pickup_jobs.div_ceil(sizes.rounds);
    let latencies = pickup(&Admin::new(&server), project, per_round).await;
    figures.pickup.0.extend(latencies.0);
    drop(server);
    let server = start_runway(&store.env(0)).await;
    let admin = Admin::new(&server);
    let (tokens, _) = admin.runners(DISPATCH_RUNNERS).await;
    let queue = (sizes.dispatch_jobs, DISPATCH_PIPELINE);
    let (drained, cpu) = dispatch(&admin, project, &tokens, queue, false, DRAIN_LIMIT).await;
    let n = drained.ids.len();
    let rate = n as f64 / drained.time.as_secs_f64();
    println!("    {}: {rate:.0} jobs/s", store.name);
    figures.once &= drained.distinct() == n && n == sizes.dispatch_jobs;
    figures
        .drains
        .push((rate, cpu.as_secs_f64() * 1e6 / n.max(1) as f64));
    cancel_unfinished(&admin, project).await;
}

/// Cancels the project's unfinished pipelines through the API: the drain's, whose jobs it
/// leaves running. Left running, they piled up on `main` round after round, and every
/// later pickup's `POST` checked each of them for redundancy (a running pipeline of
/// another commit on the same ref): the empty database's pickup p50 went 1.27 → 2.01 ms
/// over six rounds, so a round measured the rounds before it as much as the history,
/// and the second set of rounds (the unvacuumed one's) started from a slower base. Each
/// round now starts from the same state: the history, and no unfinished pipeline.
async fn cancel_unfinished(admin: &Admin<'_>, project: i64) {
    let (status, pipelines) = common::call(
        admin
            .client
            .get(
                admin
                    .server
                    .api(&format!("/projects/{project}/pipelines?per_page=100")),
            )
            .header("PRIVATE-TOKEN", common::ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 200, "the project's pipelines: {pipelines}");
    let pipelines = pipelines.as_array().expect("a list of pipelines");
    for pipeline in pipelines {
        if matches!(
            pipeline["status"].as_str(),
            Some("created" | "pending" | "running")
        ) {
            let path = format!("/projects/{project}/pipelines/{}/cancel", pipeline["id"]);
            let canceled = admin.post(&path, serde_json::json!({})).await;
            assert_eq!(canceled["status"], "canceled", "{path}: {canceled}");
        }
    }
}

/// The server reads a job of history as any other: the job, and its archived log listed
/// (the log's object itself is not written). Then the admin API's lists of the history:
/// how long a page of the project's jobs and pipelines takes, and how much the server's
/// RSS grew over them (a list once read the whole history to show a page of it).
async fn check_history(store: &Store, project: i64, job: i64, jobs: usize) -> Lists {
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
    let rss = common::PeakRss::start(server.pid());
    let idle = server.rss_kib();
    let mut lists = Lists::default();
    for (what, path) in [
        ("jobs", format!("/projects/{project}/jobs?per_page=100")),
        (
            "jobs",
            format!(
                "/projects/{project}/jobs?per_page=100&page={}",
                deep_page(jobs)
            ),
        ),
        (
            "pipelines",
            format!("/projects/{project}/pipelines?per_page=100"),
        ),
    ] {
        let mut times = Vec::new();
        for _ in 0..LIST_READS {
            let at = Instant::now();
            let (status, reply) = get(path.clone()).await;
            times.push(at.elapsed());
            assert_eq!(status, 200, "{path}: {reply}");
            let shown = reply.as_array().map_or(0, Vec::len);
            assert_eq!(shown, 100, "{path}: a page of the history's {what}");
        }
        times.sort();
        lists.pages.push(times[times.len() / 2]);
    }
    lists.rss_growth_kib = rss.stop().saturating_sub(idle);
    lists
}

/// The page of 100 of `jobs` jobs of history read as a deep one: the 1,000th, or the
/// last full one of a smaller history.
fn deep_page(jobs: usize) -> usize {
    (jobs / 100).clamp(1, 1000)
}

/// Each list's page is read this many times; the median is kept.
const LIST_READS: usize = 5;

/// [`check_history`]'s figures: the median time of a page of the project's jobs (the
/// first, a deep one) and of its pipelines (the first), and the server's peak RSS
/// over them above its RSS before.
#[derive(Default)]
struct Lists {
    pages: Vec<Duration>,
    rss_growth_kib: u64,
}

struct Column {
    empty: Figures,
    full: Figures,
    /// PostgreSQL: the empty database and the full one after [`leave_unvacuumed`],
    /// measured in turn after the rounds above.
    unvacuumed: Option<(Figures, Figures)>,
    seeded: Seeded,
    lists: Lists,
}

/// A store's first server: the migrations, the project, the runners and the template
/// pipeline (canceled at once, so no runner takes it). The project's and the template's
/// ids.
async fn prepare(store: &Store) -> (i64, i64) {
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
}

/// One backend: two databases made alike, the history written into one, then rounds that
/// measure the empty one and the full one in turn, so that the machine's slow swings
/// (a quarter of the dispatch rate over minutes here) fall on both alike.
async fn run(empty: Store, full: Store, sizes: Sizes) -> Result<Column, String> {
    let (empty_project, _) = prepare(&empty).await;
    let (project, template) = prepare(&full).await;
    empty.settle().await?;
    println!("  writing {} jobs of history ...", sizes.history_jobs);
    let seeded = full.seed(template, sizes.history_jobs).await?;
    println!("  history written in {:.1} s", seeded.time.as_secs_f64());
    flush_to_disk().await;
    let projects = (empty_project, project);
    let figures = rounds(&empty, &full, projects, &sizes, "").await;
    let lists = check_history(&full, project, seeded.first_job, sizes.history_jobs).await;
    let unvacuumed = match &full.postgres {
        Some(url) if sizes.unvacuumed > 0 => {
            println!(
                "  {} jobs of history claimed since the last vacuum ...",
                sizes.unvacuumed
            );
            leave_unvacuumed(url, sizes.unvacuumed).await?;
            flush_to_disk().await;
            Some(rounds(&empty, &full, projects, &sizes, ", unvacuumed").await)
        }
        _ => None,
    };
    Ok(Column {
        empty: figures.0,
        full: figures.1,
        unvacuumed,
        seeded,
        lists,
    })
}

/// `sizes.rounds` rounds, each measuring the empty database and then the full one (their
/// projects: `projects`); `label` says which set of rounds in the progress lines.
async fn rounds(
    empty: &Store,
    full: &Store,
    projects: (i64, i64),
    sizes: &Sizes,
    label: &str,
) -> (Figures, Figures) {
    let mut figures = (Figures::default(), Figures::default());
    for round in 1..=sizes.rounds {
        println!(
            "  round {round} of {}{label}: pickup, dispatch ...",
            sizes.rounds
        );
        measure(empty, projects.0, sizes, &mut figures.0).await;
        measure(full, projects.1, sizes, &mut figures.1).await;
    }
    figures
}

/// A data folder, and on PostgreSQL a fresh database of `pg`'s.
async fn store(name: &'static str, pg: Option<&mut Postgres>) -> Result<Store, String> {
    let postgres = match pg {
        Some(server) => Some(server.fresh().await?),
        None => None,
    };
    Ok(Store {
        name,
        dir: tempfile::tempdir().map_err(|e| e.to_string())?,
        postgres,
    })
}

/// Runs one backend; a panic in it comes back as an error, after its PostgreSQL is
/// stopped or its databases dropped.
async fn column(postgres: bool, sizes: Sizes) -> Result<Column, String> {
    let mut pg = if postgres {
        Some(Postgres::get()?)
    } else {
        None
    };
    // A database that cannot be made still ends in `finish`, as a failed run does.
    let stores = async {
        let empty = store("empty", pg.as_mut()).await?;
        Ok::<_, String>((empty, store("history", pg.as_mut()).await?))
    };
    let result = match stores.await {
        Ok((empty, full)) => tokio::spawn(run(empty, full, sizes))
            .await
            .unwrap_or_else(|e| Err(format!("the run failed: {e}"))),
        Err(e) => Err(e),
    };
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
            "dispatch {} jobs, {DISPATCH_RUNNERS} runners, empty: jobs/s (CPU µs/job), median of {}",
            sizes.dispatch_jobs, sizes.rounds
        ),
        format!("dispatch, {history} jobs of history"),
        format!("dispatch {history} / empty (CPU per job)"),
        format!("pickup p50 / p99 ms ({} jobs), empty", sizes.pickup_jobs),
        format!("pickup, {history} jobs of history"),
        format!("pickup p99 {history} / empty"),
        "dispatch, empty, in the second rounds".into(),
        format!(
            "dispatch, {history} jobs of history, {} claimed since the last vacuum",
            k(sizes.unvacuumed)
        ),
        "dispatch unvacuumed / empty (CPU per job)".into(),
        "pickup, empty, in the second rounds".into(),
        "pickup, unvacuumed".into(),
        "pickup p99 unvacuumed / empty".into(),
        "database MiB, before / after the history".into(),
        "history bytes per job".into(),
        "writing the history, s".into(),
        format!(
            "a page of 100 of the history's jobs: the 1st / the {}th, ms (median of {LIST_READS})",
            deep_page(sizes.history_jobs)
        ),
        "a page of 100 of the history's pipelines, ms".into(),
        "server RSS growth over those pages, MiB".into(),
    ];
    let targets = [
        "", "", ">= 90%", "", "", "<= 110%", "", "", ">= 90%", "", "", "<= 110%", "", "", "", "",
        "", "",
    ];
    let mut rows = vec![std::iter::once("figure".to_string())
        .chain(columns.iter().map(|(name, _)| name.to_string()))
        .chain(std::iter::once("target".to_string()))
        .collect::<Vec<_>>()];
    let dispatch = |f: &Figures| {
        let once = if f.once { "" } else { " NOT ONCE EACH" };
        let (rate, cpu) = f.drain();
        format!("{rate:.0} ({cpu:.0}){once}")
    };
    let pickup = |f: &Figures| format!("{} / {}", ms(f.percentile(50.0)), ms(f.percentile(99.0)));
    // The full database's figures against the empty one's measured in turn with them.
    let dispatch_ratio = |full: &Figures, empty: &Figures| {
        let (full, empty) = (full.drain(), empty.drain());
        let (rate, cpu) = (full.0 / empty.0, full.1 / empty.1);
        format!(
            "{:.0}% ({:.0}%){}",
            rate * 100.0,
            cpu * 100.0,
            verdict(rate >= 0.9)
        )
    };
    let pickup_ratio = |full: &Figures, empty: &Figures| {
        let p99 = full.percentile(99.0).as_secs_f64() / empty.percentile(99.0).as_secs_f64();
        format!("{:.0}%{}", p99 * 100.0, verdict(p99 <= 1.1))
    };
    for (i, label) in labels.iter().enumerate() {
        let mut row = vec![label.clone()];
        for (_, result) in columns {
            row.push(match result {
                Err(reason) => format!("n/a: {reason}"),
                Ok(c) => {
                    let s = &c.seeded;
                    match (i, &c.unvacuumed) {
                        (0, _) => dispatch(&c.empty),
                        (1, _) => dispatch(&c.full),
                        (2, _) => dispatch_ratio(&c.full, &c.empty),
                        (3, _) => pickup(&c.empty),
                        (4, _) => pickup(&c.full),
                        (5, _) => pickup_ratio(&c.full, &c.empty),
                        (6..=11, None) => "- (PostgreSQL only)".into(),
                        (6, Some((empty, _))) => dispatch(empty),
                        (7, Some((_, full))) => dispatch(full),
                        (8, Some((empty, full))) => dispatch_ratio(full, empty),
                        (9, Some((empty, _))) => pickup(empty),
                        (10, Some((_, full))) => pickup(full),
                        (11, Some((empty, full))) => pickup_ratio(full, empty),
                        (12, _) => format!("{} / {}", mib(s.bytes_before), mib(s.bytes_after)),
                        (13, _) => format!(
                            "{:.0}",
                            s.bytes_after.saturating_sub(s.bytes_before) as f64
                                / s.jobs.max(1) as f64
                        ),
                        (14, _) => format!("{:.1}", s.time.as_secs_f64()),
                        (15, _) => format!("{} / {}", ms(c.lists.pages[0]), ms(c.lists.pages[1])),
                        (16, _) => ms(c.lists.pages[2]),
                        _ => format!("{:.1}", c.lists.rss_growth_kib as f64 / 1024.0),
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
             database, not written) and a CI-minutes row per job; on PostgreSQL a VACUUM ANALYZE \
             and a CHECKPOINT on both databases (as autovacuum and the checkpointer would \
             have), none on SQLite; then a sync. The empty and the full database measured in \
             turn, {} rounds; on PostgreSQL then as many again with the last {} jobs of \
             history taken through the queue since the jobs table's last vacuum: the median \
             drain, the pickups of every round. Pickup: from sending \
             POST /projects/:id/pipeline (one job) to the held poll's response read. One run \
             took {:.0} s.",
            sizes.history_jobs,
            CHUNKS_PER_JOB * CHUNK_BYTES,
            sizes.rounds,
            sizes.unvacuumed,
            started.elapsed().as_secs_f64()
        );
    });
}
