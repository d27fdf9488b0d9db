use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::db::schema::{deployments, environments};
use crate::db::Conn;
use crate::db_run;

/// A project's environment (`environment:`), where its deployments go.
#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = environments)]
pub struct Environment {
    pub id: i64,
    pub project_id: i64,
    pub name: String,
    pub slug: String,
    pub external_url: Option<String>,
    pub tier: String,
    /// `available`, `stopping` or `stopped`.
    pub state: String,
    pub description: Option<String>,
    pub auto_stop_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// What the API may set on an environment.
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = environments)]
pub struct EnvironmentChanges {
    pub external_url: Option<Option<String>>,
    pub tier: Option<String>,
    pub description: Option<Option<String>>,
    pub state: Option<String>,
    pub auto_stop_at: Option<Option<NaiveDateTime>>,
    pub updated_at: Option<NaiveDateTime>,
}

/// A deployment: a job that deployed (or deploys) to an environment.
#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = deployments)]
pub struct Deployment {
    pub id: i64,
    pub iid: i64,
    pub project_id: i64,
    pub environment_id: i64,
    pub job_id: i64,
    pub ref_: String,
    pub tag: bool,
    pub sha: String,
    /// `created`, `running`, `success`, `failed`, `canceled` or `skipped`.
    pub status: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub finished_at: Option<NaiveDateTime>,
}

impl Environment {
    /// The project's environment `name`, made (`available`) the first time it is named.
    pub async fn find_or_create(
        conn: &mut Conn<'_>,
        project_id: i64,
        name: &str,
        tier: &str,
        at: NaiveDateTime,
    ) -> QueryResult<Environment> {
        if let Some(found) = Self::find_by_name(conn, project_id, name).await? {
            return Ok(found);
        }
        Self::create(conn, project_id, name, tier, None, None, at).await?;
        Self::find_by_name(conn, project_id, name)
            .await?
            .ok_or(diesel::result::Error::NotFound)
    }

    /// A new environment; nothing when the name is taken (another instance made it).
    pub async fn create(
        conn: &mut Conn<'_>,
        project_id: i64,
        name: &str,
        tier: &str,
        external_url: Option<&str>,
        description: Option<&str>,
        at: NaiveDateTime,
    ) -> QueryResult<usize> {
        let row = (
            environments::project_id.eq(project_id),
            environments::name.eq(name),
            environments::slug.eq(crate::ci::environment::slug(name)),
            environments::external_url.eq(external_url),
            environments::tier.eq(tier),
            environments::state.eq("available"),
            environments::description.eq(description),
            environments::created_at.eq(at),
            environments::updated_at.eq(at),
        );
        db_run!(conn, |c| diesel::insert_into(environments::table)
            .values(row)
            .on_conflict((environments::project_id, environments::name))
            .do_nothing()
            .execute(c)
            .await)
    }

    pub async fn find(
        conn: &mut Conn<'_>,
        project_id: i64,
        id: i64,
    ) -> QueryResult<Option<Environment>> {
        db_run!(conn, |c| environments::table
            .filter(environments::project_id.eq(project_id))
            .filter(environments::id.eq(id))
            .select(Environment::as_select())
            .first(c)
            .await
            .optional())
    }

    pub async fn find_by_name(
        conn: &mut Conn<'_>,
        project_id: i64,
        name: &str,
    ) -> QueryResult<Option<Environment>> {
        let name = name.to_string();
        db_run!(conn, |c| environments::table
            .filter(environments::project_id.eq(project_id))
            .filter(environments::name.eq(&name))
            .select(Environment::as_select())
            .first(c)
            .await
            .optional())
    }

    pub async fn for_project(
        conn: &mut Conn<'_>,
        project_id: i64,
    ) -> QueryResult<Vec<Environment>> {
        db_run!(conn, |c| environments::table
            .filter(environments::project_id.eq(project_id))
            .order(environments::id)
            .select(Environment::as_select())
            .load(c)
            .await)
    }

    pub async fn update(
        conn: &mut Conn<'_>,
        id: i64,
        changes: &EnvironmentChanges,
    ) -> QueryResult<()> {
        db_run!(conn, |c| diesel::update(environments::table.find(id))
            .set(changes)
            .execute(c)
            .await)?;
        Ok(())
    }

