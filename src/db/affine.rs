//! PostgreSQL connections kept by the thread that opened them.
//!
//! tokio-postgres drives each connection from a task spawned on the runtime that opened
//! it: its socket is registered with that runtime's reactor. A statement sent from
//! another thread goes to that task and its answer comes back through it, so every round
//! trip wakes two threads more than it needs to; on a busy machine each wake-up may wait
//! for a core. Actix runs one single-threaded runtime per worker, and one pool shared by
//! the workers and the background tasks hands most requests a connection opened on
//! another thread.
//!
//! [`PgPool`] keeps a deadpool per thread instead, and a thread takes its own idle
//! connections first. The limits stay those of one pool over all threads: at most `size`
//! connections out at once (a request waits for one at most `wait`, then 503), and at
//! most `size` open. A thread that has no idle connection of its own while `size` are
//! open borrows another thread's idle one rather than open more.
//!
//! A quarter of the connections is kept for the job queue ([`PgPool::for_queue`]): other
//! requests take at most the rest, so that a runner's search for a job (its read of the
//! queue and its claim) never waits behind a crowd of log PATCHes, uploads and heartbeats.
//! With all of them shared, a busy fleet's searches each waited 45–105 ms for a
//! connection, twice, and fell behind the polls coming back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use deadpool::managed::{Manager, Metrics, Object, Pool, RecycleResult, Timeouts};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::AsyncPgConnection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::PoolError;

/// How long a thread that found no idle connection anywhere waits before it looks again.
const LOOK_AGAIN: Duration = Duration::from_millis(1);

/// PostgreSQL's pool: one deadpool per thread under shared limits (see the module doc).
/// A handle takes its connections either from the share every request has or, made by
/// [`PgPool::for_queue`], from all of them.
#[derive(Clone)]
pub struct PgPool {
    inner: Arc<Inner>,
    queue: bool,
}

struct Inner {
    url: String,
    config: fn() -> ManagerConfig<AsyncPgConnection>,
    size: usize,
    wait: Duration,
    /// One per connection handed out: at most `size` out at once.
    out: Arc<Semaphore>,
    /// One per connection handed out to a request other than the queue's: at most
    /// `size` less the queue's share out at once.
    shared: Arc<Semaphore>,
    /// Connections open over all threads, counted by [`Capped`].
    open: Arc<AtomicUsize>,
    threads: Mutex<HashMap<ThreadId, Pool<Capped>>>,
}

/// A connection handed out, with its place under the pool's limit.
pub struct PgConn {
    conn: Object<Capped>,
    _out: OwnedSemaphorePermit,
    _shared: Option<OwnedSemaphorePermit>,
}

impl std::ops::Deref for PgConn {
    type Target = AsyncPgConnection;

    fn deref(&self) -> &AsyncPgConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for PgConn {
    fn deref_mut(&mut self) -> &mut AsyncPgConnection {
        &mut self.conn
    }
}

/// The pool's counts, for metrics and readiness.
pub struct Counts {
    pub max: usize,
    pub open: usize,
    pub out: usize,
}

/// The connections kept for the job queue out of `size`: a quarter (none below four).
fn queue_share(size: usize) -> usize {
    size / 4
}

impl PgPool {
    pub fn new(
        url: &str,
        size: usize,
        wait: Duration,
        config: fn() -> ManagerConfig<AsyncPgConnection>,
    ) -> PgPool {
        let size = size.max(1);
        PgPool {
            inner: Arc::new(Inner {
                url: url.to_string(),
                config,
                size,
                wait,
                out: Arc::new(Semaphore::new(size)),
                shared: Arc::new(Semaphore::new(size - queue_share(size))),
                open: Arc::new(AtomicUsize::new(0)),
                threads: Mutex::new(HashMap::new()),
            }),
            queue: false,
        }
    }

    /// This pool, for the job queue's reads and claims: its connections come from all of
    /// them, the share kept for the queue included.
    pub fn for_queue(&self) -> PgPool {
        PgPool {
            inner: self.inner.clone(),
            queue: true,
        }
    }

    pub fn counts(&self) -> Counts {
        let inner = &self.inner;
        Counts {
            max: inner.size,
            open: inner.open.load(Ordering::Relaxed),
            out: inner.size - inner.out.available_permits(),
        }
    }

