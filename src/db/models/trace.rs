use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::db::enums::JobStatus;
use crate::db::schema::{jobs, trace_chunks};
use crate::db::{Cached, Conn};
use crate::db_run;

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored; the log is now `size` bytes long with CRC-32 `crc`, and the job was in
    /// `status` (running or canceling).
    Stored {
        size: i64,
        crc: i64,
        status: JobStatus,
    },
    /// `start` was not the stored size: nothing written; the log is this long.
    Mismatch(i64),
    /// The job stopped running meanwhile.
    NotRunning(JobStatus),
    /// The token is not the job's (any more): nothing written.
    NotOwned,
}

/// The job log, stored as the chunks the runner sent, each at its offset. A chunk's bytes
/// are in its row, or — on SQLite, see [`LogFiles`] — in the job's log file at the chunk's
/// offset, the row then holding no bytes (an empty chunk is never stored).
pub struct TraceChunk;

/// A chunk as stored: its bytes, or `None` when they are in the job's log file.
pub struct StoredChunk {
    pub offset: i64,
    pub len: i64,
    pub data: Option<Vec<u8>>,
}

impl TraceChunk {
    /// Where an append of `start` by the holder of token `digest` goes: the log's size and
    /// CRC-32 now and the job's status, or why nothing is to be written. Run it in the
    /// append's transaction: the job's row is locked on PostgreSQL (`FOR UPDATE`), and
    /// SQLite has one writer, so concurrent appends to one job are serialised and none is
    /// lost or interleaved.
    pub async fn tail_for_append(
        conn: &mut Conn<'_>,
        job_id: i64,
        digest: &[u8],
        start: i64,
    ) -> QueryResult<Result<(i64, i64, JobStatus), Appended>> {
        let query = jobs::table.find(job_id).select((
            jobs::trace_size,
            jobs::trace_crc32,
            jobs::status,
            jobs::token_digest,
        ));
        let current: Option<(i64, i64, JobStatus, Option<Vec<u8>>)> = match conn {
            Conn::Postgres(c) => query.for_update().first(&mut **c).await.optional()?,
            Conn::Sqlite(c) => query.first(&mut **c).await.optional()?,
        };
        let Some((size, crc, status, owner)) = current else {
            return Ok(Err(Appended::NotOwned));
        };
        if owner.as_deref() != Some(digest) {
            return Ok(Err(Appended::NotOwned));
        }
        if !matches!(status, JobStatus::Running | JobStatus::Canceling) {
            return Ok(Err(Appended::NotRunning(status)));
        }
        if start != size {
            return Ok(Err(Appended::Mismatch(size)));
        }
        Ok(Ok((size, crc, status)))
    }

    /// Records `data` as the chunk at `size` (the tail [`TraceChunk::tail_for_append`]
    /// found), its bytes in the row unless `in_file` (written there already), and keeps the
    /// job's size and CRC-32 in step. Answers the new size and CRC-32.
    pub async fn record(
        conn: &mut Conn<'_>,
        job_id: i64,
        (size, crc): (i64, i64),
        data: &[u8],
        in_file: bool,
    ) -> QueryResult<(i64, i64)> {
        let new_crc = extend_crc(crc, data);
        let new_size = size + data.len() as i64;
        let row = (
            trace_chunks::job_id.eq(job_id),
            trace_chunks::offset.eq(size),
            trace_chunks::data.eq(if in_file { &[][..] } else { data }),
        );
        db_run!(conn, |c| diesel::insert_into(trace_chunks::table)
            .values(row)
            .execute(c)
            .await)?;
        db_run!(conn, |c| Cached(
            diesel::update(jobs::table.find(job_id)).set((
                jobs::trace_size.eq(new_size),
                jobs::trace_crc32.eq(new_crc),
                jobs::updated_at.eq(super::now())
            ))
        )
        .execute(c)
        .await)?;
        Ok((new_size, new_crc))
    }

    /// PostgreSQL only: appends `data` at `start` in one statement, if the job is still
    /// the one token `digest` was given for, running or canceling, and its log still
    /// `start` bytes long with CRC-32 `crc` (as the caller read it); its bytes in the row
    /// unless `in_file` (the caller wrote them to the job's file under the file's lock).
    /// Answers what was stored, or `None` when nothing was written and
    /// [`TraceChunk::tail_for_append`] tells why. One autocommitted statement in place of a
    /// transaction: the log's tail is the condition of the job row's update, which
    /// PostgreSQL re-checks on the row's newest version after waiting for its lock, so two
    /// appends at one offset cannot both match.
    pub async fn append_if_tail(
        conn: &mut Conn<'_>,
        job_id: i64,
        digest: &[u8],
        (start, crc): (i64, i64),
        data: &[u8],
        in_file: bool,
    ) -> QueryResult<Option<Appended>> {
        let Conn::Postgres(c) = conn else {
            return Ok(None);
        };
        let append = AppendIfTail {
            job_id,
            digest,
            start,
            crc,
            new_size: start + data.len() as i64,
            new_crc: extend_crc(crc, data),
            at: super::now(),
            data: if in_file { &[][..] } else { data },
        };
        let (size, crc) = (append.new_size, append.new_crc);
        let status: Option<JobStatus> = append.get_result(&mut **c).await.optional()?;
        Ok(status.map(|status| Appended::Stored { size, crc, status }))
    }

