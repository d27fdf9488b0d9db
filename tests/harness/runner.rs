//! The runner under test: the shell executor on the `gitlab-runner` crate
//! (tests/common/shell_runner.rs), driven one job at a time or polling in the background.

use std::path::Path;
use std::time::Duration;

use gitlab_runner::{GitlabLayer, Runner, RunnerBuilder};
use tracing::instrument::WithSubscriber;
use tracing_subscriber::prelude::*;

use crate::shell_runner::ShellJob;

/// A runner on the crate for the server at `url`, building in `builds`; the tracing
/// dispatcher that routes the crate's own messages into job logs.
pub async fn build(url: &str, token: &str, builds: &Path) -> (Runner, tracing::Dispatch) {
    let (layer, jobs) = GitlabLayer::new();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    let runner = RunnerBuilder::new(url.try_into().expect("server URL"), token, builds, jobs)
        .version("harness-test")
        .build()
        .with_subscriber(dispatch.clone())
        .await;
    (runner, dispatch)
}

/// Asks for one job; `Ok(true)` when one came (it runs in the background), the crate's
/// error as text otherwise.
pub async fn take_one(runner: &mut Runner) -> Result<bool, String> {
    runner
        .request_job(|job| async move { ShellJob::new(job).await })
        .await
        .map_err(|e| e.to_string())
}

/// A runner polling in the background (every 100 ms, up to 4 jobs at once) until dropped.
pub struct Background {
    task: tokio::task::JoinHandle<()>,
    _builds: tempfile::TempDir,
}

impl Drop for Background {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn spawn(url: &str, token: &str) -> Background {
    let builds = tempfile::tempdir().expect("build folder");
    let (mut runner, dispatch) = build(url, token, builds.path()).await;
    let task = tokio::spawn(
        async move {
            loop {
                runner.wait_for_space(4).await;
                if !matches!(take_one(&mut runner).await, Ok(true)) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        .with_subscriber(dispatch),
    );
    Background {
        task,
        _builds: builds,
    }
}

/// A runner driven by the test itself, one job at a time; its crate messages go to job
/// logs while the guard lives.
pub struct Inline {
    pub runner: Runner,
    _logs: tracing::dispatcher::DefaultGuard,
    _builds: tempfile::TempDir,
}

pub async fn inline(url: &str, token: &str) -> Inline {
    let builds = tempfile::tempdir().expect("build folder");
    let (runner, dispatch) = build(url, token, builds.path()).await;
    Inline {
        runner,
        _logs: tracing::dispatcher::set_default(&dispatch),
        _builds: builds,
    }
}