    /// Moves the environment from `from` to `to`; answers whether it was in `from`.
    pub async fn transition(
        conn: &mut Conn<'_>,
        id: i64,
        from: &[&str],
        to: &str,
        at: NaiveDateTime,
    ) -> QueryResult<bool> {
        let from: Vec<String> = from.iter().map(|s| s.to_string()).collect();
        let to = to.to_string();
        let n = db_run!(conn, |c| diesel::update(
            environments::table
                .filter(environments::id.eq(id))
                .filter(environments::state.eq_any(&from))
        )
        .set((
            environments::state.eq(&to),
            environments::auto_stop_at.eq(None::<NaiveDateTime>),
            environments::updated_at.eq(at)
        ))
        .execute(c)
        .await)?;
        Ok(n == 1)
    }

    pub async fn delete(conn: &mut Conn<'_>, id: i64) -> QueryResult<()> {
        db_run!(conn, |c| diesel::delete(environments::table.find(id))
            .execute(c)
            .await)?;
        Ok(())
    }

    /// Available environments whose `auto_stop_at` has passed.
    pub async fn auto_stop_due(
        conn: &mut Conn<'_>,
        at: NaiveDateTime,
    ) -> QueryResult<Vec<Environment>> {
        db_run!(conn, |c| environments::table
            .filter(environments::auto_stop_at.le(at))
            .filter(environments::state.eq("available"))
            .order(environments::auto_stop_at)
            .limit(100)
            .select(Environment::as_select())
            .load(c)
            .await)
    }
}

/// Which of a project's deployments a list keeps, and its order (GitLab's
/// `DeploymentsFinder`: `environment`, `status`, `order_by`, `sort`).
pub struct DeploymentList<'a> {
    pub environment_id: Option<i64>,
    pub status: Option<&'a str>,
    /// `id` (also for `iid`), `created_at`, `updated_at`, `finished_at` or `ref`.
    pub order_by: &'a str,
    pub descending: bool,
}

impl Deployment {
    #[allow(clippy::too_many_arguments)]
    pub async fn create(
        conn: &mut Conn<'_>,
        project_id: i64,
        environment_id: i64,
        job_id: i64,
        ref_: &str,
        tag: bool,
        sha: &str,
        at: NaiveDateTime,
    ) -> QueryResult<Deployment> {
        let row = (
            deployments::iid.eq(0_i64),
            deployments::project_id.eq(project_id),
            deployments::environment_id.eq(environment_id),
            deployments::job_id.eq(job_id),
            deployments::ref_.eq(ref_),
            deployments::tag.eq(tag),
            deployments::sha.eq(sha),
            deployments::status.eq("created"),
            deployments::created_at.eq(at),
            deployments::updated_at.eq(at),
        );
        let created: Deployment = db_run!(conn, |c| diesel::insert_into(deployments::table)
            .values(row)
            .returning(Deployment::as_returning())
            .get_result(c)
            .await)?;
        // The iid is the row's id: unique and rising without a counter to contend on.
        db_run!(conn, |c| diesel::update(
            deployments::table.find(created.id)
        )
        .set(deployments::iid.eq(created.id))
        .execute(c)
        .await)?;
        Ok(Deployment {
            iid: created.id,
            ..created
        })
    }

    pub async fn for_jobs(conn: &mut Conn<'_>, job_ids: &[i64]) -> QueryResult<Vec<Deployment>> {
        let ids = job_ids.to_vec();
        db_run!(conn, |c| deployments::table
            .filter(deployments::job_id.eq_any(&ids))
            .order(deployments::id)
            .select(Deployment::as_select())
            .load(c)
            .await)
    }

