//! Prometheus metrics at `/-/metrics` (text exposition format 0.0.4), kept with atomics and
//! one small map, no registry crate. GitLab's runner authentication counters keep GitLab's
//! names; the rest are Runway's own (`runway_…`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::db::enums::RunnerType;

/// Upper bounds (seconds) of the latency histograms.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bound, count) in BUCKETS.iter().zip(self.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, count) in BUCKETS.iter().zip(self.counts.iter()) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// Figures read from the database and the pools when scraped.
pub struct Snapshot {
    pub jobs_by_status: Vec<(String, i64)>,
    /// (pool, connections open, connections idle, most allowed)
    pub pools: Vec<(&'static str, usize, usize, usize)>,
    pub held_polls: i64,
    /// Job requests searching for a job now, waiting for their turn, searches so far.
    pub searches: crate::queue::Searches,
    /// Reads of the waiting jobs, and jobs claimed without one (`Queue::reads`).
    pub queue_reads: (u64, u64),
    /// [`crate::queue::Queue::waited_claims`].
    pub waited_claims: u64,
    /// SQLite's group commit: (groups committed, hot write transactions in them).
    pub write_groups: Option<(u64, u64)>,
    /// SQLite's group commit: hot write transactions waiting for the writer.
    pub write_queue: Option<usize>,
    /// SQLite's checkpoints beside the writer: (those that copied pages, WAL pages).
    pub checkpoints: Option<(u64, u64)>,
}

/// One request-latency series of a route: (method, status, latency).
type Series = (String, u16, Histogram);

#[derive(Default)]
pub struct Metrics {
    auth_success: [AtomicU64; 3],
    auth_failure: AtomicU64,
    /// Job requests answered before parsing (`answer_known_poll`).
    polls_answered_early: AtomicU64,
    /// route pattern → its series, found without allocating per request.
    requests: Mutex<BTreeMap<String, Vec<Series>>>,
    pickup: Mutex<Histogram>,
}

fn runner_type_index(t: RunnerType) -> usize {
    match t {
        RunnerType::Instance => 0,
        RunnerType::Group => 1,
        RunnerType::Project => 2,
    }
}

const RUNNER_TYPES: [&str; 3] = ["instance_type", "group_type", "project_type"];

impl Metrics {
    pub fn runner_authenticated(&self, runner_type: RunnerType) {
        self.auth_success[runner_type_index(runner_type)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn runner_authentication_failed(&self) {
        self.auth_failure.fetch_add(1, Ordering::Relaxed);
    }

    /// A job request answered 204 before parsing, as a poll seen lately.
    pub fn poll_answered_early(&self) {
        self.polls_answered_early.fetch_add(1, Ordering::Relaxed);
    }

    pub fn request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let mut map = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        // Found by reference: a series' strings are allocated once, not per request.
        let series = match map.get_mut(route) {
            Some(series) => series,
            None => map.entry(route.to_string()).or_default(),
        };
        let seconds = elapsed.as_secs_f64();
        match series
            .iter_mut()
            .find(|(m, s, _)| *s == status && m == method)
        {
            Some((_, _, histogram)) => histogram.observe(seconds),
            None => {
                let mut histogram = Histogram::default();
                histogram.observe(seconds);
                series.push((method.to_string(), status, histogram));
                series.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
            }
        }
    }

    /// A job handed to a runner `waited` after it became pending.
    pub fn picked_up(&self, waited: Duration) {
        self.pickup
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(waited.as_secs_f64());
    }

    pub fn render(&self, snapshot: &Snapshot) -> String {
        let mut out = String::new();
        out.push_str("# HELP gitlab_ci_runner_authentication_success_total Runner authentications that found a runner, by runner type.\n");
        out.push_str("# TYPE gitlab_ci_runner_authentication_success_total counter\n");
        for (i, name) in RUNNER_TYPES.iter().enumerate() {
            let value = self.auth_success[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "gitlab_ci_runner_authentication_success_total{{runner_type=\"{name}\"}} {value}"
            );
        }
        scalar(
            &mut out,
            "gitlab_ci_runner_authentication_failure_total",
            "counter",
            "Runner authentications with an unknown or expired token.",
            self.auth_failure.load(Ordering::Relaxed),
        );
        scalar(
            &mut out,
            "runway_job_requests_answered_early_total",
            "counter",
            "Job requests answered 204 before parsing, as polls seen lately with nothing changed (GitLab answers these in Workhorse).",
            self.polls_answered_early.load(Ordering::Relaxed),
        );

        out.push_str("# HELP runway_http_request_duration_seconds Time to answer a request, by method, route pattern and status.\n");
        out.push_str("# TYPE runway_http_request_duration_seconds histogram\n");
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        for (route, series) in requests.iter() {
            for (method, status, histogram) in series {
                let labels = format!(
                    "method=\"{method}\",route=\"{}\",status=\"{status}\"",
                    escape(route)
                );
                histogram.render(&mut out, "runway_http_request_duration_seconds", &labels);
            }
        }
        drop(requests);

        out.push_str("# HELP runway_job_pickup_seconds Time from a job becoming pending to a runner getting it.\n");
        out.push_str("# TYPE runway_job_pickup_seconds histogram\n");
        self.pickup
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .render(&mut out, "runway_job_pickup_seconds", "");

        out.push_str("# HELP runway_jobs Unfinished jobs by status (finished ones are not counted).\n# TYPE runway_jobs gauge\n");
        for (status, count) in &snapshot.jobs_by_status {
            let _ = writeln!(out, "runway_jobs{{status=\"{status}\"}} {count}");
        }
        let pending = snapshot
            .jobs_by_status
            .iter()
            .find(|(s, _)| s == "pending")
            .map_or(0, |(_, c)| *c);
        scalar(
            &mut out,
            "runway_queue_depth",
            "gauge",
            "Jobs waiting for a runner.",
            pending,
        );
        scalar(
            &mut out,
            "runway_held_long_polls",
            "gauge",
            "Job requests held open waiting for a job.",
            snapshot.held_polls,
        );
        scalar(
            &mut out,
            "runway_job_searches",
            "gauge",
            "Job requests searching the queue for a job now (a few at a time).",
            snapshot.searches.running,
        );
        scalar(
            &mut out,
            "runway_job_searches_waiting",
            "gauge",
            "Job requests waiting for their turn to search the queue.",
            snapshot.searches.waiting,
        );
        scalar(
            &mut out,
            "runway_job_searches_total",
            "counter",
            "Searches of the queue for a job by job requests (a held poll that is woken searches again).",
            snapshot.searches.total,
        );
        scalar(
            &mut out,
            "runway_queue_reads_total",
            "counter",
            "Reads of the jobs waiting for a runner, by job requests and by the queue's survey.",
            snapshot.queue_reads.0,
        );
        scalar(
            &mut out,
            "runway_queue_unread_claims_total",
            "counter",
            "Jobs handed to runners from the jobs this instance knew to wait, without reading the queue.",
            snapshot.queue_reads.1,
        );
        scalar(
            &mut out,
            "runway_queue_waited_claims_total",
            "counter",
            "PostgreSQL claims that found their jobs' rows held by other transactions (another claim not yet committed, a job's end) and waited for them.",
            snapshot.waited_claims,
        );
        if let Some((groups, writes)) = snapshot.write_groups {
            scalar(
                &mut out,
                "runway_sqlite_write_groups_total",
                "counter",
                "Commits of SQLite's group commit (hot write transactions committed together).",
                groups,
            );
            scalar(
                &mut out,
                "runway_sqlite_group_writes_total",
                "counter",
                "Hot write transactions those commits made durable (per group: this over the groups).",
                writes,
            );
        }
        if let Some(waiting) = snapshot.write_queue {
            scalar(
                &mut out,
                "runway_sqlite_write_queue",
                "gauge",
                "Hot write transactions waiting for SQLite's writer.",
                waiting,
            );
        }
        if let Some((copied, pages)) = snapshot.checkpoints {
            scalar(
                &mut out,
                "runway_sqlite_checkpoints_total",
                "counter",
                "SQLite WAL checkpoints that copied pages into the database, beside the writer.",
                copied,
            );
            scalar(
                &mut out,
                "runway_sqlite_wal_pages",
                "gauge",
                "Pages in SQLite's WAL at the last checkpoint (since it last started over).",
                pages,
            );
        }
        out.push_str("# HELP runway_db_pool_connections Database connections by pool and state.\n# TYPE runway_db_pool_connections gauge\n");
        for (pool, open, idle, max) in &snapshot.pools {
            let _ = writeln!(
                out,
                "runway_db_pool_connections{{pool=\"{pool}\",state=\"open\"}} {open}"
            );
            let _ = writeln!(
                out,
                "runway_db_pool_connections{{pool=\"{pool}\",state=\"idle\"}} {idle}"
            );
            let _ = writeln!(
                out,
                "runway_db_pool_connections{{pool=\"{pool}\",state=\"max\"}} {max}"
            );
        }
        out
    }
}

/// A metric of one sample: its HELP and TYPE lines, then the sample.
fn scalar(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}
