//! How SQLite's synchronous connection runs off the async threads.
//!
//! diesel-async runs each SQLite call with `spawn_blocking`, and when the awaiting future
//! is dropped early (a client hung up mid-request, so actix dropped the handler) it waits
//! for the call to finish with `tokio::task::block_in_place`, which panics on the
//! current-thread runtime every actix worker runs. This spawner waits the same way, for
//! the same reason (the connection must be free again before anyone reuses it), but on a
//! plain condition variable, which works on any runtime.

use std::cell::Cell;
use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};

use diesel_async::sync_connection_wrapper::SpawnBlocking;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

thread_local! {
    /// Set on the [`WriterThread`]: SQLite calls run right there, without a hop to the
    /// blocking pool and back.
    static INLINE: Cell<bool> = const { Cell::new(false) };
}

/// Runs the SQLite calls `future` makes right on the thread that polls it, as the
/// [`WriterThread`] runs its own: for the hot reads of a poll and of a job's update — a
/// lookup by primary key or a short indexed scan, tens of microseconds — the hop to the
/// blocking pool and back cost more than the query (two thread wake-ups, the actix worker
/// idle meanwhile). Only for such reads: a long one would hold up the worker's other
/// requests. No effect on PostgreSQL, whose calls never block.
pub async fn inline<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        let _inline = InlineScope::enter();
        future.as_mut().poll(cx)
    })
    .await
}

/// [`INLINE`] set for one poll, put back as it was afterwards (also on a panic).
struct InlineScope(bool);

impl InlineScope {
    fn enter() -> InlineScope {
        InlineScope(INLINE.with(|inline| inline.replace(true)))
    }
}

impl Drop for InlineScope {
    fn drop(&mut self) {
        INLINE.with(|inline| inline.set(self.0));
    }
}

/// A thread of its own for SQLite's hot write transactions (job claims, log appends).
///
/// SQLite has one writer, so a write transaction's latency is the ceiling on writes per
/// second. Run from a request, each statement of it hops to the blocking pool and back to
/// an actix worker that is busy with other requests, and the transaction holds the writer
/// all that while. Here the statements run inline, one after the other, on a thread that
/// does nothing else; other requests wait for the writer without blocking anything.
pub struct WriterThread {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl WriterThread {
    pub fn start() -> std::io::Result<WriterThread> {
        let (ready, handle) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                INLINE.with(|inline| inline.set(true));
                let _ = ready.send(Ok(runtime.handle().clone()));
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        let handle = handle
            .recv()
            .map_err(|_| std::io::Error::other("the SQLite writer thread did not start"))??;
        Ok(WriterThread {
            handle,
            stop: Some(stop),
        })
    }

    /// The writer thread's runtime, to start tasks that live as long as it does.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// Runs `work` on the writer thread. It runs to its end even if the caller stops
    /// waiting, as a transaction should.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        match self.handle.spawn(work).await {
            Ok(value) => value,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only when the thread is stopping, that is when the pool is dropped.
            Err(e) => panic!("the SQLite writer thread stopped: {e}"),
        }
    }
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Spawns on tokio's blocking pool; a dropped, unfinished call is waited for.
pub struct Blocking(tokio::runtime::Handle);

/// Set when the blocking call is over (also if it panicked).
#[derive(Default)]
struct Done {
    over: Mutex<bool>,
    signal: Condvar,
}

impl Done {
    fn finish(&self) {
        *self.over.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.signal.notify_all();
    }

    fn wait(&self) {
        let mut over = self.over.lock().unwrap_or_else(|e| e.into_inner());
        while !*over {
            over = self.signal.wait(over).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Marks the call over when dropped: at its end, or while unwinding from a panic.
struct FinishOnDrop(Arc<Done>);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        self.0.finish();
    }
}

struct WaitOnDrop<R> {
    task: tokio::task::JoinHandle<R>,
    done: Arc<Done>,
}

impl<R> Future for WaitOnDrop<R> {
    type Output = Result<R, tokio::task::JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.get_mut().task).poll(cx)
    }
}

impl<R> Drop for WaitOnDrop<R> {
    fn drop(&mut self) {
        if !self.task.is_finished() {
            self.done.wait();
        }
    }
}

impl SpawnBlocking for Blocking {
    fn spawn_blocking<'a, R>(
        &mut self,
        task: impl FnOnce() -> R + Send + 'static,
    ) -> BoxFuture<'a, Result<R, Box<dyn Error + Send + Sync + 'static>>>
    where
        R: Send + 'static,
    {
        if INLINE.with(Cell::get) {
            return futures_util::future::ready(Ok(task())).boxed();
        }
        let done = Arc::new(Done::default());
        let guard = FinishOnDrop(done.clone());
        let task = self.0.spawn_blocking(move || {
            let _guard = guard;
            task()
        });
        WaitOnDrop { task, done }
            .map(|r| r.map_err(|e| Box::new(e) as Box<dyn Error + Send + Sync>))
            .boxed()
    }

    fn get_runtime() -> Self {
        Blocking(tokio::runtime::Handle::current())
    }
}
