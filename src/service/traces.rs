//! Job logs: appends that are durable once answered (one database transaction each),
//! and reads while the job runs and after.
//!
//! Where the bytes go depends on the backend. On PostgreSQL they are in the chunk rows:
//! several instances serve one database, and any of them may take the next PATCH. On
//! SQLite (one instance) they go to a file per running job ([`LogFiles`]) and the rows keep
//! only where each chunk starts: a 64 KiB PATCH then costs a write to the page cache and a
//! small transaction, instead of 16 pages through SQLite's WAL and again at checkpoint on
//! the single writer (which had made the writer the ceiling, about 1,600 PATCHes/s).

use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::db::models::{Appended, TraceChunk};
use crate::db::DbPool;
use crate::error::{ApiError, ApiResult};
use crate::transaction;

/// The log files of running jobs, `<job id>.log` in one folder. A chunk's bytes are written
/// here before its row commits; bytes past the stored size (a crash between the two) are
/// never read and are overwritten by the next append. Durable as the SQLite commit beside
/// it is (`synchronous = NORMAL`): across a crash of the process, not of the machine.
#[derive(Clone, Debug)]
pub struct LogFiles {
    dir: PathBuf,
}

impl LogFiles {
    pub fn open(dir: PathBuf) -> io::Result<LogFiles> {
        std::fs::create_dir_all(&dir)?;
        Ok(LogFiles { dir })
    }

    fn path(&self, job_id: i64) -> PathBuf {
        self.dir.join(format!("{job_id}.log"))
    }

    fn write_at(&self, job_id: i64, offset: i64, data: &[u8]) -> io::Result<()> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(self.path(job_id))?;
        file.write_all_at(data, offset as u64)
    }

    /// The bytes `offset..offset + len` of the job's log.
    fn read_at(&self, job_id: i64, offset: i64, len: i64) -> io::Result<Vec<u8>> {
        let file = std::fs::File::open(self.path(job_id))?;
        let mut data = vec![0; len as usize];
        file.read_exact_at(&mut data, offset as u64)?;
        Ok(data)
    }

    /// Drops the job's file (its log was archived or erased); a missing one is fine.
    pub fn remove(&self, job_id: i64) {
        match std::fs::remove_file(self.path(job_id)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(error = %e, job_id, "removing a job's log file failed"),
        }
    }

    /// The jobs that have a file here.
    fn jobs(&self) -> io::Result<Vec<i64>> {
        let mut jobs = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let id = name.to_str().and_then(|n| n.strip_suffix(".log"));
            if let Some(id) = id.and_then(|id| id.parse().ok()) {
                jobs.push(id);
            }
        }
        Ok(jobs)
    }
}

/// Up to `limit` chunks of the job's log starting after `after`, as (offset, bytes), the
/// bytes read from the log file where the rows hold none.
pub async fn read_page(
    db: &DbPool,
    files: Option<&LogFiles>,
    job_id: i64,
    after: i64,
    limit: i64,
) -> ApiResult<Vec<(i64, Vec<u8>)>> {
    let chunks = {
        let mut db = db.read().await?;
        TraceChunk::page(&mut db.conn(), job_id, after, limit).await?
    };
    if chunks.iter().all(|c| c.data.is_some()) {
        return Ok(chunks
            .into_iter()
            .map(|c| (c.offset, c.data.unwrap_or_default()))
            .collect());
    }
    let files = files.cloned().ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!(
            "job {job_id}: log file chunks, no log files"
        ))
    })?;
    tokio::task::spawn_blocking(move || {
        chunks
            .into_iter()
            .map(|c| match c.data {
                Some(data) => Ok((c.offset, data)),
                None => Ok((c.offset, files.read_at(job_id, c.offset, c.len)?)),
            })
            .collect::<io::Result<Vec<_>>>()
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))?
    .map_err(|e| {
        ApiError::Internal(
            anyhow::Error::new(e).context(format!("reading the log of job {job_id}")),
        )
    })
}

