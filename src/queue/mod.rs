//! Job dispatch: which runner gets which pending job (GitLab's matching rules), atomic
//! assignment (exactly one runner per job, on both backends), and the queue version behind
//! `X-GitLab-Last-Update` and long polling.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify, Semaphore};

pub mod listen;

use crate::auth::tokens::{NewToken, JOB_TOKEN_PREFIX};
use crate::ci::config::JobSpec;
use crate::db::enums::{AccessLevel, JobStatus, RunnerType};
use crate::db::models::ci_minutes::quota_exceeded;
use crate::db::models::{
    now, Assignee, Candidate, CiMinutesUsage, CiVariable, Job, JobArtifact, JobChanges, Locked,
    Pipeline, Project, Runner, RunnerManager,
};
use crate::db::{Conn, DbPool};
use crate::error::{ApiError, ApiResult};

/// The first round when looking for a job a runner can take reads two claim lists of
/// pending jobs, usually enough when most runners can run most jobs. Each further round
/// reads twice as many, up to this, so a runner that can run little of the queue still
/// gets through it in few reads.
const CANDIDATE_BATCH_MAX: i64 = 512;

/// The queue version: a number bumped whenever a job becomes pending, sent to runners as
/// `X-GitLab-Last-Update`. A poll carrying the current value has seen everything, so it is
/// held (long polling) until the version moves or the hold times out, without touching the
/// database. It starts at a random value so that a runner's value from before a restart
/// never matches by chance.
///
/// New jobs do not wake every held poll: with thousands of runners holding one, each job
/// would cost thousands of searches that all but one answer empty. A bump wakes the
/// [`WAKE_FIRST`] polls held longest, and each search passes the wake on
/// ([`Queue::pass_on`]): one that took a job while others waited wakes two more (the
/// wave grows while the queue has jobs), one that found only jobs it cannot run (tags,
/// projects) wakes two more, one that found the queue empty wakes none. A wave wakes no
/// more polls than were held at its start. A poll woken that finds nothing is held again
/// until its hold ends, behind the others (`notify_one` wakes the oldest waiter first). A
/// change to a runner wakes every poll ([`Queue::bump_all`]), as do shutdown and a lost
/// listener connection.
pub struct Queue {
    version: AtomicU64,
    /// Held polls wait here; only they do (background tasks wait on `shutdown`).
    changed: Notify,
    shutdown: Notify,
    /// Wakes the current wave may still pass on.
    wave: std::sync::atomic::AtomicI64,
    /// Where bumps and changes go to reach other instances (PostgreSQL `NOTIFY`).
    broadcast: std::sync::OnceLock<mpsc::UnboundedSender<Broadcast>>,
    pub poll_timeout: Duration,
    /// Job requests held open right now.
    held: std::sync::atomic::AtomicI64,
    /// The server is shutting down: held requests answer now, new ones are not held.
    closing: std::sync::atomic::AtomicBool,
    /// The candidates' pipelines and projects, kept between polls ([`Seen`]).
    seen: Seen,
    /// Where the queue's reads start ([`Floor`]).
    floor: Floor,
    /// Reads of the waiting jobs (by polls and surveys), and jobs claimed from the jobs
    /// known to wait without one ([`Known`]): `/-/metrics`.
    reads: AtomicU64,
    unread_claims: AtomicU64,
    /// Claims that waited for rows other transactions held ([`Locked::Wait`]).
    waited_claims: AtomicU64,
}

/// What one instance tells the others sharing its PostgreSQL database ([`listen`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broadcast {
    /// Jobs became pending: [`Queue::bump_local`].
    Bump,
    /// Something a runner may take changed: [`Queue::bump_all_local`].
    BumpAll,
    /// A project or CI/CD variables changed: [`Queue::forget_kept_local`].
    Forget,
}

/// Counts one while it lives: a held request ([`Queue::held`]), a poll waiting for its
/// turn to search ([`Admission`]).
struct Counting<'a>(&'a std::sync::atomic::AtomicI64);

impl Drop for Counting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Queue {
    /// Shutting down: every held job request answers (204) and no new one is held.
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
        self.shutdown.notify_waiters();
    }

    /// Resolves once [`Queue::close`] was called (background tasks stop with the server).
    pub async fn closed(&self) {
        loop {
            let notified = self.shutdown.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.closing() {
                return;
            }
            notified.await;
        }
    }

    /// Job requests held open waiting for a change, now.
    pub fn held(&self) -> i64 {
        self.held.load(Ordering::Relaxed)
    }

    pub fn new(poll_timeout: Duration) -> Queue {
        Queue {
            version: AtomicU64::new(rand::random::<u32>() as u64),
            changed: Notify::new(),
            shutdown: Notify::new(),
            wave: Default::default(),
            broadcast: std::sync::OnceLock::new(),
            poll_timeout,
            held: Default::default(),
            closing: Default::default(),
            seen: Seen::default(),
            floor: Default::default(),
            reads: Default::default(),
            unread_claims: Default::default(),
            waited_claims: Default::default(),
        }
    }

    /// Reads of the waiting jobs so far, and jobs claimed without one ([`Known`]).
    pub fn reads(&self) -> (u64, u64) {
        (
            self.reads.load(Ordering::Relaxed),
            self.unread_claims.load(Ordering::Relaxed),
        )
    }

    /// Claims so far that waited for rows other transactions held ([`Locked::Wait`]).
    pub fn waited_claims(&self) -> u64 {
        self.waited_claims.load(Ordering::Relaxed)
    }

    /// A pipeline just created here: the polls its jobs wake need not read it.
    pub fn created(&self, pipeline: &Pipeline) {
        self.seen.keep_pipeline(pipeline.clone());
    }

    /// A project changed: polls read it again at once, here and on the other instances.
    pub fn project_changed(&self, project_id: i64) {
        self.seen.projects.forget(Some(project_id));
        self.send(Broadcast::Forget);
    }

    /// CI/CD variables changed, of a project or of the instance (`None`: every job sees
    /// those): read again at once, here and on the other instances.
    pub fn variables_changed(&self, project_id: Option<i64>) {
        self.seen.variables.forget(project_id);
        self.send(Broadcast::Forget);
    }

    /// [`Broadcast::Forget`] from another instance, or its notifications lost: every
    /// project and variable kept is read again.
    pub fn forget_kept_local(&self) {
        self.seen.projects.forget(None);
        self.seen.variables.forget(None);
    }

    /// The instance's and `project_id`'s CI/CD variables (sealed), as [`CiVariable::for_job`]
    /// reads them: kept between reads ([`Kept`]), so that the polls and pipelines of one
    /// project do not each read them.
    pub async fn ci_variables(
        &self,
        db: &DbPool,
        project_id: i64,
    ) -> ApiResult<Arc<Vec<CiVariable>>> {
        let read = crate::db::inline(async {
            let mut db = db.read().await?;
            Ok(Some(CiVariable::for_job(&mut db.conn(), project_id).await?))
        });
        let variables = self.seen.variables.get_or_read(project_id, read).await?;
        Ok(variables.unwrap_or_default())
    }

    /// The project `id` as polls read it: kept between reads ([`Kept`]), so that the
    /// pipelines created for a project and the polls that take their jobs do not each read
    /// it; `None` when there is no such project.
    pub async fn project(&self, db: &DbPool, id: i64) -> ApiResult<Option<Arc<Project>>> {
        let read = crate::db::inline(async {
            let mut db = db.read().await?;
            Ok(Project::find(&mut db.conn(), id).await?)
        });
        self.seen.projects.get_or_read(id, read).await
    }

    fn send(&self, message: Broadcast) {
        if let Some(tx) = self.broadcast.get() {
            let _ = tx.send(message);
        }
    }

    pub fn current(&self) -> String {
        format!("{:x}", self.version.load(Ordering::Acquire))
    }

    /// Jobs became pending: a new wave of wakes, here and on the other instances.
    pub fn bump(&self) {
        self.bump_local();
        self.send(Broadcast::Bump);
    }

    /// [`Queue::bump`] when no job with an id below `first` became pending: this
    /// instance's reads need not start from the queue's head again ([`Floor`]).
    /// `pending`: every job that became pending, when known; the polls it wakes try those
    /// before reading ([`Known`]). The other instances hear a plain bump.
    pub fn bump_from(&self, first: i64, pending: Option<Vec<Candidate>>) {
        self.floor.lower(first - 1, pending);
        self.wake();
        self.send(Broadcast::Bump);
    }

    /// Something a runner may take changed (its settings, its projects): every held poll
    /// looks again, here and on the other instances (GitLab ticks the runner's queue).
    pub fn bump_all(&self) {
        self.bump_all_local();
        self.send(Broadcast::BumpAll);
    }

    /// [`Queue::bump`] on this instance only (a notification from another instance).
    pub fn bump_local(&self) {
        self.floor.lower(0, None);
        self.wake();
    }

    /// A new wave: the version moves and the first held polls wake. The floor is lowered
    /// before, so that a poll that sees the new version reads from where it should.
    fn wake(&self) {
        self.version.fetch_add(1, Ordering::AcqRel);
        let held = self.held().max(0);
        self.wave.store(held, Ordering::Release);
        for _ in 0..WAKE_FIRST.min(held) {
            self.changed.notify_one();
        }
    }

    /// [`Queue::bump_all`] on this instance only.
    pub fn bump_all_local(&self) {
        self.floor.lower(0, None);
        self.version.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_waiters();
    }

    /// A search is over: wakes up to `n` more held polls, as far as the wave allows. A
    /// poll woken looks even if it came after the bump (being woken is the signal), and
    /// the version stays: it moves only when jobs become pending, so the polls searching
    /// right now do not all look again on their next request for jobs they have seen
    /// (on PostgreSQL a search sees the jobs others are claiming as pending, so it passes
    /// waves on often).
    pub fn pass_on(&self, n: i64) {
        let granted = self
            .wave
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                (left > 0).then(|| left - left.min(n))
            })
            .map_or(0, |left| left.min(n));
        for _ in 0..granted {
            self.changed.notify_one();
        }
    }

    /// Wakes one held poll, outside any wave: a claim given up, whose jobs others passed
    /// over ([`Lease`]).
    fn pass_on_one(&self) {
        if self.held() > 0 {
            self.changed.notify_one();
        }
    }

    fn set_broadcast(&self, tx: mpsc::UnboundedSender<Broadcast>) {
        let _ = self.broadcast.set(tx);
    }

    /// When a poll arriving now is answered at the latest if nothing changes: a random
    /// point of the last fifth of the hold, so that a fleet whose polls began together (a
    /// restart, a backlog drained) spreads out over a few seconds instead of polling again
    /// all at once at the end of every hold. `None` without long polling.
    pub fn hold_deadline(&self) -> Option<tokio::time::Instant> {
        let timeout = self.poll_timeout;
        if timeout.is_zero() {
            return None;
        }
        let hold = timeout.mul_f64(rand::Rng::gen_range(&mut rand::thread_rng(), 0.8..=1.0));
        Some(tokio::time::Instant::now() + hold)
    }

    /// Waits until the version differs from `seen` or this poll is woken (true: search),
    /// or `deadline` passes (false; at once without one: long polling is off).
    pub async fn wait_for_change(
        &self,
        seen: &str,
        deadline: Option<tokio::time::Instant>,
    ) -> bool {
        self.held.fetch_add(1, Ordering::Relaxed);
        let _held = Counting(&self.held);
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.current() != seen {
                return true;
            }
            // Not held (long polling off, or the hold is over): answer now. A timer due
            // now would still wait for the timer wheel's next tick, up to a millisecond.
            let Some(deadline) = deadline else {
                return false;
            };
            if self.closing() || deadline <= tokio::time::Instant::now() {
                return false;
            }
            // Woken: one at a time by a bump or a wave passed on, all by a change to the
            // runners or the close (the loop answers that).
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.current() != seen;
            }
            if !self.closing() {
                return true;
            }
        }
    }

    /// The server is shutting down: polls are answered, not held.
    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }
}

