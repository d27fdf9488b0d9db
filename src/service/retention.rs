//! Deleting pipelines with all they made: one at a time through
//! `DELETE /projects/:id/pipelines/:pipeline_id` (GitLab's `Ci::DestroyPipelineService`),
//! and automatic pipeline cleanup, the retention that keeps the database bounded: the
//! pipelines created longer ago than the project's `ci_delete_pipelines_in_seconds` (else
//! the instance's `RUNWAY_DELETE_PIPELINES_AFTER`) go on the reaper's passes (GitLab's
//! `Ci::DestroyOldPipelinesWorker`).
//!
//! A pipeline goes with its child pipelines, its jobs, their log chunks and log files,
//! their artifacts (rows and objects, archived logs among them), coverage, test reports
//! and deployments, and its `refs/pipelines/<id>`. CI minutes already counted stay counted.

use crate::db::models::{now, Pipeline, Project};
use crate::error::{ApiError, ApiResult};
use crate::transaction;
use crate::AppState;

/// Pipelines one transaction deletes (GitLab's worker takes 250 a run).
const BATCH: i64 = 250;

/// Batches one pass deletes per project at most (10,000 pipelines), so that a long
/// history is worked off over several passes, between which everything else runs.
const MAX_BATCHES_PER_PASS: usize = 40;

/// Deletes a pipeline, its child pipelines and all they made. One still running is
/// canceled first, as GitLab does: its runners' next calls find the jobs gone.
pub async fn delete_pipeline(state: &AppState, pipeline: &Pipeline) -> ApiResult<()> {
    if pipeline.finished_at.is_none() {
        state.pipelines.cancel_pipeline(pipeline.id).await?;
    }
    delete(state, pipeline.project_id, vec![pipeline.id]).await?;
    Ok(())
}

/// One pass of automatic cleanup over every project that keeps pipelines for a time:
/// deletes those created before it, oldest first, that have no job left to run (one
/// still running stays until it ends). Answers how many pipelines went.
pub async fn delete_old_pipelines(state: &AppState) -> ApiResult<usize> {
    let instance = state.settings.delete_pipelines_after;
    let projects = {
        let mut db = state.db.read().await?;
        Project::all(&mut db.conn()).await?
    };
    let mut deleted = 0;
    for project in projects {
        let Some(keep) = project.delete_pipelines_after(instance) else {
            continue;
        };
        let Ok(keep) = chrono::TimeDelta::from_std(keep) else {
            continue;
        };
        let before = now() - keep;
        for _ in 0..MAX_BATCHES_PER_PASS {
            let ids = {
                let mut db = state.db.read().await?;
                Pipeline::old_settled(&mut db.conn(), project.id, before, BATCH).await?
            };
            let full = ids.len() as i64 == BATCH;
            if !ids.is_empty() {
                deleted += delete(state, project.id, ids).await?;
            }
            if !full {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    Ok(deleted)
}

/// Deletes the project's pipelines `ids` and their descendants in one transaction, then
/// what they left outside the database. Answers how many pipelines went.
async fn delete(state: &AppState, project_id: i64, ids: Vec<i64>) -> ApiResult<usize> {
    let deleted = {
        let mut db = state.db.write().await?;
        transaction!(&mut db.conn(), |tx| {
            let all = Pipeline::with_descendants(tx, ids).await?;
            Ok::<_, ApiError>(Pipeline::delete_all(tx, &all).await?)
        })?
    };
    for job in &deleted.jobs {
        state.traces.forget(*job);
    }
    state
        .artifacts
        .remove_leftovers(&deleted.store_paths, deleted.jobs)
        .await;
    let repositories = &state.repositories;
    let _held = repositories.lock_pipeline_refs(project_id).await?;
    let refs = repositories.pipeline_refs(project_id).await?;
    let gone: Vec<i64> = refs
        .into_iter()
        .filter(|id| deleted.pipelines.contains(id))
        .collect();
    repositories.delete_pipeline_refs(project_id, &gone).await?;
    Ok(deleted.pipelines.len())
}