    /// A connection: this thread's own idle one, else a new one if fewer than `size` are
    /// open, else another thread's idle one. Waits at most `wait` in all, for a place in
    /// the share of requests other than the queue's first unless this is the queue's
    /// handle.
    pub async fn get(&self) -> Result<PgConn, PoolError> {
        let inner = &self.inner;
        let deadline = Instant::now() + inner.wait;
        let permit = |semaphore: &Arc<Semaphore>| {
            let acquire = semaphore.clone().acquire_owned();
            async move {
                tokio::time::timeout_at(deadline, acquire)
                    .await
                    .map_err(|_| PoolError::Timeout)?
                    .map_err(|e| PoolError::Other(e.into()))
            }
        };
        let shared = match self.queue {
            true => None,
            false => Some(permit(&inner.shared).await?),
        };
        let out = permit(&inner.out).await?;
        loop {
            let own = self.own();
            let left = deadline.saturating_duration_since(Instant::now());
            let timeouts = Timeouts {
                wait: Some(left),
                create: Some(left),
                recycle: None,
            };
            match own.timeout_get(&timeouts).await {
                Ok(conn) => {
                    return Ok(PgConn {
                        conn,
                        _out: out,
                        _shared: shared,
                    })
                }
                Err(deadpool::managed::PoolError::Backend(CappedError::Full)) => {}
                Err(e) => return Err(e.into()),
            }
            // As many open as allowed, none idle here: borrow an idle one, never waiting
            // on another thread's pool (a zero wait only takes what is there).
            let now = Timeouts {
                wait: Some(Duration::ZERO),
                create: Some(left),
                recycle: None,
            };
            for pool in self.others() {
                if pool.status().available == 0 {
                    continue;
                }
                if let Ok(conn) = pool.timeout_get(&now).await {
                    return Ok(PgConn {
                        conn,
                        _out: out,
                        _shared: shared,
                    });
                }
            }
            // Our place under the limit means one is idle or about to be: a connection
            // being given back, or one closed whose place a new one may take.
            if Instant::now() + LOOK_AGAIN > deadline {
                return Err(PoolError::Timeout);
            }
            tokio::time::sleep(LOOK_AGAIN).await;
        }
    }

    /// This thread's pool, made on first use.
    fn own(&self) -> Pool<Capped> {
        let inner = &self.inner;
        let me = std::thread::current().id();
        let mut threads = inner.threads.lock().unwrap_or_else(|e| e.into_inner());
        threads
            .entry(me)
            .or_insert_with(|| {
                let manager = Capped {
                    inner: AsyncDieselConnectionManager::new_with_config(
                        &inner.url,
                        (inner.config)(),
                    ),
                    open: inner.open.clone(),
                    size: inner.size,
                };
                Pool::builder(manager)
                    // The limit is `Capped`'s, over all threads.
                    .max_size(inner.size)
                    // The connection used last goes out first: a few backends stay busy
                    // (their caches and plans warm) instead of every one in turn.
                    .queue_mode(deadpool::managed::QueueMode::Lifo)
                    .runtime(deadpool::Runtime::Tokio1)
                    .build()
                    .expect("a pool with a runtime for its timeouts")
            })
            .clone()
    }

    /// The other threads' pools.
    fn others(&self) -> Vec<Pool<Capped>> {
        let me = std::thread::current().id();
        let threads = self.inner.threads.lock().unwrap_or_else(|e| e.into_inner());
        threads
            .iter()
            .filter(|(id, _)| **id != me)
            .map(|(_, pool)| pool.clone())
            .collect()
    }
}

/// diesel-async's manager, opening a connection only while fewer than `size` are open
/// over all threads.
struct Capped {
    inner: AsyncDieselConnectionManager<AsyncPgConnection>,
    open: Arc<AtomicUsize>,
    size: usize,
}

#[derive(Debug, thiserror::Error)]
enum CappedError {
    /// As many connections open as the pool allows.
    #[error("the pool's connections are all open")]
    Full,
    #[error(transparent)]
    Connect(#[from] diesel_async::pooled_connection::PoolError),
}

impl Manager for Capped {
    type Type = AsyncPgConnection;
    type Error = CappedError;

    async fn create(&self) -> Result<AsyncPgConnection, CappedError> {
        let open = &self.open;
        if open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.size).then_some(n + 1)
            })
            .is_err()
        {
            return Err(CappedError::Full);
        }
        // Counted from here; given back if the connection is not made (or its caller
        // stops waiting).
        let counted = Counted(open);
        let conn = self.inner.create().await?;
        std::mem::forget(counted);
        Ok(conn)
    }

    async fn recycle(
        &self,
        conn: &mut AsyncPgConnection,
        metrics: &Metrics,
    ) -> RecycleResult<CappedError> {
        self.inner
            .recycle(conn, metrics)
            .await
            .map_err(|e| match e {
                deadpool::managed::RecycleError::Backend(e) => {
                    deadpool::managed::RecycleError::Backend(CappedError::Connect(e))
                }
                deadpool::managed::RecycleError::Message(m) => {
                    deadpool::managed::RecycleError::Message(m)
                }
            })
    }

    /// A connection leaves its pool (closed after failing to recycle, or taken): it is
    /// no longer open as far as the limit goes.
    fn detach(&self, conn: &mut AsyncPgConnection) {
        self.inner.detach(conn);
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Gives back a connection's count unless forgotten.
struct Counted<'a>(&'a AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
