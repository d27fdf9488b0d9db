use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::db::enums::FlagScope;
use crate::db::schema::feature_flags;
use crate::db::Conn;
use crate::db_run;

/// One gate of a feature flag: on or off for the whole instance, a runner, or a namespace.
#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = feature_flags)]
pub struct FeatureFlag {
    pub id: i64,
    pub name: String,
    pub scope_type: FlagScope,
    /// The runner id or namespace path; empty for the instance gate.
    pub scope_key: String,
    pub enabled: bool,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl FeatureFlag {
    /// Whether `name` is on for an actor with these scopes: an enabled gate for one of the
    /// actor's scopes, or an enabled instance gate (as Flipper: any open gate opens it).
    pub async fn enabled_for(
        conn: &mut Conn<'_>,
        name: &str,
        scopes: &[(FlagScope, String)],
    ) -> QueryResult<bool> {
        let gates: Vec<FeatureFlag> = Self::gates(conn, name).await?;
        Ok(gates.iter().any(|g| {
            g.enabled
                && (g.scope_type == FlagScope::Instance
                    || scopes
                        .iter()
                        .any(|(t, k)| *t == g.scope_type && *k == g.scope_key))
        }))
    }

    pub async fn gates(conn: &mut Conn<'_>, name: &str) -> QueryResult<Vec<FeatureFlag>> {
        db_run!(conn, |c| feature_flags::table
            .filter(feature_flags::name.eq(name))
            .order(feature_flags::id)
            .select(FeatureFlag::as_select())
            .load(c)
            .await)
    }

    pub async fn all(conn: &mut Conn<'_>) -> QueryResult<Vec<FeatureFlag>> {
        db_run!(conn, |c| feature_flags::table
            .order((feature_flags::name, feature_flags::id))
            .select(FeatureFlag::as_select())
            .load(c)
            .await)
    }

    pub async fn set(
        conn: &mut Conn<'_>,
        name: &str,
        scope: FlagScope,
        key: &str,
        enabled: bool,
    ) -> QueryResult<()> {
        let at = super::now();
        let row = (
            feature_flags::name.eq(name),
            feature_flags::scope_type.eq(scope),
            feature_flags::scope_key.eq(key),
            feature_flags::enabled.eq(enabled),
            feature_flags::created_at.eq(at),
            feature_flags::updated_at.eq(at),
        );
        db_run!(conn, |c| diesel::insert_into(feature_flags::table)
            .values(row)
            .on_conflict((
                feature_flags::name,
                feature_flags::scope_type,
                feature_flags::scope_key
            ))
            .do_update()
            .set((
                feature_flags::enabled.eq(enabled),
                feature_flags::updated_at.eq(at)
            ))
            .execute(c)
            .await)?;
        Ok(())
    }

    pub async fn delete(conn: &mut Conn<'_>, name: &str) -> QueryResult<usize> {
        db_run!(conn, |c| diesel::delete(
            feature_flags::table.filter(feature_flags::name.eq(name))
        )
        .execute(c)
        .await)
    }
}
