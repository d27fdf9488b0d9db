use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::ci::config::JobSpec;
use crate::db::enums::JobStatus;
use crate::db::schema::{jobs, runner_managers};
use crate::db::{Cached, Conn};
use crate::db_run;

/// A job (GitLab's build). Its token exists only while it runs, stored as a digest.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Identifiable)]
#[diesel(table_name = jobs)]
pub struct Job {
    pub id: i64,
    pub pipeline_id: i64,
    pub project_id: i64,
    pub name: String,
    pub stage: String,
    pub stage_idx: i32,
    pub status: JobStatus,
    pub when_: String,
    pub allow_failure: bool,
    /// JSON array of tag names.
    pub tag_list: String,
    /// JSON of the job's [`JobSpec`].
    pub options: String,
    pub protected: bool,
    pub timeout: Option<i32>,
    pub token_digest: Option<Vec<u8>>,
    pub runner_id: Option<i64>,
    pub runner_manager_id: Option<i64>,
    pub failure_reason: Option<String>,
    pub exit_code: Option<i32>,
    pub retried: bool,
    /// The runner that took the job advertised `cancel_gracefully`.
    pub cancel_gracefully: bool,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub queued_at: Option<NaiveDateTime>,
    pub started_at: Option<NaiveDateTime>,
    pub finished_at: Option<NaiveDateTime>,
    pub erased_at: Option<NaiveDateTime>,
    /// Two-phase commit: assigned to a runner but still pending until the runner's first
    /// `running` update, which must come before this time.
    pub ack_deadline: Option<NaiveDateTime>,
    /// Bytes of log stored, and the IEEE CRC-32 over them (kept as each PATCH lands).
    pub trace_size: i64,
    pub trace_crc32: i64,
    /// Whether the runner's final checksum and size matched the stored log.
    pub trace_checksum_ok: Option<bool>,
    pub debug_trace: bool,
    /// JSON array of `{key, value}` from the job's dotenv report, for the jobs after it.
    pub dotenv_variables: String,
    /// `when: delayed`: when the `scheduled` job is queued.
    pub scheduled_at: Option<NaiveDateTime>,
    /// The resource group the job must hold to run (`resource_group`).
    pub resource_group_id: Option<i64>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = jobs)]
pub struct NewJob {
    pub pipeline_id: i64,
    pub project_id: i64,
    pub name: String,
    pub stage: String,
    pub stage_idx: i32,
    pub status: JobStatus,
    pub when_: String,
    pub allow_failure: bool,
    pub tag_list: String,
    pub options: String,
    pub protected: bool,
    pub timeout: Option<i32>,
    pub resource_group_id: Option<i64>,
    /// Its claim writes and reads nothing else ([`crate::queue::claims_alone`]).
    pub claims_alone: bool,
    /// Its spec's `interruptible` (`jobs.interruptible`), for the redundant-pipeline cancel.
    pub interruptible: bool,
    /// The times of the status it is written with (a new pipeline's first jobs are
    /// decided before they are written): queued when pending, started when running,
    /// finished when skipped, scheduled when delayed.
    pub queued_at: Option<NaiveDateTime>,
    pub started_at: Option<NaiveDateTime>,
    pub finished_at: Option<NaiveDateTime>,
    pub scheduled_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// A pending job as matching reads it: what decides which runners may take it, without
/// its spec (read only for the job a claim picks).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = jobs)]
pub struct Candidate {
    pub id: i64,
    pub pipeline_id: i64,
    pub project_id: i64,
    /// JSON array of tag names.
    pub tag_list: String,
    pub protected: bool,
    /// Its claim writes and reads nothing else ([`crate::queue::claims_alone`]).
    pub claims_alone: bool,
}

impl Candidate {
    /// The candidate `job` is as the queue reads it, with its stored `claims_alone`.
    pub fn of(job: &Job, claims_alone: bool) -> Candidate {
        Candidate {
            id: job.id,
            pipeline_id: job.pipeline_id,
            project_id: job.project_id,
            tag_list: job.tag_list.clone(),
            protected: job.protected,
            claims_alone,
        }
    }

    pub fn tags(&self) -> Vec<String> {
        serde_json::from_str(&self.tag_list).unwrap_or_default()
    }
}

/// A running or canceling job as the reaper judges it: when it started, its timeout and
/// its last contact, without its spec or log state (read whole only for the few it ends).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = jobs)]
pub struct Executing {
    pub id: i64,
    pub status: JobStatus,
    pub timeout: Option<i32>,
    pub started_at: Option<NaiveDateTime>,
    pub updated_at: NaiveDateTime,
}

/// Columns a status change may set besides the status.
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = jobs)]
pub struct JobChanges {
    pub status: Option<JobStatus>,
    pub failure_reason: Option<Option<String>>,
    pub exit_code: Option<Option<i32>>,
    pub allow_failure: Option<bool>,
    pub queued_at: Option<Option<NaiveDateTime>>,
    pub started_at: Option<Option<NaiveDateTime>>,
    pub finished_at: Option<Option<NaiveDateTime>>,
    pub token_digest: Option<Option<Vec<u8>>>,
    pub updated_at: Option<NaiveDateTime>,
    pub retried: Option<bool>,
    pub runner_id: Option<Option<i64>>,
    pub runner_manager_id: Option<Option<i64>>,
    pub ack_deadline: Option<Option<NaiveDateTime>>,
    pub trace_checksum_ok: Option<Option<bool>>,
    pub scheduled_at: Option<Option<NaiveDateTime>>,
}

impl Job {
    pub fn spec(&self) -> JobSpec {
        serde_json::from_str(&self.options).unwrap_or_default()
    }