/// How long a poll woken at the end of its hold may still wait to search.
const ADMISSION_MIN: Duration = Duration::from_secs(1);

/// Held polls a bump wakes first; the searches they make pass the wake on.
const WAKE_FIRST: i64 = 2;

/// A job handed to a runner, with what its payload is built from.
pub struct Assignment {
    pub job: Job,
    /// As a poll read it, maybe before the claim: its status and times may be older (the
    /// payload takes only what a pipeline keeps from its creation), and without its
    /// configuration's text ([`Seen`]).
    pub pipeline: Arc<Pipeline>,
    /// As read within [`KEPT_FOR`] before the claim.
    pub project: Arc<Project>,
    /// The job token in clear: sent once, in the payload.
    pub token: String,
    /// Jobs whose artifacts this job downloads, with their archives (if uploaded).
    pub dependencies: Vec<(Job, Option<JobArtifact>)>,
    /// The instance's and the project's CI/CD variables (sealed), before protection and
    /// environment scope are applied; read within [`KEPT_FOR`] before the claim.
    pub variables: Arc<Vec<CiVariable>>,
    pub queue_size: i64,
}

/// The outcome of a poll.
pub enum Polled {
    Assigned(Box<Assignment>),
    /// No job: `last_update` is the version read before the search, if there was one
    /// (`searched`; not for a paused runner, nor a poll whose turn to search never came).
    Empty {
        last_update: String,
        searched: bool,
    },
}

/// Runner features a job may require ‹app/models/ci/build.rb› `RUNNER_FEATURES`: each
/// with whether `spec` requires it.
fn required_features(spec: &JobSpec) -> [(&'static str, bool); 5] {
    let artifacts = spec.artifacts.as_ref();
    [
        (
            "upload_multiple_artifacts",
            artifacts.is_some_and(|a| !a.reports.is_empty()),
        ),
        (
            "artifacts_exclude",
            artifacts.is_some_and(|a| !a.exclude.is_empty()),
        ),
        (
            "return_exit_code",
            !spec.allow_failure_exit_codes.is_empty() || !spec.retry.exit_codes.is_empty(),
        ),
        (
            "fallback_cache_keys",
            spec.cache.iter().any(|c| !c.fallback_keys.is_empty()),
        ),
        ("multi_build_steps", spec.release.is_some()),
    ]
}

fn unsupported_by(spec: &JobSpec, features: &serde_json::Map<String, serde_json::Value>) -> bool {
    let has = |f: &str| features.get(f).and_then(|v| v.as_bool()).unwrap_or(false);
    required_features(spec)
        .iter()
        .any(|&(feature, required)| required && !has(feature))
}

/// Whether assigning a job of this spec, at this stage rank, writes and reads nothing
/// but the claim itself: any runner can run it (no feature required, so [`claim`] never
/// gives it back), it starts no deployment, and [`dependencies_of`] reads nothing for it.
/// Written with the job (`jobs.claims_alone`); on PostgreSQL such a claim is one
/// statement committed by itself, a round trip shorter than a transaction.
pub fn claims_alone(spec: &JobSpec, stage_idx: i32) -> bool {
    let no_dependencies = match dependencies_wanted(spec, stage_idx) {
        Wanted::Named(names) => names.is_empty(),
        Wanted::EarlierStages => false,
    };
    no_dependencies
        && spec.environment.is_none()
        && required_features(spec)
            .iter()
            .all(|&(_, required)| !required)
}

/// GitLab's matching rules (reference §20): runner type and project, protected refs,
/// tags ⊆ runner tags, untagged jobs only for `run_untagged` runners.
fn can_run(
    runner: &Runner,
    runner_tags: &[String],
    runner_projects: &[i64],
    job: &Candidate,
    project: &Project,
) -> bool {
    let scope = match runner.runner_type {
        RunnerType::Instance => project.shared_runners_enabled,
        RunnerType::Project => runner_projects.contains(&job.project_id),
        RunnerType::Group => false,
    };
    let job_tags = job.tags();
    scope
        && (runner.access_level != AccessLevel::RefProtected || job.protected)
        && job_tags.iter().all(|t| runner_tags.contains(t))
        && (!job_tags.is_empty() || runner.run_untagged)
}

/// A claimed job with its pipeline and dependencies.
type Claimed = (Job, Arc<Pipeline>, Vec<(Job, Option<JobArtifact>)>);

/// How long a runner has to acknowledge a job under two-phase commit
/// (`RUNNER_ACK_QUEUE_EXPIRY_TIME`).
pub const ACK_TIMEOUT: chrono::TimeDelta = chrono::TimeDelta::minutes(2);

pub struct Dispatcher {
    db: DbPool,
    pub queue: Arc<Queue>,
    two_phase_commit: bool,
    /// Searches that may run at once, and polls waiting for their turn
    /// ([`Dispatcher::request`]).
    admission: Admission,
}

/// The search's admission ([`Dispatcher::request`]): a few polls search at a time.
struct Admission {
    turns: Semaphore,
    /// How many turns there are.
    size: usize,
    /// Polls waiting for a turn now.
    waiting: std::sync::atomic::AtomicI64,
    /// Turns given so far.
    given: AtomicU64,
}

/// The search's admission as `/-/metrics` shows it ([`Dispatcher::searches`]).
pub struct Searches {
    /// Polls searching now.
    pub running: usize,
    /// Polls waiting for their turn now.
    pub waiting: i64,
    /// Searches so far.
    pub total: u64,
}

impl Admission {
    /// A turn to search, waiting at most until `until` (forever: `None`).
    async fn turn(
        &self,
        until: Option<tokio::time::Instant>,
    ) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Counting(&self.waiting);
        let turn = match until {
            None => self.turns.acquire().await.ok(),
            Some(until) => tokio::time::timeout_at(until, self.turns.acquire())
                .await
                .ok()?
                .ok(),
        }?;
        self.given.fetch_add(1, Ordering::Relaxed);
        Some(turn)
    }
}

