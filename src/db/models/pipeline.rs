use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::db::enums::PipelineStatus;
use crate::db::schema::{jobs, pipelines};
use crate::db::{Cached, Conn};
use crate::db_run;

/// A pipeline: one run of a project's `.gitlab-ci.yml` at a ref.
#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = pipelines)]
pub struct Pipeline {
    pub id: i64,
    pub project_id: i64,
    pub ref_: String,
    pub sha: String,
    pub before_sha: String,
    pub tag: bool,
    pub protected: bool,
    pub source: String,
    pub status: PipelineStatus,
    pub ci_config: String,
    /// JSON array of `{key, value}`: variables given when the pipeline was created.
    pub variables: String,
    /// JSON array of stage names, `.pre` and `.post` included.
    pub stages: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub started_at: Option<NaiveDateTime>,
    pub finished_at: Option<NaiveDateTime>,
    /// `workflow:name`, expanded.
    pub name: Option<String>,
    /// `workflow:auto_cancel:on_new_commit`: `conservative`, `interruptible` or `none`.
    pub auto_cancel_on_new_commit: String,
    /// `workflow:auto_cancel:on_job_failure`: `none` or `all`.
    pub auto_cancel_on_job_failure: String,
    /// The commit is in the project's repository: jobs fetch it (else they run without
    /// sources: a configuration alone, for a project without a repository).
    pub has_sources: bool,
    /// The configuration's errors, for a pipeline recorded failed without jobs (GitLab's
    /// `yaml_errors`).
    pub yaml_errors: Option<String>,
    /// The pipeline schedule that started it.
    pub schedule_id: Option<i64>,
    /// The bridge job whose `trigger:include` made this (child) pipeline.
    pub parent_bridge_id: Option<i64>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = pipelines)]
pub struct NewPipeline<'a> {
    pub project_id: i64,
    pub ref_: &'a str,
    pub sha: &'a str,
    pub before_sha: &'a str,
    pub tag: bool,
    pub protected: bool,
    pub source: &'a str,
    pub status: PipelineStatus,
    /// Set when it is made running or finished (its first jobs decided before it is
    /// written), else `None`.
    pub started_at: Option<NaiveDateTime>,
    pub finished_at: Option<NaiveDateTime>,
    pub ci_config: &'a str,
    pub variables: String,
    pub stages: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub name: Option<&'a str>,
    pub auto_cancel_on_new_commit: &'a str,
    pub auto_cancel_on_job_failure: &'a str,
    pub has_sources: bool,
    pub yaml_errors: Option<&'a str>,
    pub schedule_id: Option<i64>,
    /// The bridge job whose `trigger:include` made this (child) pipeline.
    pub parent_bridge_id: Option<i64>,
    /// No job of the pipeline has `needs`: its jobs wait for stages only (GitLab's
    /// scheduling_type `stage`), which lets a finished job skip reading the whole pipeline
    /// ([`super::Job::end_as_seen`]).
    pub stage_scheduled: bool,
}

impl Pipeline {
    /// The child pipeline the bridge `bridge_id` made, if it did.
    pub async fn child_of(conn: &mut Conn<'_>, bridge_id: i64) -> QueryResult<Option<Pipeline>> {
        db_run!(conn, |c| pipelines::table
            .filter(pipelines::parent_bridge_id.eq(bridge_id))
            .select(Pipeline::as_select())
            .first(c)
            .await
            .optional())
    }

    /// The child pipelines the bridges of `pipeline_id` made.
    pub async fn children_of(conn: &mut Conn<'_>, pipeline_id: i64) -> QueryResult<Vec<Pipeline>> {
        let bridges = jobs::table
            .filter(jobs::pipeline_id.eq(pipeline_id))
            .select(jobs::id.nullable());
        db_run!(conn, |c| pipelines::table
            .filter(pipelines::parent_bridge_id.eq_any(bridges))
            .order(pipelines::id)
            .select(Pipeline::as_select())
            .load(c)
            .await)
    }

    /// A new pipeline's row; its statement kept prepared (its optional fields give it a
    /// few texts).
    pub async fn create(conn: &mut Conn<'_>, new: NewPipeline<'_>) -> QueryResult<Pipeline> {
        db_run!(conn, |c| Cached(
            diesel::insert_into(pipelines::table)
                .values(&new)
                .returning(Pipeline::as_returning())
        )
        .get_result(c)
        .await)
    }

