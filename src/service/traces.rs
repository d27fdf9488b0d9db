//! Job logs: appends that are durable once answered (each committed before the answer),
//! and reads while the job runs and after.
//!
//! Where a running job's bytes go: to a file per job ([`LogFiles`]), the chunk rows keeping
//! only where each chunk starts — on SQLite always, on PostgreSQL when artifacts are on
//! the local filesystem (the data dir is then what instances share, besides the
//! database). With artifacts in S3 they go in the chunk rows, so that instances share only
//! the database and the bucket. In a file, a 64 KiB PATCH costs a write to the page cache
//! and a small transaction; in a row, 32 TOAST rows and their WAL (PostgreSQL, about
//! 0.6 ms of its CPU each), or 16 pages through SQLite's WAL and again at checkpoint on the
//! single writer (which had made the writer the ceiling, about 1,600 PATCHes/s). A file
//! is durable as a page-cache write is: across a crash of the process, not of the machine
//! (GitLab keeps running logs in Redis, as durable).
//!
//! Two appends must never write one part of a file. SQLite's run one at a time on its
//! writer thread. On PostgreSQL an append takes the file's lock (`flock`; instances share
//! the folder, so it must support it: a local disk, or NFS with locking), then writes at
//! `start` if the file is exactly `start` long — the file is never shorter than the
//! stored log, so nothing stored is overwritten — and stores with one conditional
//! statement; otherwise it locks the job's row and finds out, still under the file lock.
//!
//! A log PATCH's guard may take the job as the previous append here left it instead of
//! reading it ([`Traces::recent`]; one statement per PATCH instead of two): every append
//! is conditional on the job's token, status and log size in the database, so a job that
//! moved meanwhile — canceled, ended, appended to through another instance, its token
//! replaced — is found out there, and the answer's `Job-Status` is what the append saw.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::auth::tokens::TokenDigest;
use crate::db::models::{Appended, Job, TraceChunk};
use crate::db::{Backend, DbPool};
use crate::error::{ApiError, ApiResult};
use crate::service::blocking_io;
use crate::transaction;

/// The log files of running jobs, `<job id>.log` in one folder. A chunk's bytes are written
/// here while its job's row is locked (SQLite's one writer, PostgreSQL's row lock), before
/// the chunk's row commits; bytes past the stored size (a crash between the two) are never
/// read and are overwritten by the next append.
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

    /// Gives the finished job's log file the second name `to` (a hard link: no bytes
    /// copied, no new file), under the file's lock and cut to the log's `size` first (bytes
    /// past it were never stored: an append that failed, or a crash before its commit). It
    /// answers the log's SHA-256 and holds the lock until [`LinkedLog::remove`] drops the
    /// log's own name. `None` when the file is shorter than the log or cannot be linked
    /// there (another filesystem, say): the caller copies the log instead.
    ///
    /// Only for a job that has finished, so that no append will store anything more.
    /// An append that waited for the lock meanwhile finds its handle is no longer the
    /// file at the log's path ([`LogFiles::lock`]) and writes nothing to the archive.
    pub fn link(&self, job_id: i64, size: i64, to: &Path) -> io::Result<Option<LinkedLog>> {
        use sha2::{Digest, Sha256};
        let Some(log) = self.lock_existing(job_id)? else {
            return Ok(None);
        };
        let len = log.len()?;
        if len < size as u64 {
            return Ok(None);
        }
        if len > size as u64 {
            log.file.set_len(size as u64)?;
        }
        let mut hasher = Sha256::new();
        io::copy(&mut &log.file, &mut hasher)?;
        let from = self.path(job_id);
        let linked = std::fs::hard_link(&from, to).or_else(|e| match to.parent() {
            Some(folder) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(folder)?;
                std::fs::hard_link(&from, to)
            }
            _ => Err(e),
        });
        match linked {
            Ok(()) => Ok(Some(LinkedLog {
                sha256: hex::encode(hasher.finalize()),
                files: self.clone(),
                job_id,
                _log: log,
            })),
            Err(e) => {
                tracing::debug!(error = %e, job_id, "linking a log to its archive failed; copying it");
                Ok(None)
            }
        }
    }

    /// The job's file, opened for writing (created by its first append).
    fn open_for_write(&self, job_id: i64) -> io::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(self.path(job_id))
    }

    fn write_at(&self, job_id: i64, offset: i64, data: &[u8]) -> io::Result<()> {
        self.open_for_write(job_id)?
            .write_all_at(data, offset as u64)
    }

    /// The job's file, opened for writing and locked (`flock`, exclusive) until the
    /// handle is dropped. Blocks while another holds it. The file locked is the one at the
    /// log's path once the lock is held: an archive may have taken the file away while
    /// this waited ([`LogFiles::link`]), and the handle then opened belongs to the archive.
    fn lock(&self, job_id: i64) -> io::Result<LockedLog> {
        for _ in 0..LOCK_ATTEMPTS {
            let file = self.open_for_write(job_id)?;
            if let Some(log) = LockedLog::take(file, &self.path(job_id), true)? {
                return Ok(log);
            }
        }
        Err(io::Error::other(
            "the log file was replaced while waiting for its lock",
        ))
    }

    /// As [`LogFiles::lock`] without waiting: `None` if another holds the lock (or an
    /// archive took the file away meanwhile).
    fn try_lock(&self, job_id: i64) -> io::Result<Option<LockedLog>> {
        let file = self.open_for_write(job_id)?;
        LockedLog::take(file, &self.path(job_id), false)
    }

    /// As [`LogFiles::lock`], for a file that exists (`None` if there is none).
    fn lock_existing(&self, job_id: i64) -> io::Result<Option<LockedLog>> {
        let path = self.path(job_id);
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        LockedLog::take(file, &path, true)
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

    /// The jobs that have a file here not modified for `quiet`.
    fn jobs(&self, quiet: Duration) -> io::Result<Vec<i64>> {
        let mut jobs = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let id = name.to_str().and_then(|n| n.strip_suffix(".log"));
            let Some(id) = id.and_then(|id| id.parse().ok()) else {
                continue;
            };
            let age = entry.metadata()?.modified()?.elapsed().unwrap_or_default();
            if age >= quiet {
                jobs.push(id);
            }
        }
        Ok(jobs)
    }
}

