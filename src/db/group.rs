//! Group commit for SQLite's hot write transactions (job claims, finishes, new pipelines,
//! log appends).
//!
//! SQLite has one writer, and each commit writes the pages its transaction touched to the
//! WAL: a claim or a finish touches the same few pages of `jobs` and its indexes, six to
//! eight of them, so under load most of a commit's work is writing again the pages the
//! commit before it wrote. Here the transactions that queued up while one group ran are
//! run one after the other on the writer connection as savepoints of one transaction,
//! which commits once. A transaction that fails is rolled back to its savepoint alone; its
//! caller gets its error at once. The others are answered only after the commit, so
//! nothing is acknowledged that a crash could still take back.
//!
//! With nothing queued behind it, a transaction runs alone as before (no savepoint).
//! Groups are bounded ([`MOST_IN_A_GROUP`]): the first of a group waits for the last.

use std::any::Any;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::TransactionManager as _;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};

use super::{sqlite_begin, Conn, PoolError, SqliteConn, SqliteTransactions};
use crate::error::{ApiError, ApiResult};

/// The most transactions committed together. A claim's or a finish's transaction takes
/// 50–150 µs on the writer, so the first of a full group waits a few milliseconds more
/// for its answer; beyond some tens the pages they share are written once anyway.
const MOST_IN_A_GROUP: usize = 32;

/// Transactions waiting for the writer; a caller beyond it waits to queue.
const QUEUE: usize = 1024;

/// How a transaction ended, as the group needs to know.
enum Ended {
    /// It succeeded: its savepoint is released, its caller waits for the commit.
    Done,
    /// It returned an error: its savepoint is rolled back, its caller is answered.
    Failed,
    /// It panicked: the connection's transaction depth is unknown, so the whole group is
    /// rolled back.
    Panicked,
}

/// What a group's failure tells each caller whose transaction had succeeded.
type Abort<'e> = &'e (dyn Fn() -> ApiError + Sync);

/// A queued transaction, typed away.
trait Queued: Send {
    /// Runs it on `tx`: how it ended, and how to answer its caller once the group's
    /// commit is known.
    fn run<'a, 'b>(self: Box<Self>, tx: &'a mut Conn<'b>) -> BoxFuture<'a, (Ended, Answer)>;
    /// Answers without running it (no connection, or its group could not begin).
    fn refuse(self: Box<Self>, error: ApiError);
}

/// Answers a caller after its group: with its result, or with the group's failure.
type Answer = Box<dyn FnOnce(Option<Abort<'_>>) + Send>;

type Reply<T> = oneshot::Sender<Result<ApiResult<T>, Box<dyn Any + Send>>>;

struct Work<F, T> {
    work: F,
    reply: Reply<T>,
}

impl<F, T> Queued for Work<F, T>
where
    T: Send + 'static,
    F: for<'a, 'b> FnOnce(&'a mut Conn<'b>) -> BoxFuture<'a, ApiResult<T>> + Send + 'static,
{
    fn run<'a, 'b>(self: Box<Self>, tx: &'a mut Conn<'b>) -> BoxFuture<'a, (Ended, Answer)> {
        let Work { work, reply } = *self;
        Box::pin(async move {
            match AssertUnwindSafe(work(tx)).catch_unwind().await {
                Ok(Ok(value)) => {
                    let answer: Answer = Box::new(move |abort: Option<Abort<'_>>| {
                        let _ = reply.send(Ok(match abort {
                            None => Ok(value),
                            Some(error) => Err(error()),
                        }));
                    });
                    (Ended::Done, answer)
                }
                Ok(Err(error)) => {
                    let answer: Answer = Box::new(move |_| {
                        let _ = reply.send(Ok(Err(error)));
                    });
                    (Ended::Failed, answer)
                }
                Err(panic) => {
                    let answer: Answer = Box::new(move |_| {
                        let _ = reply.send(Err(panic));
                    });
                    (Ended::Panicked, answer)
                }
            }
        })
    }

    fn refuse(self: Box<Self>, error: ApiError) {
        let _ = self.reply.send(Ok(Err(error)));
    }
}

/// The queue into the group committer, which runs on SQLite's writer thread.
#[derive(Clone)]
pub struct GroupCommit {
    queue: mpsc::Sender<Box<dyn Queued>>,
    counts: Arc<Counts>,
}

/// What the committer did, for metrics.
#[derive(Default)]
struct Counts {
    /// Commits.
    groups: AtomicU64,
    /// Transactions those commits made durable.
    writes: AtomicU64,
}

impl GroupCommit {
    /// Starts the committer on `writer` (the writer thread's runtime), writing through
    /// `pool` (the one writer connection, which other writes take in turn between groups).
    pub fn start(writer: &tokio::runtime::Handle, pool: Pool<SqliteConn>) -> GroupCommit {
        let (queue, queued) = mpsc::channel(QUEUE);
        let counts = Arc::new(Counts::default());
        writer.spawn(commit_groups(pool, queued, counts.clone()));
        GroupCommit { queue, counts }
    }

    /// Groups committed, and the transactions committed in them, since the start.
    pub fn committed(&self) -> (u64, u64) {
        (
            self.counts.groups.load(Ordering::Relaxed),
            self.counts.writes.load(Ordering::Relaxed),
        )
    }

