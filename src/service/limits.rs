//! GitLab's runner rate limits (reference §22), one set for all workers: job requests per
//! runner token, trace PATCHes per job token, the other job calls per job token; and failed
//! authentications per client address. Keys are token digests, never tokens. A limit of 0 turns it off. Over the limit: 429 with
//! GitLab's body and an integer `Retry-After`.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::auth::tokens::TokenDigest;
use crate::error::{ApiError, ApiResult};

/// Which limit a call counts against.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    JobsRequest,
    Trace,
    JobApi,
}

pub struct Limits {
    jobs_request: Option<DefaultKeyedRateLimiter<TokenDigest>>,
    trace: Option<DefaultKeyedRateLimiter<TokenDigest>>,
    job_api: Option<DefaultKeyedRateLimiter<TokenDigest>>,
    failed_auth: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Addresses over the failed-authentication limit, until when.
    banned: DashMap<IpAddr, Instant>,
    window: Duration,
}

/// `n` calls per `window`: a burst of `n`, refilled evenly over the window.
fn limiter<K: Clone + Hash + Eq>(n: u32, window: Duration) -> Option<DefaultKeyedRateLimiter<K>> {
    let n = NonZeroU32::new(n)?;
    let quota = Quota::with_period(window / n.get())?.allow_burst(n);
    Some(RateLimiter::keyed(quota))
}

impl Limits {
    pub fn new(
        jobs_request: u32,
        trace: u32,
        job_api: u32,
        failed_auth: u32,
        window: Duration,
    ) -> Limits {
        Limits {
            jobs_request: limiter(jobs_request, window),
            trace: limiter(trace, window),
            job_api: limiter(job_api, window),
            failed_auth: limiter(failed_auth, window),
            banned: DashMap::new(),
            window,
        }
    }

    /// 429 while `ip` is over the failed-authentication limit.
    pub fn check_address(&self, ip: Option<IpAddr>) -> ApiResult<()> {
        let Some(ip) = ip else { return Ok(()) };
        let Some(until) = self.banned.get(&ip).map(|u| *u) else {
            return Ok(());
        };
        let now = Instant::now();
        if until <= now {
            self.banned.remove(&ip);
            return Ok(());
        }
        let wait = until - now;
        Err(ApiError::TooManyRequests(
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
        ))
    }

    /// Counts a failed authentication or registration from `ip`; past the limit the
    /// address is refused (429) for a window.
    pub fn authentication_failed(&self, ip: Option<IpAddr>) {
        let (Some(ip), Some(limiter)) = (ip, &self.failed_auth) else {
            return;
        };
        if limiter.check_key(&ip).is_err() {
            self.banned.insert(ip, Instant::now() + self.window);
        }
    }

    /// Counts one call of `token` against `limit`; 429 when it is over.
    pub fn check(&self, limit: Limit, token: &str) -> ApiResult<()> {
        self.check_digest(limit, &TokenDigest::of(token))
    }

    /// [`Limits::check`] for a token known by its digest.
    pub fn check_digest(&self, limit: Limit, token: &TokenDigest) -> ApiResult<()> {
        let limiter = match limit {
            Limit::JobsRequest => &self.jobs_request,
            Limit::Trace => &self.trace,
            Limit::JobApi => &self.job_api,
        };
        let Some(limiter) = limiter else {
            return Ok(());
        };
        limiter.check_key(token).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::TooManyRequests(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
        })
    }

    /// Drops the state of keys that have been quiet for a window (run periodically).
    pub fn prune(&self) {
        for limiter in [&self.jobs_request, &self.trace, &self.job_api]
            .into_iter()
            .flatten()
        {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.failed_auth {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        let now = Instant::now();
        self.banned.retain(|_, until| *until > now);
    }
}