/// A job's log file held under its file lock (see [`LogFiles::lock`]).
struct LockedLog {
    file: std::fs::File,
}

impl LockedLog {
    /// `file`, opened from `path`, once its lock is taken (waiting for it if `wait`) and
    /// if it is still the file at `path`; `None` if not, or if the lock is taken and this
    /// does not wait. Dropped, the handle releases the lock.
    fn take(file: std::fs::File, path: &Path, wait: bool) -> io::Result<Option<LockedLog>> {
        if wait {
            file.lock()?;
        } else {
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
        }
        let log = LockedLog { file };
        Ok(log.is_at(path)?.then_some(log))
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Whether this is the file at `path` (which may have gone, or be another file now).
    fn is_at(&self, path: &Path) -> io::Result<bool> {
        use std::os::unix::fs::MetadataExt;
        let there = match std::fs::metadata(path) {
            Ok(there) => there,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let this = self.file.metadata()?;
        Ok((this.dev(), this.ino()) == (there.dev(), there.ino()))
    }

    fn write_at(&self, offset: i64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset as u64)
    }

    /// Writes `data` at `tail` if the file is exactly that long, and says whether it did
    /// (`None`: nothing to write). The file is never shorter than the stored log: if it is
    /// exactly `tail` long, nothing stored lies past `tail` to overwrite.
    fn write_if_tail(&self, tail: Option<i64>, data: &[u8]) -> io::Result<bool> {
        let Some(tail) = tail else {
            return Ok(false);
        };
        let wrote = self.len()? == tail as u64;
        if wrote {
            self.write_at(tail, data)?;
        }
        Ok(wrote)
    }
}

/// How many times an append opens its log file again when an archive took the file away
/// while it waited for its lock (the next file is new: nothing archives it while it runs).
const LOCK_ATTEMPTS: usize = 3;

/// A finished job's log file given its archive's name ([`LogFiles::link`]), its lock
/// held until the log's own name is removed.
pub struct LinkedLog {
    pub sha256: String,
    files: LogFiles,
    job_id: i64,
    _log: LockedLog,
}

impl LinkedLog {
    /// Drops the log's own name (its chunks are gone), then the lock: the file is the
    /// archive's alone.
    pub fn remove(self) {
        self.files.remove(self.job_id);
    }
}

/// An append's transaction: checks that the job is still the token's, running, and its
/// log `start` long ([`TraceChunk::tail_for_append`]), then writes `data` — to the log's
/// file where logs are kept in files (through `locked`, the handle holding the file's
/// lock, on PostgreSQL) — and records it.
async fn append_in(
    tx: &mut crate::db::Conn<'_>,
    job_id: i64,
    digest: &[u8],
    start: i64,
    data: &Arc<Vec<u8>>,
    locked: Option<&Arc<LockedLog>>,
    files: Option<&LogFiles>,
) -> ApiResult<Appended> {
    let (size, crc, status) = match TraceChunk::tail_for_append(tx, job_id, digest, start).await? {
        Ok(tail) => tail,
        Err(refused) => return Ok(refused),
    };
    if data.is_empty() {
        return Ok(Appended::Stored { size, crc, status });
    }
    match (locked, files) {
        // PostgreSQL: through the handle that holds the file's lock.
        (Some(log), _) => {
            let (log, data) = (log.clone(), data.clone());
            let write = move || log.write_at(size, &data);
            blocking_io("writing a log file", write).await?;
        }
        // SQLite's writer thread: appends are serialised there, and the write is to the
        // page cache.
        (None, Some(files)) => files
            .write_at(job_id, size, data)
            .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("writing a log file")))?,
        (None, None) => {}
    }
    let tail = (size, crc);
    let (size, crc) = TraceChunk::record(tx, job_id, tail, data, files.is_some()).await?;
    Ok(Appended::Stored { size, crc, status })
}

