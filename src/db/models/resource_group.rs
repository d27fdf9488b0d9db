use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::db::enums::JobStatus;
use crate::db::schema::{jobs, resource_groups};
use crate::db::Conn;
use crate::db_run;

/// GitLab's `Ci::ResourceGroup` process modes, in the order of its enum.
pub const PROCESS_MODES: &[&str] = &[
    "unordered",
    "oldest_first",
    "newest_first",
    "newest_ready_first",
];

/// A project's resource group (`resource_group:`): one resource, held by one job at a time.
#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = resource_groups)]
pub struct ResourceGroup {
    pub id: i64,
    pub project_id: i64,
    pub key: String,
    pub process_mode: String,
    /// The job the resource is assigned to; free when none, or when that job is complete.
    pub holder_job_id: Option<i64>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// A job of a group as assignment sees it.
#[derive(Debug, Clone, Queryable)]
pub struct GroupJob {
    pub id: i64,
    pub pipeline_id: i64,
    pub status: JobStatus,
}

impl ResourceGroup {
    /// The project's group `key`, created (`unordered`) the first time a job names it.
    pub async fn find_or_create(
        conn: &mut Conn<'_>,
        project_id: i64,
        key: &str,
        at: NaiveDateTime,
    ) -> QueryResult<ResourceGroup> {
        if let Some(group) = Self::find_by_key(conn, project_id, key).await? {
            return Ok(group);
        }
        let row = (
            resource_groups::project_id.eq(project_id),
            resource_groups::key.eq(key),
            resource_groups::process_mode.eq("unordered"),
            resource_groups::created_at.eq(at),
            resource_groups::updated_at.eq(at),
        );
        // Another instance may create it between the read and the insert: the unique key
        // keeps one row, and the read after finds it.
        db_run!(conn, |c| diesel::insert_into(resource_groups::table)
            .values(row)
            .on_conflict((resource_groups::project_id, resource_groups::key))
            .do_nothing()
            .execute(c)
            .await)?;
        Self::find_by_key(conn, project_id, key)
            .await?
            .ok_or(diesel::result::Error::NotFound)
    }

    pub async fn find(conn: &mut Conn<'_>, id: i64) -> QueryResult<Option<ResourceGroup>> {
        db_run!(conn, |c| resource_groups::table
            .find(id)
            .select(ResourceGroup::as_select())
            .first(c)
            .await
            .optional())
    }

    pub async fn find_by_key(
        conn: &mut Conn<'_>,
        project_id: i64,
        key: &str,
    ) -> QueryResult<Option<ResourceGroup>> {
        let key = key.to_string();
        db_run!(conn, |c| resource_groups::table
            .filter(resource_groups::project_id.eq(project_id))
            .filter(resource_groups::key.eq(&key))
            .select(ResourceGroup::as_select())
            .first(c)
            .await
            .optional())
    }

    pub async fn for_project(
        conn: &mut Conn<'_>,
        project_id: i64,
    ) -> QueryResult<Vec<ResourceGroup>> {
        db_run!(conn, |c| resource_groups::table
            .filter(resource_groups::project_id.eq(project_id))
            .order(resource_groups::id)
            .select(ResourceGroup::as_select())
            .load(c)
            .await)
    }

    pub async fn set_process_mode(
        conn: &mut Conn<'_>,
        id: i64,
        mode: &str,
        at: NaiveDateTime,
    ) -> QueryResult<()> {
        let mode = mode.to_string();
        db_run!(conn, |c| diesel::update(resource_groups::table.find(id))
            .set((
                resource_groups::process_mode.eq(&mode),
                resource_groups::updated_at.eq(at)
            ))
            .execute(c)
            .await)?;
        Ok(())
    }

    /// Moves the resource from `seen` (the holder read) to `job_id`, if no other instance
    /// moved it meanwhile: the compare-and-set that keeps the resource with one job.
    pub async fn hand_over(
        conn: &mut Conn<'_>,
        id: i64,
        seen: Option<i64>,
        job_id: i64,
        at: NaiveDateTime,
    ) -> QueryResult<bool> {
        let target = resource_groups::table.filter(resource_groups::id.eq(id));
        let set = (
            resource_groups::holder_job_id.eq(Some(job_id)),
            resource_groups::updated_at.eq(at),
        );
        let n = match seen {
            Some(holder) => db_run!(conn, |c| diesel::update(
                target.filter(resource_groups::holder_job_id.eq(holder))
            )
            .set(set)
            .execute(c)
            .await)?,
            None => db_run!(conn, |c| diesel::update(
                target.filter(resource_groups::holder_job_id.is_null())
            )
            .set(set)
            .execute(c)
            .await)?,
        };
        Ok(n == 1)
    }

    /// Groups with jobs waiting for their resource, over all projects.
    pub async fn with_waiting_jobs(conn: &mut Conn<'_>) -> QueryResult<Vec<i64>> {
        let ids: Vec<Option<i64>> = db_run!(conn, |c| jobs::table
            .filter(jobs::resource_group_id.is_not_null())
            .filter(jobs::status.eq(JobStatus::WaitingForResource))
            .select(jobs::resource_group_id)
            .distinct()
            .load(c)
            .await)?;
        Ok(ids.into_iter().flatten().collect())
    }

    /// The group's jobs in `statuses` (retried tries left out), by pipeline then job id.
    pub async fn jobs_in(
        conn: &mut Conn<'_>,
        id: i64,
        statuses: &[JobStatus],
    ) -> QueryResult<Vec<GroupJob>> {
        let statuses = statuses.to_vec();
        db_run!(conn, |c| jobs::table
            .filter(jobs::resource_group_id.eq(id))
            .filter(jobs::status.eq_any(&statuses))
            .filter(jobs::retried.eq(false))
            .order((jobs::pipeline_id, jobs::id))
            .select((jobs::id, jobs::pipeline_id, jobs::status))
            .load(c)
            .await)
    }
}