/// What polls read of the candidates' pipelines, projects and CI/CD variables, kept
/// between polls: every poll meets the same oldest pending jobs, and so the same few
/// pipelines and projects.
///
/// A pipeline is kept for good (until the map is full and cleared): the payload takes
/// from it only what it keeps from its creation (commit, ref, source, variables), and the
/// claim sets its status with a statement of its own, not from the copy. Ids are never
/// reused (`AUTOINCREMENT`, sequences); one created on this instance is kept before its
/// jobs wake any poll ([`Queue::created`]). A project and a project's CI/CD variables
/// (with the instance's) can change: they are [`Kept`] a short while.
#[derive(Default)]
struct Seen {
    pipelines: std::sync::Mutex<HashMap<i64, Arc<Pipeline>>>,
    projects: Kept<Project>,
    variables: Kept<Vec<CiVariable>>,
}

/// How long a poll trusts a project or variables read by an earlier one.
const KEPT_FOR: Duration = Duration::from_secs(1);

/// Where the queue's reads start, as `id > after`. On PostgreSQL a claimed job's entry
/// stays in `index_jobs_queue` until the jobs table is vacuumed, and autovacuum waits for
/// a fifth of the table to change (200,000 changes with a million jobs). A read from the
/// head of the queue passes over every such entry: 200,000 of them made one read 0.6–0.9
/// ms and 550 buffers instead of 0.04 ms and 4. So a read notes the first pending job it
/// met, and the next reads start there. A job that becomes pending may sit below it (a
/// later stage's, a delayed one's, one queued again, a pipeline committed after a later
/// one), and every such change bumps the queue: a bump that knows the lowest job it may
/// have made pending lowers the floor to it ([`Queue::bump_from`]), any other (another
/// instance's notification, a change to runners) takes it back to the head. A read that
/// a bump came during sets nothing: it may have looked before the job was there. A
/// floor is trusted for [`FLOOR_FOR`] after the read from the head that began it, so a
/// job whose bump is lost (an instance stopping between its commit and its notification)
/// waits that much more at most. SQLite keeps no such entries; the floor costs it nothing
/// either.
#[derive(Default)]
struct Floor(std::sync::Mutex<FloorState>);

#[derive(Default)]
struct FloorState {
    /// Bumps so far: a read during which one came sets nothing.
    bumps: u64,
    /// When the read from the head of the queue that began the floor was made; none:
    /// there is no floor.
    since: Option<Instant>,
    /// No job with an id up to this one is pending and unassigned.
    after: i64,
    /// The jobs waiting for a runner, as far as this instance knows them ([`Known`]).
    known: Option<Known>,
    /// Jobs a poll of this instance is claiming right now ([`Lease`]).
    leased: HashSet<i64>,
}

/// The jobs waiting for a runner, as this instance knows them: a read saw the head of the
/// queue ([`Floor::saw`]), and every bump since carried the jobs it made pending
/// ([`Queue::bump_from`]): a new pipeline's first jobs, the next stage after a job
/// finished. Polls claim from these before they read the queue ([`Floor::hint`]): a
/// pickup right after a push costs one round trip fewer on PostgreSQL (the claim without
/// the candidates' read), and a backlog is read once for every batch of claims instead of
/// once for each. Any other bump (another instance's, a change to the runners, a job
/// queued again) forgets them.
///
/// When the read saw the whole queue, every job waiting is in the list; else every job
/// waiting up to the last it saw ([`Known::upto`]), and only those are claimed from it:
/// an older job is never passed over for a newer one the list holds.
///
/// A job taken here leaves the list; one taken on another instance or canceled stays until
/// a claim misses it. A poll that misses a job of the list reads the queue as without it
/// (the list was behind). When the list holds every job waiting, a poll that finds
/// nothing in it to run, or only jobs other polls here are claiming ([`Lease`]), answers
/// without a read: the polls coming back after each job and each hold would otherwise read
/// the queue about six times a job in a fleet, to find what the list says. A job pending
/// but missing from the list (a notification lost with an instance) waits for the next
/// read, at most for [`KNOWN_FOR`], refreshed every second while polls are held
/// ([`Dispatcher::survey`]); a claim that fails and rolls back leaves its jobs in the list.
struct Known {
    /// When the read was made.
    since: Instant,
    /// By id.
    jobs: Vec<Candidate>,
    /// None: every job waiting is in `jobs`. Else every one up to this id is: the read
    /// stopped there, and the jobs above it in the list came with bumps.
    upto: Option<i64>,
}

impl Known {
    /// At most [`KNOWN_MOST`] jobs: a longer list keeps its head, known up to its last.
    fn bound(&mut self) {
        if self.jobs.len() > KNOWN_MOST {
            self.jobs.truncate(KNOWN_MOST);
            let last = self.jobs.last().map_or(0, |j| j.id);
            self.upto = Some(self.upto.map_or(last, |upto| upto.min(last)));
        }
    }

    /// The jobs that may be claimed from the list: those up to [`Known::upto`].
    fn claimable(&self) -> &[Candidate] {
        match self.upto {
            None => &self.jobs,
            Some(upto) => &self.jobs[..self.jobs.partition_point(|j| j.id <= upto)],
        }
    }
}

/// How long the jobs a read saw are trusted (with the bumps since).
const KNOWN_FOR: Duration = Duration::from_secs(3);
/// The most jobs known.
const KNOWN_MOST: usize = 1024;

impl FloorState {
    /// A floor exists and is young enough to start reads above.
    fn fresh(&self) -> bool {
        self.since.is_some_and(|at| at.elapsed() < FLOOR_FOR)
    }
}

/// Where a read begins ([`Floor::start`]).
#[derive(Clone, Copy)]
struct ReadStart {
    bumps: u64,
    after: i64,
}

impl Floor {
    /// Where a read starts now: above the floor, or at the head of the queue (0) when
    /// there is none or it is too old.
    fn start(&self) -> ReadStart {
        let Ok(floor) = self.0.lock() else {
            return ReadStart { bumps: 0, after: 0 };
        };
        ReadStart {
            bumps: floor.bumps,
            after: if floor.fresh() { floor.after } else { 0 },
        }
    }

    /// A read that began at `start` met `first` as its first pending job.
    fn met(&self, start: ReadStart, first: i64) {
        let Ok(mut floor) = self.0.lock() else {
            return;
        };
        if floor.bumps != start.bumps {
            return; // a job may have become pending below `first` meanwhile
        }
        let fresh = floor.fresh();
        if start.after == 0 && !fresh {
            floor.since = Some(Instant::now());
            floor.after = 0;
        } else if !fresh {
            return; // began above a floor that has expired since
        }
        floor.after = floor.after.max(first - 1);
    }

    /// A bump: no job up to `after` became pending (0: any may have). `pending`: every
    /// job it made pending, if known; else the jobs known are forgotten.
    fn lower(&self, after: i64, pending: Option<Vec<Candidate>>) {
        if let Ok(mut floor) = self.0.lock() {
            floor.bumps += 1;
            floor.after = floor.after.min(after);
            match (pending, &mut floor.known) {
                (Some(pending), Some(known)) => {
                    known.jobs.extend(pending);
                    known.jobs.sort_unstable_by_key(|j| j.id);
                    known.jobs.dedup_by_key(|j| j.id);
                    known.bound();
                }
                _ => floor.known = None,
            }
        }
    }

