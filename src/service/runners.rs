//! Runner lifecycle: authentication (with a short-lived cache keyed by token digest),
//! heartbeats of runners and runner managers, registration, token reset, deletion.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use dashmap::DashMap;
use serde_json::{json, Map, Value};

use crate::auth::tokens::{runner_token_prefix, NewToken, TokenDigest, MAX_TOKEN_BYTES};
use crate::db::enums::{AccessLevel, CreationState, RegistrationType, RunnerType};
use crate::db::models::{
    later, now, ManagerHeartbeat, NewRunner, Project, Runner, RunnerChanges, RunnerManager,
};
use crate::db::DbPool;
use crate::error::{ApiError, ApiResult};
use crate::transaction;

/// How long an authenticated runner is served from memory before it is read again. Any
/// change made through this instance drops the entry at once; a change made by another
/// instance (PostgreSQL, several servers) is seen within this time.
const AUTH_CACHE_TTL: Duration = Duration::from_secs(10);

/// How often the memo of polls is swept at most.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// `Ci::Runner::TAG_LIST_MAX_LENGTH`.
const MAX_TAGS: usize = 50;
/// Minimum `maximum_timeout` GitLab accepts: 10 minutes.
const MIN_MAXIMUM_TIMEOUT: i64 = 600;

/// Manager id kept for runners that send no `system_id` (`Ci::RunnerManager::LEGACY_SYSTEM_XID`).
pub const LEGACY_SYSTEM_XID: &str = "<legacy>";

/// Executor names GitLab maps to `executor_type`; anything else is stored as `unknown`.
const EXECUTOR_TYPES: &[&str] = &[
    "shell",
    "docker",
    "docker-windows",
    "docker+machine",
    "kubernetes",
    "docker-autoscaler",
    "instance",
    "custom",
    "ssh",
    "parallels",
    "virtualbox",
    "docker-ssh",
    "docker-ssh+machine",
];

/// The settings a runner is created with (legacy registration or the admin API).
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    pub runner_type: RunnerType,
    pub name: Option<String>,
    pub description: String,
    pub maintenance_note: Option<String>,
    pub tags: Vec<String>,
    pub run_untagged: bool,
    pub locked: bool,
    pub paused: bool,
    pub access_level: AccessLevel,
    pub maximum_timeout: Option<i64>,
    pub project_id: Option<i64>,
}

impl Default for RunnerSettings {
    fn default() -> Self {
        RunnerSettings {
            runner_type: RunnerType::Instance,
            name: None,
            description: String::new(),
            maintenance_note: None,
            tags: Vec::new(),
            run_untagged: true,
            locked: false,
            paused: false,
            access_level: AccessLevel::NotProtected,
            maximum_timeout: None,
            project_id: None,
        }
    }
}

/// A runner with its token in clear: answered once, never stored.
pub struct CreatedRunner {
    pub runner: Runner,
    pub token: String,
}

struct Cached {
    runner: Arc<Runner>,
    fetched: Instant,
}

/// What a job request's body came to when it last went the whole way (parsed, validated,
/// authenticated, its heartbeat recorded or found not due): the same bytes from the same
/// address mean the same runner and manager, with the same `info`. Good only while the
/// cache entries it was read from are the ones still cached (see [`Runners::recall_poll`]).
/// Kept as digests, like every token the server holds: not the body, which has the token.
struct PollMemo {
    body: [u8; 32],
    ip: Option<std::net::IpAddr>,
    digest: TokenDigest,
    runner: Arc<Runner>,
    manager: (i64, String),
    /// When the manager entry this was checked against was cached.
    manager_cached: Instant,
    last_update: Option<String>,
    at: Instant,
}

/// A job request recognised by [`Runners::recall_poll`].
pub struct RecalledPoll {
    pub runner: Arc<Runner>,
    /// The digest of its runner token (for the rate limit).
    pub token: TokenDigest,
    pub last_update: Option<String>,
}