    /// PostgreSQL: a new pipeline and its jobs in one transaction and one round trip.
    ///
    /// `BEGIN`, the pipeline's `INSERT`, the jobs' `INSERT`
    /// ([`super::Job::insert_into_new_pipeline`], which takes the pipeline's id from its
    /// sequence, so the jobs' `pipeline_id` is not read) and `COMMIT` are sent together
    /// (pipelined), and PostgreSQL runs them in that order. Each goes through diesel-async's
    /// prepared statements, whose lock is granted in the order the statements ask for it
    /// and held while one is prepared, so one prepared for the first time on this
    /// connection still goes out before those after it
    /// (`schema::a_pipelined_new_pipeline_is_written_whole_or_not_at_all` checks it on a
    /// fresh connection). On any error nothing was written: a failed statement fails those
    /// after it, and the `COMMIT` then rolls back.
    pub async fn create_with_jobs(
        conn: &mut diesel_async::AsyncPgConnection,
        new: &NewPipeline<'_>,
        jobs: &[super::NewJob],
    ) -> QueryResult<(Pipeline, Vec<super::Job>)> {
        use diesel_async::SimpleAsyncConnection;
        let shared: &diesel_async::AsyncPgConnection = conn;
        let (mut a, mut b, mut c, mut d) = (shared, shared, shared, shared);
        let begin = Cached(diesel::sql_query("BEGIN")).execute(&mut a);
        let pipeline = Cached(
            diesel::insert_into(pipelines::table)
                .values(new)
                .returning(Pipeline::as_returning()),
        )
        .get_result::<Pipeline>(&mut b);
        let created = super::Job::insert_into_new_pipeline(&mut c, jobs);
        let commit = Cached(diesel::sql_query("COMMIT")).execute(&mut d);
        // `join4` polls them in this order, which is the order they are sent in.
        let (begun, pipeline, created, committed) =
            futures_util::future::join4(begin, pipeline, created, commit).await;
        let written = begun
            .and(pipeline)
            .and_then(|p| created.map(|jobs| (p, jobs)))
            .and_then(|written| committed.map(|_| written));
        if written.is_err() {
            // Whatever failed, no transaction stays open on the pooled connection (a
            // warning only when the `COMMIT` already ended it).
            let mut shared: &diesel_async::AsyncPgConnection = conn;
            if let Err(e) = shared.batch_execute("ROLLBACK").await {
                tracing::warn!(error = %e, "rolling back a new pipeline failed");
            }
        }
        written
    }

    pub async fn find(conn: &mut Conn<'_>, id: i64) -> QueryResult<Option<Pipeline>> {
        db_run!(conn, |c| pipelines::table
            .find(id)
            .select(Pipeline::as_select())
            .first(c)
            .await
            .optional())
    }

    /// [`Pipeline::find`], locking the row for the rest of the transaction on PostgreSQL
    /// (`FOR NO KEY UPDATE`), as processing does: two transactions processing one pipeline
    /// then run one after the other, the second reading what the first committed. Under
    /// read committed, without it, the last two jobs of a stage ending at once could each
    /// read the other as still running, and neither start the next stage nor end the
    /// pipeline. GitLab processes a pipeline under an exclusive lease for the same reason
    /// (`Ci::PipelineProcessing::AtomicProcessingService`). SQLite's single writer runs
    /// them one at a time anyway.
    pub async fn find_locked(conn: &mut Conn<'_>, id: i64) -> QueryResult<Option<Pipeline>> {
        match conn {
            Conn::Postgres(c) => pipelines::table
                .find(id)
                .select(Pipeline::as_select())
                .for_no_key_update()
                .first(&mut **c)
                .await
                .optional(),
            Conn::Sqlite(_) => Pipeline::find(conn, id).await,
        }
    }