    /// A page of the project's deployments as `list` picks and orders them: `limit`
    /// from the `offset`th. Read as a page: every deploying job adds one.
    pub async fn listed_for_project(
        conn: &mut Conn<'_>,
        project_id: i64,
        list: &DeploymentList<'_>,
        offset: i64,
        limit: i64,
    ) -> QueryResult<Vec<Deployment>> {
        use deployments::{created_at, finished_at, id, ref_, updated_at};
        db_run!(conn, |c| {
            let mut query = deployments::table
                .filter(deployments::project_id.eq(project_id))
                .offset(offset)
                .limit(limit)
                .select(Deployment::as_select())
                .into_boxed();
            if let Some(environment) = list.environment_id {
                query = query.filter(deployments::environment_id.eq(environment));
            }
            if let Some(status) = list.status {
                query = query.filter(deployments::status.eq(status));
            }
            // Ties by id, in the same direction; a deployment not finished has no
            // `finished_at` and comes first in ascending order, last in descending
            // (each backend's own NULL order differs, so it is spelled out).
            query = match (list.order_by, list.descending) {
                ("created_at", false) => query.order((created_at.asc(), id.asc())),
                ("created_at", true) => query.order((created_at.desc(), id.desc())),
                ("updated_at", false) => query.order((updated_at.asc(), id.asc())),
                ("updated_at", true) => query.order((updated_at.desc(), id.desc())),
                ("finished_at", false) => {
                    query.order((finished_at.is_null().desc(), finished_at.asc(), id.asc()))
                }
                ("finished_at", true) => {
                    query.order((finished_at.is_null().asc(), finished_at.desc(), id.desc()))
                }
                ("ref", false) => query.order((ref_.asc(), id.asc())),
                ("ref", true) => query.order((ref_.desc(), id.desc())),
                (_, false) => query.order(id.asc()),
                (_, true) => query.order(id.desc()),
            };
            query.load(c).await
        })
    }

    /// How many deployments [`Deployment::listed_for_project`] lists, counted up to `most`.
    pub async fn count_listed_for_project(
        conn: &mut Conn<'_>,
        project_id: i64,
        list: &DeploymentList<'_>,
        most: i64,
    ) -> QueryResult<usize> {
        let ids: Vec<i64> = db_run!(conn, |c| {
            let mut query = deployments::table
                .filter(deployments::project_id.eq(project_id))
                .limit(most)
                .select(deployments::id)
                .into_boxed();
            if let Some(environment) = list.environment_id {
                query = query.filter(deployments::environment_id.eq(environment));
            }
            if let Some(status) = list.status {
                query = query.filter(deployments::status.eq(status));
            }
            query.load(c).await
        })?;
        Ok(ids.len())
    }

    pub async fn find(
        conn: &mut Conn<'_>,
        project_id: i64,
        id: i64,
    ) -> QueryResult<Option<Deployment>> {
        db_run!(conn, |c| deployments::table
            .filter(deployments::project_id.eq(project_id))
            .filter(deployments::id.eq(id))
            .select(Deployment::as_select())
            .first(c)
            .await
            .optional())
    }

    /// The environment's newest deployment, or its newest successful one.
    pub async fn last_of(
        conn: &mut Conn<'_>,
        environment_id: i64,
        successful: bool,
    ) -> QueryResult<Option<Deployment>> {
        db_run!(conn, |c| {
            let mut query = deployments::table
                .filter(deployments::environment_id.eq(environment_id))
                .into_boxed();
            if successful {
                query = query.filter(deployments::status.eq("success"));
            }
            query
                .order(deployments::id.desc())
                .select(Deployment::as_select())
                .first(c)
                .await
                .optional()
        })
    }

    pub async fn set_status(
        conn: &mut Conn<'_>,
        id: i64,
        status: &str,
        finished_at: Option<NaiveDateTime>,
        at: NaiveDateTime,
    ) -> QueryResult<()> {
        let status = status.to_string();
        db_run!(conn, |c| diesel::update(deployments::table.find(id))
            .set((
                deployments::status.eq(&status),
                deployments::finished_at.eq(finished_at),
                deployments::updated_at.eq(at)
            ))
            .execute(c)
            .await)?;
        Ok(())
    }

    /// Marks the job's deployment running (the job started), if it has one.
    pub async fn start_for_job(
        conn: &mut Conn<'_>,
        job_id: i64,
        at: NaiveDateTime,
    ) -> QueryResult<()> {
        db_run!(conn, |c| diesel::update(
            deployments::table
                .filter(deployments::job_id.eq(job_id))
                .filter(deployments::status.eq("created"))
        )
        .set((
            deployments::status.eq("running"),
            deployments::updated_at.eq(at)
        ))
        .execute(c)
        .await)?;
        Ok(())
    }
}
