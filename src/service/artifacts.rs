//! Artifacts in object storage (object_store; the local filesystem under the data dir by
//! default): uploads streamed in with bounded memory, downloads streamed out, expiry.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use sha2::{Digest, Sha256};

use crate::ci::duration::parse_seconds;
use crate::db::models::{now, Job, JobArtifact, NewJobArtifact, TraceChunk};
use crate::db::DbPool;
use crate::error::{ApiError, ApiResult};
use crate::service::traces::{read_page, LinkedLog, LogFiles};
use crate::transaction;

/// The format each artifact type must have ‹app/models/concerns/enums/ci/job_artifact.rb›.
pub fn format_for(file_type: &str) -> Option<&'static str> {
    match file_type {
        "archive" => Some("zip"),
        "metadata" => Some("gzip"),
        "trace" => Some("raw"),
        "lsif" | "scip" => Some("zip"),
        other => crate::ci::config::report_format(other),
    }
}

/// An upload written to storage, not yet recorded. It owns the stored object until
/// [`StoredFile::keep`] says its row was written: dropped before that — an error, a
/// refused parameter, a client gone mid-request, a panic unwinding the handler — it
/// removes the object, so no path of the upload can leave bytes without a row.
pub struct StoredFile {
    pub path: String,
    pub size: i64,
    pub sha256: String,
    /// The store to remove the object from when dropped; `None` once kept.
    owner: Option<Arc<dyn ObjectStore>>,
}

impl StoredFile {
    /// The row that points at the object is written: the object stays.
    fn keep(mut self) {
        self.owner = None;
    }
}

impl Drop for StoredFile {
    fn drop(&mut self) {
        let Some(store) = self.owner.take() else {
            return;
        };
        let path = StorePath::from(self.path.as_str());
        let remove = async move {
            if let Err(e) = store.delete(&path).await {
                if !matches!(e, object_store::Error::NotFound { .. }) {
                    tracing::warn!(error = %e, %path, "removing an unrecorded upload failed");
                }
            }
        };
        // Drop cannot wait: the removal runs on the runtime (every handler has one); the
        // background sweep catches the object should the process stop first.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(remove);
            }
            Err(_) => {
                tracing::warn!(path = %self.path, "an unrecorded upload is left for the sweep")
            }
        }
    }
}

/// An object being written to the store, its bytes hashed and counted as they go; memory
/// stays bounded by the multipart writer's buffers whatever the size.
struct ObjectWriter {
    store: Arc<dyn ObjectStore>,
    path: String,
    writer: WriteMultipart,
    hasher: Sha256,
    size: u64,
}

impl ObjectWriter {
    async fn start(store: &Arc<dyn ObjectStore>, path: String) -> ApiResult<ObjectWriter> {
        let upload = store
            .put_multipart(&StorePath::from(path.as_str()))
            .await
            .map_err(storage_error)?;
        Ok(ObjectWriter {
            store: store.clone(),
            path,
            writer: WriteMultipart::new(upload),
            hasher: Sha256::new(),
            size: 0,
        })
    }

    async fn write(&mut self, data: &[u8]) -> ApiResult<()> {
        self.size += data.len() as u64;
        self.hasher.update(data);
        self.writer
            .wait_for_capacity(2)
            .await
            .map_err(storage_error)?;
        self.writer.write(data);
        Ok(())
    }

    /// Drops what was written (nothing is left in the store).
    async fn abort(self) {
        let _ = self.writer.abort().await;
    }

    /// The object, complete in the store and owned by the [`StoredFile`] answered.
    async fn finish(self) -> ApiResult<StoredFile> {
        self.writer.finish().await.map_err(storage_error)?;
        Ok(StoredFile {
            path: self.path,
            size: self.size as i64,
            sha256: hex::encode(self.hasher.finalize()),
            owner: Some(self.store),
        })
    }
}

/// How long a `direct_download` URL stays valid (GitLab's default for presigned URLs).
const DIRECT_DOWNLOAD_TTL: Duration = Duration::from_secs(600);

pub struct Artifacts {
    db: DbPool,
    /// Where logs are kept while their job runs, if in files (see [`LogFiles`]).
    log_files: LogFiles,
    store: Arc<dyn ObjectStore>,
    /// The folder of the local filesystem store (none with S3).
    local_root: Option<std::path::PathBuf>,
    /// S3 and the key prefix, for presigned `direct_download` URLs (none on local disk).
    signer: Option<(Arc<object_store::aws::AmazonS3>, String)>,
    pub max_size: u64,
    default_expire_in: Option<Duration>,
}

/// Finished jobs' logs looked up at once for archiving.
const ARCHIVE_BATCH: usize = 50;

