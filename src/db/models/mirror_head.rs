use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::db::schema::mirror_heads;
use crate::db::Conn;
use crate::db_run;

/// A mirrored project's branch or tag head that pipelines were started for.
pub struct MirrorHead;

impl MirrorHead {
    /// The project's recorded heads: `(ref, sha)`.
    pub async fn for_project(
        conn: &mut Conn<'_>,
        project_id: i64,
    ) -> QueryResult<Vec<(String, String)>> {
        db_run!(conn, |c| mirror_heads::table
            .filter(mirror_heads::project_id.eq(project_id))
            .select((mirror_heads::ref_, mirror_heads::sha))
            .load(c)
            .await)
    }

    /// Moves `ref_` from `old` (`None`: not recorded yet) to `new`; answers whether this
    /// call moved it (another instance may have first).
    pub async fn advance(
        conn: &mut Conn<'_>,
        project_id: i64,
        ref_: &str,
        old: Option<&str>,
        new: &str,
    ) -> QueryResult<bool> {
        let (ref_, new) = (ref_.to_string(), new.to_string());
        let changed = match old {
            None => {
                let row = (
                    mirror_heads::project_id.eq(project_id),
                    mirror_heads::ref_.eq(&ref_),
                    mirror_heads::sha.eq(&new),
                );
                db_run!(conn, |c| diesel::insert_into(mirror_heads::table)
                    .values(row)
                    .on_conflict_do_nothing()
                    .execute(c)
                    .await)?
            }
            Some(old) => {
                let old = old.to_string();
                db_run!(conn, |c| diesel::update(
                    mirror_heads::table
                        .filter(mirror_heads::project_id.eq(project_id))
                        .filter(mirror_heads::ref_.eq(&ref_))
                        .filter(mirror_heads::sha.eq(&old))
                )
                .set(mirror_heads::sha.eq(&new))
                .execute(c)
                .await)?
            }
        };
        Ok(changed == 1)
    }

    /// Forgets a head the upstream no longer has.
    pub async fn forget(conn: &mut Conn<'_>, project_id: i64, ref_: &str) -> QueryResult<()> {
        let ref_ = ref_.to_string();
        db_run!(conn, |c| diesel::delete(
            mirror_heads::table
                .filter(mirror_heads::project_id.eq(project_id))
                .filter(mirror_heads::ref_.eq(&ref_))
        )
        .execute(c)
        .await)?;
        Ok(())
    }
}
