//! The two migration folders describe the same schema, and both migrate down and up.

use diesel::sql_types::Text;
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use runway::db::Conn;

use serde_json::json;

use crate::helpers::{both_backends, Backend, TestApp};

#[derive(QueryableByName, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Column {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
}

async fn columns(app: &TestApp) -> Vec<(String, String)> {
    let mut db = app.db.read().await.expect("connection");
    let mut rows: Vec<Column> = match db.conn() {
        // SQLite: every table's columns from pragma_table_info.
        Conn::Sqlite(c) => diesel::sql_query(
            "SELECT m.name AS table_name, p.name AS column_name FROM sqlite_master m \
             JOIN pragma_table_info(m.name) p WHERE m.type = 'table' \
             AND m.name NOT LIKE 'sqlite_%' AND m.name != '__diesel_schema_migrations'",
        )
        .load(c)
        .await
        .expect("sqlite columns"),
        // PostgreSQL: the public schema's columns.
        Conn::Postgres(c) => diesel::sql_query(
            "SELECT table_name::text AS table_name, column_name::text AS column_name \
             FROM information_schema.columns WHERE table_schema = 'public' \
             AND table_name != '__diesel_schema_migrations'",
        )
        .load(c)
        .await
        .expect("postgres columns"),
    };
    rows.sort();
    rows.into_iter()
        .map(|c| (c.table_name, c.column_name))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_have_the_same_tables_and_columns() {
    let sqlite = TestApp::spawn(Backend::Sqlite).await;
    let postgres = TestApp::spawn(Backend::Postgres).await;
    let sqlite_columns = columns(&sqlite).await;
    assert!(sqlite_columns.len() > 50, "{sqlite_columns:?}");
    assert_eq!(sqlite_columns, columns(&postgres).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_go_down_and_up_again() {
    use diesel::Connection;
    use diesel_migrations::MigrationHarness;

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.sqlite3");
    let url = format!("sqlite://{}", path.display());
    runway::db::DbPool::connect(&url, 1)
        .await
        .expect("migrated");
    let path = path.display().to_string();
    tokio::task::spawn_blocking(move || {
        let mut conn = diesel::SqliteConnection::establish(&path).expect("open");
        conn.revert_all_migrations(runway::db::SQLITE_MIGRATIONS)
            .expect("down");
        conn.run_pending_migrations(runway::db::SQLITE_MIGRATIONS)
            .expect("up again");
    })
    .await
    .expect("sqlite down/up");

    let postgres = TestApp::spawn(Backend::Postgres).await;
    let before = columns(&postgres).await;
    let url = postgres_url(&postgres).await;
    tokio::task::spawn_blocking(move || {
        use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
        let mut conn =
            <AsyncConnectionWrapper<diesel_async::AsyncPgConnection> as Connection>::establish(
                &url,
            )
            .expect("connect");
        conn.revert_all_migrations(runway::db::POSTGRES_MIGRATIONS)
            .expect("down");
        conn.run_pending_migrations(runway::db::POSTGRES_MIGRATIONS)
            .expect("up again");
    })
    .await
    .expect("postgres down/up");
    assert_eq!(columns(&postgres).await, before);
}

/// The URL of the test app's own PostgreSQL database.
pub(crate) async fn postgres_url(app: &TestApp) -> String {
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = Text)]
        name: String,
    }
    let mut db = app.db.read().await.expect("connection");
    let Conn::Postgres(c) = db.conn() else {
        panic!("not PostgreSQL")
    };
    let name: Name = diesel::sql_query("SELECT current_database()::text AS name")
        .get_result(c)
        .await
        .expect("database name");
    let base = std::env::var("RUNWAY_TEST_DATABASE_URL").expect("RUNWAY_TEST_DATABASE_URL");
    let (server, _) = base.rsplit_once('/').expect("path");
    format!("{server}/{}", name.name)
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// A SQLite write transaction that reads before it writes waits for a write lock another
/// connection holds (`busy_timeout`), instead of failing "database is locked" at its first
/// write: a deferred `BEGIN` cannot wait there once it has read. Readers of the same file
/// take that lock for a moment when they meet a half-written WAL index header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_transaction_that_reads_first_waits_for_the_write_lock() {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lock.sqlite3");
    let pool = runway::db::DbPool::connect(&format!("sqlite://{}", path.display()), 2)
        .await
        .expect("migrated");
    let (locked, is_locked) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let mut conn =
            diesel::SqliteConnection::establish(&path.display().to_string()).expect("open");
        conn.batch_execute(
            "PRAGMA busy_timeout = 5000; BEGIN IMMEDIATE; \
             INSERT INTO instance_settings (key, value, updated_at) \
             VALUES ('holder', '1', CURRENT_TIMESTAMP)",
        )
        .expect("lock held");
        locked.send(()).expect("signal");
        std::thread::sleep(std::time::Duration::from_millis(300));
        conn.batch_execute("COMMIT").expect("commit");
    });
    is_locked
        .recv()
        .expect("the other connection holds the write lock");

    let mut db = pool.write().await.expect("writer");
    let before: Result<i64, diesel::result::Error> = runway::transaction!(&mut db.conn(), |tx| {
        let Conn::Sqlite(c) = tx else {
            unreachable!("a SQLite pool")
        };
        let before = diesel::sql_query("SELECT count(*) AS n FROM instance_settings")
            .get_result::<Count>(&mut **c)
            .await?
            .n;
        diesel::sql_query(
            "INSERT INTO instance_settings (key, value, updated_at) \
             VALUES ('writer', '1', CURRENT_TIMESTAMP)",
        )
        .execute(&mut **c)
        .await?;
        Ok(before)
    });
    holder.join().expect("holder");
    // It waited for the other's commit before it read: it saw that row, then wrote its own.
    let before = before.expect("the transaction waited instead of failing");
    let Conn::Sqlite(c) = &mut db.conn() else {
        unreachable!("a SQLite pool")
    };
    let after = diesel::sql_query("SELECT count(*) AS n FROM instance_settings")
        .get_result::<Count>(&mut **c)
        .await
        .expect("count")
        .n;
    assert_eq!(after, before + 1);
    let mut keys: Vec<String> = diesel::sql_query(
        "SELECT key AS table_name, value AS column_name FROM instance_settings \
         WHERE key IN ('holder', 'writer')",
    )
    .load::<Column>(&mut **c)
    .await
    .expect("rows")
    .into_iter()
    .map(|row| row.table_name)
    .collect();
    keys.sort();
    assert_eq!(keys, ["holder", "writer"]);
}