    pub fn tags(&self) -> Vec<String> {
        serde_json::from_str(&self.tag_list).unwrap_or_default()
    }

    /// Writes `new`, answering the rows in the same order.
    pub async fn insert_many(conn: &mut Conn<'_>, new: &[NewJob]) -> QueryResult<Vec<Job>> {
        let mut created = Vec::with_capacity(new.len());
        // PostgreSQL: a statement per thousand jobs (a round trip each; the bind limit
        // is 65,535 values), their ids taken from the sequence in the rows' order.
        if let Conn::Postgres(c) = conn {
            for chunk in new.chunks(1000) {
                let mut rows: Vec<Job> = diesel::insert_into(jobs::table)
                    .values(chunk)
                    .returning(Job::as_returning())
                    .get_results(&mut **c)
                    .await?;
                rows.sort_unstable_by_key(|j| j.id);
                created.extend(rows);
            }
            return Ok(created);
        }
        // SQLite: one statement per job (in process, no round trip; RETURNING with
        // multi-row inserts is not portable through diesel).
        for job in new {
            let row: Job = db_run!(conn, |c| diesel::insert_into(jobs::table)
                .values(job)
                .returning(Job::as_returning())
                .get_result(c)
                .await)?;
            created.push(row);
        }
        Ok(created)
    }

