//! A project's repository, with the `git` command: its `repository_url` (an absolute
//! local path, or a `file://`, http, https, ssh or git URL) is mirrored under the data dir
//! and fetched again for each pipeline; `.gitlab-ci.yml` and included files are read
//! from the mirror at the pipeline's commit, which is kept as `refs/pipelines/<id>`; the
//! mirror is what `git_http` serves to the jobs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use tokio::process::Command;

use crate::db::models::Project;
use crate::error::{ApiError, ApiResult};

/// How long one git command may take before the pipeline is refused.
const GIT_TIMEOUT: Duration = Duration::from_secs(120);

/// The commit a ref names, and what the pipeline reads there.
pub struct Resolved {
    pub sha: String,
    pub tag: bool,
    pub ci_config: String,
    /// The commit's files, for `include:local`.
    pub files: RepoFiles,
}

/// The files of one commit of a repository on this machine, read with git when the
/// configuration is planned (on the blocking pool: these calls wait for git).
#[derive(Debug, Clone)]
pub struct RepoFiles {
    dir: PathBuf,
    sha: String,
    /// The ref's head before the push that started the pipeline, if one did.
    before: Option<String>,
}

impl RepoFiles {
    /// These files as a push from `before` brought them (all zeros: a new ref, whose
    /// changes are unknown, as GitLab's).
    pub fn pushed_from(mut self, before: &str) -> RepoFiles {
        self.before = Some(before.to_string()).filter(|b| !b.bytes().all(|c| c == b'0'));
        self
    }

    fn git(&self, args: &[&str]) -> Result<std::process::Output, String> {
        std::process::Command::new("git")
            .arg("-C")
            .arg(&self.dir)
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(unreadable)
    }
}

/// What a client hears when git cannot run here (the cause is logged).
fn unreadable(e: std::io::Error) -> String {
    tracing::error!(error = %e, "running git");
    "The repository could not be read".to_string()
}

/// What `compare_to` that names nothing gets (`Clause::Changes`).
pub const COMPARE_TO_INVALID: &str = "rules:changes:compare_to is not a valid ref";

/// The paths `git diff --name-only` lists in the repository at `dir` between
/// `revisions` (two commits, or one `a...b` range); `None` when git refuses them (a
/// revision that names nothing); an error when git cannot run.
pub fn diff_names(dir: &Path, revisions: &[&str]) -> std::io::Result<Option<Vec<String>>> {
    let diff = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["diff", "--name-only", "-z", "--end-of-options"])
        .args(revisions)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .output()?;
    Ok(diff.status.success().then(|| nul_separated(&diff.stdout)))
}

/// The paths git printed with `-z`.
fn nul_separated(out: &[u8]) -> Vec<String> {
    out.split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect()
}

impl crate::ci::include::FileSource for RepoFiles {
    fn read(&self, path: &str) -> Result<Option<String>, String> {
        let object = format!("{}:{path}", self.sha);
        let size = self.git(&["cat-file", "-s", &object])?;
        if !size.status.success() {
            return Ok(None);
        }
        let size: usize = String::from_utf8_lossy(&size.stdout)
            .trim()
            .parse()
            .unwrap_or(usize::MAX);
        if size > crate::ci::load::MAX_YAML_BYTES {
            return Err(crate::ci::load::TOO_BIG.into());
        }
        let shown = self.git(&["cat-file", "blob", &object])?;
        Ok(shown
            .status
            .success()
            .then(|| String::from_utf8_lossy(&shown.stdout).into_owned()))
    }

    /// `git diff` of the push's two heads (`Gitlab::Git::Push#modified_paths`).
    fn pushed_changes(&self) -> Result<Option<Vec<String>>, String> {
        let Some(before) = &self.before else {
            return Ok(None);
        };
        diff_names(&self.dir, &[before, &self.sha]).map_err(unreadable)
    }

    fn last_commit(&self, path: &str) -> Result<Option<String>, String> {
        let log = self.git(&["log", "-1", "--format=%H", &self.sha, "--", path])?;
        let sha = String::from_utf8_lossy(&log.stdout).trim().to_string();
        Ok((log.status.success() && !sha.is_empty()).then_some(sha))
    }

