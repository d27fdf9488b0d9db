//! GitLab's `check_if_backoff_required!`: while database migrations run (another instance
//! migrating the shared database) or while an admin turns the `runner_backoff` feature
//! flag on for the instance, every runner route answers 429 with `Retry-After: 60` before
//! anything else, so fleets wait instead of failing.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::db::models::{FeatureFlag, InstanceSetting};
use crate::db::DbPool;

/// The instance feature flag that puts runners into backoff.
pub const BACKOFF_FLAG: &str = "runner_backoff";
/// The instance setting a migrating instance holds (unix seconds when it started).
pub const MIGRATING_SETTING: &str = "migrations_running";
/// A migration marker older than this is a crashed migration's leftover and is ignored.
const MARKER_TTL: Duration = Duration::from_secs(3600);
/// How long one answer is reused: runners poll often, the flag changes seldom.
const CACHE_FOR: Duration = Duration::from_secs(1);

pub struct Backoff {
    db: DbPool,
    cached: Mutex<Option<(Instant, bool)>>,
}

impl Backoff {
    pub fn new(db: DbPool) -> Backoff {
        Backoff {
            db,
            cached: Mutex::new(None),
        }
    }

    /// Whether runner routes should answer 429 now. A database that cannot be read does
    /// not put runners into backoff: the routes then answer for themselves (503).
    pub async fn active(&self) -> bool {
        if let Some((at, active)) = *self.cached.lock().unwrap_or_else(|e| e.into_inner()) {
            if at.elapsed() < CACHE_FOR {
                return active;
            }
        }
        // Boxed: the read's state is large (a pooled connection and two queries) and is
        // needed about once a second; inline, every poll held behind this check — the
        // early answer's and the runner routes' middleware — would carry room for it.
        let active = Box::pin(self.read()).await.unwrap_or(false);
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), active));
        active
    }

    /// Forgets the cached answer (after the flag changed through this instance).
    pub fn forget(&self) {
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    async fn read(&self) -> Result<bool, crate::error::ApiError> {
        let mut db = self.db.read().await?;
        let mut conn = db.conn();
        let flagged = FeatureFlag::enabled_for(&mut conn, BACKOFF_FLAG, &[]).await?;
        if flagged {
            return Ok(true);
        }
        let marker = InstanceSetting::get(&mut conn, MIGRATING_SETTING).await?;
        let now = chrono::Utc::now().timestamp();
        Ok(marker
            .and_then(|m| m.trim().parse::<i64>().ok())
            .is_some_and(|since| now - since < MARKER_TTL.as_secs() as i64))
    }
}

/// Whether `path` (slashes trimmed) is a runner route: the ones GitLab's backoff covers.
pub fn is_runner_route(path: &str) -> bool {
    path.starts_with("/api/v4/jobs/")
        || matches!(
            path,
            "/api/v4/runners"
                | "/api/v4/runners/verify"
                | "/api/v4/runners/managers"
                | "/api/v4/runners/reset_authentication_token"
                | "/api/v4/runners/router/discovery"
        )
}
