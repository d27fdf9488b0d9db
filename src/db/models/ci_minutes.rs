//! CI minutes (`track_ci_minutes_usage!`): what each finished job ran, kept per job with its
//! project and runner, so usage adds up per project, per runner and per month; and the
//! optional monthly quota of a project on instance runners.

use chrono::{Datelike, NaiveDate, NaiveDateTime};
use diesel::dsl::sum;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::db::enums::RunnerType;
use crate::db::schema::{ci_minutes_usages, jobs, runner_projects, runners};
use crate::db::{Cached, Conn};
use crate::db_run;

/// What one minute on a runner of this type costs against the quota: instance runners
/// count (GitLab's default cost factor 1.0), a project's own runners are free.
pub fn cost_factor(runner_type: RunnerType) -> f64 {
    match runner_type {
        RunnerType::Instance => 1.0,
        RunnerType::Group | RunnerType::Project => 0.0,
    }
}

/// A job's project, runner, start and end.
type JobTimes = (
    i64,
    Option<i64>,
    Option<NaiveDateTime>,
    Option<NaiveDateTime>,
);

/// The figures of a job's usage that do not depend on its runner, for each type the
/// runner may have: [`Usage::types`] in order, the type's cost factor and the minutes it
/// costs.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    pub duration_seconds: f64,
    pub types: [&'static str; 3],
    pub factors: [f64; 3],
    pub minutes: [f64; 3],
}

impl Usage {
    /// A job's usage from its start to its end (never negative), counted in milliseconds.
    pub fn between(started: NaiveDateTime, finished: NaiveDateTime) -> Usage {
        const TYPES: [RunnerType; 3] =
            [RunnerType::Instance, RunnerType::Group, RunnerType::Project];
        let duration_seconds = ((finished - started).num_milliseconds().max(0)) as f64 / 1000.0;
        let factors = TYPES.map(cost_factor);
        Usage {
            duration_seconds,
            types: TYPES.map(RunnerType::as_str),
            factors,
            minutes: factors.map(|factor| duration_seconds / 60.0 * factor),
        }
    }
}

/// One finished job's usage.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = ci_minutes_usages)]
pub struct CiMinutesUsage {
    pub job_id: i64,
    pub project_id: i64,
    pub runner_id: i64,
    pub runner_type: RunnerType,
    /// Running time: `finished_at - started_at`.
    pub duration_seconds: f64,
    pub cost_factor: f64,
    /// `duration_seconds / 60 * cost_factor`.
    pub minutes: f64,
    pub finished_at: NaiveDateTime,
}

/// The first instant of `at`'s month (UTC), where monthly quotas start again.
pub fn month_start(at: NaiveDateTime) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(at.year(), at.month(), 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .unwrap_or(at)
}

impl CiMinutesUsage {
    /// Records the usage of job `job_id` if it ran on a runner and has finished; once per
    /// job, whatever ended it (runner, cancel, timeout). Runs inside the transition's
    /// transaction where there is one.
    pub async fn account(conn: &mut Conn<'_>, job_id: i64) -> QueryResult<()> {
        let found: Option<JobTimes> = db_run!(conn, |c| jobs::table
            .find(job_id)
            .select((
                jobs::project_id,
                jobs::runner_id,
                jobs::started_at,
                jobs::finished_at
            ))
            .first(c)
            .await
            .optional())?;
        let Some((project_id, Some(runner_id), Some(started), Some(finished))) = found else {
            return Ok(());
        };
        Self::record(conn, job_id, project_id, runner_id, started, finished).await
    }

    /// [`CiMinutesUsage::account`] for a job already read.
    pub async fn account_job(conn: &mut Conn<'_>, job: &crate::db::models::Job) -> QueryResult<()> {
        let (Some(runner_id), Some(started), Some(finished)) =
            (job.runner_id, job.started_at, job.finished_at)
        else {
            return Ok(());
        };
        Self::record(conn, job.id, job.project_id, runner_id, started, finished).await
    }