    /// PostgreSQL: the jobs of the pipeline inserted just before on this connection, in one
    /// statement of fixed text (kept prepared) whatever their number: the rows come as one
    /// array per column, and the pipeline's id is the last its sequence gave this session
    /// (each row's `pipeline_id` is not read). For
    /// [`Pipeline::create_with_jobs`](super::Pipeline::create_with_jobs), which sends it
    /// without waiting for the pipeline's `INSERT`. Returned in the order given (ids are
    /// taken from the sequence in the arrays' order).
    pub fn insert_into_new_pipeline<'c>(
        conn: &mut &'c diesel_async::AsyncPgConnection,
        new: &[NewJob],
    ) -> impl std::future::Future<Output = QueryResult<Vec<Job>>> + Send + 'c {
        use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text, Timestamp};
        fn column<'n, T>(new: &'n [NewJob], f: impl Fn(&'n NewJob) -> T) -> Vec<T> {
            new.iter().map(f).collect()
        }
        let query = Cached(
            diesel::sql_query(INSERT_INTO_NEW_PIPELINE)
                .bind::<Array<BigInt>, _>(column(new, |j| j.project_id))
                .bind::<Array<Text>, _>(column(new, |j| j.name.as_str()))
                .bind::<Array<Text>, _>(column(new, |j| j.stage.as_str()))
                .bind::<Array<Integer>, _>(column(new, |j| j.stage_idx))
                .bind::<Array<Text>, _>(column(new, |j| j.status.as_str()))
                .bind::<Array<Text>, _>(column(new, |j| j.when_.as_str()))
                .bind::<Array<Bool>, _>(column(new, |j| j.allow_failure))
                .bind::<Array<Text>, _>(column(new, |j| j.tag_list.as_str()))
                .bind::<Array<Text>, _>(column(new, |j| j.options.as_str()))
                .bind::<Array<Bool>, _>(column(new, |j| j.protected))
                .bind::<Array<Nullable<Integer>>, _>(column(new, |j| j.timeout))
                .bind::<Array<Nullable<BigInt>>, _>(column(new, |j| j.resource_group_id))
                .bind::<Array<Nullable<Timestamp>>, _>(column(new, |j| j.queued_at))
                .bind::<Array<Nullable<Timestamp>>, _>(column(new, |j| j.started_at))
                .bind::<Array<Nullable<Timestamp>>, _>(column(new, |j| j.finished_at))
                .bind::<Array<Nullable<Timestamp>>, _>(column(new, |j| j.scheduled_at))
                .bind::<Array<Timestamp>, _>(column(new, |j| j.created_at))
                .bind::<Array<Timestamp>, _>(column(new, |j| j.updated_at))
                .bind::<Array<Bool>, _>(column(new, |j| j.claims_alone))
                .bind::<Array<Bool>, _>(column(new, |j| j.interruptible)),
        );
        let rows = query.load::<Job>(conn);
        async move {
            let mut rows = rows.await?;
            rows.sort_unstable_by_key(|j| j.id);
            Ok(rows)
        }
    }

    pub async fn find(conn: &mut Conn<'_>, id: i64) -> QueryResult<Option<Job>> {
        db_run!(conn, |c| jobs::table
            .find(id)
            .select(Job::as_select())
            .first(c)
            .await
            .optional())
    }

    /// Whether `job`, which just ended in this transaction, moves nothing else in its
    /// pipeline, so that the pipeline need not be read whole and processed again: the
    /// pipeline is `running`, another job of its stage or an earlier one is still pending
    /// or running (so no later stage starts, and the pipeline stays `running`, GitLab's
    /// composite status), no job is `canceling`, and no job waits through `needs` (a
    /// pipeline of stages only, or none left `created`). One statement; it reads the
    /// pipeline's row and only its pending, running and created jobs, through the
    /// (pipeline, status) index: the cost does not grow with the pipeline.
    ///
    /// SQLite's form; PostgreSQL's is part of [`EndAsSeen`], with the locks it takes.
    async fn finish_moves_nothing(conn: &mut Conn<'_>, job: &Job) -> QueryResult<bool> {
        use crate::db::enums::PipelineStatus;
        use crate::db::schema::pipelines;
        use diesel::dsl::{exists, select};
        let pipeline = pipelines::table.filter(pipelines::id.eq(job.pipeline_id));
        let running = exists(pipeline.filter(pipelines::status.eq(PipelineStatus::Running)));
        let stage_scheduled = exists(pipeline.filter(pipelines::stage_scheduled.eq(true)));
        let active = [JobStatus::Pending, JobStatus::Running, JobStatus::Preparing];
        let in_pipeline = jobs::table.filter(jobs::pipeline_id.eq(job.pipeline_id));
        let busy = exists(
            in_pipeline
                .filter(jobs::status.eq_any(active))
                .filter(jobs::stage_idx.le(job.stage_idx))
                .filter(jobs::id.ne(job.id))
                .filter(jobs::retried.eq(false)),
        );
        let canceling = exists(in_pipeline.filter(jobs::status.eq(JobStatus::Canceling)));
        let waiting = exists(in_pipeline.filter(jobs::status.eq(JobStatus::Created)));
        let (running, stage_scheduled, busy, canceling, waiting): (bool, bool, bool, bool, bool) =
            db_run!(conn, |c| Cached(select((
                running,
                stage_scheduled,
                busy,
                canceling,
                waiting
            )))
            .get_result(c)
            .await)?;
        Ok(running && busy && !canceling && (stage_scheduled || !waiting))
    }

    /// Every job of a pipeline (all tries), by id.
    pub async fn for_pipeline(conn: &mut Conn<'_>, pipeline_id: i64) -> QueryResult<Vec<Job>> {
        db_run!(conn, |c| jobs::table
            .filter(jobs::pipeline_id.eq(pipeline_id))
            .order(jobs::id)
            .select(Job::as_select())
            .load(c)
            .await)
    }

    /// The statuses of a job that has started, for the redundant-pipeline cancel: running,
    /// or ended after running.
    pub const STARTED: [JobStatus; 3] = [JobStatus::Running, JobStatus::Success, JobStatus::Failed];

    /// The latest tries of a pipeline's jobs in stages before `stage_idx`.
    pub async fn latest_before_stage(
        conn: &mut Conn<'_>,
        pipeline_id: i64,
        stage_idx: i32,
    ) -> QueryResult<Vec<Job>> {
        db_run!(conn, |c| jobs::table
            .filter(jobs::pipeline_id.eq(pipeline_id))
            .filter(jobs::stage_idx.lt(stage_idx))
            .filter(jobs::retried.eq(false))
            .order(jobs::id)
            .select(Job::as_select())
            .load(c)
            .await)
    }

    /// The latest tries of a pipeline's jobs with one of `names`.
    pub async fn latest_named(
        conn: &mut Conn<'_>,
        pipeline_id: i64,
        names: &[String],
    ) -> QueryResult<Vec<Job>> {
        if names.is_empty() {
            return Ok(Vec::new()); // `needs: []`, or none with artifacts: no round trip
        }
        let names = names.to_vec();
        db_run!(conn, |c| jobs::table
            .filter(jobs::pipeline_id.eq(pipeline_id))
            .filter(jobs::name.eq_any(names))
            .filter(jobs::retried.eq(false))
            .order(jobs::id)
            .select(Job::as_select())
            .load(c)
            .await)
    }

    /// The jobs a runner took (of `status`, when given), newest first (`ascending`:
    /// oldest first): `limit` from the `offset`th. Read as a page: a runner takes jobs
    /// for years.
    pub async fn listed_for_runner(
        conn: &mut Conn<'_>,
        runner_id: i64,
        status: Option<JobStatus>,
        ascending: bool,
        (offset, limit): (i64, i64),
    ) -> QueryResult<Vec<Job>> {
        db_run!(conn, |c| {
            let mut query = jobs::table
                .filter(jobs::runner_id.eq(runner_id))
                .offset(offset)
                .limit(limit)
                .select(Job::as_select())
                .into_boxed();
            if let Some(status) = status {
                query = query.filter(jobs::status.eq(status));
            }
            query = if ascending {
                query.order(jobs::id.asc())
            } else {
                query.order(jobs::id.desc())
            };
            query.load(c).await
        })
    }

    /// How many jobs [`Job::listed_for_runner`] lists, counted up to `most`.
    pub async fn count_listed_for_runner(
        conn: &mut Conn<'_>,
        runner_id: i64,
        status: Option<JobStatus>,
        most: i64,
    ) -> QueryResult<usize> {
        let ids: Vec<i64> = db_run!(conn, |c| {
            let mut query = jobs::table
                .filter(jobs::runner_id.eq(runner_id))
                .limit(most)
                .select(jobs::id)
                .into_boxed();
            if let Some(status) = status {
                query = query.filter(jobs::status.eq(status));
            }
            query.load(c).await
        })?;
        Ok(ids.len())
    }

    /// A project's jobs, newest first: `limit` from the `offset`th. Read as a page: a
    /// project keeps years of jobs.
    pub async fn listed_for_project(
        conn: &mut Conn<'_>,
        project_id: i64,
        offset: i64,
        limit: i64,
    ) -> QueryResult<Vec<Job>> {
        db_run!(conn, |c| jobs::table
            .filter(jobs::project_id.eq(project_id))
            .order(jobs::id.desc())
            .offset(offset)
            .limit(limit)
            .select(Job::as_select())
            .load(c)
            .await)
    }

    /// How many jobs the project has, counted up to `most`.
    pub async fn count_for_project(
        conn: &mut Conn<'_>,
        project_id: i64,
        most: i64,
    ) -> QueryResult<usize> {
        let ids: Vec<i64> = db_run!(conn, |c| jobs::table
            .filter(jobs::project_id.eq(project_id))
            .limit(most)
            .select(jobs::id)
            .load(c)
            .await)?;
        Ok(ids.len())
    }

    /// Up to `limit` pending, unassigned jobs with ids above `after`, oldest first, read
    /// narrowly (no spec): the candidates a runner is matched against.
    pub async fn candidates_after(
        conn: &mut Conn<'_>,
        after: i64,
        limit: i64,
    ) -> QueryResult<Vec<Candidate>> {
        // Spelled with literals so that PostgreSQL uses `index_jobs_queue`, which
        // holds only these jobs (a bound status cannot prove the partial index applies).
        db_run!(conn, |c| jobs::table
            .filter(WaitingForRunner)
            .filter(jobs::id.gt(after))
            .order(jobs::id)
            .limit(limit)
            .select(Candidate::as_select())
            .load(c)
            .await)
    }

    /// Those of `ids` (ascending) still pending and unassigned, read without a lock: after
    /// a claim that skipped rows other transactions hold, which of its jobs it skipped
    /// rather than found taken.
    pub async fn still_waiting(conn: &mut Conn<'_>, ids: &[i64]) -> QueryResult<Vec<i64>> {
        let (Some(&first), Some(&last)) = (ids.first(), ids.last()) else {
            return Ok(Vec::new());
        };
        let ids = ids.to_vec();
        db_run!(conn, |c| jobs::table
            .filter(WaitingForRunner)
            .filter(jobs::id.between(first, last))
            .filter(jobs::id.eq_any(ids))
            .order(jobs::id)
            .select(jobs::id)
            .load(c)
            .await)
    }

    /// Jobs assigned under two-phase commit whose runner did not acknowledge in time.
    pub async fn unacknowledged(
        conn: &mut Conn<'_>,
        before: NaiveDateTime,
    ) -> QueryResult<Vec<Job>> {
        db_run!(conn, |c| jobs::table
            .filter(jobs::status.eq(JobStatus::Pending))
            .filter(jobs::ack_deadline.lt(before))
            .select(Job::as_select())
            .load(c)
            .await)
    }

    /// Running and canceling jobs, read narrowly (for timeouts and lost runners): a
    /// fleet's every running job is read on each pass, and whole rows (the spec, the log's
    /// state) made that pass cost 70–150 ms of the database and a burst of memory with
    /// 30,000–60,000 of them.
    pub async fn executing(conn: &mut Conn<'_>) -> QueryResult<Vec<Executing>> {
        db_run!(conn, |c| jobs::table
            .filter(jobs::status.eq_any([JobStatus::Running, JobStatus::Canceling]))
            .order(jobs::id)
            .select(Executing::as_select())
            .load(c)
            .await)
    }

    /// Assigns a pending job to a runner: exactly one caller wins, because the update only
    /// matches while the job is still pending and unassigned (both backends serialise
    /// writers on a row). With an `ack_deadline` (two-phase commit) the job stays pending,
    /// assigned, until the runner's first `running` update.
    pub async fn claim(
        conn: &mut Conn<'_>,
        id: i64,
        to: &Assignee<'_>,
    ) -> QueryResult<Option<Job>> {
        let (status, started_at) = (to.status(), to.started_at());
        let &Assignee {
            runner_id,
            manager_id,
            token_digest,
            cancel_gracefully,
            at,
            ack_deadline,
        } = to;
        db_run!(conn, |c| Cached(
            diesel::update(
                jobs::table
                    .filter(jobs::id.eq(id))
                    .filter(jobs::status.eq(JobStatus::Pending))
                    .filter(jobs::runner_id.is_null())
            )
            .set((
                jobs::status.eq(status),
                jobs::ack_deadline.eq(ack_deadline),
                jobs::runner_id.eq(runner_id),
                jobs::runner_manager_id.eq(manager_still_there(manager_id)),
                jobs::token_digest.eq(token_digest),
                jobs::cancel_gracefully.eq(cancel_gracefully),
                jobs::started_at.eq(started_at),
                jobs::updated_at.eq(at),
            ))
            .returning(Job::as_returning())
        )
        .get_result(c)
        .await
        .optional())
    }

    /// PostgreSQL: [`Job::first_pending_of`], [`Job::claim`] and, when the job starts
    /// running, [`Pipeline::start`](crate::db::models::Pipeline::start) in one statement,
    /// one round trip where they took three. The row is taken `FOR UPDATE SKIP LOCKED`, as
    /// in `first_pending_of`, or waiting for the transactions that hold it
    /// ([`Locked::Wait`]). The job's spec is checked after: the caller undoes a claim
    /// the runner cannot run, in the same transaction, with [`Job::drop_unassigned`].
    pub async fn claim_first_of(
        conn: &mut diesel_async::AsyncPgConnection,
        ids: &[i64],
        to: &Assignee<'_>,
        locked: Locked,
    ) -> QueryResult<Option<Job>> {
        use diesel::sql_types::{Array, BigInt, Binary, Bool, Nullable, Text, Timestamp};
        let (Some(&first), Some(&last)) = (ids.first(), ids.last()) else {
            return Ok(None);
        };
        let statement = match locked {
            Locked::Skip => CLAIM_FIRST_OF,
            Locked::Wait => CLAIM_FIRST_OF_WAITING,
        };
        Cached(
            diesel::sql_query(statement)
                .bind::<Text, _>(to.status())
                .bind::<Nullable<Timestamp>, _>(to.ack_deadline)
                .bind::<BigInt, _>(to.runner_id)
                .bind::<BigInt, _>(to.manager_id)
                .bind::<Binary, _>(to.token_digest)
                .bind::<Bool, _>(to.cancel_gracefully)
                .bind::<Nullable<Timestamp>, _>(to.started_at())
                .bind::<Timestamp, _>(to.at)
                // The range keeps the plan to the list's stretch of the primary key (see
                // `first_pending_of`).
                .bind::<BigInt, _>(first)
                .bind::<BigInt, _>(last)
                .bind::<Array<BigInt>, _>(ids),
        )
        .get_result(conn)
        .await
        .optional()
    }

    /// Fails a job the runner cannot run for `reason`, as GitLab drops it without
    /// assigning it: no runner, no token, no start, whether or not a claim in the same
    /// transaction took it first. The caller processes its pipeline.
    pub async fn drop_unassigned(
        conn: &mut Conn<'_>,
        id: i64,
        reason: &str,
        at: NaiveDateTime,
    ) -> QueryResult<()> {
        let reason = reason.to_string();
        db_run!(conn, |c| diesel::update(jobs::table.find(id))
            .set((
                jobs::status.eq(JobStatus::Failed),
                jobs::failure_reason.eq(Some(&reason)),
                jobs::runner_id.eq(None::<i64>),
                jobs::runner_manager_id.eq(None::<i64>),
                jobs::token_digest.eq(None::<Vec<u8>>),
                jobs::cancel_gracefully.eq(false),
                jobs::started_at.eq(None::<NaiveDateTime>),
                jobs::ack_deadline.eq(None::<NaiveDateTime>),
                jobs::finished_at.eq(Some(at)),
                jobs::updated_at.eq(at),
            ))
            .execute(c)
            .await)?;
        Ok(())
    }

    /// The first of `ids` (ascending) still pending and unassigned, with its pipeline and
    /// spec, for a claim in the same transaction. PostgreSQL locks the row and skips rows
    /// other transactions hold (`FOR UPDATE SKIP LOCKED`), so concurrent claims spread over
    /// the list instead of queueing on its first row. SQLite has no row locks and needs
    /// none (its single writer runs one claim at a time); it reads the pending rows between
    /// the first and last id and keeps the first listed: a query of fixed shape, prepared
    /// once per connection, where an `IN` list is parsed anew each time.
    pub async fn first_pending_of(
        conn: &mut Conn<'_>,
        ids: &[i64],
    ) -> QueryResult<Option<(i64, i64, String)>> {
        let (Some(&first), Some(&last)) = (ids.first(), ids.last()) else {
            return Ok(None);
        };
        let pending = jobs::table
            .filter(WaitingForRunner)
            .order(jobs::id)
            .select((jobs::id, jobs::pipeline_id, jobs::options))
            .filter(jobs::id.between(first, last));
        match conn {
            // The range keeps every plan to the list's stretch of the primary key: with the
            // list alone, PostgreSQL's generic plan sometimes read all pending jobs by
            // status and compared each with the list (3–9 ms a claim instead of 0.08).
            Conn::Postgres(c) => pending
                .filter(jobs::id.eq_any(ids.to_vec()))
                .for_update()
                .skip_locked()
                .first(&mut **c)
                .await
                .optional(),
            Conn::Sqlite(c) => {
                let rows: Vec<(i64, i64, String)> = pending.load(&mut **c).await?;
                Ok(rows
                    .into_iter()
                    .find(|(id, _, _)| ids.binary_search(id).is_ok()))
            }
        }
    }

    /// Applies `changes` if the job is still in one of `from`; answers whether it was.
    pub async fn transition(
        conn: &mut Conn<'_>,
        id: i64,
        from: &[JobStatus],
        changes: &JobChanges,
    ) -> QueryResult<bool> {
        let from = from.to_vec();
        // Kept prepared: each call site's changeset and list of statuses make one text.
        let n = db_run!(conn, |c| Cached(
            diesel::update(
                jobs::table
                    .filter(jobs::id.eq(id))
                    .filter(jobs::status.eq_any(from))
            )
            .set(changes)
        )
        .execute(c)
        .await)?;
        if n == 1 && matches!(changes.finished_at, Some(Some(_))) {
            super::CiMinutesUsage::account(conn, id).await?;
        }
        Ok(n == 1)
    }

    /// The job, its row locked until the transaction ends on PostgreSQL (`FOR NO KEY
    /// UPDATE`, the lock an update of it takes anyway); SQLite's single writer needs none.
    pub async fn find_locked(conn: &mut Conn<'_>, id: i64) -> QueryResult<Option<Job>> {
        match conn {
            Conn::Postgres(c) => jobs::table
                .find(id)
                .select(Job::as_select())
                .for_no_key_update()
                .first(&mut **c)
                .await
                .optional(),
            Conn::Sqlite(_) => Job::find(conn, id).await,
        }
    }

    /// Ends `seen`, a running or canceling job as read earlier, with `changes` (which set
    /// `finished_at`), if it is still as it was read: in the same status, with the same log
    /// (its size and CRC-32, which a checksum was compared with). Records its CI minutes,
    /// and with `check_quiet` answers [`Job::finish_moves_nothing`] for it too (false
    /// otherwise). `None` when the job changed since it was read, and nothing is written.
    ///
    /// On PostgreSQL it is one statement ([`EndAsSeen`]): the update, the minutes' row
    /// and the check, where they were a round trip each. The check runs after the update
    /// took the job's row, as [`Job::finish_moves_nothing`] requires.
    pub async fn end_as_seen(
        conn: &mut Conn<'_>,
        seen: &Job,
        changes: &JobChanges,
        check_quiet: bool,
    ) -> QueryResult<Option<(Job, bool)>> {
        debug_assert!(matches!(changes.finished_at, Some(Some(_))));
        if let Conn::Postgres(c) = conn {
            let usage = match (seen.runner_id, seen.started_at, changes.finished_at) {
                (Some(_), Some(started), Some(Some(finished))) => {
                    Some(super::ci_minutes::Usage::between(started, finished))
                }
                _ => None,
            };
            let statement = EndAsSeen {
                seen,
                changes: changes.as_changeset(),
                usage,
                check_quiet,
            };
            let ended: Option<Ended> = Cached(statement).get_result(&mut **c).await.optional()?;
            return Ok(ended.map(|e| (e.job, e.quiet)));
        }
        let seen_status = seen.status;
        let (size, crc) = (seen.trace_size, seen.trace_crc32);
        let ended = db_run!(conn, |c| Cached(
            diesel::update(
                jobs::table
                    .filter(jobs::id.eq(seen.id))
                    .filter(jobs::status.eq(seen_status))
                    .filter(jobs::trace_size.eq(size))
                    .filter(jobs::trace_crc32.eq(crc))
            )
            .set(changes)
            .returning(Job::as_returning())
        )
        .get_result(c)
        .await
        .optional())?;
        let Some(ended) = ended else {
            return Ok(None);
        };
        super::CiMinutesUsage::account_job(conn, &ended).await?;
        let quiet = check_quiet && Job::finish_moves_nothing(conn, &ended).await?;
        Ok(Some((ended, quiet)))
    }

    pub async fn set_dotenv_variables(conn: &mut Conn<'_>, id: i64, json: &str) -> QueryResult<()> {
        db_run!(conn, |c| diesel::update(jobs::table.find(id))
            .set(jobs::dotenv_variables.eq(json))
            .execute(c)
            .await)?;
        Ok(())
    }

    /// Erases a finished job: its log goes, `erased_at` is set.
    pub async fn erase(conn: &mut Conn<'_>, id: i64, at: NaiveDateTime) -> QueryResult<()> {
        use crate::db::schema::trace_chunks;
        db_run!(conn, |c| diesel::delete(
            trace_chunks::table.filter(trace_chunks::job_id.eq(id))
        )
        .execute(c)
        .await)?;
        db_run!(conn, |c| diesel::update(jobs::table.find(id))
            .set((
                jobs::erased_at.eq(Some(at)),
                jobs::trace_size.eq(0),
                jobs::trace_crc32.eq(0),
                jobs::updated_at.eq(at)
            ))
            .execute(c)
            .await)?;
        Ok(())
    }

    /// Records that the runner traces in debug mode (`debug_trace=true` on the first PATCH).
    pub async fn set_debug_trace(conn: &mut Conn<'_>, id: i64) -> QueryResult<()> {
        db_run!(conn, |c| diesel::update(jobs::table.find(id))
            .set(jobs::debug_trace.eq(true))
            .execute(c)
            .await)?;
        Ok(())
    }

    /// Delayed jobs whose time has come (`scheduled`, `scheduled_at` passed), oldest first.
    pub async fn scheduled_due(conn: &mut Conn<'_>, at: NaiveDateTime) -> QueryResult<Vec<Job>> {
        db_run!(conn, |c| jobs::table
            .filter(jobs::scheduled_at.le(at))
            .filter(jobs::status.eq(JobStatus::Scheduled))
            .order(jobs::scheduled_at)
            .limit(1000)
            .select(Job::as_select())
            .load(c)
            .await)
    }

    /// How many unfinished jobs each status holds. Finished ones are not counted: that
    /// would read the whole history (a million rows) on every metrics scrape; these come
    /// from the (status, id) index, ranges as long as the queue.
    pub async fn count_by_status(conn: &mut Conn<'_>) -> QueryResult<Vec<(JobStatus, i64)>> {
        db_run!(conn, |c| jobs::table
            .filter(UnfinishedJob)
            .group_by(jobs::status)
            .select((jobs::status, diesel::dsl::count_star()))
            .load(c)
            .await)
    }

    /// Marks a job as touched by its runner (PUT/PATCH), for lost-runner detection.
    pub async fn touch(conn: &mut Conn<'_>, id: i64, at: NaiveDateTime) -> QueryResult<()> {
        db_run!(conn, |c| Cached(
            diesel::update(jobs::table.find(id)).set(jobs::updated_at.eq(at))
        )
        .execute(c)
        .await)?;
        Ok(())
    }
}

