//! The figures measured on Runway (the release binary, one backend per column). Two
//! servers per backend, each on a fresh database: one with `RUNWAY_LONG_POLL_TIMEOUT=0`
//! for the throughput figures, one holding polls for pick-up latency and held polls.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{artifact_round_trip, start_runway, Server};
use crate::load::{poll_load, trace_append, Conn};
use crate::phases::{dispatch, machine_poll_body, pickup, poll_body, server_env, Admin, REQUEST};
use crate::{Cell, Results, Row, Sizes};

/// How long the second server holds a poll: long enough to open 10,000 of them.
pub const HOLD_SECONDS: u64 = 120;
/// Jobs in one pipeline of the dispatch queue (5 jobs × `parallel: 200`).
const JOBS_PER_PIPELINE: usize = 1000;
/// Jobs in one pipeline of the small-pipeline queue (one job × `parallel: 10`).
const SMALL_PIPELINE: usize = 10;

fn env(
    dir: &std::path::Path,
    database_url: Option<&str>,
    hold: u64,
    sizes: &Sizes,
) -> Vec<(&'static str, String)> {
    let mut env = server_env(dir, database_url, hold);
    env.push((
        "RUNWAY_MAX_TRACE_BYTES",
        (sizes.trace_bytes_per_job() + (1 << 20)).to_string(),
    ));
    env.push((
        "RUNWAY_MAX_ARTIFACT_SIZE_BYTES",
        (sizes.artifact_bytes + (1 << 20)).to_string(),
    ));
    env
}