    async fn record(
        conn: &mut Conn<'_>,
        job_id: i64,
        project_id: i64,
        runner_id: i64,
        started: NaiveDateTime,
        finished: NaiveDateTime,
    ) -> QueryResult<()> {
        use diesel::dsl::case_when;
        use diesel::sql_types::{BigInt, Double, Timestamp};
        let Usage {
            duration_seconds,
            factors,
            minutes,
            ..
        } = Usage::between(started, finished);
        // The runner's type read by the insert itself (one statement, not a read and then
        // a write: a finish runs on the one writer); nothing is recorded for a runner
        // deleted meanwhile. The cost factor of each type comes from `cost_factor`.
        let of_type = |[instance, group, project]: [f64; 3]| {
            case_when(
                runners::runner_type.eq(RunnerType::Instance),
                instance.into_sql::<Double>(),
            )
            .when(
                runners::runner_type.eq(RunnerType::Group),
                group.into_sql::<Double>(),
            )
            .otherwise(project.into_sql::<Double>())
        };
        let usage = runners::table.filter(runners::id.eq(runner_id)).select((
            job_id.into_sql::<BigInt>(),
            project_id.into_sql::<BigInt>(),
            runners::id,
            runners::runner_type,
            duration_seconds.into_sql::<Double>(),
            of_type(factors),
            of_type(minutes),
            finished.into_sql::<Timestamp>(),
        ));
        db_run!(conn, |c| Cached(
            diesel::insert_into(ci_minutes_usages::table)
                .values(usage)
                .into_columns((
                    ci_minutes_usages::job_id,
                    ci_minutes_usages::project_id,
                    ci_minutes_usages::runner_id,
                    ci_minutes_usages::runner_type,
                    ci_minutes_usages::duration_seconds,
                    ci_minutes_usages::cost_factor,
                    ci_minutes_usages::minutes,
                    ci_minutes_usages::finished_at,
                ))
                .on_conflict_do_nothing()
        )
        .execute(c)
        .await)?;
        Ok(())
    }

    /// Minutes the project used since `since` (cost factors applied).
    pub async fn minutes_since(
        conn: &mut Conn<'_>,
        project_id: i64,
        since: NaiveDateTime,
    ) -> QueryResult<f64> {
        let total: Option<f64> = db_run!(conn, |c| ci_minutes_usages::table
            .filter(ci_minutes_usages::project_id.eq(project_id))
            .filter(ci_minutes_usages::finished_at.ge(since))
            .select(sum(ci_minutes_usages::minutes))
            .first(c)
            .await)?;
        Ok(total.unwrap_or(0.0))
    }

    /// Every usage row of the project, oldest first.
    pub async fn of_project(
        conn: &mut Conn<'_>,
        project_id: i64,
    ) -> QueryResult<Vec<CiMinutesUsage>> {
        db_run!(conn, |c| ci_minutes_usages::table
            .filter(ci_minutes_usages::project_id.eq(project_id))
            .order((ci_minutes_usages::finished_at, ci_minutes_usages::job_id))
            .select(CiMinutesUsage::as_select())
            .load(c)
            .await)
    }

    /// Whether a runner of the project's own (project type, not paused) could still take
    /// its jobs when instance runners may not.
    pub async fn has_own_runner(conn: &mut Conn<'_>, project_id: i64) -> QueryResult<bool> {
        let n: i64 = db_run!(conn, |c| runner_projects::table
            .inner_join(runners::table)
            .filter(runner_projects::project_id.eq(project_id))
            .filter(runners::paused.eq(false))
            .count()
            .get_result(c)
            .await)?;
        Ok(n > 0)
    }
}

/// Whether the project, whose monthly limit on instance runners is `limit` minutes, has
/// used it up this month.
pub async fn quota_exceeded(conn: &mut Conn<'_>, project_id: i64, limit: i32) -> QueryResult<bool> {
    let since = month_start(crate::db::models::now());
    Ok(CiMinutesUsage::minutes_since(conn, project_id, since).await? >= f64::from(limit))
}