/// Logs one archiving pass moves at most: the reaper's passes are up to 30 s apart,
/// in which a fleet finishing a hundred jobs a second ends 3,000.
const ARCHIVES_PER_PASS: usize = 10_000;

/// How long a half-written upload must have been left alone before the start-up sweep
/// removes it.
const STAGING_QUIET: Duration = Duration::from_secs(3600);

/// Removes the files under `root` whose name has the store's staging mark (`#`) and that
/// were not modified for [`STAGING_QUIET`]; answers how many.
fn remove_stale_staging(root: &std::path::Path) -> std::io::Result<usize> {
    let mut folders = vec![root.to_path_buf()];
    let mut removed = 0;
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                folders.push(entry.path());
                continue;
            }
            let staged = entry.file_name().to_string_lossy().contains('#');
            let age = entry.metadata()?.modified()?.elapsed().unwrap_or_default();
            if kind.is_file() && staged && age >= STAGING_QUIET {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// Jobs whose objects share a folder ([`object_path`]).
const JOBS_PER_FOLDER: i64 = 1000;

/// Where a new object of `job_id` goes under `prefix` (`jobs` for uploads, `traces` for
/// archived logs): `<prefix>/<job / 1000>/<job>-<uuid><suffix>`, a folder per thousand
/// jobs. A folder per job (`<prefix>/<job>/<uuid><suffix>`, the rows written before) made
/// the local store create two directories for each job: millions of folders in a long
/// history, and 2.3% of the server's samples in a profile of the fleet bench (though
/// three runs of each layout showed no difference in its CPU).
fn object_path(prefix: &str, job_id: i64, suffix: &str) -> String {
    let folder = job_id / JOBS_PER_FOLDER;
    let name = uuid::Uuid::new_v4().simple();
    format!("{prefix}/{folder}/{job_id}-{name}{suffix}")
}

/// The job an object belongs to, by its path in either layout: `<prefix>/<folder>/<job>-…`
/// ([`object_path`]), or `<prefix>/<job>/<uuid>…` (a UUID's simple form has no `-`).
fn job_of_object(path: &StorePath) -> Option<i64> {
    let mut parts = path.parts().skip(1);
    let folder = parts.next()?;
    match parts.next()?.as_ref().split_once('-') {
        Some((job, _)) => job.parse().ok(),
        None => folder.as_ref().parse().ok(),
    }
}

/// The largest file a pages site serves.
pub const PAGES_FILE_MAX: u64 = 64 * 1024 * 1024;

/// What a path of a pages site is.
pub enum PagesEntry {
    /// A file: its bytes and its name in the archive.
    File(Vec<u8>, String),
    /// A folder with an `index.html`.
    Folder,
    /// Nothing; the site's own `404.html` (bytes and name) when it has one.
    Missing(Option<(Vec<u8>, String)>),
}

/// `path` (no leading `/`, no `..`) under `folder` in the zip archive `file`.
fn read_pages_entry(
    file: &std::path::Path,
    folder: &str,
    path: &str,
) -> std::io::Result<PagesEntry> {
    use std::io::Read;
    let archive = std::fs::File::open(file)?;
    let Ok(mut zip) = zip::ZipArchive::new(archive) else {
        return Ok(PagesEntry::Missing(None));
    };
    let base = if folder.is_empty() {
        String::new()
    } else {
        format!("{folder}/")
    };
    let index = format!(
        "{base}{}index.html",
        if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        }
    );
    // A file of the archive, whole (at most `PAGES_FILE_MAX`); `None` if it is none.
    let file_named = |zip: &mut zip::ZipArchive<std::fs::File>,
                      name: String|
     -> std::io::Result<Option<(Vec<u8>, String)>> {
        match zip.by_name(&name) {
            Ok(entry) if entry.is_file() => {
                let mut bytes = Vec::new();
                entry.take(PAGES_FILE_MAX).read_to_end(&mut bytes)?;
                Ok(Some((bytes, name)))
            }
            _ => Ok(None),
        }
    };
    if !path.is_empty() {
        if let Some((bytes, name)) = file_named(&mut zip, format!("{base}{path}"))? {
            return Ok(PagesEntry::File(bytes, name));
        }
    }
    if zip.by_name(&index).is_ok() {
        return Ok(PagesEntry::Folder);
    }
    // Read in the same pass: with S3 the archive was fetched for this request.
    Ok(PagesEntry::Missing(file_named(
        &mut zip,
        format!("{base}404.html"),
    )?))
}

/// How much one blocking read of a stored file takes.
const FILE_CHUNK: usize = 512 * 1024;