    fn changed_since(&self, base: &str) -> Result<Option<Vec<String>>, String> {
        let range = format!("{base}...{}", self.sha);
        match diff_names(&self.dir, &[&range]).map_err(unreadable)? {
            None => Err(COMPARE_TO_INVALID.into()),
            changed => Ok(changed),
        }
    }

    fn paths(&self) -> Result<Vec<String>, String> {
        let listed = self.git(&[
            "ls-tree",
            "-r",
            "-z",
            "--name-only",
            "--end-of-options",
            &self.sha,
        ])?;
        if !listed.status.success() {
            return Err("The repository could not be read".into());
        }
        Ok(nul_separated(&listed.stdout))
    }
}

fn refused(message: impl Into<String>) -> ApiError {
    ApiError::Validation(json!({ "base": [message.into()] }))
}

#[derive(Debug, Clone)]
pub struct Repositories {
    mirrors: PathBuf,
    /// The URL schemes a repository may be read over (see [`check_url`]).
    allowed_schemes: Vec<String>,
}

/// Whether git may read `url` given the `allowed` schemes, or why not. The forms git
/// takes: `scheme://…` (the scheme listed), an absolute local path (`file` listed), or
/// scp-like `user@host:path` (`ssh` listed). Everything else is refused — a relative path,
/// `<transport>::<address>` (`ext::` runs a command), and anything starting with `-`,
/// which git would read as an option. GitLab likewise checks mirror URLs against its
/// `VALID_MIRROR_PROTOCOLS` ("Only allowed schemes are …").
pub fn check_url(url: &str, allowed: &[String]) -> Result<(), String> {
    let only = || {
        format!(
            "is blocked: Only allowed schemes are {}",
            allowed.join(", ")
        )
    };
    let listed = |scheme: &str| allowed.iter().any(|a| a == scheme);
    if url.is_empty() || url.starts_with('-') || url.chars().any(char::is_control) {
        return Err(only());
    }
    if url.starts_with('/') {
        return if listed("file") { Ok(()) } else { Err(only()) };
    }
    if let Some((scheme, _)) = url.split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        let plain = !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        return if plain && listed(&scheme) {
            Ok(())
        } else {
            Err(only())
        };
    }
    if url.contains("::") {
        return Err(only());
    }
    // scp-like: a colon before any slash, and a host before it.
    match (url.find(':'), url.find('/')) {
        (Some(colon), slash) if colon > 0 && slash.is_none_or(|s| colon < s) && listed("ssh") => {
            Ok(())
        }
        _ => Err(only()),
    }
}

impl Repositories {
    pub fn new(data_dir: &Path, allowed_schemes: Vec<String>) -> Repositories {
        Repositories {
            mirrors: data_dir.join("repositories"),
            allowed_schemes,
        }
    }

    /// Whether a project may have `url` as its repository (see [`check_url`]).
    pub fn check_url(&self, url: &str) -> Result<(), String> {
        check_url(url, &self.allowed_schemes)
    }

    /// The commit `ref_` (or `sha`) names in the project's repository — its sha, whether
    /// the ref is a tag, and its files — or `None` for a project without a repository.
    pub async fn commit(
        &self,
        project: &Project,
        ref_: &str,
        sha: Option<&str>,
    ) -> ApiResult<Option<(String, bool, RepoFiles)>> {
        if !self.has_repository(project) {
            return Ok(None);
        }
        self.resolve_commit(project, ref_, sha).await.map(Some)
    }

    /// Resolves `ref_` (or `sha`) in the project's repository and reads `.gitlab-ci.yml`
    /// there; 400 in GitLab's `{"message":{"base":[…]}}` shape when that fails.
    pub async fn read_config(
        &self,
        project: &Project,
        ref_: &str,
        sha: Option<&str>,
    ) -> ApiResult<Resolved> {
        let (sha, tag, files) = self.resolve_commit(project, ref_, sha).await?;
        // Read as `include:local` reads a file: sized first, past the loader's limit
        // refused before it is read into memory.
        let reader = files.clone();
        let read = tokio::task::spawn_blocking(move || {
            crate::ci::include::FileSource::read(&reader, ".gitlab-ci.yml")
        })
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
        let ci_config = match read {
            Ok(Some(text)) => text,
            Err(e) if e == crate::ci::load::TOO_BIG => return Err(refused(e)),
            Ok(None) | Err(_) => return Err(refused("Missing CI config file")),
        };
        Ok(Resolved {
            files,
            sha,
            tag,
            ci_config,
        })
    }

