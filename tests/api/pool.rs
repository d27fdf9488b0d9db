//! PostgreSQL's pool: a connection stays with the thread that opened it (its socket is
//! driven by that thread's runtime), within limits that hold over all threads.

use std::time::{Duration, Instant};

use diesel::sql_types::Integer;
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use runway::db::{Conn, DbConn, DbPool, PoolError};

use crate::helpers::{Backend, TestApp};
use crate::schema::postgres_url;

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

enum Ask {
    /// Take a connection, keep it, answer with its backend's process id.
    Take(tokio::sync::oneshot::Sender<Result<i32, String>>),
    /// Give back every connection kept.
    GiveBack(tokio::sync::oneshot::Sender<()>),
}

/// A thread with a single-threaded runtime of its own, as each of actix's workers is.
struct Worker(tokio::sync::mpsc::UnboundedSender<Ask>);

impl Worker {
    fn start(pool: DbPool) -> Worker {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Ask>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let mut kept: Vec<DbConn> = Vec::new();
                while let Some(ask) = rx.recv().await {
                    match ask {
                        Ask::Take(answer) => {
                            let taken = match pool.read().await {
                                Ok(mut db) => {
                                    let Conn::Postgres(c) = db.conn() else {
                                        panic!("not PostgreSQL")
                                    };
                                    let pid = diesel::sql_query("SELECT pg_backend_pid() AS pid")
                                        .get_result::<Pid>(c)
                                        .await
                                        .map(|p| p.pid)
                                        .map_err(|e| e.to_string());
                                    kept.push(db);
                                    pid
                                }
                                Err(e) => Err(e.to_string()),
                            };
                            let _ = answer.send(taken);
                        }
                        Ask::GiveBack(answer) => {
                            kept.clear();
                            let _ = answer.send(());
                        }
                    }
                }
            });
        });
        Worker(tx)
    }

    async fn take(&self) -> Result<i32, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.0.send(Ask::Take(tx)).expect("worker alive");
        rx.await.expect("worker answered")
    }

    async fn give_back(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.0.send(Ask::GiveBack(tx)).expect("worker alive");
        rx.await.expect("worker answered");
    }
}

/// A pool of two: each thread takes the connection it opened, not the one given back
/// last by another; a third thread borrows an idle one rather than open a third; with
/// two out, a fourth caller waits its time and is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_connection_stays_with_its_thread_within_the_pool_s_limits() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let url = postgres_url(&app).await;
    let pool = DbPool::connect_with(&url, 2, Duration::from_millis(500))
        .await
        .expect("pool");
    let (a, b, c) = (
        Worker::start(pool.clone()),
        Worker::start(pool.clone()),
        Worker::start(pool.clone()),
    );

    let first_a = a.take().await.expect("a's connection");
    a.give_back().await;
    // A's connection is idle, yet B opens its own.
    let first_b = b.take().await.expect("b's connection");
    assert_ne!(first_b, first_a, "b was handed a's connection");
    b.give_back().await;
    // B's was given back last; A takes its own again.
    assert_eq!(a.take().await.expect("a's connection"), first_a);
    // Two open, the pool's size: C borrows B's idle one instead of opening a third.
    assert_eq!(c.take().await.expect("c's connection"), first_b);
    assert_eq!(pool.pools(), vec![("postgres", 2, 0, 2)]);
    assert_eq!(pool.status(), (2, 2));

    // Both out: a caller elsewhere waits the pool's 500 ms, then is refused.
    let asked = Instant::now();
    let refused = pool.read().await;
    assert!(
        matches!(refused, Err(PoolError::Timeout)),
        "{:?}",
        refused.err()
    );
    assert!(
        asked.elapsed() >= Duration::from_millis(450),
        "{:?}",
        asked.elapsed()
    );

    a.give_back().await;
    c.give_back().await;
    assert_eq!(pool.pools(), vec![("postgres", 2, 2, 2)]);
    assert_eq!(pool.status(), (0, 2));
    // Given back, the connections serve again.
    assert_eq!(b.take().await.expect("b's connection"), first_b);
}

/// A pool of eight keeps two for the job queue: other requests take at most six, and a
/// seventh waits its time and is refused while the queue's handle still takes the two
/// kept, and then any given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarter_of_the_postgres_connections_is_kept_for_the_job_queue() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let url = postgres_url(&app).await;
    let pool = DbPool::connect_with(&url, 8, Duration::from_millis(300))
        .await
        .expect("pool");
    let queue = pool.for_queue();
    let mut taken = Vec::new();
    for _ in 0..6 {
        taken.push(pool.read().await.expect("one of the six shared"));
    }
    let refused = pool.write().await;
    assert!(
        matches!(refused, Err(PoolError::Timeout)),
        "{:?}",
        refused.err()
    );
    assert_eq!(pool.status(), (6, 8));
    let kept = [
        queue.read().await.expect("one kept for the queue"),
        queue.write().await.expect("the other kept for the queue"),
    ];
    assert_eq!(pool.status(), (8, 8));
    let refused = queue.read().await;
    assert!(
        matches!(refused, Err(PoolError::Timeout)),
        "all eight out: {:?}",
        refused.err()
    );
    // A shared one given back serves the queue too; the shared stay at six at most.
    taken.pop();
    let borrowed = queue.read().await.expect("a shared one given back");
    let refused = pool.read().await;
    assert!(
        matches!(refused, Err(PoolError::Timeout)),
        "{:?}",
        refused.err()
    );
    drop(kept);
    taken.push(pool.read().await.expect("the sixth shared again"));
    assert_eq!(pool.status(), (7, 8));
    let refused = pool.read().await;
    assert!(
        matches!(refused, Err(PoolError::Timeout)),
        "one free, kept for the queue: {:?}",
        refused.err()
    );
    drop((taken, borrowed));
    assert_eq!(pool.status(), (0, 8));
}

/// With every connection other requests may take out, and more of them waiting (a crowd
/// of log PATCHes, say), a runner's poll still reads the queue and claims its job through
/// the connections kept for the queue, ahead of the requests waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_claims_its_job_while_other_requests_wait_for_a_postgres_connection() {
    let app = std::sync::Arc::new(TestApp::builder(Backend::Postgres).pool(8, 3).spawn().await);
    let project = app
        .create_project(serde_json::json!({ "name": "app" }))
        .await;
    let (_, runner) = app
        .create_runner(serde_json::json!({ "runner_type": "instance_type" }))
        .await;
    // Known to the server: after its first poll (which writes its contact) and a second
    // (which reads it again), its next poll reads nothing to authenticate or heartbeat.
    for _ in 0..2 {
        assert_eq!(app.request_job(&runner).await.status, 204);
    }
    app.pipeline(project, "a: { script: x }\n").await;
    // The job known forgotten (as after another instance's bump): the search reads.
    app.state.queue.bump_local();
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(app.state.db.read().await.expect("a shared connection"));
    }
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                let db = app.state.db.read().await;
                let got = Instant::now();
                tokio::time::sleep(Duration::from_secs(4)).await;
                drop(db);
                got
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let taken = app.request_job(&runner).await;
    let answered = Instant::now();
    assert_eq!(taken.status, 201, "{}", taken.text);
    assert!(
        taken.json()["token"]
            .as_str()
            .is_some_and(|t| t.starts_with("glcbt-")),
        "{}",
        taken.text
    );
    drop(held);
    for task in waiting {
        assert!(
            task.await.expect("task") > answered,
            "the poll went ahead of the requests waiting"
        );
    }
}
