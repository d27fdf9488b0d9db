//! SQLite's WAL checkpoints, run beside the writer rather than by it.
//!
//! A commit appends pages to the WAL; a checkpoint copies them back into the database file,
//! after which the writer starts the WAL over. Left to SQLite, the connection whose commit
//! takes the WAL past `wal_autocheckpoint` pages runs the checkpoint right after that
//! commit, and its `fsync` of the WAL took 20–28 ms each on the bench machine (`perf
//! trace`): every write waited that long, about four times a second in a drain (a tenth of
//! the writer's time), and three pickups in a thousand took 25–30 ms instead of 1. Here a
//! thread of its own checkpoints every [`EVERY`] with a connection of its own (`PASSIVE`:
//! it waits for nobody, readers and the writer go on meanwhile), so the WAL is copied back
//! long before the writer's own threshold, which stays as the backstop should this thread
//! fall behind (a reader holding an old snapshot keeps the WAL from starting over).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::sql_types::Integer;
use diesel::{Connection, QueryableByName, RunQueryDsl, SqliteConnection};

/// How often the WAL is checkpointed. A checkpoint with nothing to copy reads only the WAL
/// index; one with pages to copy costs two `fsync`s (the WAL's, the database's).
pub const EVERY: Duration = Duration::from_millis(100);

/// What the checkpoints did, for `/-/metrics`.
#[derive(Default)]
pub struct Checkpoints {
    /// Checkpoints that copied pages.
    copied: AtomicU64,
    /// Pages in the WAL after the last checkpoint (frames since it last started over).
    wal_pages: AtomicU64,
}

impl Checkpoints {
    /// (checkpoints that copied pages, pages in the WAL after the last one).
    pub fn get(&self) -> (u64, u64) {
        (
            self.copied.load(Ordering::Relaxed),
            self.wal_pages.load(Ordering::Relaxed),
        )
    }
}

/// The checkpointing thread; it stops once this is dropped (with the pool holding it).
pub struct Checkpointer {
    _stop: mpsc::Sender<()>,
    counts: Arc<Checkpoints>,
}

/// A row of `PRAGMA wal_checkpoint`.
#[derive(QueryableByName)]
struct Outcome {
    #[diesel(sql_type = Integer)]
    busy: i32,
    /// Pages in the WAL.
    #[diesel(sql_type = Integer)]
    log: i32,
    /// Of them, copied into the database (now or before).
    #[diesel(sql_type = Integer)]
    checkpointed: i32,
}

impl Checkpointer {
    /// Opens its connection to the database at `path` and starts the thread.
    pub fn start(path: &str) -> anyhow::Result<Checkpointer> {
        use anyhow::Context as _;
        let mut conn = SqliteConnection::establish(path)
            .with_context(|| format!("opening SQLite database {path} to checkpoint it"))?;
        conn.batch_execute("PRAGMA busy_timeout = 5000")?;
        let counts = Arc::new(Checkpoints::default());
        let (stop, stopped) = mpsc::channel::<()>();
        let kept = counts.clone();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                let mut last = (0, 0);
                // Only a timeout goes on: the sender dropped (the pool is gone) ends it.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
                    match diesel::sql_query("PRAGMA wal_checkpoint(PASSIVE)")
                        .get_result::<Outcome>(&mut conn)
                    {
                        Ok(done) => {
                            // Pages were copied now if some are copied and the WAL is not
                            // as the last look left it (an idle WAL answers the same).
                            let now = (done.log, done.checkpointed);
                            if done.checkpointed > 0 && now != last {
                                kept.copied.fetch_add(1, Ordering::Relaxed);
                            }
                            last = now;
                            let pages = u64::try_from(done.log).unwrap_or(0);
                            kept.wal_pages.store(pages, Ordering::Relaxed);
                            if done.busy != 0 {
                                tracing::debug!("SQLite checkpoint could not take its lock");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "SQLite checkpoint failed"),
                    }
                }
            })
            .context("starting the SQLite checkpoint thread")?;
        Ok(Checkpointer {
            _stop: stop,
            counts,
        })
    }

    pub fn counts(&self) -> &Checkpoints {
        &self.counts
    }
}
