//! Storage on two backends behind one pool type.
//!
//! Both backends go through diesel-async so that a query is written once (see [`db_run!`]):
//! PostgreSQL with `AsyncPgConnection`, SQLite with `SyncConnectionWrapper<SqliteConnection>`
//! (bundled libsqlite3; each query runs on tokio's blocking pool). Both are pooled with
//! deadpool: an async pool, because handlers await the database and must not block a worker.
//! A connection is handed out again without a test query (`RecyclingMethod::Fast`): a
//! request takes several in turn, and a `SELECT 1` before each cost as much as the work.
//! A PostgreSQL connection whose server went away is closed, and a closed one is dropped
//! by the pool instead of handed out; a query on a connection lost since answers 503.
//!
//! SQLite allows one writer at a time. Instead of racing writers on `BEGIN IMMEDIATE`
//! and `busy_timeout`, every write goes through a pool of exactly one connection
//! ([`DbPool::write`]): writes are serialised in-process and a read-then-write transaction
//! can never fail with `SQLITE_BUSY` on lock upgrade. Readers use their own connections
//! (WAL lets them run beside the writer). PostgreSQL uses one pool for both, whose
//! connections each stay with the thread that opened them ([`affine`]).

pub mod enums;
pub mod models;
pub mod schema;

use std::time::Duration;

use anyhow::Context;
use diesel::{Connection, SqliteConnection};
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use futures_util::FutureExt;

mod affine;
mod blocking;
mod checkpoint;
mod group;

pub use blocking::inline;

use group::GroupCommit;

use blocking::WriterThread;

pub type SqliteConn = SyncConnectionWrapper<SqliteConnection, blocking::Blocking>;

pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// How long a request waits for a pooled connection before answering 503, by default
/// (`RUNWAY_DATABASE_POOL_TIMEOUT`); Rails' pool waits 5 s too.
pub const POOL_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend named by a URL's scheme; anything else is an error rather than a new
    /// empty SQLite file named after a typo.
    pub fn from_url(url: &str) -> anyhow::Result<Backend> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else if url.starts_with("sqlite://") {
            Ok(Backend::Sqlite)
        } else {
            anyhow::bail!("database URL must start with sqlite:// or postgres://")
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("timed out waiting for a database connection")]
    Timeout,
    /// No new connection could be made: the database is down or unreachable.
    #[error("the database is unreachable: {0}")]
    Unreachable(anyhow::Error),
    #[error(transparent)]
    Other(anyhow::Error),
}