    /// Transactions queued for the committer, not yet taken into a group.
    pub fn waiting(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// Runs `work` in a transaction of its own or as a savepoint of a group, and answers
    /// once it is committed (or failed). Queued, it runs to its end even if the caller
    /// stops waiting.
    pub async fn run<T, F>(&self, work: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: for<'a, 'b> FnOnce(&'a mut Conn<'b>) -> BoxFuture<'a, ApiResult<T>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let queued: Box<dyn Queued> = Box::new(Work { work, reply });
        if self.queue.send(queued).await.is_err() {
            return Err(stopped());
        }
        match answer.await {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => Err(stopped()),
        }
    }
}

fn stopped() -> ApiError {
    ApiError::Internal(anyhow::anyhow!("the SQLite writer stopped"))
}

/// The committer's loop: takes what queued up (at most a group), runs it, until the pool
/// that owns the queue's sender is dropped.
async fn commit_groups(
    pool: Pool<SqliteConn>,
    mut queued: mpsc::Receiver<Box<dyn Queued>>,
    counts: Arc<Counts>,
) {
    let mut waiting: VecDeque<Box<dyn Queued>> = VecDeque::new();
    loop {
        if waiting.is_empty() {
            match queued.recv().await {
                Some(first) => waiting.push_back(first),
                None => return,
            }
        }
        while waiting.len() < MOST_IN_A_GROUP {
            match queued.try_recv() {
                Ok(next) => waiting.push_back(next),
                Err(_) => break,
            }
        }
        run_group(&pool, &mut waiting, &counts).await;
    }
}

/// Runs up to a group of `waiting` in one transaction and answers their callers; a group
/// that commits is counted before its callers are answered (what they read of the counts
/// afterwards includes it). After a panic the group is rolled back and what it had not run
/// yet stays waiting.
async fn run_group(
    pool: &Pool<SqliteConn>,
    waiting: &mut VecDeque<Box<dyn Queued>>,
    counts: &Counts,
) {
    let take = waiting.len().min(MOST_IN_A_GROUP);
    let mut conn = match pool.get().await {
        Ok(conn) => conn,
        Err(e) => {
            let error = PoolError::from(e);
            for queued in waiting.drain(..take) {
                queued.refuse(error.again().into());
            }
            return;
        }
    };
    let conn: &mut SqliteConn = &mut conn;
    if let Err(e) = sqlite_begin(conn).await {
        let message = e.to_string();
        for queued in waiting.drain(..take) {
            queued.refuse(ApiError::Internal(anyhow::anyhow!(
                "beginning a write transaction: {message}"
            )));
        }
        return;
    }
    // Alone, a transaction needs no savepoint: its failure rolls back the transaction.
    let alone = take == 1;
    let mut committed: Vec<Answer> = Vec::with_capacity(take);
    let mut panicked = None;
    for _ in 0..take {
        let Some(queued) = waiting.pop_front() else {
            break;
        };
        if !alone {
            if let Err(e) = SqliteTransactions::begin_transaction(conn).await {
                queued.refuse(e.into());
                continue;
            }
        }
        let (ended, answer) = queued.run(&mut Conn::Sqlite(conn)).await;
        match ended {
            Ended::Done => {
                if !alone {
                    if let Err(e) = SqliteTransactions::commit_transaction(conn).await {
                        // Releasing a savepoint only fails if the connection broke.
                        let message = e.to_string();
                        answer(Some(&|| {
                            ApiError::Internal(anyhow::anyhow!("releasing a savepoint: {message}"))
                        }));
                        continue;
                    }
                }
                committed.push(answer);
            }
            Ended::Failed => {
                // Back to its savepoint, or, alone, the whole transaction; its error
                // answers it.
                let _ = SqliteTransactions::rollback_transaction(conn).await;
                answer(None);
                if alone {
                    return;
                }
            }
            Ended::Panicked => {
                panicked = Some(answer);
                break;
            }
        }
    }
    if let Some(answer) = panicked {
        rollback_all(conn).await;
        let abort = || ApiError::Internal(anyhow::anyhow!("a write of the same group panicked"));
        for answer in committed {
            answer(Some(&abort));
        }
        answer(None);
        return;
    }
    match SqliteTransactions::commit_transaction(conn).await {
        Ok(()) => {
            counts.groups.fetch_add(1, Ordering::Relaxed);
            counts
                .writes
                .fetch_add(committed.len() as u64, Ordering::Relaxed);
            for answer in committed {
                answer(None);
            }
        }
        Err(e) => {
            rollback_all(conn).await;
            let message = e.to_string();
            let abort =
                || ApiError::Internal(anyhow::anyhow!("committing a write transaction: {message}"));
            for answer in committed {
                answer(Some(&abort));
            }
        }
    }
}

/// Rolls the connection's transaction back whatever its depth, so that it goes back to
/// the pool with none open.
async fn rollback_all(conn: &mut SqliteConn) {
    while let Ok(Some(_)) =
        SqliteTransactions::transaction_manager_status_mut(conn).transaction_depth()
    {
        if SqliteTransactions::rollback_transaction(conn)
            .await
            .is_err()
        {
            break;
        }
    }
}