literal_condition!(
    /// `status = 'pending' AND runner_id IS NULL`, as `index_jobs_queue` is defined
    /// (PostgreSQL uses a partial index only when the query's condition proves its own).
    WaitingForRunner,
    "status = 'pending' AND runner_id IS NULL"
);

literal_condition!(
    /// Not complete (every status but `success`, `failed`, `canceled`, `skipped`): written
    /// as literals, as `Unfinished` for pipelines, so that PostgreSQL seeks them in the
    /// (status, id) index whatever plan it keeps for the prepared statement, instead of
    /// possibly filtering the whole history (a bound array leaves the generic plan blind to
    /// which statuses are asked).
    UnfinishedJob,
    "status IN ('created', 'waiting_for_resource', 'preparing', 'pending', 'running', 'canceling', 'manual', 'scheduled')"
);

/// A job's coverage (see migrations' `job_coverages`).
pub struct JobCoverage;

impl JobCoverage {
    /// Records (or replaces: a retried extraction) the coverage of `job_id`.
    pub async fn set(conn: &mut Conn<'_>, job_id: i64, value: f64) -> QueryResult<()> {
        use crate::db::schema::job_coverages::dsl;
        db_run!(conn, |c| diesel::insert_into(dsl::job_coverages)
            .values((dsl::job_id.eq(job_id), dsl::coverage.eq(value)))
            .on_conflict(dsl::job_id)
            .do_update()
            .set(dsl::coverage.eq(value))
            .execute(c)
            .await)?;
        Ok(())
    }

