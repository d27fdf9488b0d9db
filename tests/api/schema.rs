//! The two migration folders describe the same schema, and both migrate down and up.

use diesel::sql_types::Text;
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use runway::db::Conn;

use crate::helpers::{Backend, TestApp};

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
async fn postgres_url(app: &TestApp) -> String {
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
