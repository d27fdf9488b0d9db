//! What the end-to-end tests with real runners share: a git repository with one branch per
//! pipeline, and reading pipelines, jobs and logs through the admin API.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use super::TestApp;

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository whose branch `name` carries `yaml` as its `.gitlab-ci.yml`.
pub fn commit_branch(repo: &Path, name: &str, yaml: &str) {
    if !repo.join(".git").exists() {
        git(repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("README"), "runway e2e\n").expect("write");
        git(repo, &["add", "."]);
        git(repo, &["commit", "-q", "-m", "init"]);
    }
    git(repo, &["checkout", "-q", "-B", name, "main"]);
    std::fs::write(repo.join(".gitlab-ci.yml"), yaml).expect("write");
    git(repo, &["add", "."]);
    git(repo, &["commit", "-q", "-m", name]);
}

pub async fn create_pipeline(app: &TestApp, project: i64, ref_: &str) -> i64 {
    let reply = app
        .send(
            app.admin(
                Method::POST,
                &format!("/api/v4/projects/{project}/pipeline"),
            )
            .json(&json!({ "ref": ref_ })),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.json()["id"].as_i64().expect("id")
}

/// Waits (bounded) until the pipeline is finished; returns its status. `log` gives the
/// runner's own log for the failure message.
pub async fn finished_pipeline(
    app: &TestApp,
    project: i64,
    pipeline: i64,
    log: impl Fn() -> String,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let status = app.pipeline_status(project, pipeline).await;
        if ["success", "failed", "canceled", "skipped"].contains(&status.as_str()) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "pipeline {pipeline} still {status} after 3 minutes; jobs {:?}; runner log:\n{}",
            app.job_statuses(project, pipeline).await,
            log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The pipeline's jobs as the admin API shows them, by name.
pub async fn pipeline_jobs(app: &TestApp, project: i64, pipeline: i64) -> Vec<Value> {
    let reply = app
        .send(app.admin(
            Method::GET,
            &format!("/api/v4/projects/{project}/pipelines/{pipeline}/jobs?per_page=100"),
        ))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let mut jobs = reply.json().as_array().expect("array").clone();
    jobs.sort_by_key(|j| j["name"].as_str().unwrap_or("").to_string());
    jobs
}

pub fn job<'a>(jobs: &'a [Value], name: &str) -> &'a Value {
    jobs.iter()
        .find(|j| j["name"] == name)
        .unwrap_or_else(|| panic!("no job {name} in {jobs:?}"))
}

pub async fn trace(app: &TestApp, project: i64, job: &Value) -> String {
    let reply = app
        .send(app.admin(
            Method::GET,
            &format!("/api/v4/projects/{project}/jobs/{}/trace", job["id"]),
        ))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.text
}

/// `(name, status)` of each job, in the order given.
pub fn names_and_statuses(jobs: &[Value]) -> Vec<(String, String)> {
    jobs.iter()
        .map(|j| {
            (
                j["name"].as_str().unwrap_or("").into(),
                j["status"].as_str().unwrap_or("").into(),
            )
        })
        .collect()
}