    /// The coverage of each of `job_ids` that has one.
    pub async fn for_jobs(conn: &mut Conn<'_>, job_ids: &[i64]) -> QueryResult<Vec<(i64, f64)>> {
        use crate::db::schema::job_coverages::dsl;
        if job_ids.is_empty() {
            return Ok(Vec::new());
        }
        db_run!(conn, |c| dsl::job_coverages
            .filter(dsl::job_id.eq_any(job_ids))
            .select((dsl::job_id, dsl::coverage))
            .load(c)
            .await)
    }
}

/// What a PostgreSQL claim does with a listed job's row that another transaction holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Locked {
    /// Passes over it (`SKIP LOCKED`): claims running side by side take different jobs.
    Skip,
    /// Waits until that transaction ends, then takes the job if it is still free. For a
    /// claim that skipped jobs still free: another claim not yet committed held them, or
    /// something else (a job's end holds a busy job of its stage `FOR SHARE` until it
    /// commits).
    Wait,
}

/// Who a claim assigns a job to, and how.
pub struct Assignee<'a> {
    pub runner_id: i64,
    pub manager_id: i64,
    /// The digest of the job token the runner is sent.
    pub token_digest: &'a [u8],
    pub cancel_gracefully: bool,
    pub at: NaiveDateTime,
    /// Two-phase commit: the runner must acknowledge the job by then.
    pub ack_deadline: Option<NaiveDateTime>,
}