    /// The commit `ref_` (or `sha`) names in the project's repository (mirrored first
    /// when it is remote), whether the ref is a tag, and the commit's files.
    async fn resolve_commit(
        &self,
        project: &Project,
        ref_: &str,
        sha: Option<&str>,
    ) -> ApiResult<(String, bool, RepoFiles)> {
        let dir = match project.repository_url.as_deref().filter(|u| !u.is_empty()) {
            Some(url) => {
                // Checked again here: the list may have changed since the URL was stored.
                self.check_url(url)
                    .map_err(|e| refused(format!("Repository URL {e}")))?;
                // Every upstream is mirrored, a local path too: Runway serves the mirror
                // to the jobs (`git_http`) and keeps each pipeline's commit there
                // (`refs/pipelines/<id>`).
                self.mirror(project.id, url).await?
            }
            // A repository pushed to Runway (`git_http`).
            None if self.has_repository(project) => self.dir(project.id),
            None => {
                return Err(ApiError::bad_request(
                    "ci_config is missing and the project has no repository_url",
                ))
            }
        };
        let (sha, tag) = match sha {
            Some(sha) => (
                resolve(&dir, sha)
                    .await
                    .ok_or_else(|| refused("Commit not found"))?,
                false,
            ),
            None => match resolve(&dir, &format!("refs/heads/{ref_}")).await {
                Some(sha) => (sha, false),
                None => match resolve(&dir, &format!("refs/tags/{ref_}")).await {
                    Some(sha) => (sha, true),
                    None => return Err(refused("Reference not found")),
                },
            },
        };
        let files = RepoFiles {
            dir,
            sha: sha.clone(),
            before: None,
        };
        Ok((sha, tag, files))
    }

    /// The repository Runway serves for the project over HTTP (`git_http`): its mirror of
    /// the `repository_url` (mirrored now if it never was); `None` for a project without
    /// a repository, or one whose URL is no longer allowed.
    pub async fn served_dir(&self, project: &Project) -> Option<PathBuf> {
        let Some(url) = project.repository_url.as_deref().filter(|u| !u.is_empty()) else {
            return self.has_repository(project).then(|| self.dir(project.id));
        };
        self.check_url(url).ok()?;
        let dir = self.dir(project.id);
        if dir.join("HEAD").exists() {
            return Some(dir);
        }
        self.mirror(project.id, url).await.ok()
    }