impl PoolError {
    /// The same error once more, for each of several callers it refuses (its cause kept
    /// as its message), so that each gets the answer `ApiError`'s conversion gives it.
    pub fn again(&self) -> PoolError {
        match self {
            PoolError::Timeout => PoolError::Timeout,
            PoolError::Unreachable(cause) => PoolError::Unreachable(anyhow::anyhow!("{cause:#}")),
            PoolError::Other(cause) => PoolError::Other(anyhow::anyhow!("{cause:#}")),
        }
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<deadpool::managed::PoolError<E>>
    for PoolError
{
    fn from(err: deadpool::managed::PoolError<E>) -> Self {
        match err {
            deadpool::managed::PoolError::Timeout(_) => PoolError::Timeout,
            deadpool::managed::PoolError::Backend(e) => {
                PoolError::Unreachable(anyhow::Error::new(e))
            }
            other => PoolError::Other(anyhow::Error::new(other)),
        }
    }
}

#[derive(Clone)]
pub enum DbPool {
    Postgres(affine::PgPool),
    Sqlite {
        read: Pool<SqliteConn>,
        write: Pool<SqliteConn>,
        writer: std::sync::Arc<WriterThread>,
        /// Hot write transactions, committed in groups on the writer thread.
        group: GroupCommit,
        /// Checkpoints the WAL beside the writer.
        checkpointer: std::sync::Arc<checkpoint::Checkpointer>,
        /// The database file.
        path: std::path::PathBuf,
    },
}

/// A checked-out connection of either backend. It lives on the stack for one request;
/// boxing the larger variant would only add an allocation to every checkout.
#[allow(clippy::large_enum_variant)]
pub enum DbConn {
    Postgres(affine::PgConn),
    Sqlite(Object<SqliteConn>),
}

impl DbConn {
    /// The borrowed form every model function takes.
    pub fn conn(&mut self) -> Conn<'_> {
        match self {
            DbConn::Postgres(c) => Conn::Postgres(c),
            DbConn::Sqlite(c) => Conn::Sqlite(c),
        }
    }
}

/// A borrowed connection of either backend: from the pool ([`DbConn::conn`]) or inside a
/// transaction ([`crate::transaction!`]), so one model function serves both.
pub enum Conn<'a> {
    Postgres(&'a mut AsyncPgConnection),
    Sqlite(&'a mut SqliteConn),
}

impl DbPool {
    /// Opens the pool and runs pending migrations (creating the SQLite file and its folder).
    pub async fn connect(url: &str, size: usize) -> anyhow::Result<DbPool> {
        DbPool::connect_with(url, size, POOL_WAIT).await
    }

    /// [`DbPool::connect`], with requests waiting at most `wait` for a connection.
    pub async fn connect_with(url: &str, size: usize, wait: Duration) -> anyhow::Result<DbPool> {
        match Backend::from_url(url)? {
            Backend::Postgres => {
                run_postgres_migrations(url).await?;
                // Kept by the thread that opens each connection (see `affine`); a new
                // connection to a database that is down fails within `wait`, not hangs.
                let pool = affine::PgPool::new(url, size, wait, || {
                    let mut config = ManagerConfig::<AsyncPgConnection>::default();
                    config.recycling_method = RecyclingMethod::Fast;
                    config
                });
                Ok(DbPool::Postgres(pool))
            }
            Backend::Sqlite => {
                let path = url.trim_start_matches("sqlite://").to_string();
                if let Some(dir) = std::path::Path::new(&path).parent() {
                    if !dir.as_os_str().is_empty() {
                        std::fs::create_dir_all(dir)
                            .with_context(|| format!("creating {}", dir.display()))?;
                    }
                }
                stable_sqlite_plans();
                run_sqlite_migrations(&path).await?;
                let read = sqlite_pool(&path, size.clamp(1, 8), wait, Access::Read)?;
                let write = sqlite_pool(&path, 1, wait, Access::Write)?;
                let writer = std::sync::Arc::new(
                    WriterThread::start().context("starting the SQLite writer thread")?,
                );
                let group = GroupCommit::start(writer.handle(), write.clone());
                let checkpointer = std::sync::Arc::new(checkpoint::Checkpointer::start(&path)?);
                Ok(DbPool::Sqlite {
                    read,
                    write,
                    writer,
                    group,
                    checkpointer,
                    path: path.into(),
                })
            }
        }
    }

    /// This pool, for the job queue's reads and claims: on PostgreSQL these may take the
    /// connections kept for them ([`affine::PgPool::for_queue`]); on SQLite the same pool
    /// (its reads have their own connections, its writes the one writer in turns).
    pub fn for_queue(&self) -> DbPool {
        match self {
            DbPool::Postgres(pool) => DbPool::Postgres(pool.for_queue()),
            sqlite => sqlite.clone(),
        }
    }

    /// How many connections reads may use at once.
    pub fn read_capacity(&self) -> usize {
        match self {
            DbPool::Postgres(pool) => pool.counts().max,
            DbPool::Sqlite { read, .. } => read.status().max_size,
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            DbPool::Postgres(_) => Backend::Postgres,
            DbPool::Sqlite { .. } => Backend::Sqlite,
        }
    }

    /// The SQLite database file (none on PostgreSQL).
    pub fn sqlite_file(&self) -> Option<&std::path::Path> {
        match self {
            DbPool::Postgres(_) => None,
            DbPool::Sqlite { path, .. } => Some(path),
        }
    }

    /// A connection for reads.
    pub async fn read(&self) -> Result<DbConn, PoolError> {
        Ok(match self {
            DbPool::Postgres(pool) => DbConn::Postgres(pool.get().await?),
            DbPool::Sqlite { read, .. } => DbConn::Sqlite(read.get().await?),
        })
    }

    /// The connection for writes (on SQLite the single writer; see the module doc).
    pub async fn write(&self) -> Result<DbConn, PoolError> {
        Ok(match self {
            DbPool::Postgres(pool) => DbConn::Postgres(pool.get().await?),
            DbPool::Sqlite { write, .. } => DbConn::Sqlite(write.get().await?),
        })
    }

    /// Runs a hot write transaction: on SQLite on its writer thread (see
    /// [`blocking::WriterThread`]), on PostgreSQL right here. It runs to its end even if
    /// the caller stops waiting.
    pub async fn on_writer<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        match self {
            DbPool::Sqlite { writer, .. } => writer.run(work).await,
            DbPool::Postgres(_) => match tokio::spawn(work).await {
                Ok(value) => value,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("a write transaction was cancelled: {e}"),
            },
        }
    }

    /// Runs `work` as a hot write transaction, answering once it is committed: on SQLite
    /// with the others queued meanwhile on the writer thread, committed together (see
    /// [`group`]); on PostgreSQL in a transaction of its own. It runs to its end even if
    /// the caller stops waiting.
    pub async fn write_transaction<T, F>(&self, work: F) -> crate::error::ApiResult<T>
    where
        T: Send + 'static,
        F: for<'a, 'b> FnOnce(
                &'a mut Conn<'b>,
            )
                -> futures_util::future::BoxFuture<'a, crate::error::ApiResult<T>>
            + Send
            + 'static,
    {
        match self {
            DbPool::Sqlite { group, .. } => group.run(work).await,
            DbPool::Postgres(_) => {
                self.on_postgres(move |conn| Box::pin(pg_hot_transaction(conn, work)))
                    .await
            }
        }
    }

    /// PostgreSQL only: runs `work` on a connection of its own, to its end even if the
    /// caller stops waiting, for statements it sends itself (pipelined, say); an error on
    /// SQLite.
    pub async fn on_postgres<T, F>(&self, work: F) -> crate::error::ApiResult<T>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(
                &'a mut AsyncPgConnection,
            )
                -> futures_util::future::BoxFuture<'a, crate::error::ApiResult<T>>
            + Send
            + 'static,
    {
        let DbPool::Postgres(pool) = self else {
            return Err(crate::error::ApiError::Internal(anyhow::anyhow!(
                "a PostgreSQL statement on SQLite"
            )));
        };
        let pool = pool.clone();
        self.on_writer(async move {
            let mut conn = pool.get().await?;
            work(&mut conn).await
        })
        .await
    }

    /// SQLite's group commit: groups committed, and the hot write transactions committed
    /// in them (none on PostgreSQL).
    pub fn write_groups(&self) -> Option<(u64, u64)> {
        match self {
            DbPool::Sqlite { group, .. } => Some(group.committed()),
            DbPool::Postgres(_) => None,
        }
    }

    /// SQLite's group commit: hot write transactions queued, not yet taken into a group
    /// (none on PostgreSQL).
    pub fn write_queue(&self) -> Option<usize> {
        match self {
            DbPool::Sqlite { group, .. } => Some(group.waiting()),
            DbPool::Postgres(_) => None,
        }
    }

    /// SQLite's checkpoints beside the writer: (checkpoints that copied pages, pages in
    /// the WAL after the last one); none on PostgreSQL.
    pub fn checkpoints(&self) -> Option<(u64, u64)> {
        match self {
            DbPool::Sqlite { checkpointer, .. } => Some(checkpointer.counts().get()),
            DbPool::Postgres(_) => None,
        }
    }

    /// Each pool as (name, connections open, idle, most allowed), for metrics.
    pub fn pools(&self) -> Vec<(&'static str, usize, usize, usize)> {
        let row = |name, status: deadpool::Status| {
            (
                name,
                status.size,
                status.available.min(status.size),
                status.max_size,
            )
        };
        match self {
            DbPool::Postgres(pool) => {
                let counts = pool.counts();
                vec![(
                    "postgres",
                    counts.open,
                    counts.open.saturating_sub(counts.out),
                    counts.max,
                )]
            }
            DbPool::Sqlite { read, write, .. } => {
                vec![
                    row("sqlite_read", read.status()),
                    row("sqlite_write", write.status()),
                ]
            }
        }
    }

    /// Connections in use and the pool's maximum, for readiness and metrics.
    pub fn status(&self) -> (usize, usize) {
        let status = match self {
            DbPool::Postgres(pool) => {
                let counts = pool.counts();
                return (counts.out, counts.max);
            }
            DbPool::Sqlite { read, .. } => read.status(),
        };
        (
            status.size - status.available.min(status.size),
            status.max_size,
        )
    }
}

/// A hot write transaction on PostgreSQL ([`DbPool::write_transaction`]) whose `BEGIN`
/// travels with its first statement instead of a round trip of its own.
///
/// `BEGIN` is handed to the connection and its answer is not awaited: PostgreSQL answers
/// a connection's requests in the order they were sent, so the first statement of `work`
/// runs inside the transaction all the same, and any failure of the connection reaches
/// that statement. (`BEGIN` itself fails on nothing else: in a transaction already open it
/// only warns, and a pooled connection has none.) The transaction manager is told of the
/// transaction, so that one nested in `work` becomes a savepoint and the commit or
/// rollback at the end is its own. On a connection already in a transaction it is the
/// ordinary nested transaction.
async fn pg_hot_transaction<T, F>(
    conn: &mut AsyncPgConnection,
    work: F,
) -> crate::error::ApiResult<T>
where
    F: for<'a, 'b> FnOnce(
            &'a mut Conn<'b>,
        )
            -> futures_util::future::BoxFuture<'a, crate::error::ApiResult<T>>
        + Send,
    T: Send,
{
    use diesel::connection::TransactionDepthChange;
    use diesel_async::{AnsiTransactionManager, SimpleAsyncConnection, TransactionManager};
    if AnsiTransactionManager::transaction_manager_status_mut(conn)
        .transaction_depth()?
        .is_some()
    {
        return crate::transaction!(&mut Conn::Postgres(conn), |tx| work(tx).await);
    }
    // One poll sends it (tokio-postgres queues the message before it waits for the
    // answer); the answer is then dropped unread.
    let mut shared: &AsyncPgConnection = conn;
    if let Some(Err(e)) = shared.batch_execute("BEGIN").now_or_never() {
        return Err(e.into());
    }
    AnsiTransactionManager::transaction_manager_status_mut(conn)
        .transaction_state()?
        .change_transaction_depth(TransactionDepthChange::IncreaseDepth)?;
    match work(&mut Conn::Postgres(conn)).await {
        Ok(value) => {
            AnsiTransactionManager::commit_transaction(conn).await?;
            Ok(value)
        }
        Err(e) => {
            if let Err(rollback) = AnsiTransactionManager::rollback_transaction(conn).await {
                tracing::warn!(error = %rollback, "rolling back a write transaction failed");
            }
            Err(e)
        }
    }
}

/// Runs `$body` with `$c` bound to the `&mut` connection of whichever backend `$conn`
/// (a `&mut Conn`) holds. The body is written once and type-checked once per backend, so it
/// may only use SQL both backends share; where they differ, `match` on [`Conn`] instead.
#[macro_export]
macro_rules! db_run {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::db::Conn::Postgres(__c) => {
                let $c = &mut **__c;
                $body
            }
            $crate::db::Conn::Sqlite(__c) => {
                let $c = &mut **__c;
                $body
            }
        }
    };
}