    /// A read that began at `start` answered `jobs`, by id: the floor rises to the first,
    /// and, unless a bump came meanwhile, they are every job waiting up to the last
    /// (every job waiting when the read was `whole`: fewer than it asked for).
    fn saw(&self, start: ReadStart, jobs: &[Candidate], whole: bool) {
        if let Some(first) = jobs.first() {
            self.met(start, first.id);
        }
        let Ok(mut floor) = self.0.lock() else {
            return;
        };
        if floor.bumps != start.bumps {
            return;
        }
        let mut known = Known {
            since: Instant::now(),
            jobs: jobs[..jobs.len().min(KNOWN_MOST + 1)].to_vec(),
            upto: (!whole).then(|| jobs.last().map_or(0, |j| j.id)),
        };
        known.bound();
        floor.known = Some(known);
    }

    /// The first `n` jobs known to wait that may be claimed from the list ([`Known`]) and
    /// that no poll of this instance is claiming, while the list is fresh. None when there
    /// is no fresh list, or when it holds nothing to try and does not hold every job
    /// waiting (a read must look).
    fn hint(&self, n: usize) -> Option<Hint> {
        let floor = self.0.lock().ok()?;
        let known = floor.known.as_ref()?;
        if known.since.elapsed() >= KNOWN_FOR {
            return None;
        }
        let mut free = known
            .claimable()
            .iter()
            .filter(|j| !floor.leased.contains(&j.id));
        let jobs: Vec<Candidate> = free.by_ref().take(n).cloned().collect();
        let whole = known.upto.is_none() && free.next().is_none();
        if jobs.is_empty() && !whole {
            return None;
        }
        Some(Hint { jobs, whole })
    }

    /// The claim list a poll sends for `ids` (by id): those no other poll of this instance
    /// is claiming, the first of them marked as the caller's until the [`Lease`] answered
    /// is dropped. None when every one is being claimed. The rest stay free to others: a
    /// claim takes the first of its list still free, so polls searching together each take
    /// a different job, and one whose job went elsewhere (another instance) takes the next.
    fn lease<'a>(&self, queue: &'a Queue, ids: &[i64]) -> Option<(Lease<'a>, Vec<i64>)> {
        let Ok(mut floor) = self.0.lock() else {
            let lease = Lease {
                queue,
                id: None,
                settled: false,
            };
            return Some((lease, ids.to_vec())).filter(|_| !ids.is_empty());
        };
        let free: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|id| !floor.leased.contains(id))
            .collect();
        let first = *free.first()?;
        floor.leased.insert(first);
        let lease = Lease {
            queue,
            id: Some(first),
            settled: false,
        };
        Some((lease, free))
    }

    /// When the read the jobs known come from was made.
    fn known_since(&self) -> Option<Instant> {
        let floor = self.0.lock().ok()?;
        floor.known.as_ref().map(|k| k.since)
    }

    /// Jobs (`ids`, by id) taken by a runner, or no longer free: out of the list.
    fn taken(&self, ids: &[i64]) {
        if let Ok(mut floor) = self.0.lock() {
            if let Some(known) = &mut floor.known {
                known.jobs.retain(|j| ids.binary_search(&j.id).is_err());
            }
        }
    }
}

/// What [`Floor::hint`] offers a poll: jobs to try first, and whether they are every job
/// waiting that no other poll of this instance is claiming (then a poll that takes none
/// of them has nothing to read).
struct Hint {
    jobs: Vec<Candidate>,
    whole: bool,
}

/// The job one poll is claiming, first in its claim list: the other polls of this
/// instance leave it alone meanwhile ([`Floor::hint`] offers it to none, [`Floor::lease`]
/// puts it in no other list), instead of each sending a claim that can only miss. The
/// polls a new job wakes, and those coming back with an older version, all meet the same
/// first job: without it, a fleet sent about four claims for each job it took. A claim
/// that did not settle (an error, a request gone mid-claim) wakes one held poll on release,
/// since polls may have passed over the job meanwhile.
struct Lease<'a> {
    queue: &'a Queue,
    /// None: the list's lock was poisoned, nothing was marked.
    id: Option<i64>,
    /// The claim answered (whether it took a job or found its list taken).
    settled: bool,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let Some(id) = self.id else {
            return;
        };
        if let Ok(mut floor) = self.queue.floor.0.lock() {
            floor.leased.remove(&id);
        }
        if !self.settled {
            self.queue.pass_on_one();
        }
    }
}

/// How long reads start above a floor before one reads the queue from its head again.
const FLOOR_FOR: Duration = Duration::from_secs(1);
/// Entries kept of each kind; the map is cleared when it would grow beyond.
const SEEN_MOST: usize = 4096;

/// Rows that can change, kept by id for [`KEPT_FOR`] at most: a change on this instance
/// drops them at once, and one on another instance sharing the PostgreSQL database as
/// soon as its notification arrives ([`listen`]), so a change reaches the next polls at
/// once and the time bounds only a notification lost with its connection. A read that
/// began before a change is not kept (it may be older than the change).
struct Kept<T> {
    rows: std::sync::Mutex<HashMap<i64, (Instant, Arc<T>)>>,
    changes: AtomicU64,
}

impl<T> Default for Kept<T> {
    fn default() -> Self {
        Kept {
            rows: Default::default(),
            changes: AtomicU64::new(0),
        }
    }
}

impl<T> Kept<T> {
    fn get(&self, id: i64) -> Option<Arc<T>> {
        let kept = self.rows.lock().ok()?;
        let (at, row) = kept.get(&id)?;
        (at.elapsed() < KEPT_FOR).then(|| row.clone())
    }

    /// The row of `id`: kept, else read by `read` and kept (unless a change came while it
    /// was read); `None` when there is no such row.
    async fn get_or_read(
        &self,
        id: i64,
        read: impl std::future::Future<Output = ApiResult<Option<T>>>,
    ) -> ApiResult<Option<Arc<T>>> {
        if let Some(kept) = self.get(id) {
            return Ok(Some(kept));
        }
        let changes = self.changes();
        let read = read.await?.map(Arc::new);
        if let Some(row) = &read {
            self.keep(id, row.clone(), changes);
        }
        Ok(read)
    }

    /// How many changes this instance knew of: a row read before one is not kept.
    fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Keeps `row`, read when [`Kept::changes`] was `changes`; not if a change came since.
    fn keep(&self, id: i64, row: Arc<T>, changes: u64) {
        if let Ok(mut kept) = self.rows.lock() {
            if self.changes() != changes {
                return;
            }
            if kept.len() >= SEEN_MOST {
                kept.clear();
            }
            kept.insert(id, (Instant::now(), row));
        }
    }

    /// A change: the row of `id` (every row: `None`) is read again by the next poll.
    fn forget(&self, id: Option<i64>) {
        if let Ok(mut kept) = self.rows.lock() {
            self.changes.fetch_add(1, Ordering::AcqRel);
            match id {
                Some(id) => {
                    kept.remove(&id);
                }
                None => kept.clear(),
            }
        }
    }
}

impl Seen {
    fn pipeline(&self, id: i64) -> Option<Arc<Pipeline>> {
        self.pipelines.lock().ok()?.get(&id).cloned()
    }

    /// Keeps `pipeline` without its configuration's text (as large as a configuration may
    /// be; the payload does not read it): thousands kept cost a few MiB.
    fn keep_pipeline(&self, pipeline: Pipeline) -> Arc<Pipeline> {
        let pipeline = Arc::new(Pipeline {
            ci_config: String::new(),
            stages: String::new(),
            yaml_errors: None,
            ..pipeline
        });
        if let Ok(mut kept) = self.pipelines.lock() {
            if kept.len() >= SEEN_MOST {
                kept.clear();
            }
            kept.insert(pipeline.id, pipeline.clone());
        }
        pipeline
    }
}

impl Dispatcher {
    pub fn new(db: DbPool, queue: Arc<Queue>, two_phase_commit: bool) -> Dispatcher {
        // Half the connections for reads: the other half stays for log PATCHes, uploads
        // and the rest while thousands of polls are woken at once.
        let size = (db.read_capacity() / 2).max(1);
        Dispatcher {
            // Its reads of the queue and claims take the connections kept for them first
            // (PostgreSQL): a search does not queue behind every other request for one.
            db: db.for_queue(),
            queue,
            two_phase_commit,
            admission: Admission {
                turns: Semaphore::new(size),
                size,
                waiting: Default::default(),
                given: Default::default(),
            },
        }
    }

    /// Polls searching now, polls waiting for their turn, searches so far (`/-/metrics`).
    pub fn searches(&self) -> Searches {
        let admission = &self.admission;
        Searches {
            running: admission.size - admission.turns.available_permits().min(admission.size),
            waiting: admission.waiting.load(Ordering::Relaxed),
            total: admission.given.load(Ordering::Relaxed),
        }
    }