/// Every figure on one backend; `databases` are two fresh PostgreSQL databases, or none
/// for SQLite (a file in each server's data folder).
pub async fn column(databases: Option<[String; 2]>, sizes: &Sizes) -> Results {
    let mut out = Results::default();
    let [db_a, db_b] = match &databases {
        Some([a, b]) => [Some(a.as_str()), Some(b.as_str())],
        None => [None, None],
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_runway(&env(&dir.path().join("a"), db_a, 0, sizes)).await;
    out.set(Row::IdleRss, Cell::mib(server.rss_kib(), None));
    throughput(&server, sizes, &mut out).await;
    drop(server);

    let server = start_runway(&env(&dir.path().join("b"), db_b, HOLD_SECONDS, sizes)).await;
    let admin = Admin::new(&server);
    let project = admin.project().await;
    let mut pickup = pickup(&admin, project, sizes.pickup_jobs).await;
    let p99 = pickup.percentile(99.0);
    out.set(
        Row::Pickup,
        Cell::value(pickup.p50_p99(), Some(p99 <= Duration::from_millis(2))),
    );
    out.set(Row::HeldRss, held_polls(&admin, sizes.held_polls).await);
    out
}

/// Figures 1, 2, 4 and 5 on a server that answers at once.
async fn throughput(server: &Server, sizes: &Sizes, out: &mut Results) {
    let admin = Admin::new(server);
    // 1. Empty polls carrying the current queue version: with no hold, Runway answers
    // 204 from memory. Without `last_update` it looks in the database first.
    let (tokens, version) = admin.runners(sizes.poll_runners).await;
    let bodies = tokens
        .iter()
        .map(|t| poll_body(t, Some(&version)))
        .collect();
    crate::empty_polls(out, &server.base, bodies, sizes).await;
    let bodies = tokens.iter().map(|t| poll_body(t, None)).collect();
    let mut load = poll_load(&server.base, bodies, sizes.warmup, sizes.poll_window).await;
    out.set(
        Row::PollDb,
        Cell::value(
            format!(
                "{:.0} ({:.2} ms p99)",
                load.per_second(),
                crate::load::ms(load.latencies.percentile(99.0))
            ),
            None,
        ),
    );

    // 2. Dispatch: assignment alone, then the whole cycle (each job reported `success`),
    // each from pipelines of 1,000 jobs and of 10.
    let (tokens, _) = admin.runners(sizes.dispatch_runners).await;
    let project = admin.project().await;
    let limit = sizes.limit;
    let drain = |per_pipeline: usize, finish: bool| {
        let (admin, tokens) = (&admin, &tokens);
        let sizes = (sizes.dispatch_jobs, per_pipeline);
        dispatch(admin, project, tokens, sizes, finish, limit)
    };
    // The job requests' reads of the queue, per job taken (`runway_queue_reads_total`).
    let reads = || admin.metric("runway_queue_reads_total");
    let reads_per_job = |before: Option<f64>, after: Option<f64>, jobs: usize| {
        Some((after? - before?) / jobs.max(1) as f64)
    };
    let before = reads().await;
    let (drained, cpu) = drain(JOBS_PER_PIPELINE, false).await;
    let dispatch_reads = reads_per_job(before, reads().await, drained.ids.len());
    crate::dispatch_cells(out, &drained, sizes.dispatch_jobs, cpu);
    let (small, small_cpu) = drain(SMALL_PIPELINE, false).await;
    let rate = small.ids.len() as f64 / small.time.as_secs_f64();
    let per_job = small_cpu.as_secs_f64() * 1e6 / small.ids.len().max(1) as f64;
    out.set(
        Row::DispatchSmall,
        Cell::value(format!("{rate:.0} ({per_job:.0})"), None),
    );
    let before = reads().await;
    let large = drain(JOBS_PER_PIPELINE, true).await;
    let cycle_reads = reads_per_job(before, reads().await, large.0.ids.len());
    out.set(
        Row::DispatchReads,
        match (dispatch_reads, cycle_reads) {
            (Some(d), Some(c)) => Cell::value(format!("{d:.2} / {c:.2}"), None),
            _ => Cell::na("this build does not count its queue reads"),
        },
    );
    let small = drain(SMALL_PIPELINE, true).await;
    crate::cycle_cells(
        out,
        (&large.0, large.1),
        Some((&small.0, small.1)),
        sizes.dispatch_jobs,
    );

    // 4. Trace.
    let yaml = format!(
        "log:\n  script: [x]\n  parallel: {}\n",
        sizes.trace_jobs.clamp(1, 200)
    );
    admin.pipeline(project, &yaml).await;
    let mut conn = Conn::open(&server.base).await;
    let mut jobs = Vec::new();
    for _ in 0..sizes.trace_jobs.clamp(1, 200) {
        let reply = conn.post_json(REQUEST, poll_body(&tokens[0], None)).await;
        assert_eq!(reply.status, 201, "a log job");
        let job: Value = serde_json::from_slice(&reply.body).expect("job");
        jobs.push((reply.job_id(), job["token"].as_str().expect("token").into()));
    }
    let trace = trace_append(
        &server.base,
        jobs,
        sizes.trace_patches,
        crate::trace_patch(),
    )
    .await;
    crate::trace_cells(out, trace);

    // 5. Artifacts.
    let trip = artifact_round_trip(server, sizes.artifact_bytes).await;
    assert!(trip.identical, "downloaded bytes are the uploaded bytes");
    crate::artifact_cells(out, &trip.upload, &trip.download, trip.size);
}

/// Figure 6: `n` polls held at once, as a fleet holds them: 100 runner tokens, each poll from
/// a runner machine of its own (its own `system_id`, so its own manager row) on its own
/// connection; the server's RSS once `/-/metrics` counts them all.
async fn held_polls(admin: &Admin<'_>, n: usize) -> Cell {
    let idle = admin.server.rss_kib();
    let (tokens, version) = admin.runners(n.clamp(1, 100)).await;
    let body = move |i: usize, version: &str| {
        machine_poll_body(&tokens[i % tokens.len()], Some(version), i + 1)
    };
    hold_polls(admin, idle, n, version, body, Some(80 * 1024)).await
}

/// Opens `n` connections, each posting `body(i, last_update)` to the job request route again
/// and again as each answer comes, until `/-/metrics` counts `n` held; the RSS then, above
/// `idle`, and per poll (met when the growth is within `target` KiB).
pub async fn hold_polls<F>(
    admin: &Admin<'_>,
    idle: u64,
    n: usize,
    version: String,
    body: F,
    target: Option<u64>,
) -> Cell
where
    F: Fn(usize, &str) -> bytes::Bytes + Send + Sync + 'static,
{
    let body = Arc::new(body);
    let connecting = Arc::new(tokio::sync::Semaphore::new(256));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (connecting, stop, body) = (connecting.clone(), stop.clone(), body.clone());
        let (base, mut version) = (admin.server.base.clone(), version.clone());
        tasks.spawn(async move {
            let permit = connecting.acquire_owned().await.expect("semaphore");
            let mut conn = Conn::open(&base).await;
            drop(permit);
            while !stop.load(Ordering::Relaxed) {
                let reply = conn.post_json(REQUEST, body(i, &version)).await;
                assert_eq!(reply.status, 204, "a held poll ends empty");
                version = reply.last_update.expect("X-GitLab-Last-Update");
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(HOLD_SECONDS / 2);
    let mut held = admin.held_polls().await;
    while (held as usize) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        held = admin.held_polls().await;
    }
    // `RUNWAY_BENCH_HELD_LINGER=<s>`: the polls stay held that long before the RSS is
    // read, for a heap profiler or a debugger to look at the server holding them.
    let linger = std::env::var("RUNWAY_BENCH_HELD_LINGER").ok();
    if let Some(seconds) = linger.and_then(|s| s.parse().ok()) {
        tokio::time::sleep(Duration::from_secs(seconds)).await;
    }
    let rss = admin.server.rss_kib();
    stop.store(true, Ordering::Relaxed);
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    if (held as usize) < n {
        return Cell::na(format!(
            "only {held} of {n} polls held after {} s",
            HOLD_SECONDS / 2
        ));
    }
    let growth = rss.saturating_sub(idle);
    Cell::value(
        format!(
            "{:.1} (+{:.1}, {:.1} KiB each)",
            crate::common::mib(rss),
            crate::common::mib(growth),
            growth as f64 / n.max(1) as f64
        ),
        target.map(|t| growth <= t),
    )
}