/// The bytes `start..end` of `file`, read in [`FILE_CHUNK`]s on the blocking pool.
fn file_stream(
    file: std::fs::File,
    start: u64,
    end: u64,
) -> BoxStream<'static, Result<Bytes, std::io::Error>> {
    let state = (Some(file), start);
    futures_util::stream::try_unfold(state, move |(file, at)| async move {
        let Some(mut file) = file.filter(|_| at < end) else {
            return Ok(None);
        };
        let want = (end - at).min(FILE_CHUNK as u64) as usize;
        let (file, chunk) = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Seek, SeekFrom};
            file.seek(SeekFrom::Start(at))?;
            let mut chunk = vec![0; want];
            file.read_exact(&mut chunk)?;
            Ok::<_, std::io::Error>((file, chunk))
        })
        .await
        .map_err(std::io::Error::other)??;
        let next = at + chunk.len() as u64;
        Ok(Some((Bytes::from(chunk), (Some(file), next))))
    })
    .boxed()
}

fn storage_error(e: object_store::Error) -> ApiError {
    tracing::error!(error = %e, "object storage failed");
    // 503: the runner retries uploads that meet it.
    ApiError::Unavailable
}

impl Artifacts {
    pub fn new(
        db: DbPool,
        log_files: LogFiles,
        data_dir: &std::path::Path,
        settings: &crate::config::ObjectStoreSettings,
        max_size: u64,
        default_expire_in: Option<Duration>,
    ) -> anyhow::Result<Artifacts> {
        let mut signer = None;
        let mut local_root = None;
        let store: Arc<dyn ObjectStore> = match settings.url.as_deref() {
            None => {
                let root = data_dir.join("artifacts");
                std::fs::create_dir_all(&root)?;
                local_root = Some(root.clone());
                Arc::new(LocalFileSystem::new_with_prefix(&root)?)
            }
            Some(url) if url.starts_with("s3://") => {
                let rest = url.trim_start_matches("s3://");
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                let mut builder =
                    object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
                if let Some(endpoint) = &settings.s3_endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"));
                }
                if let Some(region) = &settings.s3_region {
                    builder = builder.with_region(region);
                }
                if let Some(key) = &settings.s3_access_key_id {
                    builder = builder.with_access_key_id(key);
                }
                if let Some(secret) = &settings.s3_secret_access_key {
                    builder = builder.with_secret_access_key(secret);
                }
                let s3 = Arc::new(builder.build()?);
                let prefix = prefix.trim_matches('/');
                signer = Some((s3.clone(), prefix.to_string()));
                let s3: Arc<dyn ObjectStore> = s3;
                if prefix.is_empty() {
                    s3
                } else {
                    Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
                }
            }
            Some(other) => {
                anyhow::bail!("object store URL must be s3://bucket[/prefix], not {other:?}")
            }
        };
        Ok(Artifacts {
            db,
            log_files,
            store,
            local_root,
            signer,
            max_size,
            default_expire_in,
        })
    }

    /// Removes what uploads to the local filesystem left half-written when the process
    /// died: the store writes an upload to `<object>#<n>` and renames it when complete, so
    /// such a file untouched for [`STAGING_QUIET`] belongs to no upload (another instance
    /// sharing the folder may be writing a fresh one). Answers how many went.
    pub async fn sweep_staging(&self) -> ApiResult<usize> {
        let Some(root) = self.local_root.clone() else {
            return Ok(0);
        };
        let swept = crate::service::blocking_io("sweeping unfinished uploads", move || {
            remove_stale_staging(&root)
        })
        .await?;
        if swept > 0 {
            tracing::info!(swept, "removed uploads a crash left unfinished");
        }
        Ok(swept)
    }

    /// Removes stored objects no row points at (uploads under `jobs/`, archived logs under
    /// `traces/`; [`object_path`], [`job_of_object`]) once untouched for [`STAGING_QUIET`]:
    /// what a process killed between storing an upload and writing its row left behind
    /// ([`StoredFile`] covers every other case). Works on the local store and on S3 alike; answers how many went.
    pub async fn sweep_orphans(&self) -> ApiResult<usize> {
        use std::collections::{HashMap, HashSet};
        const BATCH: usize = 200;
        let quiet = chrono::TimeDelta::from_std(STAGING_QUIET).unwrap_or_default();
        let before = chrono::Utc::now() - quiet;
        let mut removed = 0;
        for prefix in ["jobs", "traces"] {
            let mut listing = self.store.list(Some(&StorePath::from(prefix)));
            let mut batch: HashMap<i64, Vec<StorePath>> = HashMap::new();
            let mut count = 0;
            loop {
                let next = listing.next().await;
                let done = next.is_none();
                if let Some(meta) = next {
                    let meta = meta.map_err(storage_error)?;
                    let job_id = job_of_object(&meta.location);
                    let staged = meta.location.as_ref().contains('#');
                    if let (Some(job_id), false, true) =
                        (job_id, staged, meta.last_modified < before)
                    {
                        batch.entry(job_id).or_default().push(meta.location);
                        count += 1;
                    }
                }
                if count < BATCH && !done {
                    continue;
                }
                let ids: Vec<i64> = batch.keys().copied().collect();
                let known: HashSet<String> = {
                    let mut db = self.db.read().await?;
                    JobArtifact::for_jobs(&mut db.conn(), &ids)
                        .await?
                        .into_iter()
                        .map(|a| a.store_path)
                        .collect()
                };
                for location in batch.drain().flat_map(|(_, paths)| paths) {
                    if known.contains(location.as_ref()) {
                        continue;
                    }
                    match self.store.delete(&location).await {
                        Ok(()) => removed += 1,
                        Err(e) => {
                            tracing::warn!(error = %e, %location, "removing an orphaned object failed")
                        }
                    }
                }
                count = 0;
                if done {
                    break;
                }
            }
        }
        if removed > 0 {
            tracing::info!(removed, "removed stored objects no artifact row points at");
        }
        Ok(removed)
    }

    /// Streams `body` into storage, hashing it and refusing more than `max_size` bytes
    /// (413 `file size has reached maximum size limit`); memory stays bounded by the
    /// multipart writer's buffers whatever the size.
    pub async fn write<S, E>(&self, job_id: i64, mut body: S) -> ApiResult<StoredFile>
    where
        S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
    {
        let path = object_path("jobs", job_id, "");
        let mut writer = ObjectWriter::start(&self.store, path).await?;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(_) => {
                    writer.abort().await;
                    return Err(ApiError::bad_request("the upload was interrupted"));
                }
            };
            if writer.size + chunk.len() as u64 > self.max_size {
                writer.abort().await;
                return Err(ApiError::Render(
                    actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
                    "file size has reached maximum size limit".into(),
                ));
            }
            writer.write(&chunk).await?;
        }
        writer.finish().await
    }

    /// Records an upload for `job` (GitLab's rules: the type's fixed format; the same type
    /// twice is a no-op when the bytes are identical, else 400). The stored file is removed
    /// unless its row was written (see [`StoredFile`]).
    pub async fn record(
        &self,
        job: &Job,
        stored: StoredFile,
        file_type: &str,
        file_format: &str,
        filename: &str,
        expire_in: Option<&str>,
    ) -> ApiResult<()> {
        let outcome = self
            .record_inner(job, &stored, file_type, file_format, filename, expire_in)
            .await;
        if matches!(outcome, Ok(true)) {
            stored.keep();
        }
        outcome.map(|_| ())
    }

    async fn record_inner(
        &self,
        job: &Job,
        stored: &StoredFile,
        file_type: &str,
        file_format: &str,
        filename: &str,
        expire_in: Option<&str>,
    ) -> ApiResult<bool> {
        let expected = format_for(file_type).ok_or_else(|| {
            ApiError::InvalidParams("artifact_type does not have a valid value".into())
        })?;
        if !["zip", "gzip", "raw"].contains(&file_format) {
            return Err(ApiError::InvalidParams(
                "artifact_format does not have a valid value".into(),
            ));
        }
        if file_format != expected {
            return Err(ApiError::bad_request(format!(
                "{file_type} artifacts must have the {expected} format"
            )));
        }
        let at = now();
        // A pages job's archive is its site: it is served from there, so it stays.
        let site = file_type == "archive" && job.spec().pages.is_some();
        let expire_at = match expire_in.map(str::trim) {
            _ if site => None,
            Some("never") => None,
            Some(text) if !text.is_empty() => {
                // parse_seconds bounds the duration, so the sum cannot leave chrono's range.
                let secs = parse_seconds(text)
                    .ok_or_else(|| ApiError::InvalidParams("expire_in is invalid".into()))?;
                (secs > 0)
                    .then(|| {
                        chrono::TimeDelta::try_seconds(secs).and_then(|d| at.checked_add_signed(d))
                    })
                    .map(|t| {
                        t.ok_or_else(|| ApiError::InvalidParams("expire_in is invalid".into()))
                    })
                    .transpose()?
            }
            _ => self
                .default_expire_in
                .and_then(|d| chrono::TimeDelta::from_std(d).ok())
                .map(|d| at + d),
        };
        let dotenv = if file_type == "dotenv" {
            Some(self.read_dotenv(stored).await?)
        } else {
            None
        };
        let junit = if file_type == "junit" {
            Some(self.read_junit(stored).await?)
        } else {
            None
        };
        let mut db = self.db.write().await?;
        let mut conn = db.conn();
        if let Some(existing) = JobArtifact::find(&mut conn, job.id, file_type).await? {
            return if existing.sha256 == stored.sha256 {
                Ok(false) // identical: the first upload stays
            } else {
                Err(ApiError::bad_request(
                    "another artifact of the same type already exists",
                ))
            };
        }
        JobArtifact::create(
            &mut conn,
            NewJobArtifact {
                job_id: job.id,
                project_id: job.project_id,
                file_type,
                file_format,
                filename,
                size: stored.size,
                sha256: &stored.sha256,
                store_path: &stored.path,
                expire_at,
                created_at: at,
            },
        )
        .await?;
        if let Some(variables) = dotenv {
            Job::set_dotenv_variables(&mut conn, job.id, &variables.to_string()).await?;
        }
        if let Some(report) = junit {
            let json = serde_json::to_string(&report).unwrap_or_else(|_| "{}".into());
            crate::db::models::TestReportRow::save(&mut conn, job.id, job.pipeline_id, &json)
                .await?;
        }
        Ok(true)
    }

    /// A (gzipped) JUnit report read as GitLab reads it ([`crate::service::junit`]), on the
    /// blocking pool; gunzipped at most to its limit. What cannot be read is the report's
    /// `suite_error`, as GitLab shows it; the upload stands.
    async fn read_junit(&self, stored: &StoredFile) -> ApiResult<crate::service::junit::Report> {
        use crate::service::junit::{parse, Report, MAX_XML_BYTES};
        use std::io::Read;
        let result = self
            .store
            .get(&StorePath::from(stored.path.as_str()))
            .await
            .map_err(storage_error)?;
        // Gzipped XML compresses well; more than this is not read at all.
        if stored.size > (MAX_XML_BYTES / 2) as i64 {
            return Ok(Report {
                cases: Vec::new(),
                suite_error: Some("JUnit XML parsing failed: the report is too large".into()),
            });
        }
        let compressed = result.bytes().await.map_err(storage_error)?;
        crate::service::blocking_io("reading a JUnit report", move || {
            let mut xml = Vec::new();
            let read = flate2::read::GzDecoder::new(&compressed[..])
                .take(MAX_XML_BYTES + 1)
                .read_to_end(&mut xml);
            Ok(match read {
                Ok(_) => parse(&xml),
                Err(e) => Report {
                    cases: Vec::new(),
                    suite_error: Some(format!("JUnit XML parsing failed: {e}")),
                },
            })
        })
        .await
    }

    /// The variables of a (gzipped) dotenv report, as GitLab parses them: `KEY=VALUE`
    /// lines, keys of letters, digits and `_`, at most 20 variables and 5 KiB; else 400
    /// `Invalid Format`.
    async fn read_dotenv(&self, stored: &StoredFile) -> ApiResult<serde_json::Value> {
        use std::io::Read;
        const MAX_BYTES: u64 = 5 * 1024;
        const MAX_VARIABLES: usize = 20;
        let invalid = || {
            ApiError::Render(
                actix_web::http::StatusCode::BAD_REQUEST,
                "Invalid Format".into(),
            )
        };
        if stored.size > 64 * 1024 {
            return Err(invalid());
        }
        let result = self
            .store
            .get(&StorePath::from(stored.path.as_str()))
            .await
            .map_err(storage_error)?;
        let compressed = result.bytes().await.map_err(storage_error)?;
        let mut text = String::new();
        flate2::read::GzDecoder::new(&compressed[..])
            .take(MAX_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|_| invalid())?;
        if text.len() as u64 > MAX_BYTES {
            return Err(invalid());
        }
        let mut variables = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (key, value) = line.split_once('=').ok_or_else(invalid)?;
            let key = key.trim();
            let valid_key = key
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid_key {
                return Err(invalid());
            }
            let value = value.trim();
            let unquoted = ['"', '\'']
                .iter()
                .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
                .unwrap_or(value);
            variables.push(serde_json::json!({ "key": key, "value": unquoted }));
        }
        if variables.len() > MAX_VARIABLES {
            return Err(invalid());
        }
        Ok(serde_json::Value::Array(variables))
    }

    /// Erases a finished job: its artifacts (rows and bytes) and its log; 403 while it
    /// has not finished. Answers the job afterwards.
    pub async fn erase(&self, job_id: i64) -> ApiResult<Job> {
        use crate::db::enums::JobStatus;
        let (job, artifacts) = {
            let mut db = self.db.read().await?;
            let job = Job::find(&mut db.conn(), job_id)
                .await?
                .ok_or_else(|| ApiError::not_found("Job"))?;
            (job, JobArtifact::for_jobs(&mut db.conn(), &[job_id]).await?)
        };
        if !matches!(
            job.status,
            JobStatus::Success | JobStatus::Failed | JobStatus::Canceled
        ) {
            return Err(ApiError::forbidden("Job is not erasable!"));
        }
        let mut db = self.db.write().await?;
        for artifact in &artifacts {
            JobArtifact::delete(&mut db.conn(), artifact.id).await?;
            self.delete_object(&artifact.store_path, "an erased artifact")
                .await;
        }
        Job::erase(&mut db.conn(), job.id, now()).await?;
        self.log_files.remove(job.id);
        Job::find(&mut db.conn(), job.id)
            .await?
            .ok_or_else(|| ApiError::not_found("Job"))
    }

    /// The artifact's bytes as a stream.
    pub async fn open(
        &self,
        artifact: &JobArtifact,
    ) -> ApiResult<BoxStream<'static, Result<Bytes, std::io::Error>>> {
        let result = self
            .store
            .get(&StorePath::from(artifact.store_path.as_str()))
            .await
            .map_err(storage_error)?;
        if let object_store::GetResultPayload::File(file, _) = result.payload {
            // On local disk, in large reads: the store's own stream reads 8 KiB per
            // blocking task, which bounds a download at a few hundred MB/s.
            return Ok(file_stream(file, result.range.start, result.range.end));
        }
        Ok(result.into_stream().map_err(std::io::Error::other).boxed())
    }

    /// A presigned URL to the artifact's object, valid for [`DIRECT_DOWNLOAD_TTL`], when
    /// storage is S3; `None` on local disk (the bytes are then served by Runway).
    pub async fn direct_url(&self, artifact: &JobArtifact) -> ApiResult<Option<String>> {
        use object_store::signer::Signer;
        let Some((s3, prefix)) = &self.signer else {
            return Ok(None);
        };
        let key = if prefix.is_empty() {
            artifact.store_path.clone()
        } else {
            format!("{prefix}/{}", artifact.store_path)
        };
        let url = s3
            .signed_url(
                object_store::signer::Method::GET,
                &StorePath::from(key.as_str()),
                DIRECT_DOWNLOAD_TTL,
            )
            .await
            .map_err(storage_error)?;
        Ok(Some(url.to_string()))
    }

    /// Moves the logs of finished jobs from the database into object storage, as GitLab
    /// archives a trace into a `trace` artifact (raw, `job.log`). The object is written
    /// and recorded before the chunks are dropped, so a crash in between leaves both.
    /// Answers how many logs it archived.
    /// Up to [`ARCHIVES_PER_PASS`] logs a pass, [`ARCHIVE_BATCH`] at a time, until none
    /// is left: the backlog does not grow however fast jobs finish.
    pub async fn archive_traces(&self) -> ApiResult<usize> {
        let mut archived = 0;
        while archived < ARCHIVES_PER_PASS {
            let pending = {
                let mut db = self.db.read().await?;
                TraceChunk::finished_unarchived(&mut db.conn(), ARCHIVE_BATCH as i64).await?
            };
            for job_id in &pending {
                self.archive_trace(*job_id).await?;
            }
            archived += pending.len();
            if pending.len() < ARCHIVE_BATCH {
                break;
            }
        }
        Ok(archived)
    }

    /// A running job's log as stored (its chunks, from the database or the log files), in
    /// order, read a few chunks at a time: memory stays bounded whatever its size, and
    /// no connection is held between reads.
    fn log_chunks(&self, job_id: i64) -> BoxStream<'_, ApiResult<Vec<u8>>> {
        const CHUNKS_PER_READ: i64 = 16;
        futures_util::stream::unfold(Some(-1), move |after| async move {
            let after = after?;
            match read_page(&self.db, &self.log_files, job_id, after, CHUNKS_PER_READ).await {
                Err(e) => Some((vec![Err(e)], None)),
                Ok(page) => {
                    let last = page.last()?.0;
                    Some((
                        page.into_iter().map(|(_, data)| Ok(data)).collect(),
                        Some(last),
                    ))
                }
            }
        })
        .flat_map(futures_util::stream::iter)
        .boxed()
    }

    /// Stores one finished job's log as an object — its file linked there
    /// ([`Artifacts::link_log`]), or streamed a few chunks at a time (memory stays bounded
    /// whatever the log's size, and no write connection is held meanwhile) — then records
    /// it and drops the chunks in one transaction. If another instance archived it first,
    /// our copy is deleted.
    async fn archive_trace(&self, job_id: i64) -> ApiResult<()> {
        let job = {
            let mut db = self.db.read().await?;
            Job::find(&mut db.conn(), job_id)
                .await?
                .ok_or(ApiError::Conflict)?
        };
        let path = object_path("traces", job.id, ".log");
        // Removed again unless recorded below (an error, or another instance first).
        let (archive, linked) = match self.link_log(&job, &path).await? {
            Some((archive, linked)) => (archive, Some(linked)),
            None => (self.copy_log(&job, path).await?, None),
        };
        let mut db = self.db.write().await?;
        let (size, sha256, record_path) = (archive.size, &archive.sha256, &archive.path);
        let recorded = transaction!(&mut db.conn(), |tx| {
            if JobArtifact::find(tx, job.id, "trace").await?.is_some() {
                TraceChunk::delete_for_job(tx, job.id).await?;
                return Ok::<bool, ApiError>(false);
            }
            let new = NewJobArtifact {
                job_id: job.id,
                project_id: job.project_id,
                file_type: "trace",
                file_format: "raw",
                filename: "job.log",
                size,
                sha256,
                store_path: record_path,
                expire_at: None,
                created_at: now(),
            };
            JobArtifact::create(tx, new).await?;
            TraceChunk::delete_for_job(tx, job.id).await?;
            Ok(true)
        })?;
        drop(db);
        match linked {
            Some(linked) => linked.remove(),
            None => self.log_files.remove(job.id),
        }
        if recorded {
            archive.keep();
        }
        Ok(())
    }

    /// The log of a finished job stored as its archive `path` by giving its file that
    /// second name ([`LogFiles::link`]): with the local store, when every chunk is in the
    /// file. Saves a file created, written and removed for each job. Answers the object
    /// and the log's file, still locked, to remove once the archive is recorded.
    async fn link_log(&self, job: &Job, path: &str) -> ApiResult<Option<(StoredFile, LinkedLog)>> {
        let Some(root) = &self.local_root else {
            return Ok(None);
        };
        let in_file = {
            let mut db = self.db.read().await?;
            TraceChunk::all_in_file(&mut db.conn(), job.id).await?
        };
        if !in_file {
            return Ok(None);
        }
        let (files, to, job_id, size) = (
            self.log_files.clone(),
            root.join(path),
            job.id,
            job.trace_size,
        );
        let link = move || files.link(job_id, size, &to);
        let linked = crate::service::blocking_io("linking a log to its archive", link).await?;
        Ok(linked.map(|linked| {
            let stored = StoredFile {
                path: path.to_string(),
                size,
                sha256: linked.sha256.clone(),
                owner: Some(self.store.clone()),
            };
            (stored, linked)
        }))
    }

    /// The log of a finished job copied into the store as `path`, a few chunks at a time.
    async fn copy_log(&self, job: &Job, path: String) -> ApiResult<StoredFile> {
        let mut writer = ObjectWriter::start(&self.store, path).await?;
        let mut chunks = self.log_chunks(job.id);
        while let Some(data) = chunks.next().await {
            writer.write(&data?).await?;
        }
        writer.finish().await
    }

    /// Applies the job's `coverage` pattern to its log and records what it finds
    /// (`Ci::Build#update_coverage`): the log as stored — its chunks, or the archive if the
    /// reaper archived it meanwhile — read a few chunks at a time.
    pub async fn record_coverage(&self, job_id: i64, pattern: &str) -> ApiResult<Option<f64>> {
        use crate::ci::coverage::CoverageScanner;
        let Some(mut scanner) = CoverageScanner::new(pattern) else {
            return Ok(None);
        };
        let size = {
            let mut db = self.db.read().await?;
            Job::find(&mut db.conn(), job_id)
                .await?
                .map_or(0, |j| j.trace_size)
        };
        let mut read: i64 = 0;
        let mut chunks = self.log_chunks(job_id);
        while let Some(data) = chunks.next().await {
            let data = data?;
            read += data.len() as i64;
            scanner.feed(&data);
        }
        if read < size {
            // Archived while it was read: the archive holds all of it.
            if let Some(archive) = self.archived_trace(job_id).await? {
                let Some(fresh) = CoverageScanner::new(pattern) else {
                    return Ok(None);
                };
                scanner = fresh;
                let mut stream = self.open(&archive).await?;
                while let Some(bytes) = stream.next().await {
                    let bytes = bytes.map_err(|e| ApiError::Internal(e.into()))?;
                    scanner.feed(&bytes);
                }
            }
        }
        let coverage = scanner.finish();
        if let Some(value) = coverage {
            let mut db = self.db.write().await?;
            crate::db::models::JobCoverage::set(&mut db.conn(), job_id, value).await?;
        }
        Ok(coverage)
    }

    /// The project's pages site: its latest successful pages job's archive and the folder
    /// in it that is the site.
    pub async fn pages_site(&self, project_id: i64) -> ApiResult<Option<(JobArtifact, String)>> {
        let mut db = self.db.read().await?;
        let found = JobArtifact::latest_pages(&mut db.conn(), project_id).await?;
        Ok(found.and_then(|(artifact, job)| job.spec().pages.map(|folder| (artifact, folder))))
    }

    /// One file of a pages site: `path` under `folder` in the archive (`index.html` for
    /// the folder itself). Read on the blocking pool, at most [`PAGES_FILE_MAX`] bytes;
    /// with S3 the archive is fetched to a temporary file first.
    pub async fn pages_entry(
        &self,
        artifact: &JobArtifact,
        folder: &str,
        path: &str,
    ) -> ApiResult<PagesEntry> {
        let (file, _temporary) = match &self.local_root {
            Some(root) => (root.join(&artifact.store_path), None),
            None => {
                let temporary =
                    tempfile::NamedTempFile::new().map_err(|e| ApiError::Internal(e.into()))?;
                let mut stream = self.open(artifact).await?;
                let mut out = tokio::fs::File::create(temporary.path())
                    .await
                    .map_err(|e| ApiError::Internal(e.into()))?;
                while let Some(bytes) = stream.next().await {
                    let bytes = bytes.map_err(|e| ApiError::Internal(e.into()))?;
                    tokio::io::AsyncWriteExt::write_all(&mut out, &bytes)
                        .await
                        .map_err(|e| ApiError::Internal(e.into()))?;
                }
                (temporary.path().to_path_buf(), Some(temporary))
            }
        };
        let folder = folder.to_string();
        let path = path.to_string();
        crate::service::blocking_io("reading a pages file", move || {
            read_pages_entry(&file, &folder, &path)
        })
        .await
    }

    /// A job's archived log, if it was archived.
    pub async fn archived_trace(&self, job_id: i64) -> ApiResult<Option<JobArtifact>> {
        let mut db = self.db.read().await?;
        Ok(JobArtifact::find(&mut db.conn(), job_id, "trace").await?)
    }

    /// Deletes an artifact's object whose row is gone; a failure is logged (`what` names
    /// the artifact) and left to the hourly sweep of objects without rows.
    async fn delete_object(&self, path: &str, what: &str) {
        if let Err(e) = self.store.delete(&StorePath::from(path)).await {
            tracing::warn!(error = %e, path, "deleting {what} failed");
        }
    }

    /// Removes what deleted jobs left outside the database: their artifacts' objects
    /// (archived logs among them) and their log files. An object that cannot be removed
    /// now is left to the hourly sweep of objects without rows.
    pub async fn remove_leftovers(&self, store_paths: &[String], job_ids: Vec<i64>) {
        for path in store_paths {
            self.delete_object(path, "a deleted job's artifact").await;
        }
        let files = self.log_files.clone();
        let removed = crate::service::blocking_io("removing deleted jobs' logs", move || {
            for id in job_ids {
                files.remove(id);
            }
            Ok(())
        })
        .await;
        if let Err(e) = removed {
            tracing::warn!(error = %e, "removing deleted jobs' log files failed");
        }
    }

    /// Deletes expired artifacts (rows and bytes); answers how many.
    pub async fn expire(&self) -> ApiResult<usize> {
        let expired = {
            let mut db = self.db.read().await?;
            JobArtifact::expired(&mut db.conn(), now()).await?
        };
        for artifact in &expired {
            let mut db = self.db.write().await?;
            JobArtifact::delete(&mut db.conn(), artifact.id).await?;
            self.delete_object(&artifact.store_path, "an expired artifact")
                .await;
        }
        Ok(expired.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_filed_a_folder_per_thousand_jobs_and_read_back_in_either_layout() {
        let upload = object_path("jobs", 123_456, "");
        assert!(upload.starts_with("jobs/123/123456-"), "{upload}");
        let log = object_path("traces", 7, ".log");
        assert!(
            log.starts_with("traces/0/7-") && log.ends_with(".log"),
            "{log}"
        );
        for (path, job) in [
            (upload.as_str(), Some(123_456)),
            (log.as_str(), Some(7)),
            // The layout before: a folder per job.
            ("jobs/42/0123456789abcdef0123456789abcdef", Some(42)),
            ("traces/42/0123456789abcdef0123456789abcdef.log", Some(42)),
            // Neither: left alone by the sweep.
            ("jobs/42", None),
            ("jobs/x/y", None),
            ("jobs/1/x-y", None),
        ] {
            assert_eq!(job_of_object(&StorePath::from(path)), job, "{path}");
        }
    }
}