    /// Finished jobs whose log is still in chunks (oldest first, at most `limit`). Read
    /// from the chunks (their (job, offset) index), which hold only logs not archived yet,
    /// not from the jobs, which hold the whole history.
    pub async fn finished_unarchived(conn: &mut Conn<'_>, limit: i64) -> QueryResult<Vec<i64>> {
        let done = [JobStatus::Success, JobStatus::Failed, JobStatus::Canceled];
        db_run!(conn, |c| trace_chunks::table
            .inner_join(jobs::table)
            .filter(jobs::status.eq_any(done))
            .order(trace_chunks::job_id)
            .select(trace_chunks::job_id)
            .distinct()
            .limit(limit)
            .load(c)
            .await)
    }

    /// Whether every chunk of the job's log has its bytes in the log file (none in its row).
    pub async fn all_in_file(conn: &mut Conn<'_>, job_id: i64) -> QueryResult<bool> {
        let in_rows = trace_chunks::table
            .filter(trace_chunks::job_id.eq(job_id))
            .filter(trace_chunks::data.ne(Vec::<u8>::new()));
        db_run!(conn, |c| diesel::select(diesel::dsl::not(
            diesel::dsl::exists(in_rows)
        ))
        .get_result(c)
        .await)
    }

    /// Drops a job's chunks (once the log is archived elsewhere).
    pub async fn delete_for_job(conn: &mut Conn<'_>, job_id: i64) -> QueryResult<()> {
        db_run!(conn, |c| diesel::delete(
            trace_chunks::table.filter(trace_chunks::job_id.eq(job_id))
        )
        .execute(c)
        .await)?;
        Ok(())
    }

    /// Up to `limit` chunks of a job's log that start after `after` (offset, bytes), in
    /// order: the log read a page at a time. One statement, so the lengths of chunks kept
    /// in the log file (from the next chunk's offset, or the log's size for the last) agree
    /// with the rows read.
    pub async fn page(
        conn: &mut Conn<'_>,
        job_id: i64,
        after: i64,
        limit: i64,
    ) -> QueryResult<Vec<StoredChunk>> {
        let rows: Vec<(i64, Vec<u8>, i64)> = db_run!(conn, |c| trace_chunks::table
            .inner_join(jobs::table)
            .filter(trace_chunks::job_id.eq(job_id))
            .filter(trace_chunks::offset.gt(after))
            .order(trace_chunks::offset)
            .limit(limit.saturating_add(1))
            .select((trace_chunks::offset, trace_chunks::data, jobs::trace_size))
            .load(c)
            .await)?;
        let ends: Vec<i64> = rows
            .iter()
            .skip(1)
            .map(|(offset, _, _)| *offset)
            .chain(rows.iter().take(1).map(|(_, _, size)| *size))
            .collect();
        Ok(rows
            .into_iter()
            .zip(ends)
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|((offset, data, _), end)| {
                if data.is_empty() {
                    StoredChunk {
                        offset,
                        len: (end - offset).max(0),
                        data: None,
                    }
                } else {
                    StoredChunk {
                        offset,
                        len: data.len() as i64,
                        data: Some(data),
                    }
                }
            })
            .collect())
    }
}

/// The CRC-32 of a log of CRC `crc` once `data` is appended to it.
fn extend_crc(crc: i64, data: &[u8]) -> i64 {
    let mut hasher = crc32fast::Hasher::new_with_initial(crc as u32);
    hasher.update(data);
    i64::from(hasher.finalize())
}

/// The statement of [`TraceChunk::append_if_tail`]: fixed text with a static query id, so
/// it stays in the connection's prepared-statement cache (diesel never caches an `UPDATE`
/// it builds, which costs a parse, a plan and a round trip more on every execution).
struct AppendIfTail<'a> {
    job_id: i64,
    digest: &'a [u8],
    start: i64,
    crc: i64,
    new_size: i64,
    new_crc: i64,
    at: chrono::NaiveDateTime,
    data: &'a [u8],
}

impl diesel::query_builder::Query for AppendIfTail<'_> {
    type SqlType = diesel::sql_types::Text;
}

impl diesel::query_builder::QueryId for AppendIfTail<'_> {
    type QueryId = AppendIfTail<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for AppendIfTail<'_> {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> QueryResult<()> {
        use diesel::sql_types::{BigInt, Binary, Timestamp};
        out.push_sql("WITH claimed AS (UPDATE jobs SET trace_size = ");
        out.push_bind_param::<BigInt, _>(&self.new_size)?;
        out.push_sql(", trace_crc32 = ");
        out.push_bind_param::<BigInt, _>(&self.new_crc)?;
        out.push_sql(", updated_at = ");
        out.push_bind_param::<Timestamp, _>(&self.at)?;
        out.push_sql(" WHERE id = ");
        out.push_bind_param::<BigInt, _>(&self.job_id)?;
        out.push_sql(" AND token_digest = ");
        out.push_bind_param::<Binary, _>(self.digest)?;
        out.push_sql(" AND trace_size = ");
        out.push_bind_param::<BigInt, _>(&self.start)?;
        out.push_sql(" AND trace_crc32 = ");
        out.push_bind_param::<BigInt, _>(&self.crc)?;
        out.push_sql(
            " AND status IN ('running', 'canceling') RETURNING id, status), \
             stored AS (INSERT INTO trace_chunks (job_id, \"offset\", data) SELECT id, ",
        );
        out.push_bind_param::<BigInt, _>(&self.start)?;
        out.push_sql(", ");
        out.push_bind_param::<Binary, _>(self.data)?;
        out.push_sql(" FROM claimed) SELECT status FROM claimed");
        Ok(())
    }
}
