use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::db::enums::CreationState;
use crate::db::schema::runner_managers;
use crate::db::{Cached, Conn};
use crate::db_run;

/// One machine running a runner (`ci_runner_machines`), keyed by `system_xid`
/// (`<legacy>` when the runner sent no `system_id`).
#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = runner_managers)]
pub struct RunnerManager {
    pub id: i64,
    pub runner_id: i64,
    pub system_xid: String,
    pub version: Option<String>,
    pub revision: Option<String>,
    pub platform: Option<String>,
    pub architecture: Option<String>,
    pub executor_type: Option<String>,
    pub ip_address: Option<String>,
    /// JSON object; only `gpus` is kept, as GitLab does.
    pub config: String,
    /// JSON object of labels.
    pub labels: String,
    /// JSON object: the runner's `info.features`.
    pub runtime_features: String,
    pub contacted_at: Option<NaiveDateTime>,
    pub creation_state: CreationState,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// What a heartbeat writes on a manager row. `None` fields keep the stored value.
#[derive(Debug, Clone, Default, PartialEq, AsChangeset, Insertable)]
#[diesel(table_name = runner_managers)]
pub struct ManagerHeartbeat {
    pub version: Option<String>,
    pub revision: Option<String>,
    pub platform: Option<String>,
    pub architecture: Option<String>,
    pub executor_type: Option<String>,
    pub ip_address: Option<String>,
    pub config: Option<String>,
    pub labels: Option<String>,
    pub runtime_features: Option<String>,
    pub creation_state: Option<CreationState>,
}

impl ManagerHeartbeat {
    /// Whether writing this heartbeat would change anything stored on `manager`.
    pub fn changes(&self, manager: &RunnerManager) -> bool {
        // A field the heartbeat does not carry changes nothing; a stored NULL reads as "".
        fn text(new: &Option<String>, old: &Option<String>) -> bool {
            new.as_deref()
                .is_some_and(|n| n != old.as_deref().unwrap_or(""))
        }
        fn value<T: PartialEq>(new: &Option<T>, old: &T) -> bool {
            new.as_ref().is_some_and(|n| n != old)
        }
        text(&self.version, &manager.version)
            || text(&self.revision, &manager.revision)
            || text(&self.platform, &manager.platform)
            || text(&self.architecture, &manager.architecture)
            || text(&self.executor_type, &manager.executor_type)
            || text(&self.ip_address, &manager.ip_address)
            || value(&self.config, &manager.config)
            || value(&self.labels, &manager.labels)
            || value(&self.runtime_features, &manager.runtime_features)
            || value(&self.creation_state, &manager.creation_state)
    }
}

impl RunnerManager {
    pub async fn find(
        conn: &mut Conn<'_>,
        runner_id: i64,
        system_xid: &str,
    ) -> QueryResult<Option<RunnerManager>> {
        db_run!(conn, |c| runner_managers::table
            .filter(runner_managers::runner_id.eq(runner_id))
            .filter(runner_managers::system_xid.eq(system_xid))
            .select(RunnerManager::as_select())
            .first(c)
            .await
            .optional())
    }

    /// Creates the manager or updates it with `beat` and the contact time, in one statement.
    pub async fn upsert(
        conn: &mut Conn<'_>,
        runner_id: i64,
        system_xid: &str,
        beat: &ManagerHeartbeat,
        at: NaiveDateTime,
    ) -> QueryResult<RunnerManager> {
        let insert = (
            runner_managers::runner_id.eq(runner_id),
            runner_managers::system_xid.eq(system_xid),
            runner_managers::contacted_at.eq(at),
            runner_managers::created_at.eq(at),
            runner_managers::updated_at.eq(at),
        );
        // Kept prepared: the heartbeat's optional fields give it a few texts.
        db_run!(conn, |c| Cached(
            diesel::insert_into(runner_managers::table)
                .values((insert, beat))
                .on_conflict((runner_managers::runner_id, runner_managers::system_xid))
                .do_update()
                .set((
                    beat,
                    runner_managers::contacted_at.eq(at),
                    runner_managers::updated_at.eq(at),
                ))
                .returning(RunnerManager::as_returning())
        )
        .get_result(c)
        .await)
    }

    /// The stored contact of manager `id`: when it was last written and from which IP;
    /// `None` when the manager no longer exists. The service decides from it whether a
    /// contact is due.
    pub async fn stored_contact(
        conn: &mut Conn<'_>,
        id: i64,
    ) -> QueryResult<Option<(Option<NaiveDateTime>, Option<String>)>> {
        db_run!(conn, |c| runner_managers::table
            .find(id)
            .select((runner_managers::contacted_at, runner_managers::ip_address))
            .first(c)
            .await
            .optional())
    }

    /// Records a contact and the IP (once the stored one is due).
    pub async fn record_contact(
        conn: &mut Conn<'_>,
        id: i64,
        ip: Option<&str>,
        at: NaiveDateTime,
    ) -> QueryResult<()> {
        db_run!(conn, |c| diesel::update(runner_managers::table.find(id))
            .set((
                runner_managers::contacted_at.eq(at),
                runner_managers::ip_address.eq(ip)
            ))
            .execute(c)
            .await)?;
        Ok(())
    }

    pub async fn for_runner(
        conn: &mut Conn<'_>,
        runner_id: i64,
    ) -> QueryResult<Vec<RunnerManager>> {
        db_run!(conn, |c| runner_managers::table
            .filter(runner_managers::runner_id.eq(runner_id))
            .order(runner_managers::id)
            .select(RunnerManager::as_select())
            .load(c)
            .await)
    }

    /// The most recently contacted manager of each of `runner_ids`.
    pub async fn latest_for_runners(
        conn: &mut Conn<'_>,
        runner_ids: &[i64],
    ) -> QueryResult<Vec<RunnerManager>> {
        let rows: Vec<RunnerManager> = db_run!(conn, |c| runner_managers::table
            .filter(runner_managers::runner_id.eq_any(runner_ids))
            .order((
                runner_managers::runner_id,
                runner_managers::contacted_at.desc(),
                runner_managers::id.desc()
            ))
            .select(RunnerManager::as_select())
            .load(c)
            .await)?;
        let mut latest: Vec<RunnerManager> = Vec::new();
        for row in rows {
            if latest.last().map(|m| m.runner_id) != Some(row.runner_id) {
                latest.push(row);
            }
        }
        Ok(latest)
    }

    pub async fn delete(
        conn: &mut Conn<'_>,
        runner_id: i64,
        system_xid: &str,
    ) -> QueryResult<bool> {
        let n = db_run!(conn, |c| diesel::delete(
            runner_managers::table
                .filter(runner_managers::runner_id.eq(runner_id))
                .filter(runner_managers::system_xid.eq(system_xid))
        )
        .execute(c)
        .await)?;
        Ok(n == 1)
    }
}
