use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::now;
use crate::db::schema::instance_settings;
use crate::db::Conn;
use crate::db_run;

/// Instance-wide key/value settings kept in the database (e.g. the admin token's digest).
pub struct InstanceSetting;

impl InstanceSetting {
    pub async fn get(conn: &mut Conn<'_>, key: &str) -> QueryResult<Option<String>> {
        db_run!(conn, |c| instance_settings::table
            .find(key)
            .select(instance_settings::value)
            .first::<String>(c)
            .await
            .optional())
    }

    /// Stores `value` under `key` unless the key is already set; answers whether it stored.
    pub async fn insert_if_absent(
        conn: &mut Conn<'_>,
        key: &str,
        value: &str,
    ) -> QueryResult<bool> {
        let row = (
            instance_settings::key.eq(key),
            instance_settings::value.eq(value),
            instance_settings::updated_at.eq(now()),
        );
        let inserted = db_run!(conn, |c| diesel::insert_into(instance_settings::table)
            .values(row)
            .on_conflict_do_nothing()
            .execute(c)
            .await)?;
        Ok(inserted == 1)
    }

    pub async fn put(conn: &mut Conn<'_>, key: &str, value: &str) -> QueryResult<()> {
        let at = now();
        let row = (
            instance_settings::key.eq(key),
            instance_settings::value.eq(value),
            instance_settings::updated_at.eq(at),
        );
        db_run!(conn, |c| diesel::insert_into(instance_settings::table)
            .values(row)
            .on_conflict(instance_settings::key)
            .do_update()
            .set((
                instance_settings::value.eq(value),
                instance_settings::updated_at.eq(at)
            ))
            .execute(c)
            .await)?;
        Ok(())
    }
}
