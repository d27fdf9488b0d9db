use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::db::schema::{projects, runner_projects};
use crate::db::Conn;
use crate::db_run;

/// A project: where pipelines come from. Its default branch is protected, as in GitLab.
#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = projects)]
pub struct Project {
    pub id: i64,
    pub name: String,
    pub path: String,
    pub namespace_path: String,
    pub description: Option<String>,
    pub repository_url: Option<String>,
    pub default_branch: String,
    pub protected_branches: String,
    pub build_timeout: i32,
    pub shared_runners_enabled: bool,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// Minutes a month this project may run on instance runners; `None` or 0: no limit.
    pub shared_runners_minutes_limit: Option<i32>,
    /// The push webhook's secret; `None`: the hook is off.
    pub push_hook_secret: Option<String>,
    /// Seconds between timed pulls of the upstream; `None`: the instance's interval.
    pub mirror_interval: Option<i32>,
    /// When an instance last claimed a timed pull ([`Project::claim_mirror_pull`]).
    pub mirror_pulled_at: Option<NaiveDateTime>,
    /// GitLab's `ci_delete_pipelines_in_seconds`: pipelines created longer ago are deleted
    /// ([`crate::service::retention`]); `None`: the instance's setting.
    pub ci_delete_pipelines_in_seconds: Option<i32>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = projects)]
pub struct NewProject<'a> {
    pub name: &'a str,
    pub path: &'a str,
    pub namespace_path: &'a str,
    pub description: Option<&'a str>,
    pub repository_url: Option<&'a str>,
    pub default_branch: &'a str,
    pub protected_branches: String,
    pub build_timeout: i32,
    pub shared_runners_enabled: bool,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub shared_runners_minutes_limit: Option<i32>,
    pub mirror_interval: Option<i32>,
    pub ci_delete_pipelines_in_seconds: Option<i32>,
}

/// What `PUT /projects/:id` changes; `None` leaves a column as it is.
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = projects)]
pub struct ProjectChanges {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub repository_url: Option<Option<String>>,
    pub default_branch: Option<String>,
    pub protected_branches: Option<String>,
    pub build_timeout: Option<i32>,
    pub shared_runners_enabled: Option<bool>,
    pub shared_runners_minutes_limit: Option<Option<i32>>,
    pub push_hook_secret: Option<Option<String>>,
    pub mirror_interval: Option<Option<i32>>,
    pub ci_delete_pipelines_in_seconds: Option<Option<i32>>,
    pub updated_at: Option<NaiveDateTime>,
}

impl Project {
    /// The monthly limit on instance runners, in minutes, if there is one (`None` or 0
    /// is no limit, as GitLab's `shared_runners_minutes_limit`).
    pub fn minutes_limit(&self) -> Option<i32> {
        self.shared_runners_minutes_limit.filter(|l| *l > 0)
    }

    /// How often the upstream is pulled on a timer: the project's own interval, else the
    /// instance's; `None`: never (no upstream, or an interval of 0).
    pub fn mirror_every(
        &self,
        instance: Option<std::time::Duration>,
    ) -> Option<std::time::Duration> {
        if self.repository_url.as_deref().is_none_or(str::is_empty) {
            return None;
        }
        match self.mirror_interval {
            Some(seconds) if seconds > 0 => Some(std::time::Duration::from_secs(seconds as u64)),
            Some(_) => None,
            None => instance,
        }
    }

    /// How old its pipelines may grow before they are deleted: the project's own
    /// `ci_delete_pipelines_in_seconds`, else the instance's; `None`: kept.
    pub fn delete_pipelines_after(
        &self,
        instance: Option<std::time::Duration>,
    ) -> Option<std::time::Duration> {
        match self.ci_delete_pipelines_in_seconds {
            Some(seconds) if seconds > 0 => Some(std::time::Duration::from_secs(seconds as u64)),
            _ => instance,
        }
    }