    /// The project's pipelines of `source` (`None`: all but child pipelines, as GitLab's
    /// `PipelinesFinder` lists them), newest first: `limit` from the `offset`th. A page
    /// read as a page: a project keeps years of pipelines.
    pub async fn listed_for_project(
        conn: &mut Conn<'_>,
        project_id: i64,
        source: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> QueryResult<Vec<Pipeline>> {
        db_run!(conn, |c| {
            let mut query = pipelines::table
                .filter(pipelines::project_id.eq(project_id))
                .order(pipelines::id.desc())
                .offset(offset)
                .limit(limit)
                .select(Pipeline::as_select())
                .into_boxed();
            query = match source {
                Some(source) => query.filter(pipelines::source.eq(source)),
                None => query.filter(pipelines::source.ne("parent_pipeline")),
            };
            query.load(c).await
        })
    }

    /// How many pipelines [`Pipeline::listed_for_project`] lists, counted up to `most`.
    pub async fn count_listed_for_project(
        conn: &mut Conn<'_>,
        project_id: i64,
        source: Option<&str>,
        most: i64,
    ) -> QueryResult<usize> {
        let ids: Vec<i64> = db_run!(conn, |c| {
            let mut query = pipelines::table
                .filter(pipelines::project_id.eq(project_id))
                .limit(most)
                .select(pipelines::id)
                .into_boxed();
            query = match source {
                Some(source) => query.filter(pipelines::source.eq(source)),
                None => query.filter(pipelines::source.ne("parent_pipeline")),
            };
            query.load(c).await
        })?;
        Ok(ids.len())
    }

    /// The project's pipelines on `ref_` at another commit than `other_than_sha`, older
    /// than `before` (by id), created since `since`, still waiting or running
    /// ([`Unfinished`]), oldest first, that a new pipeline would cancel as redundant
    /// ([`MayBeRedundant`]; at most GitLab's 3000). One statement whatever their number:
    /// those their started jobs keep are left out in it, not read one by one.
    pub async fn redundant_on_ref(
        conn: &mut Conn<'_>,
        project_id: i64,
        ref_: &str,
        other_than_sha: &str,
        before: i64,
        since: NaiveDateTime,
    ) -> QueryResult<Vec<Pipeline>> {
        let ref_ = ref_.to_string();
        let sha = other_than_sha.to_string();
        // The commit filtered here, not after: pipelines of the same commit pile up on a
        // busy ref, and each would be read whole for nothing. The age and the order are
        // applied after: in the statement they let SQLite's planner prefer the creation
        // time or the id to the (project, ref, status) index, and walk a week (or all) of
        // the project's history for each new pipeline; only unfinished pipelines of the
        // ref come back this way, few.
        let mut found: Vec<Pipeline> = db_run!(conn, |c| pipelines::table
            .filter(pipelines::project_id.eq(project_id))
            .filter(pipelines::ref_.eq(&ref_))
            .filter(pipelines::sha.ne(&sha))
            .filter(pipelines::id.lt(before))
            .filter(Unfinished)
            .filter(MayBeRedundant)
            .limit(3000)
            .select(Pipeline::as_select())
            .load(c)
            .await)?;
        found.retain(|p| p.created_at >= since);
        found.sort_by_key(|p| p.id);
        Ok(found)
    }

    /// One page of the project's pipelines, newest first: `limit` from the `offset`th.
    pub async fn page_for_project(
        conn: &mut Conn<'_>,
        project_id: i64,
        offset: i64,
        limit: i64,
    ) -> QueryResult<Vec<Pipeline>> {
        db_run!(conn, |c| pipelines::table
            .filter(pipelines::project_id.eq(project_id))
            .order(pipelines::id.desc())
            .offset(offset)
            .limit(limit)
            .select(Pipeline::as_select())
            .load(c)
            .await)
    }

    pub async fn count_for_project(conn: &mut Conn<'_>, project_id: i64) -> QueryResult<i64> {
        db_run!(conn, |c| pipelines::table
            .filter(pipelines::project_id.eq(project_id))
            .count()
            .get_result(c)
            .await)
    }

    /// Marks a pipeline running because one of its jobs started, keeping the start time
    /// it has (another job may have started it meanwhile); changes nothing (and writes no
    /// page) if it is running with a start time already, as it is for every job after its
    /// first.
    pub async fn start(conn: &mut Conn<'_>, id: i64, at: NaiveDateTime) -> QueryResult<()> {
        db_run!(conn, |c| Cached(
            diesel::update(
                pipelines::table.find(id).filter(
                    pipelines::status
                        .ne(PipelineStatus::Running)
                        .or(pipelines::started_at.is_null()),
                ),
            )
            .set((
                pipelines::status.eq(PipelineStatus::Running),
                pipelines::started_at.eq(diesel::dsl::sql::<
                    diesel::sql_types::Nullable<diesel::sql_types::Timestamp>,
                >("COALESCE(started_at, ")
                .bind::<diesel::sql_types::Timestamp, _>(at)
                .sql(")")),
                pipelines::finished_at.eq(None::<NaiveDateTime>),
                pipelines::updated_at.eq(at),
            ))
        )
        .execute(c)
        .await)?;
        Ok(())
    }

    /// The project's newest pipeline on `ref_`, of `status` if one is given.
    pub async fn newest_on_ref(
        conn: &mut Conn<'_>,
        project_id: i64,
        ref_: &str,
        status: Option<PipelineStatus>,
    ) -> QueryResult<Option<Pipeline>> {
        let ref_ = ref_.to_string();
        db_run!(conn, |c| {
            let mut query = pipelines::table
                .filter(pipelines::project_id.eq(project_id))
                .filter(pipelines::ref_.eq(&ref_))
                .order(pipelines::id.desc())
                .select(Pipeline::as_select())
                .into_boxed();
            if let Some(status) = status {
                query = query.filter(pipelines::status.eq(status));
            }
            query.first(c).await.optional()
        })
    }

    /// The pipelines a schedule started, oldest first: `limit` from the `offset`th.
    pub async fn listed_for_schedule(
        conn: &mut Conn<'_>,
        schedule_id: i64,
        offset: i64,
        limit: i64,
    ) -> QueryResult<Vec<Pipeline>> {
        db_run!(conn, |c| pipelines::table
            .filter(pipelines::schedule_id.eq(schedule_id))
            .order(pipelines::id)
            .offset(offset)
            .limit(limit)
            .select(Pipeline::as_select())
            .load(c)
            .await)
    }

    /// How many pipelines the schedule started, counted up to `most`.
    pub async fn count_for_schedule(
        conn: &mut Conn<'_>,
        schedule_id: i64,
        most: i64,
    ) -> QueryResult<usize> {
        let ids: Vec<i64> = db_run!(conn, |c| pipelines::table
            .filter(pipelines::schedule_id.eq(schedule_id))
            .limit(most)
            .select(pipelines::id)
            .load(c)
            .await)?;
        Ok(ids.len())
    }

    /// The projects where a pipeline finished at `since` or later.
    pub async fn projects_finished_since(
        conn: &mut Conn<'_>,
        since: NaiveDateTime,
    ) -> QueryResult<Vec<i64>> {
        db_run!(conn, |c| pipelines::table
            .filter(pipelines::finished_at.ge(since))
            .select(pipelines::project_id)
            .distinct()
            .load(c)
            .await)
    }

    /// Which of `ids` are pipelines that have finished (a pipeline not there is not).
    pub async fn finished_among(conn: &mut Conn<'_>, ids: &[i64]) -> QueryResult<Vec<i64>> {
        let mut finished = Vec::new();
        // A bounded number of bind parameters per query, for SQLite.
        for chunk in ids.chunks(500) {
            let found: Vec<i64> = db_run!(conn, |c| pipelines::table
                .filter(pipelines::id.eq_any(chunk))
                .filter(pipelines::finished_at.is_not_null())
                .select(pipelines::id)
                .load(c)
                .await)?;
            finished.extend(found);
        }
        Ok(finished)
    }

    /// Records a new status with its start and finish times.
    pub async fn set_status(
        conn: &mut Conn<'_>,
        id: i64,
        status: PipelineStatus,
        started_at: Option<NaiveDateTime>,
        finished_at: Option<NaiveDateTime>,
    ) -> QueryResult<Pipeline> {
        let at = super::now();
        db_run!(conn, |c| Cached(
            diesel::update(pipelines::table.find(id))
                .set((
                    pipelines::status.eq(status),
                    pipelines::started_at.eq(started_at),
                    pipelines::finished_at.eq(finished_at),
                    pipelines::updated_at.eq(at),
                ))
                .returning(Pipeline::as_returning())
        )
        .get_result(c)
        .await)
    }
}

/// What [`Pipeline::delete_all`] took from the database and leaves to clean elsewhere.
#[derive(Debug, Default)]
pub struct DeletedPipelines {
    pub pipelines: Vec<i64>,
    pub jobs: Vec<i64>,
    /// The artifacts' objects (archived logs among them), to delete from the store.
    pub store_paths: Vec<String>,
}

/// How many levels of child pipelines a deletion follows (GitLab nests two).
const MAX_PIPELINE_DEPTH: usize = 8;

impl Pipeline {
    /// Up to `limit` of the project's pipelines created before `before` that have no job
    /// left to run (neither active nor waiting), oldest first: what automatic cleanup
    /// takes next.
    pub async fn old_settled(
        conn: &mut Conn<'_>,
        project_id: i64,
        before: NaiveDateTime,
        limit: i64,
    ) -> QueryResult<Vec<i64>> {
        use PipelineStatus::*;
        let settled = [Success, Failed, Canceled, Skipped, Manual];
        db_run!(conn, |c| pipelines::table
            .filter(pipelines::project_id.eq(project_id))
            .filter(pipelines::created_at.lt(before))
            .filter(pipelines::status.eq_any(settled))
            .order((pipelines::created_at, pipelines::id))
            .limit(limit)
            .select(pipelines::id)
            .load(c)
            .await)
    }

