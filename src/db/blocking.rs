//! How SQLite's synchronous connection runs off the async threads.
//!
//! diesel-async runs each SQLite call with `spawn_blocking`, and when the awaiting future
//! is dropped early (a client hung up mid-request, so actix dropped the handler) it waits
//! for the call to finish with `tokio::task::block_in_place`, which panics on the
//! current-thread runtime every actix worker runs. This spawner waits the same way, for
//! the same reason (the connection must be free again before anyone reuses it), but on a
//! plain condition variable, which works on any runtime.

use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};

use diesel_async::sync_connection_wrapper::SpawnBlocking;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

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
