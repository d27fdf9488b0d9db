//! Pipelines for new commits: pushed to Runway (`git_http`), or found in a project's
//! upstream by a mirror pull (`POST /projects/:id/mirror/pull`, and the poll every
//! `RUNWAY_MIRROR_INTERVAL`).

use crate::db::models::{MirrorHead, Project};
use crate::service::pipelines::{NewPipelineRequest, PipelineVariable, ZERO_SHA};
use crate::AppState;

/// One ref a push (or a pull) moved: `old` and `new` heads (zeros: none), its full name.
#[derive(Debug, Clone)]
pub struct Update {
    pub old: String,
    pub new: String,
    pub name: String,
}

/// GitLab's push pipelines (`Git::BranchPushService`, `Git::TagPushService`): one per
/// branch or tag created or moved — none for a deleted one, none when the head commit's
/// message says `[skip ci]` or `[ci skip]`, none with the push option `ci.skip`;
/// `ci.variable="KEY=value"` options become the pipelines' variables. Source `push`,
/// `before_sha` the ref's old head, `changes` read from the push's diff. A commit
/// without `.gitlab-ci.yml` starts none; a configuration GitLab would refuse is recorded
/// as a failed pipeline with its `yaml_errors` (GitLab's `save_on_errors` for pushes),
/// unless rules filtered everything out. Answers how many were created.
pub async fn start(
    state: &AppState,
    project: &Project,
    updates: &[Update],
    options: &[String],
) -> usize {
    if options.iter().any(|o| o == "ci.skip") {
        return 0;
    }
    let variables: Vec<PipelineVariable> = options
        .iter()
        .filter_map(|o| o.strip_prefix("ci.variable="))
        .filter_map(|kv| kv.split_once('='))
        .map(|(key, value)| PipelineVariable {
            key: key.to_string(),
            value: value.to_string(),
        })
        .collect();
    let mut started = 0;
    for update in updates {
        let is_zero = |sha: &str| sha.bytes().all(|b| b == b'0');
        if is_zero(&update.new) {
            continue;
        }
        let (ref_, tag) = if let Some(branch) = update.name.strip_prefix("refs/heads/") {
            (branch.to_string(), false)
        } else if let Some(tag) = update.name.strip_prefix("refs/tags/") {
            (tag.to_string(), true)
        } else {
            continue;
        };
        let message = state
            .repositories
            .commit_message(project.id, &update.new)
            .await
            .to_lowercase();
        if message.contains("[skip ci]") || message.contains("[ci skip]") {
            continue;
        }
        let resolved = match state
            .repositories
            .read_config(project, &ref_, Some(&update.new))
            .await
        {
            Ok(resolved) => resolved,
            Err(e) => {
                tracing::info!(project_id = project.id, %ref_, error = %e, "no push pipeline");
                continue;
            }
        };
        let before = if is_zero(&update.old) {
            ZERO_SHA.to_string()
        } else {
            update.old.clone()
        };
        let request = NewPipelineRequest {
            ref_: ref_.clone(),
            sha: resolved.sha,
            tag,
            variables: variables.clone(),
            ci_config: resolved.ci_config,
            source: "push".into(),
            files: Some(resolved.files.pushed_from(&before)),
            inputs: None,
            before_sha: before,
            save_on_errors: true,
            schedule_id: None,
            parent_bridge_id: None,
        };
        match state.pipelines.create(project, request).await {
            Ok(_) => started += 1,
            Err(e) => {
                tracing::info!(project_id = project.id, %ref_, error = %e, "the push pipeline was refused")
            }
        }
    }
    started
}

/// A mirror pull: the upstream fetched, and a pipeline for each branch or tag head it
/// moved since the last pull ([`start`], as for a push). Each head is claimed by moving
/// its `mirror_heads` row first, so that instances pulling at once start it once. The
/// first pull only records the heads (GitLab starts none for an import). Answers how many
/// pipelines started.
pub async fn pull(state: &AppState, project: &Project) -> crate::error::ApiResult<usize> {
    let heads = state.repositories.fetch_heads(project).await?;
    let recorded = {
        let mut db = state.db.read().await?;
        MirrorHead::for_project(&mut db.conn(), project.id).await?
    };
    let first = recorded.is_empty();
    let recorded: std::collections::HashMap<String, String> = recorded.into_iter().collect();
    let mut updates = Vec::new();
    {
        let mut db = state.db.write().await?;
        let mut conn = db.conn();
        for (name, sha) in &heads {
            let old = recorded.get(name);
            if old == Some(sha) {
                continue;
            }
            if MirrorHead::advance(&mut conn, project.id, name, old.map(String::as_str), sha)
                .await?
                && !first
            {
                updates.push(Update {
                    old: old.cloned().unwrap_or_else(|| ZERO_SHA.to_string()),
                    new: sha.clone(),
                    name: name.clone(),
                });
            }
        }
        for name in recorded.keys() {
            if !heads.iter().any(|(head, _)| head == name) {
                MirrorHead::forget(&mut conn, project.id, name).await?;
            }
        }
    }
    Ok(start(state, project, &updates, &[]).await)
}