    /// Takes every turn to search: until the permit answered is dropped, polls that need
    /// a search wait for their turn as they do when the instance is busy (tests of what
    /// a poll does while it waits).
    pub async fn take_every_turn(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.admission
            .turns
            .acquire_many(self.admission.size as u32)
            .await
            .expect("the admission is never closed")
    }

    /// A project changed on this instance: polls read it again at once.
    pub fn project_changed(&self, project_id: i64) {
        self.queue.project_changed(project_id);
    }

    /// `POST /jobs/request` after authentication and the poll's hold (if any): find and
    /// assign a job. `deadline`: when the poll's hold ends, if it is held.
    pub async fn request(
        &self,
        runner: &Runner,
        manager: &RunnerManager,
        features: &serde_json::Map<String, serde_json::Value>,
        deadline: Option<tokio::time::Instant>,
    ) -> ApiResult<Polled> {
        if runner.paused {
            return Ok(Polled::Empty {
                last_update: self.queue.current(),
                searched: false,
            });
        }
        // Admission: when a fleet's polls are woken together (a backlog, a restart, their
        // holds ending at once), a few search at a time and the rest wait here, holding
        // no connection, instead of all queueing for the pool and failing with 503 after
        // its timeout. One that cannot search before its hold would have ended is
        // answered as a held one, so that no poll outlasts the hold much (without long
        // polling, each waits its turn). It answers the version of its arrival.
        let arrived = self.queue.current();
        let until =
            deadline.map(|deadline| deadline.max(tokio::time::Instant::now() + ADMISSION_MIN));
        let Some(_turn) = self.admission.turn(until).await else {
            return Ok(Polled::Empty {
                last_update: arrived,
                searched: false,
            });
        };
        // The version is read once the turn came, before looking: a job made pending
        // meanwhile bumps it, so the runner's next poll is not held and looks again. Read
        // before the wait instead, every bump during the wait would send the poll to
        // search again: when the wait grows longer than the time between new jobs (10 ms
        // at 100 jobs a second), every poll that finds nothing queues again instead of
        // being held, the held polls drain into the queue, and a poll woken for a new
        // job waits behind all of them (the PostgreSQL fleet bench's backlogs of
        // seconds, until the jobs stopped coming).
        let version = self.queue.current();
        // Boxed: the search's state is large and lives only while it runs; inline, every
        // held poll's future would carry room for it through the whole hold.
        match Box::pin(self.pick(runner, manager, features)).await? {
            (Some(assignment), _) => {
                // Other jobs were waiting: more held polls may take them.
                if assignment.queue_size > 1 {
                    self.queue.pass_on(2);
                }
                Ok(Polled::Assigned(Box::new(assignment)))
            }
            (None, others_waiting) => {
                // Jobs wait that this runner cannot run: other runners may.
                if others_waiting {
                    self.queue.pass_on(2);
                }
                Ok(Polled::Empty {
                    last_update: version,
                    searched: true,
                })
            }
        }
    }

    /// A job for the runner, if one is free; and whether pending jobs were met at all.
    async fn pick(
        &self,
        runner: &Runner,
        manager: &RunnerManager,
        features: &serde_json::Map<String, serde_json::Value>,
    ) -> ApiResult<(Option<Assignment>, bool)> {
        let runner_tags = runner.tags();
        let mut projects: HashMap<i64, Option<Arc<Project>>> = HashMap::new();
        let mut over_quota: HashMap<i64, bool> = HashMap::new();
        let mut pipelines: HashMap<i64, Arc<Pipeline>> = HashMap::new();
        let mut variables: HashMap<i64, Arc<Vec<CiVariable>>> = HashMap::new();
        let runner_projects: Vec<i64> = if runner.runner_type == RunnerType::Project {
            let mut db = self.db.read().await?;
            Project::for_runner(&mut db.conn(), runner.id)
                .await?
                .into_iter()
                .map(|p| p.id)
                .collect()
        } else {
            Vec::new()
        };
        let has = |f: &str| features.get(f).and_then(|v| v.as_bool()).unwrap_or(false);
        let terms = Arc::new(ClaimTerms {
            runner_id: runner.id,
            manager_id: manager.id,
            features: features.clone(),
            cancel_gracefully: has("cancel_gracefully"),
            two_phase: self.two_phase_commit && has("two_phase_job_commit"),
        });
        // Where the next read starts: from the floor for the first ([`Dispatcher::read_queue`]),
        // then above the last job read.
        let mut after = None;
        let claim_list = match self.db.backend() {
            crate::db::Backend::Sqlite => CLAIM_LIST,
            crate::db::Backend::Postgres => CLAIM_LIST_CONCURRENT,
        };
        let mut batch = 2 * claim_list as i64;
        // Pending jobs met that this runner may not run (not those others took first).
        let mut others_waiting = false;
        // The jobs this instance knows to be all that wait: tried first, without a read.
        let mut hinted = self.queue.floor.hint(batch as usize);
        // The list offered every job waiting that no other poll here is claiming: unless
        // a claim finds one of them gone (taken elsewhere, canceled: the list is behind),
        // a poll that takes none of them has nothing to read.
        let mut trusted = false;
        loop {
            let unread = hinted.is_some();
            let candidates = match hinted.take() {
                Some(hint) => {
                    trusted = hint.whole;
                    hint.jobs
                }
                None => {
                    let limit = batch;
                    let (candidates, start) = self.read_queue(after, limit).await?;
                    batch = (batch * 2).min(CANDIDATE_BATCH_MAX);
                    if after.is_none() {
                        let whole = (candidates.len() as i64) < limit;
                        self.queue.floor.saw(start, &candidates, whole);
                    }
                    let Some(last) = candidates.last() else {
                        return Ok((None, others_waiting));
                    };
                    after = Some(last.id);
                    candidates
                }
            };
            let queue_size = candidates.len() as i64;
            let mut runnable = Vec::new();
            for job in candidates {
                if let std::collections::hash_map::Entry::Vacant(slot) =
                    projects.entry(job.project_id)
                {
                    slot.insert(self.queue.project(&self.db, job.project_id).await?);
                }
                let Some(Some(project)) = projects.get(&job.project_id) else {
                    continue;
                };
                if !can_run(runner, &runner_tags, &runner_projects, &job, project) {
                    others_waiting = true;
                    continue;
                }
                // Only projects with a limit cost a look at their usage (no connection
                // is taken for the others).
                if let (RunnerType::Instance, Some(limit)) =
                    (runner.runner_type, project.minutes_limit())
                {
                    if let std::collections::hash_map::Entry::Vacant(slot) =
                        over_quota.entry(job.project_id)
                    {
                        let mut db = self.db.read().await?;
                        slot.insert(quota_exceeded(&mut db.conn(), job.project_id, limit).await?);
                    }
                    if over_quota.get(&job.project_id) == Some(&true) {
                        self.refuse_over_quota(&job).await?;
                        others_waiting = true;
                        continue;
                    }
                }
                runnable.push(job);
            }
            // Every poll meets the same oldest jobs; a claim takes the first of a few that
            // is still free, so a runner that loses one race takes the next in the same
            // transaction instead of spending one per job tried.
            for chunk in runnable.chunks(claim_list) {
                let ids: Vec<i64> = chunk.iter().map(|j| j.id).collect();
                let Some((mut lease, ids)) = self.queue.floor.lease(&self.queue, &ids) else {
                    continue; // all being claimed by other polls here
                };
                let chunk: Vec<&Candidate> = chunk.iter().filter(|j| ids.contains(&j.id)).collect();
                // Their pipelines are read before, outside the one writer: what the payload
                // takes from a pipeline does not change while its jobs are pending.
                let mut unknown: Vec<i64> = chunk
                    .iter()
                    .map(|j| j.pipeline_id)
                    .filter(|id| !pipelines.contains_key(id))
                    .collect();
                unknown.dedup(); // candidates come by id, so a pipeline's jobs are adjacent
                unknown.retain(|id| match self.queue.seen.pipeline(*id) {
                    Some(pipeline) => {
                        pipelines.insert(*id, pipeline);
                        false
                    }
                    None => true,
                });
                if !unknown.is_empty() {
                    // One lookup by id each (a prepared statement), not an `IN` list.
                    crate::db::inline(async {
                        let mut db = self.db.read().await?;
                        for id in unknown {
                            if let Some(pipeline) = Pipeline::find(&mut db.conn(), id).await? {
                                pipelines.insert(id, self.queue.seen.keep_pipeline(pipeline));
                            }
                        }
                        Ok::<_, ApiError>(())
                    })
                    .await?;
                }
                // And their projects' CI/CD variables, so that the answer needs nothing of
                // the database once the claim commits (on PostgreSQL a round trip fewer in
                // the claim, and none when they are kept).
                for job in &chunk {
                    if let std::collections::hash_map::Entry::Vacant(slot) =
                        variables.entry(job.project_id)
                    {
                        slot.insert(self.queue.ci_variables(&self.db, job.project_id).await?);
                    }
                }
                let tried = ids.clone();
                let theirs_of = || -> HashMap<i64, Arc<Pipeline>> {
                    chunk
                        .iter()
                        .filter_map(|j| pipelines.get(&j.pipeline_id))
                        .map(|p| (p.id, p.clone()))
                        .collect()
                };
                let theirs = theirs_of();
                let token = NewToken::generate(JOB_TOKEN_PREFIX);
                let digest = token.digest.as_bytes().to_vec();
                let terms = terms.clone();
                // Committed by itself, a claim cannot be given back: only when nothing
                // after it can fail.
                let alone = self.db.backend() == crate::db::Backend::Postgres
                    && chunk
                        .iter()
                        .all(|j| j.claims_alone && theirs.contains_key(&j.pipeline_id));
                let (mut claimed, mut became_pending) = if alone {
                    let terms = terms.clone();
                    self.db
                        .on_postgres(move |c| Box::pin(claim_alone(c, ids, theirs, terms, digest)))
                        .await?
                } else {
                    let terms = terms.clone();
                    self.db
                        .write_transaction(move |tx| {
                            Box::pin(claim(tx, ids, theirs, terms, digest, Locked::Skip))
                        })
                        .await?
                };
                if claimed.is_none() && self.db.backend() == crate::db::Backend::Postgres {
                    // The claim passed over rows other transactions hold. Those of its jobs
                    // still free were held by another claim not yet committed (waited for,
                    // they are then found taken) or by something else: a job's end holds a
                    // busy job of its stage (`FOR SHARE`) until it commits. Taken for gone,
                    // such a job was left out of the jobs known, every poll answered 204
                    // and was held, and nothing woke them: the job waited until some other
                    // job became pending (the cycle bench's drains ended one job short).
                    // The claim waits for those rows instead; the transactions holding
                    // them are short.
                    let still = {
                        let mut db = self.db.read().await?;
                        Job::still_waiting(&mut db.conn(), &tried).await?
                    };
                    if !still.is_empty() {
                        self.queue.waited_claims.fetch_add(1, Ordering::Relaxed);
                        let (theirs, digest) = (theirs_of(), token.digest.as_bytes().to_vec());
                        let waited;
                        (claimed, waited) = self
                            .db
                            .write_transaction(move |tx| {
                                Box::pin(claim(tx, still, theirs, terms, digest, Locked::Wait))
                            })
                            .await?;
                        became_pending |= waited;
                    }
                }
                lease.settled = true;
                if became_pending {
                    self.queue.bump();
                }
                let Some((job, pipeline, dependencies)) = claimed else {
                    self.queue.floor.taken(&tried);
                    trusted = false;
                    continue; // all taken by other runners meanwhile
                };
                self.queue.floor.taken(&[job.id]);
                drop(lease);
                if unread {
                    self.queue.unread_claims.fetch_add(1, Ordering::Relaxed);
                }
                let (Some(Some(project)), Some(variables)) = (
                    projects.get(&job.project_id),
                    variables.get(&job.project_id),
                ) else {
                    return Err(ApiError::Conflict);
                };
                return Ok((
                    Some(Assignment {
                        job,
                        pipeline,
                        project: project.clone(),
                        token: token.token,
                        dependencies,
                        variables: variables.clone(),
                        queue_size,
                    }),
                    true,
                ));
            }
            if trusted {
                return Ok((None, others_waiting));
            }
        }
    }

