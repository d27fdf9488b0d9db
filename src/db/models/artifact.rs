use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::db::schema::{audit_events, job_artifacts, jobs};
use crate::db::Conn;
use crate::db_run;

/// An uploaded artifact; its bytes are in object storage at `store_path`.
#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = job_artifacts)]
pub struct JobArtifact {
    pub id: i64,
    pub job_id: i64,
    pub project_id: i64,
    pub file_type: String,
    pub file_format: String,
    pub filename: String,
    pub size: i64,
    pub sha256: String,
    pub store_path: String,
    pub expire_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = job_artifacts)]
pub struct NewJobArtifact<'a> {
    pub job_id: i64,
    pub project_id: i64,
    pub file_type: &'a str,
    pub file_format: &'a str,
    pub filename: &'a str,
    pub size: i64,
    pub sha256: &'a str,
    pub store_path: &'a str,
    pub expire_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
}

impl JobArtifact {
    pub async fn create(conn: &mut Conn<'_>, new: NewJobArtifact<'_>) -> QueryResult<JobArtifact> {
        db_run!(conn, |c| diesel::insert_into(job_artifacts::table)
            .values(&new)
            .returning(JobArtifact::as_returning())
            .get_result(c)
            .await)
    }

    pub async fn find(
        conn: &mut Conn<'_>,
        job_id: i64,
        file_type: &str,
    ) -> QueryResult<Option<JobArtifact>> {
        db_run!(conn, |c| job_artifacts::table
            .filter(job_artifacts::job_id.eq(job_id))
            .filter(job_artifacts::file_type.eq(file_type))
            .select(JobArtifact::as_select())
            .first(c)
            .await
            .optional())
    }

    pub async fn for_jobs(conn: &mut Conn<'_>, job_ids: &[i64]) -> QueryResult<Vec<JobArtifact>> {
        if job_ids.is_empty() {
            return Ok(Vec::new());
        }
        db_run!(conn, |c| job_artifacts::table
            .filter(job_artifacts::job_id.eq_any(job_ids))
            .order(job_artifacts::id)
            .select(JobArtifact::as_select())
            .load(c)
            .await)
    }

    /// Artifacts whose `expire_at` has passed.
    pub async fn expired(conn: &mut Conn<'_>, at: NaiveDateTime) -> QueryResult<Vec<JobArtifact>> {
        db_run!(conn, |c| job_artifacts::table
            .filter(job_artifacts::expire_at.lt(at))
            .select(JobArtifact::as_select())
            .load(c)
            .await)
    }

    pub async fn delete(conn: &mut Conn<'_>, id: i64) -> QueryResult<()> {
        db_run!(conn, |c| diesel::delete(job_artifacts::table.find(id))
            .execute(c)
            .await)?;
        Ok(())
    }
}

/// Who did what to which object (`audit_download` and admin actions).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = audit_events)]
pub struct AuditEvent {
    pub id: i64,
    pub kind: String,
    pub actor: String,
    pub target_type: String,
    pub target_id: i64,
    pub details: String,
    pub created_at: NaiveDateTime,
}

impl AuditEvent {
    pub async fn record(
        conn: &mut Conn<'_>,
        kind: &str,
        actor: &str,
        target_type: &str,
        target_id: i64,
        details: &serde_json::Value,
    ) -> QueryResult<()> {
        let row = (
            audit_events::kind.eq(kind),
            audit_events::actor.eq(actor),
            audit_events::target_type.eq(target_type),
            audit_events::target_id.eq(target_id),
            audit_events::details.eq(details.to_string()),
            audit_events::created_at.eq(super::now()),
        );
        db_run!(conn, |c| diesel::insert_into(audit_events::table)
            .values(row)
            .execute(c)
            .await)?;
        Ok(())
    }

    /// The events oldest first: `limit` from the `offset`th (every admin action and
    /// pipeline adds one, so the table grows for as long as the instance runs).
    pub async fn listed(
        conn: &mut Conn<'_>,
        offset: i64,
        limit: i64,
    ) -> QueryResult<Vec<AuditEvent>> {
        db_run!(conn, |c| audit_events::table
            .order(audit_events::id)
            .offset(offset)
            .limit(limit)
            .select(AuditEvent::as_select())
            .load(c)
            .await)
    }

    /// How many events there are, counted up to `most`.
    pub async fn count(conn: &mut Conn<'_>, most: i64) -> QueryResult<usize> {
        let ids: Vec<i64> = db_run!(conn, |c| audit_events::table
            .limit(most)
            .select(audit_events::id)
            .load(c)
            .await)?;
        Ok(ids.len())
    }
}

/// The job a job token belongs to (any status).
pub async fn job_by_token_digest(
    conn: &mut Conn<'_>,
    digest: &[u8],
) -> QueryResult<Option<super::Job>> {
    db_run!(conn, |c| jobs::table
        .filter(jobs::token_digest.eq(digest))
        .select(super::Job::as_select())
        .first(c)
        .await
        .optional())
}

impl JobArtifact {
    /// The archive of the project's latest successful pages job (its spec has `pages`).
    /// The spec is JSON text: `"pages":` appears in it only as that key (a string value
    /// would have its quotes escaped), so a LIKE finds the candidates and the caller
    /// checks the parsed spec.
    pub async fn latest_pages(
        conn: &mut Conn<'_>,
        project_id: i64,
    ) -> QueryResult<Option<(JobArtifact, super::Job)>> {
        db_run!(conn, |c| job_artifacts::table
            .inner_join(jobs::table)
            .filter(jobs::project_id.eq(project_id))
            .filter(jobs::status.eq(crate::db::enums::JobStatus::Success))
            .filter(jobs::options.like("%\"pages\":%"))
            .filter(job_artifacts::file_type.eq("archive"))
            .order(jobs::id.desc())
            .select((JobArtifact::as_select(), super::Job::as_select()))
            .first(c)
            .await
            .optional())
    }
}

/// A job's parsed JUnit report (JSON of [`crate::service::junit::Report`]).
pub struct TestReportRow;

impl TestReportRow {
    /// Records the job's report (a later upload of the same type is refused before this).
    pub async fn save(
        conn: &mut Conn<'_>,
        job_id: i64,
        pipeline_id: i64,
        report: &str,
    ) -> QueryResult<()> {
        use crate::db::schema::job_test_reports;
        let row = (
            job_test_reports::job_id.eq(job_id),
            job_test_reports::pipeline_id.eq(pipeline_id),
            job_test_reports::report.eq(report),
        );
        db_run!(conn, |c| diesel::insert_into(job_test_reports::table)
            .values(row)
            .on_conflict_do_nothing()
            .execute(c)
            .await)?;
        Ok(())
    }

    /// The pipeline's reports: `(job_id, report JSON)`.
    pub async fn for_pipeline(
        conn: &mut Conn<'_>,
        pipeline_id: i64,
    ) -> QueryResult<Vec<(i64, String)>> {
        use crate::db::schema::job_test_reports;
        db_run!(conn, |c| job_test_reports::table
            .filter(job_test_reports::pipeline_id.eq(pipeline_id))
            .select((job_test_reports::job_id, job_test_reports::report))
            .load(c)
            .await)
    }
}
