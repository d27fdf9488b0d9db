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
    /// Held by the one request reading the answer again.
    reading: tokio::sync::Mutex<()>,
}

impl Backoff {
    pub fn new(db: DbPool) -> Backoff {
        Backoff {
            db,
            cached: Mutex::new(None),
            reading: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self) -> Option<(Instant, bool)> {
        *self.cached.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether runner routes should answer 429 now. A database that cannot be read does
    /// not put runners into backoff: the routes then answer for themselves (503).
    ///
    /// Once a second one request reads the answer again, and the others meanwhile take
    /// the last one; only with none (at start, or forgotten) do they wait for that read.
    /// Each reading it, a fleet's requests of that moment (a hundred and more in the
    /// PostgreSQL fleet bench) all queued for a connection every second, when the pool
    /// was busiest.
    pub async fn active(&self) -> bool {
        let _reading = match self.cached() {
            Some((at, active)) if at.elapsed() < CACHE_FOR => return active,
            Some((_, active)) => match self.reading.try_lock() {
                Ok(reading) => reading,
                Err(_) => return active,
            },
            None => self.reading.lock().await,
        };
        // Read by the request that held the lock before, maybe.
        if let Some((at, active)) = self.cached() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_request_reads_a_stale_answer_again_while_the_others_take_it() {
        let dir = tempfile::tempdir().expect("a folder");
        let url = format!("sqlite://{}", dir.path().join("runway.db").display());
        let db = DbPool::connect(&url, 1).await.expect("the database");
        let backoff = std::sync::Arc::new(Backoff::new(db.clone()));
        assert!(!backoff.active().await, "read: no flag, no migration");
        // The one connection for reads taken, and the answer stale: the first request
        // waits to read it again, the next answers at once with the last one.
        let taken = db.read().await.expect("a connection");
        tokio::time::sleep(CACHE_FOR + Duration::from_millis(50)).await;
        let reading = tokio::spawn({
            let backoff = backoff.clone();
            async move { backoff.active().await }
        });
        while backoff.reading.try_lock().is_ok() {
            tokio::task::yield_now().await;
        }
        let answer = tokio::time::timeout(Duration::from_millis(500), backoff.active()).await;
        assert_eq!(
            answer,
            Ok(false),
            "the last answer, without waiting for a connection"
        );
        drop(taken);
        assert!(!reading.await.expect("the read"));
        assert!(backoff
            .cached()
            .is_some_and(|(at, _)| at.elapsed() < CACHE_FOR));
    }
}
