//! Reading `.gitlab-ci.yml` from a project's repository at a ref, with the `git` command:
//! an absolute local path is read in place; a URL (`file://`, http, https, ssh, git) is
//! mirrored under the data dir and fetched again for each pipeline.

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
}

fn refused(message: impl Into<String>) -> ApiError {
    ApiError::Validation(json!({ "base": [message.into()] }))
}

pub struct Repositories {
    mirrors: PathBuf,
}

impl Repositories {
    pub fn new(data_dir: &Path) -> Repositories {
        Repositories {
            mirrors: data_dir.join("repositories"),
        }
    }

    /// Resolves `ref_` (or `sha`) in the project's repository and reads `.gitlab-ci.yml`
    /// there; 400 in GitLab's `{"message":{"base":[…]}}` shape when that fails.
    pub async fn read_config(
        &self,
        project: &Project,
        ref_: &str,
        sha: Option<&str>,
    ) -> ApiResult<Resolved> {
        let url = project
            .repository_url
            .as_deref()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                ApiError::bad_request("ci_config is missing and the project has no repository_url")
            })?;
        let dir = if url.starts_with('/') {
            PathBuf::from(url)
        } else {
            self.mirror(project.id, url).await?
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
        let ci_config = git(&dir, &["show", &format!("{sha}:.gitlab-ci.yml")])
            .await
            .map_err(|_| refused("Missing CI config file"))?;
        Ok(Resolved {
            sha,
            tag,
            ci_config,
        })
    }

    /// A mirror of a remote repository, cloned once and fetched on each use.
    async fn mirror(&self, project_id: i64, url: &str) -> ApiResult<PathBuf> {
        let dir = self.mirrors.join(format!("{project_id}.git"));
        let result = if dir.join("HEAD").exists() {
            git(&dir, &["remote", "set-url", "origin", url]).await?;
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
            tokio::fs::create_dir_all(&self.mirrors)
                .await
                .map_err(|e| {
                    ApiError::Internal(anyhow::anyhow!("creating {}: {e}", self.mirrors.display()))
                })?;
            let target = dir.display().to_string();
            git(
                &self.mirrors,
                &["clone", "--mirror", "--quiet", url, &target],
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
    let mut command = Command::new("git");
    command
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .kill_on_drop(true);
    let output = tokio::time::timeout(GIT_TIMEOUT, command.output())
        .await
        .map_err(|_| ApiError::Internal(anyhow::anyhow!("git {args:?} timed out")))?
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("running git: {e}")))?;
    if !output.status.success() {
        tracing::info!(?args, stderr = %String::from_utf8_lossy(&output.stderr).trim(), "git failed");
        return Err(ApiError::bad_request("git failed"));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
