//! A shell executor on the `gitlab-runner` crate (crates.io, pinned in Cargo.toml's
//! dev-dependencies), as its users write one: a `JobHandler` that runs each script line
//! with `sh`, streaming its output into the job log, unpacks the artifacts of the jobs it
//! depends on, and offers the files of its build folder for upload. Shared by the
//! integration tests (tests/api/crate_runner.rs) and the harness's (tests/harness.rs).

use std::borrow::Cow;
use std::io::Read;
use std::path::{Path, PathBuf};

use gitlab_runner::job::Job;
use gitlab_runner::{JobHandler, JobResult, Phase, UploadableFile};
use tokio::io::AsyncReadExt;

/// A file of the build folder, offered for upload under its path relative to that folder.
pub struct BuildFile {
    relative: String,
    path: PathBuf,
}

#[async_trait::async_trait]
impl UploadableFile for BuildFile {
    type Data<'a> = futures::io::Cursor<Vec<u8>>;

    fn get_path(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.relative)
    }

    async fn get_data(&self) -> Result<Self::Data<'_>, ()> {
        tokio::fs::read(&self.path)
            .await
            .map(futures::io::Cursor::new)
            .map_err(|_| ())
    }
}

/// The custom runner's job handler: `sh -c` for each line, in the job's build folder.
pub struct ShellJob {
    job: Job,
}

impl ShellJob {
    pub async fn new(job: Job) -> Result<Self, ()> {
        fetch_sources(&job).await?;
        // Unpack the artifacts of the jobs this one depends on, as the Go runner does.
        for dependency in job.dependencies() {
            // Three tries, as the Go runner's `ARTIFACT_DOWNLOAD_ATTEMPTS` allows: a busy
            // server may answer 503 for a moment.
            let mut tries = 0;
            let downloaded = loop {
                tries += 1;
                match dependency.download().await {
                    Ok(artifact) => break artifact,
                    Err(e) => {
                        job.trace(format!("download of {} failed: {e}\n", dependency.name()));
                        if tries == 3 {
                            return Err(());
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    }
                }
            };
            let Some(mut artifact) = downloaded else {
                continue;
            };
            let names: Vec<String> = artifact.file_names().map(str::to_string).collect();
            for name in names {
                let mut file = artifact.file(&name).ok_or(())?;
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes).map_err(|_| ())?;
                let target = job.build_dir().join(&name);
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(|_| ())?;
                }
                std::fs::write(&target, bytes).map_err(|_| ())?;
            }
            job.trace(format!("unpacked the artifacts of {}\n", dependency.name()));
        }
        Ok(ShellJob { job })
    }
}

/// The job's sources, as the Go runner's `fetch` strategy gets them: the commit's
/// persistent ref (`refs/pipelines/<id>`) fetched from `CI_REPOSITORY_URL`, which carries
/// the job's token, and checked out into the build folder. None with `GIT_STRATEGY: none`
/// (a pipeline without a repository).
async fn fetch_sources(job: &Job) -> Result<(), ()> {
    let value = |key: &str| job.variable(key).map(|v| v.value().to_string());
    if value("GIT_STRATEGY").as_deref() == Some("none") {
        return Ok(());
    }
    let (Some(url), Some(pipeline), Some(sha)) = (
        value("CI_REPOSITORY_URL"),
        value("CI_PIPELINE_ID"),
        value("CI_COMMIT_SHA"),
    ) else {
        return Ok(());
    };
    let refspec = format!("+refs/pipelines/{pipeline}:refs/pipelines/{pipeline}");
    let dir = job.build_dir();
    let steps: [&[&str]; 3] = [
        &["init", "-q"],
        &["fetch", "-q", "--depth", "20", &url, &refspec],
        &["checkout", "-q", "-f", &sha],
    ];
    for args in steps {
        let out = tokio::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .await
            .map_err(|_| ())?;
        if !out.status.success() {
            // git prints the URL without its password.
            job.trace(format!(
                "git {} failed: {}\n",
                args[0],
                String::from_utf8_lossy(&out.stderr)
            ));
            return Err(());
        }
    }
    job.trace(format!("fetched {sha} from the server\n"));
    Ok(())
}

#[async_trait::async_trait]
impl JobHandler<BuildFile> for ShellJob {
    async fn step(&mut self, script: &[String], _phase: Phase) -> JobResult {
        for line in script {
            self.job.trace(format!("$ {line}\n"));
            // Output goes to the log as it comes, so that the server's answers (and a
            // cancel) arrive while the command runs.
            let mut child = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(format!("exec 2>&1\n{line}"))
                .current_dir(self.job.build_dir())
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|_| ())?;
            let mut stdout = child.stdout.take().ok_or(())?;
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                let n = stdout.read(&mut buffer).await.map_err(|_| ())?;
                if n == 0 {
                    break;
                }
                self.job.trace(&buffer[..n]);
            }
            let status = child.wait().await.map_err(|_| ())?;
            if !status.success() {
                self.job
                    .trace(format!("exit status {}\n", status.code().unwrap_or(-1)));
                return Err(());
            }
        }
        Ok(())
    }

    async fn get_uploadable_files(
        &mut self,
    ) -> Result<Box<dyn Iterator<Item = BuildFile> + Send>, ()> {
        let root = self.job.build_dir().to_path_buf();
        let mut files = Vec::new();
        collect_files(&root, &root, &mut files);
        Ok(Box::new(files.into_iter()))
    }
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<BuildFile>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(root, &path, out);
        } else if let Ok(relative) = path.strip_prefix(root) {
            out.push(BuildFile {
                relative: relative.to_string_lossy().into_owned(),
                path,
            });
        }
    }
}