/// Runs `$body` (an expression returning `Result<T, E>`, `E: From<diesel::result::Error>`)
/// in a transaction on `$conn` (a `&mut Conn`), with `$tx` bound to a `&mut Conn` of the
/// transaction, so model functions run inside it unchanged.
#[macro_export]
macro_rules! transaction {
    ($conn:expr, |$tx:ident| $body:expr) => {{
        use diesel_async::AsyncConnection as _;
        match $conn {
            $crate::db::Conn::Postgres(__c) => {
                __c.transaction(async move |__t| {
                    let mut __tx = $crate::db::Conn::Postgres(__t);
                    let $tx = &mut __tx;
                    $body
                })
                .await
            }
            $crate::db::Conn::Sqlite(__c) => match $crate::db::sqlite_begin(__c).await {
                Ok(()) => {
                    let __result = async {
                        let mut __tx = $crate::db::Conn::Sqlite(&mut *__c);
                        let $tx = &mut __tx;
                        $body
                    }
                    .await;
                    $crate::db::sqlite_end(__c, __result).await
                }
                Err(e) => Err(e.into()),
            },
        }
    }};
}

/// The transaction manager of a SQLite connection.
type SqliteTransactions = <SqliteConn as AsyncConnection>::TransactionManager;

/// Begins a transaction on a SQLite connection for [`transaction!`]: `BEGIN IMMEDIATE`,
/// or a savepoint inside one already open.
///
/// A plain (deferred) `BEGIN` takes the write lock only at the first write. When that
/// write follows a read in the same transaction, SQLite cannot wait for the lock (its
/// busy handler is not called once a read has begun) and fails at once with
/// `SQLITE_BUSY` if another connection holds it even for a moment — as a reader does
/// while it re-reads the WAL index header it found half-written, or with
/// `SQLITE_BUSY_SNAPSHOT` if anything committed in between. `BEGIN IMMEDIATE` takes the
/// lock first, where `busy_timeout` applies. Every SQLite transaction here writes, on the
/// one writer connection, so nothing waits for it that would not have waited anyway.
pub async fn sqlite_begin(conn: &mut SqliteConn) -> diesel::QueryResult<()> {
    use diesel_async::TransactionManager as _;
    let depth = SqliteTransactions::transaction_manager_status_mut(conn).transaction_depth()?;
    match depth {
        None => {
            conn.spawn_blocking(|c| {
                diesel::connection::AnsiTransactionManager::begin_transaction_sql(
                    c,
                    "BEGIN IMMEDIATE",
                )
            })
            .await
        }
        Some(_) => SqliteTransactions::begin_transaction(conn).await,
    }
}

