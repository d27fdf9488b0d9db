use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::db::enums::{AccessLevel, CreationState, RegistrationType, RunnerType};
use crate::db::schema::{runner_projects, runners};
use crate::db::{Cached, Conn};
use crate::db_run;

/// A runner (`ci_runners`). Its token is kept only as a SHA-256 digest.
#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = runners)]
pub struct Runner {
    pub id: i64,
    pub runner_type: RunnerType,
    /// `info.name` as the runner reported it at registration.
    pub name: Option<String>,
    pub description: String,
    pub maintenance_note: Option<String>,
    /// JSON array of tag names.
    pub tag_list: String,
    pub run_untagged: bool,
    pub locked: bool,
    pub paused: bool,
    pub access_level: AccessLevel,
    pub maximum_timeout: Option<i32>,
    pub token_digest: Vec<u8>,
    /// The first characters of the token (`glrt-t1_ab`), safe to show.
    pub token_prefix: String,
    pub token_expires_at: Option<NaiveDateTime>,
    pub contacted_at: Option<NaiveDateTime>,
    pub creation_state: CreationState,
    pub registration_type: RegistrationType,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = runners)]
pub struct NewRunner<'a> {
    pub runner_type: RunnerType,
    pub name: Option<&'a str>,
    pub description: &'a str,
    pub maintenance_note: Option<&'a str>,
    pub tag_list: String,
    pub run_untagged: bool,
    pub locked: bool,
    pub paused: bool,
    pub access_level: AccessLevel,
    pub maximum_timeout: Option<i32>,
    pub token_digest: &'a [u8],
    pub token_prefix: &'a str,
    pub token_expires_at: Option<NaiveDateTime>,
    pub creation_state: CreationState,
    pub registration_type: RegistrationType,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// Admin changes to a runner; `None` leaves a column as it is.
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = runners)]
pub struct RunnerChanges {
    pub description: Option<String>,
    pub maintenance_note: Option<Option<String>>,
    pub tag_list: Option<String>,
    pub run_untagged: Option<bool>,
    pub locked: Option<bool>,
    pub paused: Option<bool>,
    pub access_level: Option<AccessLevel>,
    pub maximum_timeout: Option<Option<i32>>,
    pub updated_at: Option<NaiveDateTime>,
}

/// Filters of `GET /runners/all`.
#[derive(Debug, Default, Clone)]
pub struct RunnerFilter {
    pub runner_type: Option<RunnerType>,
    pub paused: Option<bool>,
    /// Runners carrying every one of these tags.
    pub tags: Vec<String>,
}

impl Runner {
    pub fn tags(&self) -> Vec<String> {
        serde_json::from_str(&self.tag_list).unwrap_or_default()
    }

    pub async fn create(conn: &mut Conn<'_>, new: NewRunner<'_>) -> QueryResult<Runner> {
        db_run!(conn, |c| diesel::insert_into(runners::table)
            .values(&new)
            .returning(Runner::as_returning())
            .get_result(c)
            .await)
    }

    pub async fn find(conn: &mut Conn<'_>, id: i64) -> QueryResult<Option<Runner>> {
        db_run!(conn, |c| runners::table
            .find(id)
            .select(Runner::as_select())
            .first(c)
            .await
            .optional())
    }

    /// The runner whose token has this SHA-256 digest (expired or not).
    pub async fn find_by_digest(conn: &mut Conn<'_>, digest: &[u8]) -> QueryResult<Option<Runner>> {
        db_run!(conn, |c| runners::table
            .filter(runners::token_digest.eq(digest))
            .select(Runner::as_select())
            .first(c)
            .await
            .optional())
    }

    /// Runners matching `filter`, ordered by id, with the number matching in all. Tag
    /// filtering happens here rather than in SQL because tags are a JSON list.
    pub async fn list(
        conn: &mut Conn<'_>,
        filter: &RunnerFilter,
        project_id: Option<i64>,
    ) -> QueryResult<Vec<Runner>> {
        // Boxed per backend: the macro expands the body once for each.
        let rows: Vec<Runner> = db_run!(conn, |c| {
            let mut query = runners::table
                .select(Runner::as_select())
                .order(runners::id)
                .into_boxed();
            if let Some(kind) = filter.runner_type {
                query = query.filter(runners::runner_type.eq(kind));
            }
            if let Some(paused) = filter.paused {
                query = query.filter(runners::paused.eq(paused));
            }
            if let Some(project_id) = project_id {
                query = query.filter(
                    runners::id.eq_any(
                        runner_projects::table
                            .filter(runner_projects::project_id.eq(project_id))
                            .select(runner_projects::runner_id),
                    ),
                );
            }
            query.load(c).await
        })?;
        Ok(rows
            .into_iter()
            .filter(|r| {
                let tags = r.tags();
                filter.tags.iter().all(|t| tags.contains(t))
            })
            .collect())
    }

    pub async fn update(
        conn: &mut Conn<'_>,
        id: i64,
        changes: &RunnerChanges,
    ) -> QueryResult<Option<Runner>> {
        db_run!(conn, |c| diesel::update(runners::table.find(id))
            .set(changes)
            .returning(Runner::as_returning())
            .get_result(c)
            .await
            .optional())
    }

    /// Deletes the runner; its managers and project links go with it (foreign keys).
    pub async fn delete(conn: &mut Conn<'_>, id: i64) -> QueryResult<bool> {
        let n = db_run!(conn, |c| diesel::delete(runners::table.find(id))
            .execute(c)
            .await)?;
        Ok(n == 1)
    }

    /// Replaces the token (reset): the old digest stops matching in the same statement.
    pub async fn set_token(
        conn: &mut Conn<'_>,
        id: i64,
        digest: &[u8],
        prefix: &str,
        expires_at: Option<NaiveDateTime>,
    ) -> QueryResult<Option<Runner>> {
        db_run!(conn, |c| diesel::update(runners::table.find(id))
            .set((
                runners::token_digest.eq(digest),
                runners::token_prefix.eq(prefix),
                runners::token_expires_at.eq(expires_at),
                runners::updated_at.eq(super::now()),
            ))
            .returning(Runner::as_returning())
            .get_result(c)
            .await
            .optional())
    }

    /// Heartbeat: records the contact time (and, on a job request, the finished state).
    pub async fn touch(
        conn: &mut Conn<'_>,
        id: i64,
        at: NaiveDateTime,
        creation_state: Option<CreationState>,
    ) -> QueryResult<()> {
        db_run!(conn, |c| match creation_state {
            Some(state) =>
                Cached(diesel::update(runners::table.find(id)).set((
                    runners::contacted_at.eq(at),
                    runners::creation_state.eq(state)
                )))
                .execute(c)
                .await,
            None =>
                Cached(diesel::update(runners::table.find(id)).set(runners::contacted_at.eq(at)))
                    .execute(c)
                    .await,
        })?;
        Ok(())
    }
}
