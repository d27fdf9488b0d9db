use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::db::schema::pipeline_schedules;
use crate::db::Conn;
use crate::db_run;

/// A pipeline schedule of a project.
#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = pipeline_schedules)]
pub struct PipelineSchedule {
    pub id: i64,
    pub project_id: i64,
    pub description: String,
    pub ref_: String,
    pub cron: String,
    /// An IANA time zone name (`UTC`, `Europe/Berlin`).
    pub cron_timezone: String,
    /// When it runs next (UTC).
    pub next_run_at: NaiveDateTime,
    pub active: bool,
    /// JSON `[{key, value, variable_type}]`.
    pub variables: String,
    pub last_pipeline_id: Option<i64>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// What a create or an update writes.
#[derive(Debug, Clone, Insertable, AsChangeset)]
#[diesel(table_name = pipeline_schedules)]
pub struct ScheduleFields {
    pub project_id: i64,
    pub description: String,
    pub ref_: String,
    pub cron: String,
    pub cron_timezone: String,
    pub next_run_at: NaiveDateTime,
    pub active: bool,
    pub variables: String,
    pub updated_at: NaiveDateTime,
}

impl PipelineSchedule {
    pub async fn create(
        conn: &mut Conn<'_>,
        fields: &ScheduleFields,
    ) -> QueryResult<PipelineSchedule> {
        let at = fields.updated_at;
        db_run!(conn, |c| diesel::insert_into(pipeline_schedules::table)
            .values((fields, pipeline_schedules::created_at.eq(at)))
            .returning(PipelineSchedule::as_returning())
            .get_result(c)
            .await)
    }

    pub async fn update(
        conn: &mut Conn<'_>,
        id: i64,
        fields: &ScheduleFields,
    ) -> QueryResult<PipelineSchedule> {
        db_run!(conn, |c| diesel::update(pipeline_schedules::table.find(id))
            .set(fields)
            .returning(PipelineSchedule::as_returning())
            .get_result(c)
            .await)
    }

    pub async fn for_project(
        conn: &mut Conn<'_>,
        project_id: i64,
    ) -> QueryResult<Vec<PipelineSchedule>> {
        db_run!(conn, |c| pipeline_schedules::table
            .filter(pipeline_schedules::project_id.eq(project_id))
            .order(pipeline_schedules::id)
            .select(PipelineSchedule::as_select())
            .load(c)
            .await)
    }

    pub async fn find(
        conn: &mut Conn<'_>,
        project_id: i64,
        id: i64,
    ) -> QueryResult<Option<PipelineSchedule>> {
        db_run!(conn, |c| pipeline_schedules::table
            .filter(pipeline_schedules::project_id.eq(project_id))
            .filter(pipeline_schedules::id.eq(id))
            .select(PipelineSchedule::as_select())
            .first(c)
            .await
            .optional())
    }

    /// Active schedules due at `now`, oldest due first.
    pub async fn due(
        conn: &mut Conn<'_>,
        now: NaiveDateTime,
    ) -> QueryResult<Vec<PipelineSchedule>> {
        db_run!(conn, |c| pipeline_schedules::table
            .filter(pipeline_schedules::active.eq(true))
            .filter(pipeline_schedules::next_run_at.le(now))
            .order(pipeline_schedules::next_run_at)
            .limit(100)
            .select(PipelineSchedule::as_select())
            .load(c)
            .await)
    }

    /// Moves `next_run_at` from `seen` to `next`: true for the one caller (of several
    /// instances) that moved it, which then runs the schedule.
    pub async fn claim(
        conn: &mut Conn<'_>,
        id: i64,
        seen: NaiveDateTime,
        next: NaiveDateTime,
    ) -> QueryResult<bool> {
        let moved = db_run!(conn, |c| diesel::update(
            pipeline_schedules::table
                .filter(pipeline_schedules::id.eq(id))
                .filter(pipeline_schedules::next_run_at.eq(seen))
        )
        .set(pipeline_schedules::next_run_at.eq(next))
        .execute(c)
        .await)?;
        Ok(moved == 1)
    }

    /// Rewrites the schedule's variables (JSON) alone.
    pub async fn set_variables(
        conn: &mut Conn<'_>,
        id: i64,
        variables: &str,
        at: NaiveDateTime,
    ) -> QueryResult<()> {
        db_run!(conn, |c| diesel::update(pipeline_schedules::table.find(id))
            .set((
                pipeline_schedules::variables.eq(variables),
                pipeline_schedules::updated_at.eq(at),
            ))
            .execute(c)
            .await)?;
        Ok(())
    }

    pub async fn ran(conn: &mut Conn<'_>, id: i64, pipeline_id: i64) -> QueryResult<()> {
        db_run!(conn, |c| diesel::update(pipeline_schedules::table.find(id))
            .set(pipeline_schedules::last_pipeline_id.eq(pipeline_id))
            .execute(c)
            .await)?;
        Ok(())
    }

    pub async fn delete(conn: &mut Conn<'_>, id: i64) -> QueryResult<bool> {
        let deleted = db_run!(conn, |c| diesel::delete(pipeline_schedules::table.find(id))
            .execute(c)
            .await)?;
        Ok(deleted == 1)
    }
}