/// SHA-256 of a job request's body, and the map key taken from it.
fn body_digest(body: &[u8]) -> ([u8; 32], u64) {
    use sha2::{Digest, Sha256};
    let digest: [u8; 32] = Sha256::digest(body).into();
    let mut key = [0; 8];
    key.copy_from_slice(&digest[..8]);
    (digest, u64::from_le_bytes(key))
}

/// (runner id, runner manager id, client address) of a job route's contacts.
type JobContactKey = (Option<i64>, Option<i64>, Option<String>);

/// How many [`Runners::heartbeat_job`] decisions are kept before the stale ones are dropped.
const JOB_CONTACTS_KEPT: usize = 4096;

pub struct Runners {
    db: DbPool,
    cache: DashMap<TokenDigest, Cached>,
    /// Runner managers as last written or read, by (runner id, system_xid), kept for the
    /// heartbeat interval (see [`Runners::manager_ttl`]): a heartbeat that would change
    /// nothing and is not due is answered from here, without the database (the empty-poll
    /// hot path).
    managers: DashMap<(i64, String), (Arc<RunnerManager>, Instant)>,
    /// Job requests answered lately, by their exact body and address (see [`PollMemo`]).
    polls: DashMap<u64, PollMemo>,
    /// When [`Runners::polls`] was last swept of old entries.
    polls_swept: std::sync::Mutex<Instant>,
    /// When the contacts of a job route are next due, by (runner id, manager id, client
    /// address), from the times last read or written: until then
    /// [`Runners::heartbeat_job`] decides without reading them (a log PATCH's hot path).
    job_contacts: DashMap<JobContactKey, NaiveDateTime>,
    /// When this instance last wrote a runner's `contacted_at` from a poll: the polls of
    /// its other machines arriving meanwhile (a fleet starting, holds ending together)
    /// take that write as theirs instead of each writing the same row again (on
    /// PostgreSQL each would wait for the row's lock holding a connection).
    runners_touched: DashMap<i64, NaiveDateTime>,
    heartbeat_interval: Duration,
    token_ttl: Option<Duration>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Bumped when a runner changes, so that its polls look again.
    queue: Arc<crate::queue::Queue>,
}

/// How old a contact stored at `contacted` must be to be written again: a point between
/// 40/55 of the heartbeat interval and all of it, as GitLab persists a runner's or a
/// machine's contact once it is older than a random age of 40–55 minutes
/// (`UPDATE_CONTACT_COLUMN_EVERY`, ‹app/models/ci/runner.rb›, ‹runner_manager.rb›). Machines
/// that wrote together (a fleet registering, a restart, holds ending at once) then write
/// again spread over a quarter of the interval, not all in one second. The point is drawn
/// from the stored time, not anew at each check as GitLab does, so that every path (a poll
/// answered before routing, the heartbeat) decides alike.
pub fn contact_age(interval: Duration, contacted: NaiveDateTime) -> Duration {
    // splitmix64 of the stored time's microseconds: uniform enough from adjacent times.
    let mut x = contacted.and_utc().timestamp_micros() as u64;
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    let unit = (x >> 11) as f64 / (1u64 << 53) as f64;
    interval.mul_f64((40.0 + 15.0 * unit) / 55.0)
}

impl Runners {
    pub fn new(
        db: DbPool,
        heartbeat_interval: Duration,
        token_ttl: Option<Duration>,
        metrics: Arc<crate::metrics::Metrics>,
        queue: Arc<crate::queue::Queue>,
    ) -> Runners {
        Runners {
            db,
            metrics,
            queue,
            cache: DashMap::new(),
            managers: DashMap::new(),
            polls: DashMap::new(),
            polls_swept: std::sync::Mutex::new(Instant::now()),
            job_contacts: DashMap::new(),
            runners_touched: DashMap::new(),
            heartbeat_interval,
            token_ttl,
        }
    }