/// Ends what [`sqlite_begin`] began: commits on `Ok`, rolls back on `Err` (keeping the
/// body's error, as diesel's own `transaction` does).
pub async fn sqlite_end<T, E: From<diesel::result::Error>>(
    conn: &mut SqliteConn,
    result: Result<T, E>,
) -> Result<T, E> {
    use diesel_async::TransactionManager as _;
    match result {
        Ok(value) => {
            SqliteTransactions::commit_transaction(conn).await?;
            Ok(value)
        }
        Err(error) => match SqliteTransactions::rollback_transaction(conn).await {
            Ok(()) | Err(diesel::result::Error::BrokenTransactionManager) => Err(error),
            Err(rollback) => Err(rollback.into()),
        },
    }
}

/// Turns on SQLite's query planner stability guarantee for every connection opened from
/// here on (once per process). Without it a statement whose plan could depend on a bound
/// value — `LIMIT ?`, which diesel writes for every `.first()` and `.limit(n)`, among them
/// — is marked expired each time that value is bound, and so parsed and planned again on
/// every execution: a cached statement that is compiled anew each time. Measured on the
/// log append, where the job lookup is such a statement: `sqlite3Reprepare` was 14% of the
/// server's CPU. With the guarantee, plans do not look at bound values; none of our queries
/// needs them to (there are no statistics tables, nor `LIKE ?`).
fn stable_sqlite_plans() {
    use libsqlite3_sys as ffi;
    static ONCE: std::sync::Once = std::sync::Once::new();

    /// Runs for each new connection, before it is handed to diesel.
    unsafe extern "C" fn on_open(
        db: *mut ffi::sqlite3,
        _error: *mut *mut std::ffi::c_char,
        _api: *const ffi::sqlite3_api_routines,
    ) -> std::ffi::c_int {
        // SAFETY: `db` is the connection SQLite is opening, valid for this call; the
        // option takes an int and a nullable out-pointer.
        unsafe {
            ffi::sqlite3_db_config(
                db,
                ffi::SQLITE_DBCONFIG_ENABLE_QPSG,
                1 as std::ffi::c_int,
                std::ptr::null_mut::<std::ffi::c_int>(),
            );
        }
        ffi::SQLITE_OK
    }

    ONCE.call_once(|| {
        // SAFETY: registers a function with the signature SQLite calls it with.
        let rc = unsafe { ffi::sqlite3_auto_extension(Some(on_open)) };
        if rc != ffi::SQLITE_OK {
            tracing::warn!(rc, "SQLite refused the planner stability setting");
        }
    });
}