/// Up to `limit` chunks of the job's log starting after `after`, as (offset, bytes), the
/// bytes read from the log file where the rows hold none.
pub async fn read_page(
    db: &DbPool,
    files: &LogFiles,
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
    let files = files.clone();
    blocking_io("reading a job's log file", move || {
        chunks
            .into_iter()
            .map(|c| match c.data {
                Some(data) => Ok((c.offset, data)),
                None => Ok((c.offset, files.read_at(job_id, c.offset, c.len)?)),
            })
            .collect()
    })
    .await
}

/// How long a read of the log counts as someone watching it (GitLab's flag lives 10 s).
const WATCH_WINDOW: Duration = Duration::from_secs(10);
/// The update interval asked of the runner while someone watches (GitLab: 3 s).
const WATCHED_INTERVAL: Duration = Duration::from_secs(3);

pub struct Traces {
    db: DbPool,
    /// The log files of running jobs.
    files: LogFiles,
    /// Whether appends write the files (else the rows; files already written still read).
    append_to_files: bool,
    /// Jobs whose log someone read lately, and when.
    watched: DashMap<i64, Instant>,
    /// Jobs whose log was appended to here lately (see [`Traces::recent`]).
    recent: DashMap<i64, RecentJob>,
}

/// A job as its last append left it, and when a PATCH last used it.
struct RecentJob {
    job: Job,
    used: Instant,
}

/// How long a job is kept as recent without an append (a runner sends its log at least
/// every few minutes while the job runs; GitLab's longest update interval is 30 s).
const RECENT_IDLE: Duration = Duration::from_secs(300);

impl Traces {
    /// On SQLite the log files are kept beside the database file, in `<file>-logs` (as its
    /// `-wal` is): they are part of the database and move with it. On PostgreSQL they are in
    /// `<data dir>/logs`, written when `local_store` (artifacts on the local filesystem).
    pub fn new(db: DbPool, data_dir: &Path, local_store: bool) -> io::Result<Traces> {
        let (dir, append_to_files) = match db.sqlite_file() {
            Some(file) => {
                let mut dir = file.as_os_str().to_owned();
                dir.push("-logs");
                (PathBuf::from(dir), true)
            }
            None => (data_dir.join("logs"), local_store),
        };
        Ok(Traces {
            files: LogFiles::open(dir)?,
            db,
            append_to_files,
            watched: DashMap::new(),
            recent: DashMap::new(),
        })
    }