    /// `authenticate_runner!`: the runner owning `token`; 403 for an unknown or expired one.
    /// Counted as GitLab counts it (`gitlab_ci_runner_authentication_*_total`).
    pub async fn authenticate(&self, token: &str) -> ApiResult<Arc<Runner>> {
        let found = self.find_by_token(token).await;
        match &found {
            Ok(runner) => self.metrics.runner_authenticated(runner.runner_type),
            Err(ApiError::Forbidden(_)) => self.metrics.runner_authentication_failed(),
            Err(_) => {}
        }
        found
    }

    async fn find_by_token(&self, token: &str) -> ApiResult<Arc<Runner>> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(ApiError::Forbidden(None));
        }
        let digest = TokenDigest::of(token);
        let cached = self
            .cache
            .get(&digest)
            .filter(|c| c.fetched.elapsed() < AUTH_CACHE_TTL)
            .map(|c| c.runner.clone());
        let runner = match cached {
            Some(runner) => runner,
            None => {
                let mut db = self.db.read().await?;
                let found = Runner::find_by_digest(&mut db.conn(), digest.as_bytes()).await?;
                let runner = Arc::new(found.ok_or(ApiError::Forbidden(None))?);
                self.cache.insert(
                    digest,
                    Cached {
                        runner: runner.clone(),
                        fetched: Instant::now(),
                    },
                );
                runner
            }
        };
        if runner.token_expires_at.is_some_and(|at| at <= now()) {
            return Err(ApiError::Forbidden(None));
        }
        Ok(runner)
    }

    /// Drops every cached entry of a runner (after any change to it).
    fn forget(&self, runner_id: i64) {
        self.cache.retain(|_, c| c.runner.id != runner_id);
    }

    /// How long a runner manager is served from memory: the heartbeat interval, at least
    /// [`AUTH_CACHE_TTL`]. Only the machine itself changes its row, through its heartbeats,
    /// and each is due at this interval: a fleet's machines coming back from their holds
    /// together (10,000 of them within seconds) read nothing. What another instance may do
    /// meanwhile stays bounded: a heartbeat it wrote is written here again when this copy
    /// says it is due, the info a machine sent it is overwritten by a change sent here
    /// within the interval, and a manager it deleted is seen by the claim
    /// ([`Runners::manager_gone`]).
    fn manager_ttl(&self) -> Duration {
        self.heartbeat_interval.max(AUTH_CACHE_TTL)
    }

    /// Drops the cached managers and memoized polls too old to be used (each new runner
    /// machine adds one of each); the reaper calls it.
    pub fn prune(&self) {
        let ttl = self.manager_ttl();
        self.managers.retain(|_, entry| entry.1.elapsed() < ttl);
        self.drop_stale_polls();
    }

    /// Drops the memoized polls past [`AUTH_CACHE_TTL`].
    fn drop_stale_polls(&self) {
        self.polls.retain(|_, m| m.at.elapsed() < AUTH_CACHE_TTL);
    }

    /// The most memoized polls kept: four per runner machine and token known.
    fn polls_bound(&self) -> usize {
        4 * (self.managers.len() + self.cache.len() + 256)
    }

    /// Remembers what a job request's exact `body`, from `ip`, came to after the whole
    /// path: `token` authenticated `runner`, and the heartbeat left `manager` as cached now.
    pub fn remember_poll(
        &self,
        body: &[u8],
        ip: Option<std::net::IpAddr>,
        token: &str,
        runner: &Arc<Runner>,
        manager: &RunnerManager,
        last_update: Option<&str>,
    ) {
        let manager_key = (runner.id, manager.system_xid.clone());
        let Some(manager_cached) = self.managers.get(&manager_key).map(|entry| entry.1) else {
            return;
        };
        // Bounded: bodies change with every queue version a runner reports. Each runner
        // machine has its own body, so the bound follows the machines known; the sweep
        // runs at most once a second (with 10,000 machines, a sweep on every poll was a
        // tenth of the server's time), and empties the memo if all it holds is recent.
        if self.polls.len() >= self.polls_bound() {
            let due = self
                .polls_swept
                .try_lock()
                .ok()
                .filter(|at| at.elapsed() >= SWEEP_EVERY);
            if let Some(mut at) = due {
                *at = Instant::now();
                self.drop_stale_polls();
                if self.polls.len() >= self.polls_bound() {
                    self.polls.clear();
                }
            }
        }
        let (body, key) = body_digest(body);
        self.polls.insert(
            key,
            PollMemo {
                body,
                ip,
                digest: TokenDigest::of(token),
                runner: runner.clone(),
                manager: manager_key,
                manager_cached,
                last_update: last_update.map(str::to_string),
                at: Instant::now(),
            },
        );
    }

    /// The runner a job request with this exact body, from `ip`, authenticates — if it was
    /// seen lately and the whole path would do nothing else with it: the runner and its
    /// manager are still the cached entries it was checked against (any change to the
    /// runner or a new heartbeat replaces them), the token has not expired, and neither
    /// contact is due to be written. `None`: take the whole path.
    pub fn recall_poll(&self, body: &[u8], ip: Option<std::net::IpAddr>) -> Option<RecalledPoll> {
        let (body, key) = body_digest(body);
        let memo = self.polls.get(&key)?;
        if memo.body != body || memo.ip != ip || memo.at.elapsed() >= AUTH_CACHE_TTL {
            return None;
        }
        let cached = self.cache.get(&memo.digest)?;
        if !Arc::ptr_eq(&cached.runner, &memo.runner) || cached.fetched.elapsed() >= AUTH_CACHE_TTL
        {
            return None;
        }
        let runner = &memo.runner;
        let at = now();
        if runner.token_expires_at.is_some_and(|t| t <= at)
            || runner.creation_state != CreationState::Finished
            || self.due(runner.contacted_at, at)
        {
            return None;
        }
        let manager = self.managers.get(&memo.manager)?;
        if manager.1 != memo.manager_cached
            || manager.1.elapsed() >= self.manager_ttl()
            || self.due(manager.0.contacted_at, at)
        {
            return None;
        }
        self.metrics.runner_authenticated(runner.runner_type);
        Some(RecalledPoll {
            runner: runner.clone(),
            token: memo.digest,
            last_update: memo.last_update.clone(),
        })
    }

    /// Whether a contact stored at `contacted` is old enough to be written again
    /// ([`contact_age`]).
    fn due(&self, contacted: Option<NaiveDateTime>, at: NaiveDateTime) -> bool {
        contacted.is_none_or(|c| at >= self.next_due(c))
    }

    /// When a contact stored at `contacted` is next to be written: once it is
    /// [`contact_age`] old. Polls ([`Self::due`]) and job routes
    /// ([`Self::heartbeat_job`]) both decide by it.
    fn next_due(&self, contacted: NaiveDateTime) -> NaiveDateTime {
        let age = contact_age(self.heartbeat_interval, contacted);
        later(
            contacted,
            chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX),
        )
    }

    /// Drops the cached managers of a runner (deleted runner or manager).
    fn forget_managers(&self, runner_id: i64) {
        self.managers.retain(|(id, _), _| *id != runner_id);
    }

    /// A claim found `manager`'s row deleted (by another instance, or while its poll was
    /// held) and left the job without one: its cached copy goes, so that the machine's
    /// next heartbeat makes its row again, as GitLab makes a deleted manager again on the
    /// next contact.
    pub fn manager_gone(&self, manager: &RunnerManager) {
        self.managers.remove_if(
            &(manager.runner_id, manager.system_xid.clone()),
            |_, entry| entry.0.id == manager.id,
        );
    }

    /// Heartbeat of the runner and of its manager `system_xid`, created on first contact.
    /// Writes only when something changed or the stored contact time is older than the
    /// heartbeat interval, so a busy runner does not write on every request (GitLab keeps
    /// the exact time in Redis and persists it every 40–55 minutes).
    pub async fn heartbeat(
        &self,
        runner: &Arc<Runner>,
        system_xid: &str,
        mut beat: ManagerHeartbeat,
        finish_creation: bool,
    ) -> ApiResult<Arc<RunnerManager>> {
        let at = now();
        let stale = |contacted: Option<NaiveDateTime>| self.due(contacted, at);
        let runner_state = (finish_creation && runner.creation_state != CreationState::Finished)
            .then_some(CreationState::Finished);
        if finish_creation {
            beat.creation_state = Some(CreationState::Finished);
        }
        let touched = self.runners_touched.get(&runner.id).map(|t| *t);
        let runner_due = stale(runner.contacted_at.max(touched)) || runner_state.is_some();
        if runner_due {
            self.runners_touched.insert(runner.id, at);
        }
        let key = (runner.id, system_xid.to_string());
        let cached = self
            .managers
            .get(&key)
            .filter(|entry| entry.1.elapsed() < self.manager_ttl())
            .map(|entry| entry.0.clone());
        let cached_was_none = cached.is_none();
        let manager = match cached {
            Some(manager) => Some(manager),
            None => {
                let mut db = self.db.read().await?;
                RunnerManager::find(&mut db.conn(), runner.id, system_xid)
                    .await?
                    .map(Arc::new)
            }
        };
        let manager_due = manager
            .as_ref()
            .is_none_or(|m| beat.changes(m) || stale(m.contacted_at));
        if !runner_due && !manager_due {
            if let Some(manager) = manager {
                if cached_was_none {
                    self.managers.insert(key, (manager.clone(), Instant::now()));
                }
                return Ok(manager);
            }
        }
        // A hot write when a fleet starts (each new runner machine makes its row): on
        // SQLite its statements run inline on the writer thread.
        let (db, runner_id, xid) = (self.db.clone(), runner.id, system_xid.to_string());
        let manager = self
            .db
            .on_writer(async move {
                let mut db = db.write().await?;
                let mut conn = db.conn();
                if runner_due {
                    Runner::touch(&mut conn, runner_id, at, runner_state).await?;
                }
                Ok::<_, ApiError>(match manager {
                    Some(manager) if !manager_due => manager,
                    _ => Arc::new(
                        RunnerManager::upsert(&mut conn, runner_id, &xid, &beat, at).await?,
                    ),
                })
            })
            .await?;
        if runner_due {
            self.forget(runner.id);
        }
        self.managers.insert(key, (manager.clone(), Instant::now()));
        Ok(manager)
    }

    /// Heartbeat from a job route (`PUT /jobs/:id`, `PATCH …/trace`): the job's runner, and
    /// its manager with the client's IP only; throttled like [`Runners::heartbeat`].
    pub async fn heartbeat_job(
        &self,
        job: &crate::db::models::Job,
        ip: Option<String>,
    ) -> ApiResult<()> {
        let at = now();
        let job_due = self.due(Some(job.updated_at), at);
        let key = (job.runner_id, job.runner_manager_id, ip.clone());
        let known = self.job_contacts.get(&key).is_some_and(|due| at < *due);
        if known && !job_due {
            return Ok(());
        }
        // Decide through a reader; the writer (SQLite's only one) is taken only when a
        // contact is due, so a runner streaming its log does not write on every PATCH.
        let (runner_next, manager_next) = {
            let mut db = self.db.read().await?;
            let mut conn = db.conn();
            let runner_next = match job.runner_id {
                Some(runner_id) => Runner::find(&mut conn, runner_id).await?.map(|r| {
                    r.contacted_at
                        .map_or(NaiveDateTime::MIN, |c| self.next_due(c))
                }),
                None => None,
            };
            // A machine's contact from another address is written at once, as GitLab
            // records the new IP.
            let manager_next = match job.runner_manager_id {
                Some(id) => RunnerManager::stored_contact(&mut conn, id).await?.map(
                    |(contacted, stored_ip)| match contacted {
                        Some(c) if stored_ip == ip => self.next_due(c),
                        _ => NaiveDateTime::MIN,
                    },
                ),
                None => None,
            };
            (runner_next, manager_next)
        };
        let runner_due = runner_next.is_some_and(|next| at >= next);
        let manager_due = manager_next.is_some_and(|next| at >= next);
        if runner_due || manager_due || job_due {
            let mut db = self.db.write().await?;
            let mut conn = db.conn();
            if let (true, Some(runner_id)) = (runner_due, job.runner_id) {
                Runner::touch(&mut conn, runner_id, at, None).await?;
                self.forget(runner_id);
            }
            if let (true, Some(manager_id)) = (manager_due, job.runner_manager_id) {
                RunnerManager::record_contact(&mut conn, manager_id, ip.as_deref(), at).await?;
            }
            if job_due {
                crate::db::models::Job::touch(&mut conn, job.id, at).await?;
            }
        }
        // Written now, or due when read: either way not due again before then.
        let next = |due: bool, next: NaiveDateTime| if due { self.next_due(at) } else { next };
        let due = [
            runner_next.map(|n| next(runner_due, n)),
            manager_next.map(|n| next(manager_due, n)),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or_else(|| self.next_due(at));
        if self.job_contacts.len() >= JOB_CONTACTS_KEPT {
            self.job_contacts.retain(|_, due| at < *due);
        }
        self.job_contacts.insert(key, due);
        Ok(())
    }

    /// Creates a runner with a fresh token (`glrt-` when an admin creates it).
    pub async fn create(
        &self,
        settings: RunnerSettings,
        registration: RegistrationType,
    ) -> ApiResult<CreatedRunner> {
        validate_settings(
            settings.run_untagged,
            &settings.tags,
            settings.maximum_timeout,
        )?;
        let by_admin = registration == RegistrationType::AuthenticatedUser;
        let token = NewToken::generate(&runner_token_prefix(settings.runner_type, by_admin));
        let at = now();
        let tag_list = json!(settings.tags).to_string();
        let new = NewRunner {
            runner_type: settings.runner_type,
            name: settings.name.as_deref(),
            description: &settings.description,
            maintenance_note: settings.maintenance_note.as_deref(),
            tag_list,
            run_untagged: settings.run_untagged,
            locked: settings.locked,
            paused: settings.paused,
            access_level: settings.access_level,
            maximum_timeout: settings.maximum_timeout.map(clamp_i32),
            token_digest: token.digest.as_bytes(),
            token_prefix: &token.display_prefix(),
            token_expires_at: self.expiry(at),
            creation_state: CreationState::Started,
            registration_type: registration,
            created_at: at,
            updated_at: at,
        };
        let project_id = settings.project_id;
        let mut db = self.db.write().await?;
        let runner = transaction!(&mut db.conn(), |tx| {
            if let Some(project_id) = project_id {
                if Project::find(tx, project_id).await?.is_none() {
                    return Err(ApiError::not_found("Project"));
                }
            }
            let runner = Runner::create(tx, new).await?;
            if let Some(project_id) = project_id {
                Project::assign_runner(tx, runner.id, project_id).await?;
            }
            Ok::<_, ApiError>(runner)
        })?;
        Ok(CreatedRunner {
            runner,
            token: token.token,
        })
    }

    /// Rotates the token: the old one stops working at once.
    pub async fn reset_token(&self, runner: &Runner) -> ApiResult<CreatedRunner> {
        let by_admin = runner.registration_type == RegistrationType::AuthenticatedUser;
        let token = NewToken::generate(&runner_token_prefix(runner.runner_type, by_admin));
        let expires = self.expiry(now());
        let mut db = self.db.write().await?;
        let updated = Runner::set_token(
            &mut db.conn(),
            runner.id,
            token.digest.as_bytes(),
            &token.display_prefix(),
            expires,
        )
        .await?;
        self.forget(runner.id);
        let runner = updated.ok_or(ApiError::Forbidden(None))?;
        Ok(CreatedRunner {
            runner,
            token: token.token,
        })
    }

    pub async fn delete(&self, runner_id: i64) -> ApiResult<bool> {
        let mut db = self.db.write().await?;
        let deleted = Runner::delete(&mut db.conn(), runner_id).await?;
        self.forget(runner_id);
        self.forget_managers(runner_id);
        Ok(deleted)
    }

    /// Every manager (machine) of a runner, oldest first.
    pub async fn managers_of(&self, runner_id: i64) -> ApiResult<Vec<RunnerManager>> {
        let mut db = self.db.read().await?;
        Ok(RunnerManager::for_runner(&mut db.conn(), runner_id).await?)
    }

    /// One manager (machine) of a runner, by its `system_id`.
    pub async fn manager(
        &self,
        runner_id: i64,
        system_xid: &str,
    ) -> ApiResult<Option<RunnerManager>> {
        let mut db = self.db.read().await?;
        Ok(RunnerManager::find(&mut db.conn(), runner_id, system_xid).await?)
    }

    pub async fn delete_manager(&self, runner_id: i64, system_xid: &str) -> ApiResult<bool> {
        let mut db = self.db.write().await?;
        let deleted = RunnerManager::delete(&mut db.conn(), runner_id, system_xid).await?;
        self.forget_managers(runner_id);
        Ok(deleted)
    }

    pub async fn update(&self, current: &Runner, mut changes: RunnerChanges) -> ApiResult<Runner> {
        let tags = changes
            .tag_list
            .as_deref()
            .map(|t| serde_json::from_str::<Vec<String>>(t).unwrap_or_default())
            .unwrap_or_else(|| current.tags());
        validate_settings(
            changes.run_untagged.unwrap_or(current.run_untagged),
            &tags,
            changes
                .maximum_timeout
                .unwrap_or(current.maximum_timeout)
                .map(i64::from),
        )?;
        changes.updated_at = Some(now());
        let mut db = self.db.write().await?;
        let updated = Runner::update(&mut db.conn(), current.id, &changes).await?;
        self.forget(current.id);
        // What the runner may take changed (resumed, new tags, other limits): its held and
        // next polls look again, as GitLab ticks the runner's queue on an update.
        self.queue.bump_all();
        updated.ok_or_else(|| ApiError::not_found("Runner"))
    }

    fn expiry(&self, from: NaiveDateTime) -> Option<NaiveDateTime> {
        self.token_ttl
            .and_then(|ttl| chrono::TimeDelta::from_std(ttl).ok())
            .map(|ttl| from + ttl)
    }
}