impl Assignee<'_> {
    /// Running at once, or pending until acknowledged under two-phase commit.
    fn status(&self) -> JobStatus {
        if self.ack_deadline.is_some() {
            JobStatus::Pending
        } else {
            JobStatus::Running
        }
    }

    fn started_at(&self) -> Option<NaiveDateTime> {
        self.ack_deadline.is_none().then_some(self.at)
    }
}

/// [`Job::insert_into_new_pipeline`]: `unnest` zips the arrays into rows; the pipeline's id
/// is read once (an init plan), from the sequence the pipeline's `INSERT` just advanced.
const INSERT_INTO_NEW_PIPELINE: &str = "\
INSERT INTO jobs (pipeline_id, project_id, name, stage, stage_idx, status, when_,
    allow_failure, tag_list, options, protected, timeout, resource_group_id, queued_at,
    started_at, finished_at, scheduled_at, created_at, updated_at, claims_alone, interruptible)
SELECT (SELECT currval('pipelines_id_seq')), u.*
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::integer[], $5::text[], $6::text[],
    $7::boolean[], $8::text[], $9::text[], $10::boolean[], $11::integer[], $12::bigint[],
    $13::timestamp[], $14::timestamp[], $15::timestamp[], $16::timestamp[],
    $17::timestamp[], $18::timestamp[], $19::boolean[], $20::boolean[]) AS u
