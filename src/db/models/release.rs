use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::db::schema::releases;
use crate::db::Conn;
use crate::db_run;

/// A project's release of a tag.
#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = releases)]
pub struct Release {
    pub id: i64,
    pub project_id: i64,
    pub tag_name: String,
    pub name: String,
    pub description: String,
    pub sha: String,
    /// JSON `[{id, name, url, link_type, direct_asset_path}]`.
    pub links: String,
    pub released_at: NaiveDateTime,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// A release's fields as written.
#[derive(Debug, Clone, Insertable, AsChangeset)]
#[diesel(table_name = releases)]
pub struct ReleaseFields {
    pub name: String,
    pub description: String,
    pub links: String,
    pub released_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl Release {
    /// A new release; `None` when the tag has one already.
    pub async fn create(
        conn: &mut Conn<'_>,
        project_id: i64,
        tag_name: &str,
        sha: &str,
        fields: &ReleaseFields,
    ) -> QueryResult<Option<Release>> {
        let row = (
            releases::project_id.eq(project_id),
            releases::tag_name.eq(tag_name),
            releases::sha.eq(sha),
            releases::created_at.eq(fields.updated_at),
            fields.clone(),
        );
        db_run!(conn, |c| diesel::insert_into(releases::table)
            .values(row)
            .on_conflict((releases::project_id, releases::tag_name))
            .do_nothing()
            .returning(Release::as_returning())
            .get_result(c)
            .await
            .optional())
    }

    pub async fn find(
        conn: &mut Conn<'_>,
        project_id: i64,
        tag_name: &str,
    ) -> QueryResult<Option<Release>> {
        let tag = tag_name.to_string();
        db_run!(conn, |c| releases::table
            .filter(releases::project_id.eq(project_id))
            .filter(releases::tag_name.eq(&tag))
            .select(Release::as_select())
            .first(c)
            .await
            .optional())
    }

    /// The project's releases, the latest `released_at` first (GitLab's default order).
    pub async fn for_project(conn: &mut Conn<'_>, project_id: i64) -> QueryResult<Vec<Release>> {
        db_run!(conn, |c| releases::table
            .filter(releases::project_id.eq(project_id))
            .order((releases::released_at.desc(), releases::id.desc()))
            .select(Release::as_select())
            .load(c)
            .await)
    }

    pub async fn update(conn: &mut Conn<'_>, id: i64, fields: &ReleaseFields) -> QueryResult<()> {
        db_run!(conn, |c| diesel::update(releases::table.find(id))
            .set(fields)
            .execute(c)
            .await)?;
        Ok(())
    }

    pub async fn delete(conn: &mut Conn<'_>, id: i64) -> QueryResult<()> {
        db_run!(conn, |c| diesel::delete(releases::table.find(id))
            .execute(c)
            .await)?;
        Ok(())
    }
}
