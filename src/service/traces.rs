//! Job logs: appends that are durable once answered (one database transaction each),
//! and reads while the job runs and after.

use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::db::models::{Appended, TraceChunk};
use crate::db::DbPool;
use crate::error::ApiResult;
use crate::transaction;

/// How long a read of the log counts as someone watching it (GitLab's flag lives 10 s).
const WATCH_WINDOW: Duration = Duration::from_secs(10);
/// The update interval asked of the runner while someone watches (GitLab: 3 s).
const WATCHED_INTERVAL: Duration = Duration::from_secs(3);

pub struct Traces {
    db: DbPool,
    /// Jobs whose log someone read lately, and when.
    watched: DashMap<i64, Instant>,
}

impl Traces {
    pub fn new(db: DbPool) -> Traces {
        Traces {
            db,
            watched: DashMap::new(),
        }
    }

    /// Someone is reading the job's log: ask its runner for updates more often.
    pub fn mark_watched(&self, job_id: i64) {
        self.watched.insert(job_id, Instant::now());
        self.watched.retain(|_, at| at.elapsed() < WATCH_WINDOW);
    }

    /// `X-GitLab-Trace-Update-Interval` for the job: 3 s while watched, else `normal`.
    pub fn update_interval(&self, job_id: i64, normal: Duration) -> Duration {
        let watched = self
            .watched
            .get(&job_id)
            .is_some_and(|at| at.elapsed() < WATCH_WINDOW);
        if watched {
            WATCHED_INTERVAL.min(normal)
        } else {
            normal
        }
    }

    /// Appends `data` at `start` (see [`TraceChunk::append`]); committed before it answers.
    /// Runs on the writer ([`DbPool::on_writer`]): a log append is a hot write.
    pub async fn append(&self, job_id: i64, start: i64, data: Vec<u8>) -> ApiResult<Appended> {
        let db = self.db.clone();
        self.db
            .on_writer(async move {
                let mut db = db.write().await?;
                transaction!(&mut db.conn(), |tx| {
                    Ok::<_, crate::error::ApiError>(
                        TraceChunk::append(tx, job_id, start, &data).await?,
                    )
                })
            })
            .await
    }

    pub async fn set_debug(&self, job_id: i64) -> ApiResult<()> {
        let mut db = self.db.write().await?;
        Ok(crate::db::models::Job::set_debug_trace(&mut db.conn(), job_id).await?)
    }

    pub async fn read(&self, job_id: i64) -> ApiResult<Vec<u8>> {
        let mut db = self.db.read().await?;
        Ok(TraceChunk::read(&mut db.conn(), job_id).await?)
    }
}

/// `crc32:%08x` as the runner writes it.
pub fn checksum_text(crc: u32) -> String {
    format!("crc32:{crc:08x}")
}
