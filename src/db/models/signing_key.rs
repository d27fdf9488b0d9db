use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::db::schema::id_token_signing_keys;
use crate::db::Conn;
use crate::db_run;

/// A key that signs (or signed) jobs' ID tokens; `private_key` is sealed.
#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = id_token_signing_keys)]
pub struct SigningKeyRow {
    pub id: i64,
    pub kid: String,
    pub private_key: String,
    pub created_at: NaiveDateTime,
    pub retired_at: Option<NaiveDateTime>,
}

impl SigningKeyRow {
    pub async fn insert(
        conn: &mut Conn<'_>,
        kid: &str,
        sealed: &str,
        at: NaiveDateTime,
    ) -> QueryResult<()> {
        let row = (
            id_token_signing_keys::kid.eq(kid),
            id_token_signing_keys::private_key.eq(sealed),
            id_token_signing_keys::created_at.eq(at),
        );
        db_run!(conn, |c| diesel::insert_into(id_token_signing_keys::table)
            .values(row)
            .execute(c)
            .await)?;
        Ok(())
    }

    /// The keys in use or retired after `since`, newest first.
    pub async fn published(
        conn: &mut Conn<'_>,
        since: NaiveDateTime,
    ) -> QueryResult<Vec<SigningKeyRow>> {
        db_run!(conn, |c| id_token_signing_keys::table
            .filter(
                id_token_signing_keys::retired_at
                    .is_null()
                    .or(id_token_signing_keys::retired_at.gt(since))
            )
            .order(id_token_signing_keys::id.desc())
            .select(SigningKeyRow::as_select())
            .load(c)
            .await)
    }

    /// Retires every key but `keep`.
    pub async fn retire_all_but(
        conn: &mut Conn<'_>,
        keep: &str,
        at: NaiveDateTime,
    ) -> QueryResult<()> {
        let keep = keep.to_string();
        db_run!(conn, |c| diesel::update(
            id_token_signing_keys::table
                .filter(id_token_signing_keys::kid.ne(&keep))
                .filter(id_token_signing_keys::retired_at.is_null())
        )
        .set(id_token_signing_keys::retired_at.eq(Some(at)))
        .execute(c)
        .await)?;
        Ok(())
    }
}