/// How long a read of the log counts as someone watching it (GitLab's flag lives 10 s).
const WATCH_WINDOW: Duration = Duration::from_secs(10);
/// The update interval asked of the runner while someone watches (GitLab: 3 s).
const WATCHED_INTERVAL: Duration = Duration::from_secs(3);

pub struct Traces {
    db: DbPool,
    /// The log files of running jobs; `None` on PostgreSQL (the bytes go in the rows).
    files: Option<LogFiles>,
    /// Jobs whose log someone read lately, and when.
    watched: DashMap<i64, Instant>,
}

impl Traces {
    /// On SQLite the log files are kept beside the database file, in `<file>-logs` (as
    /// its `-wal` is): they are part of the database and move with it.
    pub fn new(db: DbPool) -> io::Result<Traces> {
        let files = match db.sqlite_file() {
            Some(file) => {
                let mut dir = file.as_os_str().to_owned();
                dir.push("-logs");
                Some(LogFiles::open(dir.into())?)
            }
            None => None,
        };
        Ok(Traces {
            db,
            files,
            watched: DashMap::new(),
        })
    }

    /// The log files, if the bytes are kept in files.
    pub fn files(&self) -> Option<&LogFiles> {
        self.files.as_ref()
    }

    /// Removes log files whose chunks are gone (archived or erased just before a crash).
    /// Run before serving: a file is created by the first append of its job.
    pub async fn sweep(&self) -> ApiResult<()> {
        let Some(files) = &self.files else {
            return Ok(());
        };
        let on_disk = {
            let files = files.clone();
            tokio::task::spawn_blocking(move || files.jobs())
                .await
                .map_err(|e| ApiError::Internal(e.into()))?
                .map_err(|e| ApiError::Internal(e.into()))?
        };
        let mut db = self.db.read().await?;
        for job_id in on_disk {
            // A file is kept unless its job surely has no chunks.
            let chunks = TraceChunk::page(&mut db.conn(), job_id, -1, 1).await;
            if chunks.is_ok_and(|c| c.is_empty()) {
                files.remove(job_id);
            }
        }
        Ok(())
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
        let files = self.files.clone();
        self.db
            .on_writer(async move {
                let mut db = db.write().await?;
                let (data, files) = (&data, &files);
                transaction!(&mut db.conn(), |tx| {
                    let tail = match TraceChunk::tail_for_append(tx, job_id, start).await? {
                        Ok(tail) => tail,
                        Err(refused) => return Ok(refused),
                    };
                    if data.is_empty() {
                        return Ok(Appended::Stored(tail.0));
                    }
                    if let Some(files) = files {
                        // On the writer thread: appends are serialised, and the write is
                        // to the page cache.
                        files.write_at(job_id, tail.0, data).map_err(|e| {
                            ApiError::Internal(anyhow::Error::new(e).context("writing a log file"))
                        })?;
                    }
                    let size = TraceChunk::record(tx, job_id, tail, data, files.is_some()).await?;
                    Ok::<_, ApiError>(Appended::Stored(size))
                })
            })
            .await
    }

    /// Up to `limit` chunks of the log starting after `after` (see [`read_page`]).
    pub async fn page(
        &self,
        job_id: i64,
        after: i64,
        limit: i64,
    ) -> ApiResult<Vec<(i64, Vec<u8>)>> {
        read_page(&self.db, self.files.as_ref(), job_id, after, limit).await
    }

    pub async fn set_debug(&self, job_id: i64) -> ApiResult<()> {
        let mut db = self.db.write().await?;
        Ok(crate::db::models::Job::set_debug_trace(&mut db.conn(), job_id).await?)
    }

    /// The whole log, as far as it is in chunks.
    pub async fn read(&self, job_id: i64) -> ApiResult<Vec<u8>> {
        let chunks = self.page(job_id, -1, i64::MAX).await?;
        Ok(chunks.into_iter().flat_map(|(_, data)| data).collect())
    }
}

/// `crc32:%08x` as the runner writes it.
pub fn checksum_text(crc: u32) -> String {
    format!("crc32:{crc:08x}")
}