RETURNING *";

/// A row of [`EndAsSeen`]: the ended job, and whether its end moves nothing else.
#[derive(QueryableByName)]
struct Ended {
    #[diesel(embed)]
    job: Job,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    quiet: bool,
}

/// [`Job::end_as_seen`]'s statement on PostgreSQL:
///
/// ```sql
/// WITH ended AS (UPDATE jobs SET … WHERE id = $ AND status = $ AND trace_size = $
///         AND trace_crc32 = $ RETURNING *),
///     usage AS (INSERT INTO ci_minutes_usages … SELECT … FROM ended JOIN runners …)
/// SELECT ended.*, <Job::finish_moves_nothing's check> AS quiet FROM ended
/// ```
///
/// The check's subqueries are evaluated for the row `ended` yields, so after the update
/// holds the job's row (the busy job's `FOR SHARE SKIP LOCKED` relies on that). They read
/// the statement's snapshot, where this job is still as it was: the check leaves it out
/// (`id <>`), and is asked only of a job that was running (not canceling). A job another
/// transaction ended after the snapshot is re-read by the lock and no longer counts as
/// busy (read committed re-checks a locked row's newest version).
///
/// The other job that keeps the stage busy is taken `FOR SHARE SKIP LOCKED` until the
/// transaction ends. A job another transaction is ending holds its row, so it does not
/// count as busy: the last two jobs of a stage ending at once each find no other, and
/// both process the pipeline, one after the other
/// ([`crate::db::models::Pipeline::find_locked`]), where under read committed each took
/// the other for still running and neither started the next stage. The share lock keeps
/// the job found running until this one commits: its own end waits, and then sees this
/// one ended.
struct EndAsSeen<'a, C> {
    seen: &'a Job,
    changes: C,
    usage: Option<super::ci_minutes::Usage>,
    check_quiet: bool,
}

impl<C> diesel::query_builder::Query for EndAsSeen<'_, C> {
    type SqlType = diesel::sql_types::Untyped;
}