    /// Fetches the project's upstream into its mirror and lists the mirror's branch and
    /// tag heads: `(refs/heads/…, sha)`; 400 for a project without an upstream.
    pub async fn fetch_heads(&self, project: &Project) -> ApiResult<Vec<(String, String)>> {
        let url = project
            .repository_url
            .as_deref()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| ApiError::bad_request("The project is not mirrored"))?;
        self.check_url(url)
            .map_err(|e| refused(format!("Repository URL {e}")))?;
        let dir = self.mirror(project.id, url).await?;
        let listed = git(
            &dir,
            &[
                "for-each-ref",
                // A tag's commit, for annotated tags too.
                "--format=%(refname) %(objectname) %(*objectname)",
                "refs/heads",
                "refs/tags",
            ],
        )
        .await?;
        Ok(listed
            .lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                let (name, object) = (parts.next()?, parts.next()?);
                let commit = parts.next().unwrap_or(object);
                Some((name.to_string(), commit.to_string()))
            })
            .collect())
    }

    /// The message of commit `sha` in the project's repository (empty if git cannot
    /// read it).
    pub async fn commit_message(&self, project_id: i64, sha: &str) -> String {
        let dir = self.dir(project_id);
        git(&dir, &["log", "-1", "--format=%B", "--end-of-options", sha])
            .await
            .unwrap_or_default()
    }

    /// Keeps the pipeline's commit in the project's mirror as `refs/pipelines/<id>`
    /// (GitLab's persistent ref): a job of an older pipeline still fetches its own commit
    /// after its branch moved on. The mirror's fetches leave `refs/pipelines/` alone.
    pub async fn keep_pipeline_ref(
        &self,
        project: &Project,
        pipeline_id: i64,
        sha: &str,
    ) -> ApiResult<()> {
        if !self.has_repository(project) {
            return Ok(());
        }
        let dir = self.dir(project.id);
        let name = format!("refs/pipelines/{pipeline_id}");
        git(&dir, &["update-ref", &name, sha]).await.map(|_| ())
    }

    /// The pipelines that have a `refs/pipelines/<id>` in the project's repository.
    pub async fn pipeline_refs(&self, project_id: i64) -> ApiResult<Vec<i64>> {
        let dir = self.dir(project_id);
        if !dir.join("HEAD").exists() {
            return Ok(Vec::new());
        }
        let out = git(
            &dir,
            &["for-each-ref", "--format=%(refname)", "refs/pipelines/"],
        )
        .await?;
        Ok(out
            .lines()
            .filter_map(|r| r.strip_prefix("refs/pipelines/")?.parse().ok())
            .collect())
    }

    /// Deletes the pipelines' `refs/pipelines/<id>`, in one transaction of git's.
    pub async fn delete_pipeline_refs(&self, project_id: i64, pipelines: &[i64]) -> ApiResult<()> {
        if pipelines.is_empty() {
            return Ok(());
        }
        let commands: String = pipelines
            .iter()
            .map(|id| format!("delete refs/pipelines/{id}\n"))
            .collect();
        git_with_input(
            &self.dir(project_id),
            &["update-ref", "--stdin"],
            Some(commands),
        )
        .await
        .map(|_| ())
    }

    /// The lock that orders pruning `refs/pipelines/` against writing a ref back for a
    /// pipeline that runs again (`<id>.refs.lock`, apart from the fetches' lock so that a
    /// long fetch holds up neither).
    pub async fn lock_pipeline_refs(&self, project_id: i64) -> ApiResult<std::fs::File> {
        self.lock_file(format!("{project_id}.refs.lock")).await
    }

    /// The project's repository on this machine: the mirror of its upstream, or the
    /// repository pushed to Runway.
    pub fn dir(&self, project_id: i64) -> PathBuf {
        self.mirrors.join(format!("{project_id}.git"))
    }

    /// Whether the project has a repository: an upstream, or one pushed to Runway.
    pub fn has_repository(&self, project: &Project) -> bool {
        project
            .repository_url
            .as_deref()
            .is_some_and(|u| !u.is_empty())
            || self.dir(project.id).join("HEAD").exists()
    }

    /// The bare repository a push to a project without an upstream goes into, created
    /// empty on the first push.
    pub async fn ensure_pushable(&self, project: &Project) -> ApiResult<PathBuf> {
        let dir = self.dir(project.id);
        if !dir.join("HEAD").exists() {
            let target = self.new_repository_path(&dir).await?;
            let branch = format!("--initial-branch={}", project.default_branch);
            git(
                &self.mirrors,
                &["init", "--bare", "--quiet", &branch, "--", &target],
            )
            .await?;
        }
        Ok(dir)
    }

    /// `dir` as git's argument, the folder that holds the repositories created.
    async fn new_repository_path(&self, dir: &Path) -> ApiResult<String> {
        tokio::fs::create_dir_all(&self.mirrors)
            .await
            .map_err(|e| {
                ApiError::Internal(anyhow::anyhow!("creating {}: {e}", self.mirrors.display()))
            })?;
        Ok(dir.display().to_string())
    }

    /// An exclusive lock on the project's repository (`<id>.lock` beside it), waited for
    /// off the async workers.
    async fn lock(&self, project_id: i64) -> ApiResult<std::fs::File> {
        self.lock_file(format!("{project_id}.lock")).await
    }

    /// An exclusive lock on `name` in the repositories' folder.
    async fn lock_file(&self, name: String) -> ApiResult<std::fs::File> {
        tokio::fs::create_dir_all(&self.mirrors)
            .await
            .map_err(|e| {
                ApiError::Internal(anyhow::anyhow!("creating {}: {e}", self.mirrors.display()))
            })?;
        let path = self.mirrors.join(name);
        tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            file.lock()?;
            Ok::<_, std::io::Error>(file)
        })
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("locking the repository: {e}")))
    }

    /// A mirror of a repository, cloned once and fetched on each use.
    async fn mirror(&self, project_id: i64, url: &str) -> ApiResult<PathBuf> {
        let dir = self.dir(project_id);
        // One fetch at a time per repository, across the instances sharing the data dir
        // (a file lock beside it; released when `_held` is dropped).
        let _held = self.lock(project_id).await?;
        let result = if dir.join("HEAD").exists() {
            git(&dir, &["remote", "set-url", "--", "origin", url]).await?;
            git(
                &dir,
                &[
                    "fetch",
                    "--prune",
                    "--quiet",
                    "origin",
                    "+refs/heads/*:refs/heads/*",
                    "+refs/tags/*:refs/tags/*",
                ],
            )
            .await
        } else {
            let target = self.new_repository_path(&dir).await?;
            git(
                &self.mirrors,
                &["clone", "--mirror", "--quiet", "--", url, &target],
            )
            .await
        };
        result.map_err(|_| refused(format!("Repository {url} could not be fetched")))?;
        Ok(dir)
    }
}