    /// `ids` and the child pipelines their bridges made, theirs in turn, and so on.
    pub async fn with_descendants(conn: &mut Conn<'_>, ids: Vec<i64>) -> QueryResult<Vec<i64>> {
        let mut all = ids.clone();
        let mut level = ids;
        for _ in 0..MAX_PIPELINE_DEPTH {
            if level.is_empty() {
                break;
            }
            let bridges = jobs::table
                .filter(jobs::pipeline_id.eq_any(level))
                .select(jobs::id.nullable());
            level = db_run!(conn, |c| pipelines::table
                .filter(pipelines::parent_bridge_id.eq_any(bridges))
                .select(pipelines::id)
                .load(c)
                .await)?;
            all.extend(&level);
        }
        Ok(all)
    }

    /// Deletes the pipelines `ids` with their jobs and all that hangs on the jobs (log
    /// chunks, artifact rows, coverage, test reports, deployments); a resource group they
    /// held and a schedule's "last pipeline" let go of them. Run it in a transaction; what
    /// lives outside the database is answered for the caller to remove after the commit.
    pub async fn delete_all(conn: &mut Conn<'_>, ids: &[i64]) -> QueryResult<DeletedPipelines> {
        use crate::db::schema::{
            deployments, job_artifacts, job_coverages, job_test_reports, jobs, pipeline_schedules,
            resource_groups, trace_chunks,
        };
        let mut deleted = DeletedPipelines::default();
        // A bounded number of bind parameters per statement, for SQLite.
        for chunk in ids.chunks(500) {
            let of_jobs = || {
                jobs::table
                    .filter(jobs::pipeline_id.eq_any(chunk))
                    .select(jobs::id)
            };
            let job_ids: Vec<i64> = db_run!(conn, |c| of_jobs().load(c).await)?;
            let paths: Vec<String> = db_run!(conn, |c| job_artifacts::table
                .filter(job_artifacts::job_id.eq_any(of_jobs()))
                .select(job_artifacts::store_path)
                .load(c)
                .await)?;
            db_run!(conn, |c| diesel::update(resource_groups::table.filter(
                resource_groups::holder_job_id.eq_any(of_jobs().select(jobs::id.nullable()))
            ))
            .set(resource_groups::holder_job_id.eq(None::<i64>))
            .execute(c)
            .await)?;
            db_run!(conn, |c| diesel::update(pipeline_schedules::table.filter(
                pipeline_schedules::last_pipeline_id.eq_any(chunk.iter().map(|id| Some(*id)))
            ))
            .set(pipeline_schedules::last_pipeline_id.eq(None::<i64>))
            .execute(c)
            .await)?;
            // What hangs on the jobs, each table by its `job_id`.
            macro_rules! delete_of_jobs {
                ($($table:ident),+) => {$(
                    db_run!(conn, |c| diesel::delete(
                        $table::table.filter($table::job_id.eq_any(of_jobs()))
                    )
                    .execute(c)
                    .await)?;
                )+};
            }
            delete_of_jobs!(
                deployments,
                trace_chunks,
                job_artifacts,
                job_coverages,
                job_test_reports
            );
            db_run!(conn, |c| diesel::delete(
                jobs::table.filter(jobs::pipeline_id.eq_any(chunk))
            )
            .execute(c)
            .await)?;
            let gone: Vec<i64> = db_run!(conn, |c| diesel::delete(
                pipelines::table.filter(pipelines::id.eq_any(chunk))
            )
            .returning(pipelines::id)
            .get_results(c)
            .await)?;
            deleted.pipelines.extend(gone);
            deleted.jobs.extend(job_ids);
            deleted.store_paths.extend(paths);
        }
        Ok(deleted)
    }
}

literal_condition!(
    /// Still waiting or running: `created`, `waiting_for_resource`, `preparing`, `pending`,
    /// `running`, `scheduled` (GitLab's cancelable statuses less `manual`). Literals: with
    /// the statuses bound as an array, PostgreSQL's generic plan filtered them after the
    /// (project, ref, status, id) index instead of seeking them in it, and read every
    /// pipeline of a busy ref (50,000 rows, 16 ms, for each new pipeline). On PostgreSQL
    /// the literals also prove the predicate of the partial index of unfinished pipelines
    /// (`index_pipelines_unfinished_on_project_id_and_ref`), which keeps the read small
    /// whatever plan is chosen: the same text must stay in both.
    Unfinished,
    "status IN ('created', 'waiting_for_resource', 'preparing', 'pending', 'running', 'scheduled')"
);

literal_condition!(
    /// Whether a newer pipeline on its ref cancels something of this one, as its
    /// `workflow:auto_cancel:on_new_commit` says (GitLab's
    /// `Ci::PipelineCreation::CancelRedundantPipelinesService`): `none` nothing;
    /// `interruptible` its interruptible jobs, if it has any; `conservative` (and the
    /// default) the whole pipeline, unless a job that started (GitLab's
    /// `STARTED_STATUSES`: running, success, failed) and was not retried is not
    /// interruptible. Each pipeline costs a probe of the (pipeline, status) index, which
    /// usually meets such a job first. The canceling transaction checks again.
    ///
    /// On SQLite the statuses are literals, as [`Unfinished`], so that the index is sought
    /// on them. On PostgreSQL each comes from `unnest`, one probe per status: with the
    /// literals and statistics that find those statuses rare (a young instance's, analysed
    /// while its jobs waited), the planner read every started job of every pipeline through
    /// `index_jobs_on_status` once and hashed them (31,900 buffers, 13 ms a new pipeline,
    /// with 16,000 such jobs); an unknown status makes that index look unselective.
    MayBeRedundant,
    postgres: "CASE auto_cancel_on_new_commit \
        WHEN 'none' THEN FALSE \
        WHEN 'interruptible' THEN EXISTS (SELECT 1 FROM jobs \
            WHERE jobs.pipeline_id = pipelines.id AND NOT jobs.retried AND jobs.interruptible) \
        ELSE NOT EXISTS (SELECT 1 \
            FROM unnest(ARRAY['running', 'success', 'failed']) AS started(status) \
            CROSS JOIN LATERAL (SELECT 1 FROM jobs \
                WHERE jobs.pipeline_id = pipelines.id AND jobs.status = started.status \
                    AND NOT jobs.retried AND NOT jobs.interruptible LIMIT 1) AS one) \
    END",
    sqlite: "CASE auto_cancel_on_new_commit \
        WHEN 'none' THEN FALSE \
        WHEN 'interruptible' THEN EXISTS (SELECT 1 FROM jobs \
            WHERE jobs.pipeline_id = pipelines.id AND NOT jobs.retried AND jobs.interruptible) \
        ELSE NOT EXISTS (SELECT 1 FROM jobs \
            WHERE jobs.pipeline_id = pipelines.id \
                AND jobs.status IN ('running', 'success', 'failed') \
                AND NOT jobs.retried AND NOT jobs.interruptible) \
    END"
);
