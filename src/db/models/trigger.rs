use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::db::schema::pipeline_triggers;
use crate::db::Conn;
use crate::db_run;

/// A pipeline trigger token of a project; `token` is sealed.
#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = pipeline_triggers)]
pub struct PipelineTrigger {
    pub id: i64,
    pub project_id: i64,
    pub description: String,
    pub token_digest: Vec<u8>,
    pub token: String,
    pub last_used: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl PipelineTrigger {
    pub async fn create(
        conn: &mut Conn<'_>,
        project_id: i64,
        description: &str,
        digest: &[u8],
        sealed: &str,
        at: NaiveDateTime,
    ) -> QueryResult<PipelineTrigger> {
        let row = (
            pipeline_triggers::project_id.eq(project_id),
            pipeline_triggers::description.eq(description),
            pipeline_triggers::token_digest.eq(digest),
            pipeline_triggers::token.eq(sealed),
            pipeline_triggers::created_at.eq(at),
            pipeline_triggers::updated_at.eq(at),
        );
        db_run!(conn, |c| diesel::insert_into(pipeline_triggers::table)
            .values(row)
            .returning(PipelineTrigger::as_returning())
            .get_result(c)
            .await)
    }

    pub async fn for_project(
        conn: &mut Conn<'_>,
        project_id: i64,
    ) -> QueryResult<Vec<PipelineTrigger>> {
        db_run!(conn, |c| pipeline_triggers::table
            .filter(pipeline_triggers::project_id.eq(project_id))
            .order(pipeline_triggers::id)
            .select(PipelineTrigger::as_select())
            .load(c)
            .await)
    }

    pub async fn find(
        conn: &mut Conn<'_>,
        project_id: i64,
        id: i64,
    ) -> QueryResult<Option<PipelineTrigger>> {
        db_run!(conn, |c| pipeline_triggers::table
            .filter(pipeline_triggers::project_id.eq(project_id))
            .filter(pipeline_triggers::id.eq(id))
            .select(PipelineTrigger::as_select())
            .first(c)
            .await
            .optional())
    }

    /// The project's trigger whose token has `digest`.
    pub async fn find_by_digest(
        conn: &mut Conn<'_>,
        project_id: i64,
        digest: &[u8],
    ) -> QueryResult<Option<PipelineTrigger>> {
        db_run!(conn, |c| pipeline_triggers::table
            .filter(pipeline_triggers::project_id.eq(project_id))
            .filter(pipeline_triggers::token_digest.eq(digest))
            .select(PipelineTrigger::as_select())
            .first(c)
            .await
            .optional())
    }

    pub async fn set_description(
        conn: &mut Conn<'_>,
        id: i64,
        description: &str,
        at: NaiveDateTime,
    ) -> QueryResult<PipelineTrigger> {
        db_run!(conn, |c| diesel::update(pipeline_triggers::table.find(id))
            .set((
                pipeline_triggers::description.eq(description),
                pipeline_triggers::updated_at.eq(at),
            ))
            .returning(PipelineTrigger::as_returning())
            .get_result(c)
            .await)
    }

    pub async fn used(conn: &mut Conn<'_>, id: i64, at: NaiveDateTime) -> QueryResult<()> {
        db_run!(conn, |c| diesel::update(pipeline_triggers::table.find(id))
            .set(pipeline_triggers::last_used.eq(at))
            .execute(c)
            .await)?;
        Ok(())
    }

    pub async fn delete(conn: &mut Conn<'_>, id: i64) -> QueryResult<bool> {
        let deleted = db_run!(conn, |c| diesel::delete(pipeline_triggers::table.find(id))
            .execute(c)
            .await)?;
        Ok(deleted == 1)
    }
}