fn clamp_i32(v: i64) -> i32 {
    v.clamp(0, i64::from(i32::MAX)) as i32
}

/// The model validations of `Ci::Runner` that registration and updates share.
pub fn validate_settings(
    run_untagged: bool,
    tags: &[String],
    maximum_timeout: Option<i64>,
) -> ApiResult<()> {
    if !run_untagged && tags.is_empty() {
        return Err(ApiError::validation(
            "tags_list",
            "can not be empty when runner is not allowed to pick untagged jobs",
        ));
    }
    if tags.len() > MAX_TAGS {
        return Err(ApiError::validation(
            "tags_list",
            format!("Too many tags specified. Please limit the number of tags to {MAX_TAGS}"),
        ));
    }
    if maximum_timeout.is_some_and(|t| t < MIN_MAXIMUM_TIMEOUT) {
        return Err(ApiError::validation(
            "maximum_timeout",
            "needs to be at least 10 minutes",
        ));
    }
    Ok(())
}

/// What a runner's `info` says about the machine, as GitLab stores it on the manager
/// (`ci_runner_machines`): lengths cut to GitLab's limits, `config` reduced to `gpus`,
/// the executor name mapped to an `executor_type`.
pub fn manager_heartbeat(
    info: Option<&Map<String, Value>>,
    ip: Option<String>,
) -> ManagerHeartbeat {
    let field = |key: &str, max: usize| -> Option<String> {
        info.and_then(|i| i.get(key))
            .and_then(Value::as_str)
            .map(|s| s.chars().take(max).collect())
    };
    let executor_type = field("executor", 255).map(|e| {
        if EXECUTOR_TYPES.contains(&e.as_str()) {
            e
        } else {
            "unknown".to_string()
        }
    });
    let object = |key: &str| info.and_then(|i| i.get(key)).filter(|v| v.is_object());
    let config = info.map(|_| {
        let gpus = object("config").and_then(|c| c.get("gpus")).cloned();
        match gpus {
            Some(gpus) => json!({ "gpus": gpus }).to_string(),
            None => "{}".to_string(),
        }
    });
    ManagerHeartbeat {
        version: field("version", 2048),
        revision: field("revision", 255),
        platform: field("platform", 255),
        architecture: field("architecture", 255),
        executor_type,
        ip_address: ip.map(|ip| ip.chars().take(1024).collect()),
        config,
        labels: object("labels").map(Value::to_string),
        runtime_features: object("features").map(Value::to_string),
        creation_state: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_is_stored_as_gitlab_stores_it() {
        let info = json!({"name":"n","version":"19.4.0","executor":"shell","config":{"gpus":"all","ignored":"x"},
                          "features":{"cancel_gracefully":true}});
        let beat = manager_heartbeat(info.as_object(), Some("127.0.0.1".into()));
        assert_eq!(beat.version.as_deref(), Some("19.4.0"));
        assert_eq!(beat.executor_type.as_deref(), Some("shell"));
        assert_eq!(beat.config.as_deref(), Some(r#"{"gpus":"all"}"#));
        assert_eq!(
            beat.runtime_features.as_deref(),
            Some(r#"{"cancel_gracefully":true}"#)
        );
        let odd = manager_heartbeat(json!({"executor":"rocket"}).as_object(), None);
        assert_eq!(odd.executor_type.as_deref(), Some("unknown"));
    }

    #[test]
    fn contacts_written_together_come_due_spread_over_the_last_quarter_of_the_interval() {
        let interval = Duration::from_secs(60);
        let start = chrono::NaiveDate::from_ymd_opt(2026, 12, 7)
            .and_then(|d| d.and_hms_micro_opt(12, 0, 0, 0))
            .expect("a time");
        // 10,000 machines writing their contacts within one second.
        let ages: Vec<Duration> = (0..10_000)
            .map(|i| contact_age(interval, start + chrono::TimeDelta::microseconds(i * 97)))
            .collect();
        let (low, high) = (interval.mul_f64(40.0 / 55.0), interval);
        assert!(
            ages.iter().all(|a| (low..=high).contains(a)),
            "within 40..=55 of 55"
        );
        // Spread over the whole window: each of its 15 seconds' share near a fifteenth.
        let mut seconds = [0usize; 16];
        for age in &ages {
            seconds[((age.as_secs_f64() - low.as_secs_f64()) / (high - low).as_secs_f64() * 15.0)
                as usize] += 1;
        }
        assert!(
            seconds[..15].iter().all(|&n| (500..=850).contains(&n)),
            "{seconds:?}"
        );
        // The same stored time, the same age: every path decides alike.
        assert_eq!(contact_age(interval, start), contact_age(interval, start));
    }

    #[test]
    fn runner_validations_match_gitlab() {
        assert!(validate_settings(true, &[], None).is_ok());
        assert!(validate_settings(false, &[], None).is_err());
        assert!(validate_settings(true, &vec!["t".to_string(); 51], None).is_err());
        assert!(validate_settings(true, &[], Some(599)).is_err());
        assert!(validate_settings(true, &[], Some(600)).is_ok());
    }
}