    /// Up to `limit` jobs waiting for a runner above `after` ([`Job::candidates_after`]),
    /// or above the floor (`None`), with where the read started ([`Floor::saw`]); counted
    /// in [`Queue::reads`].
    ///
    /// Where a read from the floor starts, with the bumps so far, is taken once the
    /// connection is in hand: only a bump during the statement's round trip keeps the read
    /// from setting the floor and the jobs known, not one while it waited for a
    /// connection. Taken before the wait, a fleet whose pool was busy waited longer than
    /// the time between new jobs (10 ms at 100 jobs a second): no read was kept, every
    /// search read the queue again, and the searches, slower still, fell behind the polls
    /// (the PostgreSQL fleet's backlogs, measured with a count of connection holders).
    async fn read_queue(
        &self,
        after: Option<i64>,
        limit: i64,
    ) -> ApiResult<(Vec<Candidate>, ReadStart)> {
        self.queue.reads.fetch_add(1, Ordering::Relaxed);
        crate::db::inline(async {
            let mut db = self.db.read().await?;
            let start = self.queue.floor.start();
            let after = after.unwrap_or(start.after);
            let jobs = Job::candidates_after(&mut db.conn(), after, limit).await?;
            Ok((jobs, start))
        })
        .await
    }

    /// While polls are held, reads the queue whole when the jobs known are older than a
    /// second ([`Known`]): a pipeline pushed to an idle fleet is then claimed without a
    /// read, and a job missing from the list waits for this at most. Called every second.
    pub async fn survey(&self) -> ApiResult<()> {
        let young = self
            .queue
            .floor
            .known_since()
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1));
        if self.queue.held() == 0 || young {
            return Ok(());
        }
        let limit = KNOWN_MOST as i64 + 1;
        let (jobs, start) = self.read_queue(None, limit).await?;
        self.queue
            .floor
            .saw(start, &jobs, (jobs.len() as i64) < limit);
        Ok(())
    }

    /// A job of a project over its CI minutes quota, met by an instance runner: not picked.
    /// If no runner of the project's own could take it, it fails `ci_quota_exceeded`, as
    /// GitLab drops the builds only instance runners could run; its pipeline moves on.
    async fn refuse_over_quota(&self, job: &Candidate) -> ApiResult<()> {
        let own_runner = {
            let mut db = self.db.read().await?;
            CiMinutesUsage::has_own_runner(&mut db.conn(), job.project_id).await?
        };
        if own_runner {
            return Ok(());
        }
        let mut db = self.db.write().await?;
        let job_id = job.id;
        let became_pending = crate::transaction!(&mut db.conn(), |tx| {
            // Not one a runner took meanwhile (under two-phase commit it stays pending).
            let Some(job) = Job::find(tx, job_id)
                .await?
                .filter(|j| j.runner_id.is_none())
            else {
                return Ok::<bool, ApiError>(false);
            };
            if !fail_pending(tx, job_id, "ci_quota_exceeded").await? {
                return Ok(false);
            }
            Ok(crate::service::pipelines::process(tx, job.pipeline_id)
                .await?
                .became_pending)
        })?;
        if became_pending {
            self.queue.bump();
        }
        Ok(())
    }
}