/// Keyed by its text: the changeset's columns vary ([`Cached`]).
impl<C> diesel::query_builder::QueryId for EndAsSeen<'_, C> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<C> diesel::query_builder::QueryFragment<diesel::pg::Pg> for EndAsSeen<'_, C>
where
    C: diesel::query_builder::QueryFragment<diesel::pg::Pg>,
{
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> QueryResult<()> {
        use diesel::sql_types::{BigInt, Double, Integer, Text};
        let seen = self.seen;
        out.push_sql("WITH ended AS (UPDATE jobs SET ");
        self.changes.walk_ast(out.reborrow())?;
        out.push_sql(" WHERE id = ");
        out.push_bind_param::<BigInt, _>(&seen.id)?;
        out.push_sql(" AND status = ");
        out.push_bind_param::<Text, _>(seen.status.as_str())?;
        out.push_sql(" AND trace_size = ");
        out.push_bind_param::<BigInt, _>(&seen.trace_size)?;
        out.push_sql(" AND trace_crc32 = ");
        out.push_bind_param::<BigInt, _>(&seen.trace_crc32)?;
        out.push_sql(" RETURNING *)");
        if let Some(usage) = &self.usage {
            // The runner's type is read by the insert, as `CiMinutesUsage::record` does.
            out.push_sql(
                ", usage AS (INSERT INTO ci_minutes_usages (job_id, project_id, runner_id, \
                 runner_type, duration_seconds, cost_factor, minutes, finished_at) \
                 SELECT e.id, e.project_id, r.id, r.runner_type, ",
            );
            out.push_bind_param::<Double, _>(&usage.duration_seconds)?;
            for per_type in [&usage.factors, &usage.minutes] {
                out.push_sql(", CASE r.runner_type");
                for (name, value) in usage.types.iter().zip(per_type.iter()) {
                    out.push_sql(" WHEN ");
                    out.push_bind_param::<Text, _>(name)?;
                    out.push_sql(" THEN ");
                    out.push_bind_param::<Double, _>(value)?;
                }
                out.push_sql(" END");
            }
            out.push_sql(
                ", e.finished_at FROM ended e JOIN runners r ON r.id = e.runner_id \
                 ON CONFLICT DO NOTHING)",
            );
        }
        out.push_sql(" SELECT ended.*, ");
        if self.check_quiet {
            // `Job::finish_moves_nothing`'s conditions: the pipeline settled, and a busy job.
            // The busy job is sought one status at a time, each status coming from
            // `unnest`, so that the planner cannot know it: PostgreSQL's statistics of a
            // large jobs table say that hardly any job is pending or running (most are
            // finished when it analyses), and with the statuses as literals it walked
            // `index_jobs_on_status` through every busy job of every pipeline, filtering
            // on the pipeline (5,700 buffers and about 3 ms a job's end with 10,000 running
            // jobs). An unknown status makes that index look unselective, and each probe
            // seeks (pipeline, status, stage) in `index_jobs_on_pipeline_id_and_status`.
            out.push_sql("COALESCE((SELECT p.status = 'running' AND NOT EXISTS (SELECT 1 FROM jobs WHERE pipeline_id = p.id AND status = 'canceling') AND (p.stage_scheduled OR NOT EXISTS (SELECT 1 FROM jobs WHERE pipeline_id = p.id AND status = 'created')) FROM pipelines p WHERE p.id = ended.pipeline_id), FALSE) AND (SELECT busy.id FROM unnest(ARRAY['pending', 'running', 'preparing']) AS active(status) CROSS JOIN LATERAL (SELECT id FROM jobs WHERE pipeline_id = ended.pipeline_id AND status = active.status AND stage_idx <= ");
            out.push_bind_param::<Integer, _>(&seen.stage_idx)?;
            out.push_sql(
                " AND id <> ended.id AND NOT retried LIMIT 1 FOR SHARE SKIP LOCKED) AS busy \
                 LIMIT 1) IS NOT NULL",
            );
        } else {
            out.push_sql("FALSE");
        }
        out.push_sql(" AS quiet FROM ended");
        Ok(())
    }
}

/// The manager a claim records: `id` if its row is still there, else none. A poll may carry
/// a manager deleted meanwhile (through another instance, or while the poll was held):
/// the claim then leaves the job without one, as the foreign key's `ON DELETE SET NULL`
/// would have a moment later, instead of failing on the key (see [`Job::claim`]).
#[diesel::dsl::auto_type]
fn manager_still_there(id: i64) -> _ {
    runner_managers::table
        .filter(runner_managers::id.eq(id))
        .select(runner_managers::id)
        .single_value()
}

/// [`Job::claim_first_of`]'s statement, with the row lock it takes (`$lock`). `$1` is the
/// status the job takes: `running` starts its pipeline as
/// [`Pipeline::start`](crate::db::models::Pipeline::start) does (nothing if it runs with a
/// start time already); `pending` (two-phase commit) does not.
macro_rules! claim_first_of {
    ($lock:literal) => {
        concat!(
            "\
WITH claimed AS (
    UPDATE jobs SET status = $1, ack_deadline = $2, runner_id = $3,
        runner_manager_id = (SELECT id FROM runner_managers WHERE id = $4),
        token_digest = $5, cancel_gracefully = $6, started_at = $7, updated_at = $8
    WHERE id = (
        SELECT id FROM jobs
        WHERE status = 'pending' AND runner_id IS NULL
            AND id BETWEEN $9 AND $10 AND id = ANY($11)
        ORDER BY id LIMIT 1
        ",
            $lock,
            ")
    RETURNING *
), started AS (
    UPDATE pipelines SET status = 'running', started_at = COALESCE(started_at, $8),
        finished_at = NULL, updated_at = $8
    WHERE id = (SELECT pipeline_id FROM claimed) AND $1 = 'running'
        AND (status <> 'running' OR started_at IS NULL)
)
SELECT * FROM claimed"
        )
    };
}

/// Skips the rows other transactions hold: concurrent claims spread over the list.
const CLAIM_FIRST_OF: &str = claim_first_of!("FOR UPDATE SKIP LOCKED");
/// Waits for them ([`Locked::Wait`]).
const CLAIM_FIRST_OF_WAITING: &str = claim_first_of!("FOR UPDATE");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unfinished_condition_names_every_status_not_complete() {
        let query = jobs::table.filter(UnfinishedJob).select(jobs::id);
        let sql = diesel::debug_query::<diesel::sqlite::Sqlite, _>(&query).to_string();
        for status in JobStatus::ALL {
            let quoted = format!("'{}'", status.as_str());
            assert_eq!(
                sql.contains(&quoted),
                !status.is_complete(),
                "{status} in {sql}"
            );
        }
    }
}