    /// The log files.
    pub fn files(&self) -> &LogFiles {
        &self.files
    }

    /// Removes log files whose chunks are gone (archived or erased just before a crash).
    /// Run before serving: a file is created by the first append of its job. On
    /// PostgreSQL another instance may be writing a job's first chunk right now, so only
    /// files left alone for [`SWEEP_QUIET`] are candidates.
    pub async fn sweep(&self) -> ApiResult<()> {
        let quiet = match self.db.backend() {
            Backend::Sqlite => Duration::ZERO,
            Backend::Postgres => SWEEP_QUIET,
        };
        let files = self.files.clone();
        let on_disk = blocking_io("listing the log files", move || files.jobs(quiet)).await?;
        let mut db = self.db.read().await?;
        for job_id in on_disk {
            // A file is kept unless its job surely has no chunks.
            let chunks = TraceChunk::page(&mut db.conn(), job_id, -1, 1).await;
            if chunks.is_ok_and(|c| c.is_empty()) {
                self.files.remove(job_id);
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

    /// Appends `data` at `start` for `job` as its guard read it (or as [`Traces::recent`]
    /// kept it); committed before it answers. When `start` is the log's size as read,
    /// PostgreSQL appends with one statement conditional on it and on the job still being
    /// the token's and running ([`TraceChunk::append_if_tail`]); only if the job moved
    /// meanwhile does the append lock the job's row to find out (see the module's notes for
    /// the file lock). A log append is a hot write: on SQLite it is committed with the
    /// others queued meanwhile ([`DbPool::write_transaction`]). The job is kept as recent
    /// while its appends land, and forgotten otherwise.
    pub async fn append(&self, job: &Job, start: i64, data: Vec<u8>) -> ApiResult<Appended> {
        let Some(digest) = job.token_digest.clone() else {
            return Ok(Appended::NotOwned);
        };
        let known = (job.trace_size, job.trace_crc32);
        let appended = self.append_for(job.id, digest, start, data, known).await;
        match appended {
            Ok(Appended::Stored { size, crc, status }) => {
                let mut job = job.clone();
                (job.trace_size, job.trace_crc32, job.status) = (size, crc, status);
                job.updated_at = crate::db::models::now();
                self.remember(job);
            }
            _ => self.forget(job.id),
        }
        appended
    }

    async fn append_for(
        &self,
        job_id: i64,
        digest: Vec<u8>,
        start: i64,
        data: Vec<u8>,
        known: (i64, i64),
    ) -> ApiResult<Appended> {
        let files = self.append_to_files.then(|| self.files.clone());
        let data = Arc::new(data);
        if self.db.backend() == Backend::Sqlite {
            // SQLite: a hot write, committed with the others queued meanwhile on the
            // writer thread (claims, finishes, other appends).
            return self
                .db
                .write_transaction(move |tx| {
                    Box::pin(async move {
                        append_in(tx, job_id, &digest, start, &data, None, files.as_ref()).await
                    })
                })
                .await;
        }
        let db = self.db.clone();
        let conditional = known.0 == start && !data.is_empty();
        self.db
            .on_writer(async move {
                let mut db = db.write().await?;
                // With files: appends to one job's file take turns through a
                // file lock (instances share the folder), always taken before the row's.
                // Held (with the file's lock) until this block ends, after any commit.
                let mut locked = None;
                if let (true, Some(files)) = (!data.is_empty(), &files) {
                    let tail = conditional.then_some(start);
                    // Here when the lock is free, as it is unless another append to the
                    // log runs: a page-cache write costs less than the hops to a blocking
                    // thread and back (two context switches a PATCH on two cores).
                    let free = files.try_lock(job_id).and_then(|log| match log {
                        Some(log) => Ok(Some((log.write_if_tail(tail, &data)?, log))),
                        None => Ok(None),
                    });
                    let (wrote, log) = match free.map_err(|e| {
                        ApiError::Internal(anyhow::Error::new(e).context("writing a log file"))
                    })? {
                        Some(done) => done,
                        None => {
                            let (files, bytes) = (files.clone(), data.clone());
                            blocking_io("writing a log file", move || {
                                let log = files.lock(job_id)?;
                                Ok((log.write_if_tail(tail, &bytes)?, log))
                            })
                            .await?
                        }
                    };
                    if wrote {
                        let mut conn = db.conn();
                        let stored = TraceChunk::append_if_tail(
                            &mut conn, job_id, &digest, known, &data, true,
                        );
                        if let Some(stored) = stored.await? {
                            return Ok(stored);
                        }
                    }
                    locked = Some(Arc::new(log));
                } else if conditional {
                    let mut conn = db.conn();
                    let stored =
                        TraceChunk::append_if_tail(&mut conn, job_id, &digest, known, &data, false);
                    if let Some(stored) = stored.await? {
                        return Ok(stored);
                    }
                }
                let (data, files, locked, digest) = (&data, &files, &locked, &digest);
                transaction!(&mut db.conn(), |tx| {
                    append_in(
                        tx,
                        job_id,
                        digest,
                        start,
                        data,
                        locked.as_ref(),
                        files.as_ref(),
                    )
                    .await
                })
            })
            .await
    }

    /// The job as its last append here left it, if `digest` is its token's and it was
    /// kept (see [`Traces::append`]): what a log PATCH's guard may take instead of reading
    /// the job, since the append then checks in the database that the job is still the
    /// token's, running, and its log that long.
    pub fn recent(&self, job_id: i64, digest: &TokenDigest) -> Option<Job> {
        let mut entry = self.recent.get_mut(&job_id)?;
        if !digest.matches_stored(entry.job.token_digest.as_deref()) {
            return None;
        }
        entry.used = Instant::now();
        Some(entry.job.clone())
    }

    fn remember(&self, job: Job) {
        let used = Instant::now();
        self.recent.insert(job.id, RecentJob { job, used });
    }

    /// Drops the job from the recent ones (it ended, or an append found it moved).
    pub fn forget(&self, job_id: i64) {
        self.recent.remove(&job_id);
    }

    /// Drops the recent jobs no append used for [`RECENT_IDLE`] (ended elsewhere, or
    /// silent); the reaper calls it.
    pub fn prune(&self) {
        self.recent.retain(|_, r| r.used.elapsed() < RECENT_IDLE);
    }

    /// Up to `limit` chunks of the log starting after `after` (see [`read_page`]).
    pub async fn page(
        &self,
        job_id: i64,
        after: i64,
        limit: i64,
    ) -> ApiResult<Vec<(i64, Vec<u8>)>> {
        read_page(&self.db, &self.files, job_id, after, limit).await
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

/// How long a log file must have been left alone before the start-up sweep may remove it
/// on PostgreSQL (where other instances append while this one starts).
const SWEEP_QUIET: Duration = Duration::from_secs(600);

/// `crc32:%08x` as the runner writes it.
pub fn checksum_text(crc: u32) -> String {
    format!("crc32:{crc:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    // An append that opened a finished job's log and waits for its lock while the archive
    // links the file and drops the log's name: once it has the lock, it opens the log's
    // path again, so what it writes never reaches the archive.
    #[test]
    fn an_append_waiting_while_its_log_is_archived_leaves_the_archive_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = LogFiles::open(dir.path().join("logs")).expect("folder");
        files.write_at(7, 0, b"the log\ntorn").expect("write");
        let archive = dir.path().join("traces/0/7-a.log");
        let linked = files.link(7, 8, &archive).expect("link").expect("linked");
        let linked_sha256 = linked.sha256.clone();
        let appending = {
            let files = files.clone();
            std::thread::spawn(move || {
                let log = files.lock(7).expect("lock");
                log.write_at(8, b"late\n").expect("write");
            })
        };
        // The append has opened the file by now and waits for the archive's lock.
        std::thread::sleep(Duration::from_millis(300));
        linked.remove();
        appending.join().expect("append");
        assert_eq!(std::fs::read(&archive).expect("archive"), b"the log\n");
        use sha2::Digest;
        assert_eq!(
            linked_sha256,
            hex::encode(sha2::Sha256::digest(b"the log\n"))
        );
        // The log's path holds what the append wrote, alone; nothing stores it.
        assert_eq!(
            std::fs::read(files.path(7)).expect("new file"),
            b"\0\0\0\0\0\0\0\0late\n"
        );
    }
}
