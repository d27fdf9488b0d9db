use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::db::schema::ci_variables;
use crate::db::Conn;
use crate::db_run;

/// A CI/CD variable: a project's (`project_id`), or the instance's (`None`). `value` is
/// sealed ([`crate::secrets::SecretBox`]).
#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = ci_variables)]
pub struct CiVariable {
    pub id: i64,
    pub project_id: Option<i64>,
    pub key: String,
    pub value: String,
    /// `env_var` or `file`.
    pub variable_type: String,
    pub protected: bool,
    pub masked: bool,
    /// Masked and never shown again (GitLab's `masked_and_hidden`).
    pub hidden: bool,
    /// Not expanded by the runner.
    pub raw: bool,
    /// The environments it is for: `*`, a name, or a pattern with `*`.
    pub environment_scope: String,
    pub description: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// What a create or an update writes.
#[derive(Debug, Clone, Insertable, AsChangeset)]
#[diesel(table_name = ci_variables, treat_none_as_null = true)]
pub struct CiVariableFields {
    pub project_id: Option<i64>,
    pub key: String,
    pub value: String,
    pub variable_type: String,
    pub protected: bool,
    pub masked: bool,
    pub hidden: bool,
    pub raw: bool,
    pub environment_scope: String,
    pub description: Option<String>,
    pub updated_at: NaiveDateTime,
}

impl CiVariable {
    /// The project's variables (`None`: the instance's), by key and scope.
    pub async fn list(
        conn: &mut Conn<'_>,
        project_id: Option<i64>,
    ) -> QueryResult<Vec<CiVariable>> {
        db_run!(conn, |c| {
            let query = ci_variables::table
                .select(CiVariable::as_select())
                .order((ci_variables::key, ci_variables::environment_scope));
            match project_id {
                Some(id) => query.filter(ci_variables::project_id.eq(id)).load(c).await,
                None => {
                    query
                        .filter(ci_variables::project_id.is_null())
                        .load(c)
                        .await
                }
            }
        })
    }

    /// The variables a job of the project may see before scope and protection: the
    /// instance's and the project's.
    pub async fn for_job(conn: &mut Conn<'_>, project_id: i64) -> QueryResult<Vec<CiVariable>> {
        db_run!(conn, |c| ci_variables::table
            .filter(
                ci_variables::project_id
                    .is_null()
                    .or(ci_variables::project_id.eq(project_id))
            )
            .select(CiVariable::as_select())
            .order(ci_variables::id)
            .load(c)
            .await)
    }

    /// The variable `key` of the project (instance: `None`) in `scope`, or in any scope
    /// when `scope` is `None` (the first by scope).
    pub async fn find(
        conn: &mut Conn<'_>,
        project_id: Option<i64>,
        key: &str,
        scope: Option<&str>,
    ) -> QueryResult<Vec<CiVariable>> {
        let (key, scope) = (key.to_string(), scope.map(str::to_string));
        db_run!(conn, |c| {
            let mut query = ci_variables::table
                .filter(ci_variables::key.eq(&key))
                .select(CiVariable::as_select())
                .order(ci_variables::environment_scope)
                .into_boxed();
            query = match project_id {
                Some(id) => query.filter(ci_variables::project_id.eq(id)),
                None => query.filter(ci_variables::project_id.is_null()),
            };
            if let Some(scope) = &scope {
                query = query.filter(ci_variables::environment_scope.eq(scope));
            }
            query.load(c).await
        })
    }

    /// Adds a variable; `None` when its key is taken in its scope.
    pub async fn create(
        conn: &mut Conn<'_>,
        fields: &CiVariableFields,
    ) -> QueryResult<Option<CiVariable>> {
        let at = fields.updated_at;
        db_run!(conn, |c| diesel::insert_into(ci_variables::table)
            .values((fields, ci_variables::created_at.eq(at)))
            .on_conflict_do_nothing()
            .returning(CiVariable::as_returning())
            .get_result(c)
            .await
            .optional())
    }

    /// Rewrites variable `id`; `None` when the new key and scope are another's.
    pub async fn update(
        conn: &mut Conn<'_>,
        id: i64,
        fields: &CiVariableFields,
    ) -> QueryResult<Option<CiVariable>> {
        let result = db_run!(conn, |c| diesel::update(ci_variables::table.find(id))
            .set(fields)
            .returning(CiVariable::as_returning())
            .get_result(c)
            .await
            .optional());
        match result {
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) => Ok(None),
            other => other,
        }
    }

    pub async fn delete(conn: &mut Conn<'_>, id: i64) -> QueryResult<bool> {
        let deleted = db_run!(conn, |c| diesel::delete(ci_variables::table.find(id))
            .execute(c)
            .await)?;
        Ok(deleted == 1)
    }
}