/// What a SQLite pool's connections may do.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Reads only (`PRAGMA query_only`): a write through a reader would take the write
    /// lock from under the one writer, whose transactions would then wait for it (or, had
    /// the reader's transaction begun deferred, fail at its first write).
    Read,
    Write,
}

fn sqlite_pool(
    path: &str,
    size: usize,
    wait: Duration,
    access: Access,
) -> anyhow::Result<Pool<SqliteConn>> {
    let mut config = ManagerConfig::<SqliteConn>::default();
    config.recycling_method = RecyclingMethod::Fast;
    config.custom_setup = Box::new(move |url| {
        let url = url.to_string();
        async move {
            let mut conn = SqliteConn::establish(&url).await?;
            // WAL: readers do not block the writer. busy_timeout: a reader that meets a
            // checkpoint waits instead of failing. NORMAL sync is durable in WAL mode
            // against process crashes (the last commits may be lost on power loss only).
            // The WAL is checkpointed beside the writer (`checkpoint`); a connection
            // checkpoints itself after a commit only past 16,384 pages (64 MiB of WAL),
            // should that fall behind: each such checkpoint stalls the writer.
            // busy_timeout first: the pragmas after it may wait for a lock (a connection
            // opened while the writer checkpoints), and without it would fail at once.
            for pragma in [
                "PRAGMA busy_timeout = 5000",
                "PRAGMA journal_mode = WAL",
                "PRAGMA foreign_keys = ON",
                "PRAGMA synchronous = NORMAL",
                "PRAGMA wal_autocheckpoint = 16384",
            ] {
                diesel::sql_query(pragma)
                    .execute(&mut conn)
                    .await
                    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            }
            if access == Access::Read {
                diesel::sql_query("PRAGMA query_only = ON")
                    .execute(&mut conn)
                    .await
                    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            }
            Ok(conn)
        }
        .boxed()
    });
    let manager = AsyncDieselConnectionManager::<SqliteConn>::new_with_config(path, config);
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(wait))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .context("building the SQLite pool")
}

