//! The corpus (`tests/ci-corpus/<name>/`): `.gitlab-ci.yml` files written for Runway in the
//! styles real projects use, each with the files it includes. Each is committed to a
//! repository of its own and run as a pipeline on `main` through the admin API, on both
//! backends; its jobs and bridges (stage, status, when, allow_failure, tags, environment, needs, the
//! variables the file gives the job) are compared with a snapshot reviewed by
//! hand against GitLab's documented semantics (`tests/api/snapshots/api__corpus__*.snap`).
//! CI Lint must find each valid. A file that uses what Runway refuses by name (part-2
//! keywords, templates, `secrets`) or that GitLab refuses too is expected to be refused:
//! its snapshot is the refusal.

use std::path::{Path, PathBuf};

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::e2e::git;
use crate::helpers::{both_backends, TestApp};

/// The corpus's folders, by name.
pub fn corpus() -> Vec<(String, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ci-corpus");
    let mut dirs: Vec<(String, PathBuf)> = std::fs::read_dir(&root)
        .expect("tests/ci-corpus")
        .flatten()
        .filter(|e| e.path().join(".gitlab-ci.yml").is_file())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    dirs.sort();
    dirs
}

/// Copies `from` into `to`, folders included.
fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

both_backends! {
    async fn every_corpus_file_runs_as_planned(backend) {
        let app = TestApp::spawn(backend).await;
        let files = corpus();
        assert!(files.len() >= 12, "the corpus: {files:?}");
        for (name, dir) in files {
            let repo = tempfile::tempdir().expect("tempdir");
            copy_tree(&dir, repo.path());
            git(repo.path(), &["init", "-q", "-b", "main"]);
            git(repo.path(), &["add", "."]);
            git(repo.path(), &["commit", "-q", "-m", &name]);
            let project = app.create_project(json!({ "name": name, "repository_url": repo.path().display().to_string() })).await;
            let reply = app.send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/pipeline")).json(&json!({ "ref": "main" }))).await;
            if reply.status == 400 {
                // A file that uses what Runway refuses by name (a part-2 keyword, a
                // template, `secrets`): the refusal is the expected plan, and CI Lint
                // gives the same words; nothing was created.
                let refusal = reply.json()["message"]["base"].clone();
                let lint = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/ci/lint"))).await.json();
                assert_eq!(lint["valid"], false, "{name}: {lint}");
                assert_eq!(lint["errors"], refusal, "{name}: the lint's errors are the pipeline's");
                let listed = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/pipelines"))).await.json();
                assert_eq!(listed, json!([]), "{name}: a refused file creates no pipeline");
                insta::assert_json_snapshot!(format!("corpus__{name}"), json!({ "refused": refusal }));
                continue;
            }
            assert_eq!(reply.status, 201, "{name}: {}", reply.text);
            let pipeline = reply.json();
            let id = pipeline["id"].as_i64().expect("id");
            let builds = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/pipelines/{id}/jobs?per_page=100"))).await.json();
            // Bridges (`trigger` jobs) are listed apart, as GitLab lists them.
            let bridges = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/pipelines/{id}/bridges?per_page=100"))).await.json();
            let jobs: Value = builds.as_array().expect("jobs").iter().chain(bridges.as_array().expect("bridges")).cloned().collect();
            // CI Lint (a push pipeline's view) finds the file valid too.
            let lint = app.send(app.admin(Method::GET, &format!("/api/v4/projects/{project}/ci/lint"))).await.json();
            assert_eq!(lint["valid"], true, "{name}: {lint}");
            let mut summaries = Vec::new();
            for j in jobs.as_array().expect("jobs") {
                // The variables the job gets from the file (global, its own, matrix, rules).
                let spec = app.runner_job(j["id"].as_i64().expect("job id")).await.spec();
                let variables: Vec<String> = spec.variables.iter().map(|v| format!("{}={}", v.key, v.value)).collect();
                summaries.push(json!({
                    "name": j["name"], "stage": j["stage"], "status": j["status"], "when": j["when"],
                    "allow_failure": j["allow_failure"], "tags": j["tag_list"],
                    "environment": j.get("environment").cloned().unwrap_or(Value::Null),
                    "needs": spec.needs.as_ref().map(|needs| needs.iter().map(|n| n.job.clone()).collect::<Vec<_>>()),
                    "variables": variables,
                }));
            }
            let mut jobs = summaries;
            jobs.sort_by_key(|j| j["name"].as_str().unwrap_or_default().to_string());
            let summary = json!({ "name": pipeline["name"], "status": pipeline["status"], "jobs": jobs });
            insta::assert_json_snapshot!(format!("corpus__{name}"), summary);
        }
    }
}