/// Assigns the first of `ids` still pending to the runner, at most once over all runners
/// and server instances, and reads the job's dependencies in the same transaction (the
/// caller read its pipeline, project and variables before): once it commits, the answer
/// needs the database no more, so a database lost right after cannot leave the job
/// assigned to a runner that was never told. A job needing a feature the runner lacks is
/// failed on the way (`runner_unsupported`, as GitLab drops it) and its pipeline moves on
/// (answered true when that made jobs pending). Runs as a hot write transaction
/// ([`DbPool::write_transaction`]), so it owns what it uses.
async fn claim(
    tx: &mut Conn<'_>,
    mut ids: Vec<i64>,
    pipelines: HashMap<i64, Arc<Pipeline>>,
    terms: Arc<ClaimTerms>,
    digest: Vec<u8>,
    mut locked: Locked,
) -> ApiResult<(Option<Claimed>, bool)> {
    let at = now();
    let to = terms.assignee(&digest, at);
    let mut became_pending = false;
    loop {
        // PostgreSQL takes the first free job and starts its pipeline in one statement, and
        // checks after that the runner can run it (rarely not: then it is taken back in this
        // same transaction); SQLite reads the first free job and takes it once checked.
        let (job_id, pipeline_id, spec, taken) = match tx {
            Conn::Postgres(c) => {
                let Some(job) = Job::claim_first_of(c, &ids, &to, locked).await? else {
                    return Ok((None, became_pending));
                };
                (job.id, job.pipeline_id, job.spec(), Some(job))
            }
            Conn::Sqlite(_) => {
                let Some((job_id, pipeline_id, options)) = Job::first_pending_of(tx, &ids).await?
                else {
                    return Ok((None, became_pending));
                };
                let spec: JobSpec = serde_json::from_str(&options).unwrap_or_default();
                (job_id, pipeline_id, spec, None)
            }
        };
        ids.retain(|id| *id != job_id);
        if unsupported_by(&spec, &terms.features) {
            // A pipeline the claim started stays started, as when a job fails: its status
            // comes from its jobs' again.
            Job::drop_unassigned(tx, job_id, "runner_unsupported", at).await?;
            became_pending |= crate::service::pipelines::process(tx, pipeline_id)
                .await?
                .became_pending;
            // Holding the pipeline's row now, this transaction waits for no other's row
            // (a job's end may be waiting for that pipeline): the rest of the list is
            // claimed skipping the rows held.
            locked = Locked::Skip;
            continue;
        }
        let job = match taken {
            Some(job) => job,
            None => {
                let Some(job) = Job::claim(tx, job_id, &to).await? else {
                    continue;
                };
                // A job that starts running makes its pipeline running (no other job moves
                // on because one starts, so the whole pipeline need not be processed
                // again). The statement changes nothing if it already runs; the poll's
                // copy of the pipeline may be older than its status (a retry makes a
                // finished pipeline pending again). Under two-phase commit the job is
                // still pending: nothing changes.
                if job.status == JobStatus::Running {
                    Pipeline::start(tx, pipeline_id, at).await?;
                }
                job
            }
        };
        let pipeline = pipelines
            .get(&pipeline_id)
            .cloned()
            .ok_or(ApiError::Conflict)?;
        // A deploying job that starts makes its deployment running.
        if job.status == JobStatus::Running && spec.environment.is_some() {
            crate::db::models::environment::Deployment::start_for_job(tx, job.id, at).await?;
        }
        let dependencies = dependencies_of(tx, &job).await?;
        return Ok((Some((job, pipeline, dependencies)), became_pending));
    }
}

/// [`claim`] on PostgreSQL for jobs that all claim alone ([`claims_alone`]): the first
/// still free is taken, and its pipeline started, by one statement that commits by
/// itself; nothing else is written or read, so there is nothing to give back.
async fn claim_alone(
    conn: &mut diesel_async::AsyncPgConnection,
    ids: Vec<i64>,
    pipelines: HashMap<i64, Arc<Pipeline>>,
    terms: Arc<ClaimTerms>,
    digest: Vec<u8>,
) -> ApiResult<(Option<Claimed>, bool)> {
    let at = now();
    let to = terms.assignee(&digest, at);
    let Some(job) = Job::claim_first_of(conn, &ids, &to, Locked::Skip).await? else {
        return Ok((None, false));
    };
    let pipeline = pipelines
        .get(&job.pipeline_id)
        .cloned()
        .ok_or(ApiError::Conflict)?;
    Ok((Some((job, pipeline, Vec::new())), false))
}

/// Fails a pending job no runner took yet for `reason`; false if it was no longer pending
/// and free. The caller processes its pipeline.
async fn fail_pending(tx: &mut Conn<'_>, job_id: i64, reason: &str) -> ApiResult<bool> {
    let at = now();
    let changes = JobChanges {
        status: Some(JobStatus::Failed),
        failure_reason: Some(Some(reason.into())),
        finished_at: Some(Some(at)),
        updated_at: Some(at),
        ..Default::default()
    };
    Ok(Job::transition(tx, job_id, &[JobStatus::Pending], &changes).await?)
}

/// The ids handed to one claim: a loser of one race takes the next without a new
/// transaction; few enough that the lookup stays small.
const CLAIM_LIST: usize = 16;
/// The same on PostgreSQL, where claims run side by side (`SKIP LOCKED`) rather than one
/// after the other: a list shorter than the number of runners polling at once is often
/// taken whole by the others before its claim runs, and the claim is tried again.
const CLAIM_LIST_CONCURRENT: usize = 64;

/// Who claims, and with what features.
struct ClaimTerms {
    runner_id: i64,
    manager_id: i64,
    features: serde_json::Map<String, serde_json::Value>,
    cancel_gracefully: bool,
    two_phase: bool,
}

impl ClaimTerms {
    /// The assignment a claim at `at` writes, with the digest of the job token sent.
    fn assignee<'a>(&self, digest: &'a [u8], at: chrono::NaiveDateTime) -> Assignee<'a> {
        Assignee {
            runner_id: self.runner_id,
            manager_id: self.manager_id,
            token_digest: digest,
            cancel_gracefully: self.cancel_gracefully,
            at,
            ack_deadline: self.two_phase.then(|| at + ACK_TIMEOUT),
        }
    }
}

/// Which jobs a job's dependencies are looked for among ([`dependencies_wanted`]).
enum Wanted {
    /// The latest tries of these names (none: nothing is read).
    Named(Vec<String>),
    /// The latest tries of every job of the earlier stages.
    EarlierStages,
}

/// The dependencies a job of `spec` at stage rank `stage_idx` downloads: those named in
/// `dependencies`, else those it `needs` with `artifacts: true`, else every job of earlier
/// stages. A job of its pipeline's first stage with jobs has no earlier one (stages are
/// numbered by that rank, `rank_stages`): no round trip to learn that.
fn dependencies_wanted(spec: &JobSpec, stage_idx: i32) -> Wanted {
    match (&spec.dependencies, &spec.needs) {
        (Some(names), _) => Wanted::Named(names.clone()),
        (None, Some(needs)) => Wanted::Named(
            needs
                .iter()
                .filter(|n| n.artifacts)
                .map(|n| n.job.clone())
                .collect(),
        ),
        (None, None) if stage_idx <= 0 => Wanted::Named(Vec::new()),
        (None, None) => Wanted::EarlierStages,
    }
}