// Hot write transactions that queue up while one runs are committed together on
// SQLite (each in a savepoint): one that fails — with its own error or a database
// error — is rolled back alone, and its caller gets its error; the others' writes are
// all there once they are answered. On PostgreSQL each is a transaction of its own,
// with the same answers.
crate::helpers::both_backends! {
    async fn queued_write_transactions_commit_together_but_fail_alone(backend) {
        use runway::db::models::setting::InstanceSetting;
        use runway::error::ApiError;

        let app = TestApp::spawn(backend).await;
        let db = app.db.clone();
        let groups_before = db.write_groups();
        // The first holds the writer until the others queued behind it (on SQLite; on
        // PostgreSQL a while).
        let first = tokio::spawn({
            let db = db.clone();
            async move {
                let queue = db.clone();
                db.write_transaction(move |tx| {
                    Box::pin(async move {
                        InstanceSetting::insert_if_absent(tx, "group-first", "1").await?;
                        for _ in 0..200 {
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            if queue.write_queue().is_none_or(|waiting| waiting == 8) {
                                break;
                            }
                        }
                        Ok(())
                    })
                })
                .await
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let in_turn = backend == Backend::Sqlite;
        // The order the transactions ran in: the spawned tasks queue in any order.
        let ran: std::sync::Arc<std::sync::Mutex<Vec<usize>>> = Default::default();
        let queued: Vec<_> = (0..8)
            .map(|i| {
                let db = db.clone();
                let ran = ran.clone();
                tokio::spawn(async move {
                    db.write_transaction(move |tx| {
                        Box::pin(async move {
                            let previous = {
                                let mut ran = ran.lock().expect("order");
                                let previous = ran.last().copied();
                                ran.push(i);
                                previous
                            };
                            let key = format!("group-{i}");
                            InstanceSetting::insert_if_absent(tx, &key, "1").await?;
                            // On SQLite, where they run in turn, a transaction sees what
                            // the one before it wrote, and not what a failed one wrote.
                            // PostgreSQL runs them side by side.
                            if let (true, Some(p)) = (in_turn, previous) {
                                let before = format!("group-{p}");
                                let seen = InstanceSetting::get(tx, &before).await?;
                                let rolled_back = p == 3 || p == 5;
                                let expected = (!rolled_back).then_some("1");
                                assert_eq!(seen.as_deref(), expected, "{before} before {key}");
                            }
                            match i {
                                3 => Err(ApiError::Conflict),
                                5 => {
                                    runway::db_run!(tx, |c| diesel::sql_query(
                                        "SELECT * FROM no_such_table"
                                    )
                                    .execute(c)
                                    .await)?;
                                    Ok(i)
                                }
                                _ => Ok(i),
                            }
                        })
                    })
                    .await
                })
            })
            .collect();
        first.await.expect("joined").expect("the first committed");
        let mut answers = Vec::new();
        for handle in queued {
            answers.push(handle.await.expect("joined"));
        }
        for (i, answer) in answers.iter().enumerate() {
            match i {
                3 => assert!(matches!(answer, Err(ApiError::Conflict)), "{i}: {answer:?}"),
                5 => assert!(matches!(answer, Err(ApiError::Internal(_))), "{i}: {answer:?}"),
                _ => assert_eq!(answer.as_ref().ok(), Some(&i), "{i}: {answer:?}"),
            }
        }
        // On SQLite: the first alone, then the other eight in one group, of which six
        // committed.
        let counted = db.write_groups().zip(groups_before).map(|(after, before)| (after.0 - before.0, after.1 - before.1));
        let expected = (backend == Backend::Sqlite).then_some((2, 7));
        assert_eq!(counted, expected, "(commits, transactions committed)");
        let mut read = db.read().await.expect("a connection");
        let mut conn = read.conn();
        for key in ["group-first", "group-0", "group-1", "group-2", "group-4", "group-6", "group-7"] {
            assert_eq!(
                InstanceSetting::get(&mut conn, key).await.expect("read").as_deref(),
                Some("1"),
                "{key} committed"
            );
        }
        for key in ["group-3", "group-5"] {
            assert_eq!(
                InstanceSetting::get(&mut conn, key).await.expect("read"),
                None,
                "{key} rolled back"
            );
        }
    }
}

// A hot write transaction is one transaction from its first statement to its commit (on
// PostgreSQL its `BEGIN` travels with that statement, unanswered until then), one nested
// in it is a savepoint that fails alone, and the connection goes back to the pool with
// no transaction open: the next one is a transaction of its own.
crate::helpers::both_backends! {
    async fn a_hot_write_transaction_is_one_transaction_and_nests_savepoints(backend) {
        use runway::db::models::setting::InstanceSetting;
        use runway::error::ApiError;

        #[derive(QueryableByName)]
        struct Txid {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            id: i64,
        }
        async fn txid(tx: &mut Conn<'_>) -> Option<i64> {
            let Conn::Postgres(c) = tx else { return None };
            let row: Txid = diesel::sql_query("SELECT txid_current() AS id")
                .get_result(&mut **c)
                .await
                .expect("txid");
            Some(row.id)
        }

        let app = TestApp::spawn(backend).await;
        let db = app.db.clone();
        let mut seen = Vec::new();
        for round in 0..3 {
            let (first, last) = db
                .write_transaction(move |tx| {
                    Box::pin(async move {
                        let first = txid(tx).await;
                        InstanceSetting::insert_if_absent(tx, &format!("hot-{round}"), "1").await?;
                        let nested: Result<(), ApiError> = runway::transaction!(tx, |inner| {
                            InstanceSetting::insert_if_absent(inner, &format!("hot-inner-{round}"), "1")
                                .await?;
                            Err(ApiError::Conflict)
                        });
                        assert!(matches!(nested, Err(ApiError::Conflict)), "{nested:?}");
                        Ok::<_, ApiError>((first, txid(tx).await))
                    })
                })
                .await
                .expect("committed");
            assert_eq!(first, last, "round {round}: one transaction");
            seen.push(first);
        }
        if backend == Backend::Postgres {
            seen.dedup();
            assert_eq!(seen.len(), 3, "each round a transaction of its own: {seen:?}");
        }
        let mut read = db.read().await.expect("a connection");
        let mut conn = read.conn();
        for round in 0..3 {
            let kept = InstanceSetting::get(&mut conn, &format!("hot-{round}")).await.expect("read");
            assert_eq!(kept.as_deref(), Some("1"), "round {round} committed");
            let inner = InstanceSetting::get(&mut conn, &format!("hot-inner-{round}")).await.expect("read");
            assert_eq!(inner, None, "round {round}: the savepoint rolled back alone");
        }
    }
}

/// PostgreSQL writes a new pipeline and its jobs with `BEGIN`, both `INSERT`s and `COMMIT`
/// sent together. On a connection that has prepared none of them yet (each is prepared
/// first, a round trip of its own), they still run in the order sent, in one
/// transaction: a failing jobs' `INSERT` leaves no pipeline behind, and a good one gives
/// every job the new pipeline's id, in the order given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_new_pipeline_is_written_whole_or_not_at_all() {
    use diesel_async::AsyncConnection;
    use runway::db::enums::{JobStatus, PipelineStatus};
    use runway::db::models::{NewJob, NewPipeline, Pipeline};

    let app = TestApp::spawn(Backend::Postgres).await;
    let project = app.create_project(json!({ "name": "pipelined" })).await;
    let url = postgres_url(&app).await;
    let at = chrono::Utc::now().naive_utc();
    let pipeline = NewPipeline {
        project_id: project,
        ref_: "main",
        sha: "0123456789012345678901234567890123456789",
        before_sha: "0000000000000000000000000000000000000000",
        tag: false,
        protected: false,
        source: "api",
        status: PipelineStatus::Pending,
        started_at: None,
        finished_at: None,
        ci_config: "",
        variables: "[]".into(),
        stages: "[\"test\"]".into(),
        created_at: at,
        updated_at: at,
        name: None,
        auto_cancel_on_new_commit: "conservative",
        auto_cancel_on_job_failure: "none",
        has_sources: false,
        yaml_errors: None,
        schedule_id: None,
        parent_bridge_id: None,
        stage_scheduled: true,
    };
    let job = |name: &str, project_id: i64| NewJob {
        pipeline_id: 0,
        project_id,
        name: name.into(),
        stage: "test".into(),
        stage_idx: 0,
        status: JobStatus::Pending,
        when_: "on_success".into(),
        allow_failure: false,
        tag_list: "[]".into(),
        options: "{}".into(),
        protected: false,
        timeout: Some(3600),
        resource_group_id: None,
        claims_alone: false,
        interruptible: false,
        queued_at: Some(at),
        started_at: None,
        finished_at: None,
        scheduled_at: None,
        created_at: at,
        updated_at: at,
    };
    let count = |sql: &'static str| {
        let url = url.clone();
        async move {
            let mut c = diesel_async::AsyncPgConnection::establish(&url)
                .await
                .expect("connect");
            diesel::sql_query(sql)
                .get_result::<Count>(&mut c)
                .await
                .expect("count")
                .n
        }
    };

    // A fresh connection: nothing prepared. The second job names no project.
    let mut conn = diesel_async::AsyncPgConnection::establish(&url)
        .await
        .expect("connect");
    let refused =
        Pipeline::create_with_jobs(&mut conn, &pipeline, &[job("a", project), job("b", -1)]).await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(
        count("SELECT count(*) AS n FROM pipelines").await,
        0,
        "no pipeline left behind"
    );
    assert_eq!(count("SELECT count(*) AS n FROM jobs").await, 0);

    // The same connection again, and then one more fresh one.
    for mut conn in [
        conn,
        diesel_async::AsyncPgConnection::establish(&url)
            .await
            .expect("connect"),
    ] {
        let names = ["build", "test", "deploy"];
        let jobs: Vec<NewJob> = names.iter().map(|n| job(n, project)).collect();
        let (written, created) = Pipeline::create_with_jobs(&mut conn, &pipeline, &jobs)
            .await
            .expect("written");
        let got: Vec<(&str, i64)> = created
            .iter()
            .map(|j| (j.name.as_str(), j.pipeline_id))
            .collect();
        let expected: Vec<(&str, i64)> = names.iter().map(|n| (*n, written.id)).collect();
        assert_eq!(got, expected);
        assert!(
            created.windows(2).all(|w| w[0].id < w[1].id),
            "ids in the order given"
        );
        assert_eq!(written.status, PipelineStatus::Pending);
        // Committed, and no transaction left open on the connection.
        let mut shared = &conn;
        // A transaction left open after the `INSERT`s would still have its id.
        let open: Count =
            diesel::sql_query("SELECT count(*) AS n WHERE txid_current_if_assigned() IS NOT NULL")
                .get_result(&mut shared)
                .await
                .expect("state");
        assert_eq!(open.n, 0);
    }
    assert_eq!(count("SELECT count(*) AS n FROM pipelines").await, 2);
    assert_eq!(count("SELECT count(*) AS n FROM jobs").await, 6);
}

/// Runs the migration named `name` down and up again on the app's database, as an
/// instance of the build before it would have left the rows, then this one migrated.
async fn rerun_migration(app: &TestApp, name: &str) {
    use diesel::Connection;
    fn rerun<DB: diesel::backend::Backend>(
        conn: &mut impl diesel_migrations::MigrationHarness<DB>,
        source: diesel_migrations::EmbeddedMigrations,
        name: &str,
    ) {
        let all =
            diesel::migration::MigrationSource::<DB>::migrations(&source).expect("migrations");
        let one = all
            .iter()
            .find(|m| m.name().to_string().ends_with(name))
            .expect("named migration");
        conn.revert_migration(one.as_ref()).expect("down");
        conn.run_migration(one.as_ref()).expect("up again");
    }
    let name = name.to_string();
    let url = match app.backend {
        Backend::Sqlite => app.database_url.trim_start_matches("sqlite://").to_string(),
        Backend::Postgres => postgres_url(app).await,
    };
    let backend = app.backend;
    tokio::task::spawn_blocking(move || match backend {
        Backend::Sqlite => rerun(
            &mut diesel::SqliteConnection::establish(&url).expect("open"),
            runway::db::SQLITE_MIGRATIONS,
            &name,
        ),
        Backend::Postgres => {
            use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
            type Pg = AsyncConnectionWrapper<diesel_async::AsyncPgConnection>;
            rerun(
                &mut <Pg as Connection>::establish(&url).expect("connect"),
                runway::db::POSTGRES_MIGRATIONS,
                &name,
            )
        }
    })
    .await
    .expect("down and up");
}

#[derive(QueryableByName, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Flag {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    interruptible: bool,
}

both_backends! {
    // `jobs.interruptible` is written with each job, and the migration that adds it fills
    // it in for the jobs written before, from their spec: the redundant-pipeline cancel
    // reads the column alone.
    async fn jobs_written_before_the_interruptible_column_get_it_from_their_spec(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "app" })).await;
        app.pipeline(project, "i: { script: [x], interruptible: true }\nn: { script: [x] }\n").await;
        let flags = || async {
            let mut db = app.db.read().await.expect("connection");
            let query = diesel::sql_query("SELECT name, interruptible FROM jobs ORDER BY name");
            let mut rows: Vec<Flag> = match db.conn() {
                Conn::Sqlite(c) => query.load(c).await,
                Conn::Postgres(c) => query.load(c).await,
            }
            .expect("flags");
            rows.sort();
            rows.into_iter().map(|f| (f.name, f.interruptible)).collect::<Vec<_>>()
        };
        let written = vec![("i".to_string(), true), ("n".to_string(), false)];
        assert_eq!(flags().await, written, "as the jobs were written");
        rerun_migration(&app, "jobs_interruptible").await;
        assert_eq!(flags().await, written, "filled in by the migration");
    }
}
