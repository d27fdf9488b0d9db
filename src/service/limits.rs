//! GitLab's runner rate limits (reference §22), one set for all workers: job requests per
//! runner token, trace PATCHes per job token, the other job calls per job token. Keys are
//! token digests, never tokens. A limit of 0 turns it off. Over the limit: 429 with
//! GitLab's body and an integer `Retry-After`.

use std::num::NonZeroU32;
use std::time::Duration;

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
}

/// `n` calls per `window`: a burst of `n`, refilled evenly over the window.
fn limiter(n: u32, window: Duration) -> Option<DefaultKeyedRateLimiter<TokenDigest>> {
    let n = NonZeroU32::new(n)?;
    let quota = Quota::with_period(window / n.get())?.allow_burst(n);
    Some(RateLimiter::keyed(quota))
}

impl Limits {
    pub fn new(jobs_request: u32, trace: u32, job_api: u32, window: Duration) -> Limits {
        Limits {
            jobs_request: limiter(jobs_request, window),
            trace: limiter(trace, window),
            job_api: limiter(job_api, window),
        }
    }

    /// Counts one call of `token` against `limit`; 429 when it is over.
    pub fn check(&self, limit: Limit, token: &str) -> ApiResult<()> {
        let limiter = match limit {
            Limit::JobsRequest => &self.jobs_request,
            Limit::Trace => &self.trace,
            Limit::JobApi => &self.job_api,
        };
        let Some(limiter) = limiter else {
            return Ok(());
        };
        limiter
            .check_key(&TokenDigest::of(token))
            .map_err(|not_until| {
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
    }
}