async fn run_sqlite_migrations(path: &str) -> anyhow::Result<()> {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut conn = SqliteConnection::establish(&path)
            .with_context(|| format!("opening SQLite database {path}"))?;
        diesel::connection::SimpleConnection::batch_execute(
            &mut conn,
            "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000;",
        )?;
        conn.run_pending_migrations(SQLITE_MIGRATIONS)
            .map_err(|e| anyhow::anyhow!("running SQLite migrations: {e}"))?;
        Ok(())
    })
    .await?
}

async fn run_postgres_migrations(url: &str) -> anyhow::Result<()> {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
        let mut conn = <AsyncConnectionWrapper<AsyncPgConnection> as Connection>::establish(&url)
            .context("connecting to PostgreSQL")?;
        let pending = conn
            .has_pending_migration(POSTGRES_MIGRATIONS)
            .map_err(|e| anyhow::anyhow!("reading PostgreSQL migrations: {e}"))?;
        // Instances already serving this database back their runners off meanwhile
        // (crate::service::backoff). On an empty database the table is not there yet,
        // and nobody is serving it: the marker is skipped.
        let marked = pending
            && diesel::RunQueryDsl::execute(
                diesel::sql_query(
                    "INSERT INTO instance_settings (key, value, updated_at) \
                     VALUES ('migrations_running', extract(epoch from now())::bigint::text, now()) \
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
                ),
                &mut conn,
            )
            .is_ok();
        let ran = conn
            .run_pending_migrations(POSTGRES_MIGRATIONS)
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("running PostgreSQL migrations: {e}"));
        if marked {
            let _ = diesel::RunQueryDsl::execute(
                diesel::sql_query("DELETE FROM instance_settings WHERE key = 'migrations_running'"),
                &mut conn,
            );
        }
        ran
    })
    .await?
}

