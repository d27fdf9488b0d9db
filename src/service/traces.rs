//! Job logs: appends that are durable once answered (one database transaction each),
//! and reads while the job runs and after.

use crate::db::models::{Appended, TraceChunk};
use crate::db::DbPool;
use crate::error::ApiResult;
use crate::transaction;

pub struct Traces {
    db: DbPool,
}

impl Traces {
    pub fn new(db: DbPool) -> Traces {
        Traces { db }
    }

    /// Appends `data` at `start` (see [`TraceChunk::append`]); committed before it answers.
    pub async fn append(&self, job_id: i64, start: i64, data: &[u8]) -> ApiResult<Appended> {
        let mut db = self.db.write().await?;
        let data = data.to_vec();
        let outcome = transaction!(&mut db.conn(), |tx| {
            Ok::<_, crate::error::ApiError>(TraceChunk::append(tx, job_id, start, &data).await?)
        })?;
        Ok(outcome)
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