    /// Claims the project's next timed pull: moves `mirror_pulled_at` from `seen` (what
    /// this instance read) to `at`. Only one of several instances that read the same value
    /// moves it, so each due pull is made once.
    pub async fn claim_mirror_pull(
        conn: &mut Conn<'_>,
        id: i64,
        seen: Option<NaiveDateTime>,
        at: NaiveDateTime,
    ) -> QueryResult<bool> {
        let moved = db_run!(conn, |c| {
            let target = projects::table.filter(projects::id.eq(id));
            match seen {
                Some(seen) => {
                    diesel::update(target.filter(projects::mirror_pulled_at.eq(seen)))
                        .set(projects::mirror_pulled_at.eq(at))
                        .execute(c)
                        .await
                }
                None => {
                    diesel::update(target.filter(projects::mirror_pulled_at.is_null()))
                        .set(projects::mirror_pulled_at.eq(at))
                        .execute(c)
                        .await
                }
            }
        })?;
        Ok(moved == 1)
    }

    pub fn path_with_namespace(&self) -> String {
        format!("{}/{}", self.namespace_path, self.path)
    }

    pub fn name_with_namespace(&self) -> String {
        format!("{} / {}", self.namespace_path, self.name)
    }

    pub async fn find(conn: &mut Conn<'_>, id: i64) -> QueryResult<Option<Project>> {
        db_run!(conn, |c| projects::table
            .find(id)
            .select(Project::as_select())
            .first(c)
            .await
            .optional())
    }

    /// The project at `full_path` (`<namespace>/<project>`, the namespace possibly
    /// nested); `None` for a path without a namespace.
    pub async fn find_by_full_path(
        conn: &mut Conn<'_>,
        full_path: &str,
    ) -> QueryResult<Option<Project>> {
        match full_path.rsplit_once('/') {
            Some((namespace, path)) => Project::find_by_path(conn, namespace, path).await,
            None => Ok(None),
        }
    }

    pub async fn find_by_path(
        conn: &mut Conn<'_>,
        namespace: &str,
        path: &str,
    ) -> QueryResult<Option<Project>> {
        db_run!(conn, |c| projects::table
            .filter(projects::namespace_path.eq(namespace))
            .filter(projects::path.eq(path))
            .select(Project::as_select())
            .first(c)
            .await
            .optional())
    }

    pub async fn all(conn: &mut Conn<'_>) -> QueryResult<Vec<Project>> {
        db_run!(conn, |c| projects::table
            .order(projects::id)
            .select(Project::as_select())
            .load(c)
            .await)
    }

    pub async fn create(conn: &mut Conn<'_>, new: NewProject<'_>) -> QueryResult<Project> {
        db_run!(conn, |c| diesel::insert_into(projects::table)
            .values(&new)
            .returning(Project::as_returning())
            .get_result(c)
            .await)
    }

    /// Applies `changes`; the project afterwards, `None` if it is gone.
    pub async fn update(
        conn: &mut Conn<'_>,
        id: i64,
        changes: &ProjectChanges,
    ) -> QueryResult<Option<Project>> {
        db_run!(conn, |c| diesel::update(projects::table.find(id))
            .set(changes)
            .returning(Project::as_returning())
            .get_result(c)
            .await
            .optional())
    }

    /// The projects a project runner is assigned to, by id.
    pub async fn for_runner(conn: &mut Conn<'_>, runner_id: i64) -> QueryResult<Vec<Project>> {
        db_run!(conn, |c| projects::table
            .inner_join(runner_projects::table)
            .filter(runner_projects::runner_id.eq(runner_id))
            .order(projects::id)
            .select(Project::as_select())
            .load(c)
            .await)
    }

    /// Takes a project runner off a project; false if it was not on it.
    pub async fn unassign_runner(
        conn: &mut Conn<'_>,
        runner_id: i64,
        project_id: i64,
    ) -> QueryResult<bool> {
        let deleted = db_run!(conn, |c| diesel::delete(
            runner_projects::table
                .filter(runner_projects::runner_id.eq(runner_id))
                .filter(runner_projects::project_id.eq(project_id))
        )
        .execute(c)
        .await)?;
        Ok(deleted == 1)
    }

    /// Assigns a project runner to a project (idempotent).
    pub async fn assign_runner(
        conn: &mut Conn<'_>,
        runner_id: i64,
        project_id: i64,
    ) -> QueryResult<()> {
        let row = (
            runner_projects::runner_id.eq(runner_id),
            runner_projects::project_id.eq(project_id),
            runner_projects::created_at.eq(super::now()),
        );
        db_run!(conn, |c| diesel::insert_into(runner_projects::table)
            .values(row)
            .on_conflict_do_nothing()
            .execute(c)
            .await)?;
        Ok(())
    }
}