/// The jobs whose artifacts `job` downloads: those named in `dependencies`, else those it
/// `needs` with `artifacts: true`, else every job of earlier stages (latest tries); each
/// with its archive artifact, if it has one.
pub async fn dependencies_of(
    conn: &mut Conn<'_>,
    job: &Job,
) -> ApiResult<Vec<(Job, Option<JobArtifact>)>> {
    // Only the jobs that can be dependencies are read, not the whole pipeline: this runs
    // in the transaction that assigns the job.
    let chosen: Vec<Job> = match dependencies_wanted(&job.spec(), job.stage_idx) {
        Wanted::Named(names) => Job::latest_named(conn, job.pipeline_id, &names).await?,
        Wanted::EarlierStages => {
            Job::latest_before_stage(conn, job.pipeline_id, job.stage_idx).await?
        }
    };
    let chosen: Vec<Job> = chosen.into_iter().filter(|j| j.id != job.id).collect();
    let ids: Vec<i64> = chosen.iter().map(|j| j.id).collect();
    let archives: Vec<JobArtifact> = JobArtifact::for_jobs(conn, &ids)
        .await?
        .into_iter()
        .filter(|a| a.file_type == "archive")
        .collect();
    Ok(chosen
        .into_iter()
        .map(|j| {
            let archive = archives.iter().find(|a| a.job_id == j.id).cloned();
            (j, archive)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_from_the_head_sets_the_floor_and_a_bump_takes_it_back() {
        let queue = Queue::new(Duration::from_secs(50));
        let start = queue.floor.start();
        assert_eq!(start.after, 0, "no read yet: from the head");
        queue.floor.met(start, 100);
        let next = queue.floor.start();
        assert_eq!(
            next.after, 99,
            "the next read starts at the first pending job met"
        );
        // A later read from the floor meets a later first job: the floor rises.
        queue.floor.met(next, 140);
        assert_eq!(queue.floor.start().after, 139);
        // One that began earlier and met an earlier job does not lower it: nothing below
        // 140 was pending when the later read looked, with no bump since.
        queue.floor.met(start, 120);
        assert_eq!(queue.floor.start().after, 139);
        // A job became pending, anywhere: from the head again.
        queue.bump_local();
        assert_eq!(queue.floor.start().after, 0);
        queue.floor.met(queue.floor.start(), 200);
        queue.bump_all_local();
        assert_eq!(queue.floor.start().after, 0);
    }

    #[test]
    fn a_bump_from_a_job_lowers_the_floor_to_it_only() {
        let queue = Queue::new(Duration::from_secs(50));
        queue.floor.met(queue.floor.start(), 100);
        let version = queue.current();
        queue.bump_from(150, None);
        assert_ne!(queue.current(), version, "held polls see the bump");
        assert_eq!(
            queue.floor.start().after,
            99,
            "a job from 150 on is above the floor"
        );
        queue.bump_from(40, None);
        assert_eq!(queue.floor.start().after, 39, "job 40 may be pending now");
    }

    #[test]
    fn a_read_a_bump_came_during_sets_no_floor() {
        let queue = Queue::new(Duration::from_secs(50));
        let start = queue.floor.start();
        queue.bump_from(500, None);
        // The read may have looked before job 500 was committed.
        queue.floor.met(start, 700);
        assert_eq!(queue.floor.start().after, 0);
        // Nor one that began above a floor a bump took back since.
        queue.floor.met(queue.floor.start(), 50);
        let above = queue.floor.start();
        assert_eq!(above.after, 49);
        queue.bump_local();
        queue.floor.met(above, 80);
        assert_eq!(queue.floor.start().after, 0);
    }

    fn candidate(id: i64) -> Candidate {
        Candidate {
            id,
            pipeline_id: 1,
            project_id: 1,
            tag_list: "[]".into(),
            protected: false,
            claims_alone: true,
        }
    }

    /// The ids a poll would try first; `Some([])`: the list says nothing waits (no read).
    fn hinted(queue: &Queue) -> Option<Vec<i64>> {
        let hint = queue.floor.hint(100)?;
        Some(hint.jobs.iter().map(|j| j.id).collect())
    }

    #[test]
    fn a_whole_read_and_the_bumps_carrying_their_jobs_are_the_hint() {
        let queue = Queue::new(Duration::from_secs(50));
        assert_eq!(hinted(&queue), None, "nothing read yet");
        // One that saw it whole: those are every job waiting.
        queue.floor.saw(queue.floor.start(), &[candidate(5)], true);
        assert_eq!(hinted(&queue), Some(vec![5]));
        // A new pipeline's jobs, carried by its bump, join them in order.
        queue.bump_from(9, Some(vec![candidate(10), candidate(9)]));
        assert_eq!(hinted(&queue), Some(vec![5, 9, 10]));
        let first_two = queue.floor.hint(2).expect("known");
        assert_eq!(
            (first_two.jobs.len(), first_two.whole),
            (2, false),
            "the first n"
        );
        // Taken here, or missed by a claim: out of the list.
        queue.floor.taken(&[5, 10]);
        assert_eq!(hinted(&queue), Some(vec![9]));
        queue.floor.taken(&[9]);
        assert_eq!(
            hinted(&queue),
            Some(vec![]),
            "every job known taken: nothing waits, and a poll reads nothing"
        );
        // Still whole: the next pipeline's jobs are the hint.
        queue.bump_from(20, Some(vec![candidate(20)]));
        assert_eq!(hinted(&queue), Some(vec![20]));
    }

    #[test]
    fn a_bump_without_its_jobs_forgets_the_hint() {
        for bump in [
            (|q: &Queue| q.bump_from(30, None)) as fn(&Queue),
            |q| q.bump_local(),
            |q| q.bump_all_local(),
        ] {
            let queue = Queue::new(Duration::from_secs(50));
            queue.floor.saw(queue.floor.start(), &[candidate(5)], true);
            bump(&queue);
            assert_eq!(hinted(&queue), None);
            // Nor does a bump carrying its jobs bring it back: a read must see all again.
            queue.bump_from(40, Some(vec![candidate(40)]));
            assert_eq!(hinted(&queue), None);
        }
    }

    #[test]
    fn a_read_a_bump_came_during_is_no_hint() {
        let queue = Queue::new(Duration::from_secs(50));
        let start = queue.floor.start();
        queue.bump_from(7, Some(vec![candidate(7)]));
        // Begun before job 7 was committed, it may not have seen it.
        queue.floor.saw(start, &[], true);
        assert_eq!(hinted(&queue), None);
    }

    #[test]
    fn a_read_of_the_queue_s_head_is_claimed_from_up_to_its_last_job() {
        let queue = Queue::new(Duration::from_secs(50));
        // A read that stopped at job 30: every job waiting up to 30 is known.
        queue
            .floor
            .saw(queue.floor.start(), &[candidate(10), candidate(30)], false);
        assert_eq!(hinted(&queue), Some(vec![10, 30]));
        // A new pipeline's job 50 is kept, but job 40 may wait unseen: not claimed before.
        queue.bump_from(50, Some(vec![candidate(50), candidate(20)]));
        assert_eq!(hinted(&queue), Some(vec![10, 20, 30]));
        queue.floor.taken(&[10, 20, 30]);
        assert_eq!(
            hinted(&queue),
            None,
            "the head claimed: the next poll reads"
        );
        // A read of the whole queue past it: job 50 is claimed from the list again.
        queue
            .floor
            .saw(queue.floor.start(), &[candidate(40), candidate(50)], true);
        assert_eq!(hinted(&queue), Some(vec![40, 50]));

        // More jobs than are kept: the list keeps its head, known up to its last.
        let many: Vec<Candidate> = (1..=KNOWN_MOST as i64 + 5).map(candidate).collect();
        queue.floor.saw(queue.floor.start(), &many, true);
        let first = queue.floor.hint(usize::MAX).expect("the head known");
        assert!(!first.whole, "jobs past the list may wait");
        assert_eq!(first.jobs.len(), KNOWN_MOST);
        assert_eq!(first.jobs.last().map(|j| j.id), Some(KNOWN_MOST as i64));
        // Grown by a bump beyond what is kept: the same.
        queue
            .floor
            .saw(queue.floor.start(), &many[..KNOWN_MOST - 1], true);
        queue.bump_from(5000, Some(vec![candidate(5001), candidate(5000)]));
        let ids: Vec<i64> = queue
            .floor
            .hint(usize::MAX)
            .expect("known")
            .jobs
            .iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(ids.len(), KNOWN_MOST);
        assert_eq!(
            ids.last(),
            Some(&5000),
            "5001 may not be claimed before a job below it"
        );
    }

    #[test]
    fn a_job_being_claimed_is_offered_to_no_other_poll() {
        let queue = Queue::new(Duration::from_secs(50));
        queue
            .floor
            .saw(queue.floor.start(), &[candidate(5), candidate(6)], true);
        let (mut first, list) = queue.floor.lease(&queue, &[5, 6]).expect("free");
        assert_eq!(list, [5, 6], "job 5 its own, job 6 if 5 went elsewhere");
        // A second poll meanwhile is offered job 6 only, as all that is left to try.
        let hint = queue.floor.hint(100).expect("known");
        assert_eq!(hint.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), [6]);
        assert!(hint.whole);
        // One that read the queue and met both claims job 6 only.
        let (second, list) = queue.floor.lease(&queue, &[5, 6]).expect("6 is free");
        assert_eq!(list, [6]);
        // A third is offered nothing, and the list still holds every job waiting: it
        // answers without reading the queue.
        let hint = queue.floor.hint(100).expect("known");
        assert!(hint.jobs.is_empty() && hint.whole);
        assert!(queue.floor.lease(&queue, &[5, 6]).is_none());
        // A claim answered: its job is offered again unless taken.
        first.settled = true;
        queue.floor.taken(&[5]);
        drop(first);
        drop(second);
        assert_eq!(hinted(&queue), Some(vec![6]));
    }

    #[tokio::test]
    async fn a_claim_given_up_wakes_a_held_poll() {
        let queue = Arc::new(Queue::new(Duration::from_secs(50)));
        queue.floor.saw(queue.floor.start(), &[candidate(5)], true);
        let held = tokio::spawn({
            let queue = queue.clone();
            let seen = queue.current();
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(50);
                queue.wait_for_change(&seen, Some(deadline)).await
            }
        });
        while queue.held() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // A poll passed over job 5 while it was leased; the claim never answered (its
        // request went away): a held poll looks for it.
        drop(queue.floor.lease(&queue, &[5]));
        let woken = tokio::time::timeout(Duration::from_secs(5), held)
            .await
            .expect("the held poll is woken")
            .expect("join");
        assert!(woken, "woken to search");
        assert_eq!(hinted(&queue), Some(vec![5]), "offered again");
    }

    #[tokio::test]
    async fn closed_resolves_on_close_only() {
        let queue = Arc::new(Queue::new(Duration::from_secs(50)));
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.closed().await }
        });
        // Bumps wake waiters but are not a close.
        queue.bump_local();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        queue.close();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("closed() resolves after close()")
            .expect("join");
        // Once closed, it resolves at once.
        tokio::time::timeout(Duration::from_secs(5), queue.closed())
            .await
            .expect("already closed");
    }
}