/// Answers whether the database takes a query (readiness).
pub async fn ping(pool: &DbPool) -> Result<(), crate::error::ApiError> {
    let mut db = pool.read().await?;
    db_run!(&mut db.conn(), |c| diesel::sql_query("SELECT 1")
        .execute(c)
        .await)?;
    Ok(())
}

/// A statement of fixed shape kept in the connection's prepared-statement cache, keyed by
/// its text. Diesel caches no `UPDATE` it builds (a changeset with optional fields has
/// many texts), nor an `INSERT` of a row with optional fields (`DEFAULT` or a bind), so
/// each one was prepared anew — on PostgreSQL a parse, a plan and a round trip more per
/// execution. Wrap only statements whose text takes few forms.
#[derive(Debug, Clone, Copy)]
pub struct Cached<Q>(pub Q);

/// Never the statement's type: one type may have several texts (an optional field's
/// `DEFAULT` or bind), and the cache must key each text on its own.
impl<Q> diesel::query_builder::QueryId for Cached<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: diesel::query_builder::Query> diesel::query_builder::Query for Cached<Q> {
    type SqlType = Q::SqlType;
}

impl<Q, DB> diesel::query_builder::QueryFragment<DB> for Cached<Q>
where
    Q: diesel::query_builder::QueryFragment<DB>,
    DB: diesel::backend::Backend,
{
    fn walk_ast<'b>(
        &'b self,
        pass: diesel::query_builder::AstPass<'_, 'b, DB>,
    ) -> diesel::QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &DB) -> diesel::QueryResult<bool> {
        Ok(true)
    }
}

#[cfg(test)]
mod cached_tests {
    use diesel::prelude::*;
    use diesel::query_builder::QueryFragment;

    use super::schema::jobs;
    use super::Cached;

    #[test]
    fn a_wrapped_update_is_cached_with_the_same_text() {
        let update = diesel::update(jobs::table.find(1_i64)).set(jobs::trace_size.eq(2_i64));
        let pg = diesel::pg::Pg;
        assert!(
            !update.is_safe_to_cache_prepared(&pg).expect("walk"),
            "diesel's own"
        );
        let text = diesel::debug_query::<diesel::pg::Pg, _>(&update).to_string();
        let cached = Cached(update);
        assert!(cached.is_safe_to_cache_prepared(&pg).expect("walk"));
        assert_eq!(
            diesel::debug_query::<diesel::pg::Pg, _>(&cached).to_string(),
            text
        );
    }

    /// An `INSERT` whose optional field is `DEFAULT` in one row and a bind in another has
    /// one type and two texts: the cache must key them by text, not by type.
    #[test]
    fn a_wrapped_insert_is_keyed_by_its_text_not_its_type() {
        use diesel::query_builder::QueryId;
        let row = |reason: Option<&'static str>| {
            diesel::insert_into(jobs::table).values((
                jobs::name.eq("a"),
                reason.map(|r| jobs::failure_reason.eq(r)),
            ))
        };
        let (none, some) = (Cached(row(None)), Cached(row(Some("x"))));
        let text = |q| diesel::debug_query::<diesel::pg::Pg, _>(q).to_string();
        assert_ne!(text(&none), text(&some));
        fn type_key<Q: QueryId>(_: &Q) -> Option<std::any::TypeId> {
            Q::query_id()
        }
        assert_eq!(type_key(&none), None);
        assert!(none
            .is_safe_to_cache_prepared(&diesel::pg::Pg)
            .expect("walk"));
    }
}
