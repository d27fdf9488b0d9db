use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::now;
use crate::auth::tokens::TokenDigest;
use crate::db::schema::ui_sessions;
use crate::db::Conn;
use crate::db_run;

/// A web page session, by the digest of its id: the id itself is only in the cookie.
pub struct UiSessionRow;

impl UiSessionRow {
    pub async fn insert(
        conn: &mut Conn<'_>,
        digest: &TokenDigest,
        expires_at: NaiveDateTime,
    ) -> QueryResult<()> {
        let row = (
            ui_sessions::id_digest.eq(digest.as_bytes()),
            ui_sessions::expires_at.eq(expires_at),
            ui_sessions::created_at.eq(now()),
        );
        db_run!(conn, |c| diesel::insert_into(ui_sessions::table)
            .values(row)
            .execute(c)
            .await)?;
        Ok(())
    }

    /// Whether a session with this digest exists and has not expired at `at`.
    pub async fn is_live(
        conn: &mut Conn<'_>,
        digest: &TokenDigest,
        at: NaiveDateTime,
    ) -> QueryResult<bool> {
        let found: Option<NaiveDateTime> = db_run!(conn, |c| ui_sessions::table
            .find(digest.as_bytes())
            .filter(ui_sessions::expires_at.gt(at))
            .select(ui_sessions::expires_at)
            .first(c)
            .await
            .optional())?;
        Ok(found.is_some())
    }

    pub async fn delete(conn: &mut Conn<'_>, digest: &TokenDigest) -> QueryResult<()> {
        db_run!(conn, |c| diesel::delete(
            ui_sessions::table.find(digest.as_bytes())
        )
        .execute(c)
        .await)?;
        Ok(())
    }

    /// Drops the sessions that expired before `at`; answers how many.
    pub async fn delete_expired(conn: &mut Conn<'_>, at: NaiveDateTime) -> QueryResult<usize> {
        db_run!(conn, |c| diesel::delete(
            ui_sessions::table.filter(ui_sessions::expires_at.le(at))
        )
        .execute(c)
        .await)
    }
}