async fn resolve(dir: &Path, rev: &str) -> Option<String> {
    let out = git(
        dir,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &format!("{rev}^{{commit}}"),
        ],
    )
    .await
    .ok()?;
    let sha = out.trim().to_string();
    (sha.len() >= 40).then_some(sha)
}

/// Runs git in `dir`; its standard output, or an error (logged, never sent to clients).
async fn git(dir: &Path, args: &[&str]) -> ApiResult<String> {
    git_with_input(dir, args, None).await
}

/// Runs git in `dir` with `input` (if any) on its standard input; its standard output, or
/// an error (logged, never sent to clients).
async fn git_with_input(dir: &Path, args: &[&str], input: Option<String>) -> ApiResult<String> {
    use std::process::Stdio;
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        // Only the transports a repository URL may name, also for redirects and
        // submodules git follows on its own.
        .env("GIT_ALLOW_PROTOCOL", "file:git:http:https:ssh")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("running git: {e}")))?;
    let stdin = child.stdin.take();
    let run = async move {
        if let (Some(mut stdin), Some(input)) = (stdin, input) {
            stdin.write_all(input.as_bytes()).await?;
        }
        child.wait_with_output().await
    };
    let output = tokio::time::timeout(GIT_TIMEOUT, run)
        .await
        .map_err(|_| ApiError::Internal(anyhow::anyhow!("git {args:?} timed out")))?
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("running git: {e}")))?;
    if !output.status.success() {
        tracing::info!(?args, stderr = %String::from_utf8_lossy(&output.stderr).trim(), "git failed");
        return Err(ApiError::bad_request("git failed"));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::check_url;

    #[test]
    fn repository_urls_are_checked_against_the_schemes() {
        let all: Vec<String> = ["https", "http", "ssh", "git", "file"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for ok in [
            "/srv/repos/app.git",
            "file:///srv/repos/app.git",
            "https://example.com/group/app.git",
            "HTTP://example.com/app.git",
            "ssh://git@example.com/app.git",
            "git@example.com:group/app.git",
            "git://example.com/app.git",
        ] {
            assert_eq!(check_url(ok, &all), Ok(()), "{ok}");
        }
        for bad in [
            "--upload-pack=touch /tmp/pwned",
            "-u/bin/sh",
            "ext::sh -c touch% /tmp/pwned",
            "fd::17",
            "relative/path",
            "ftp://example.com/app.git",
            "https://example.com/app\n.git",
            "",
            ":nohost",
        ] {
            assert!(check_url(bad, &all).is_err(), "{bad}");
        }
        let https_only = vec!["https".to_string()];
        assert_eq!(
            check_url("/srv/app.git", &https_only),
            Err("is blocked: Only allowed schemes are https".to_string())
        );
        assert!(check_url("git@example.com:app.git", &https_only).is_err());
    }
}
