//! Environments and deployments, as GitLab keeps them: a job's `environment` makes the
//! environment the first time it is named (`Environments::CreateForJobService`); a job
//! that deploys (`action: start`) gets a deployment whose status follows the job's
//! (`Deployments::CreateForJobService`, `Deployment`'s state machine); a successful one
//! makes its environment available at its URL, to stop by itself after `auto_stop_in`
//! (`Deployments::UpdateEnvironmentService`). Stopping plays the `on_stop` job of the
//! environment's last successful deployment and the environment waits in `stopping`
//! until that job succeeds (`Environments::StopService`); without one, or forced, it
//! stops at once.

use crate::ci::config::JobSpec;
use crate::ci::environment::EnvironmentSpec;
use crate::db::enums::JobStatus;
use crate::db::models::environment::{Deployment, Environment, EnvironmentChanges};
use crate::db::models::{later, Job, Pipeline};
use crate::db::Conn;
use crate::error::ApiResult;

/// A job that deploys: an environment without another action.
fn deploys(env: &EnvironmentSpec) -> bool {
    env.action == "start"
}

/// Makes the environments `jobs` name and the deployments of those that deploy. Runs in
/// the transaction that creates the jobs.
pub async fn create_for_jobs(
    tx: &mut Conn<'_>,
    pipeline: &Pipeline,
    jobs: &[(Job, JobSpec)],
    at: chrono::NaiveDateTime,
) -> ApiResult<()> {
    for (job, spec) in jobs {
        let Some(env) = &spec.environment else {
            continue;
        };
        let environment =
            Environment::find_or_create(tx, pipeline.project_id, &env.name, &env.tier, at).await?;
        if deploys(env) {
            Deployment::create(
                tx,
                pipeline.project_id,
                environment.id,
                job.id,
                &pipeline.ref_,
                pipeline.tag,
                &pipeline.sha,
                at,
            )
            .await?;
        }
    }
    Ok(())
}

/// A deployment's status for its job's.
fn deployment_status(job: JobStatus) -> &'static str {
    match job {
        JobStatus::Running | JobStatus::Canceling => "running",
        JobStatus::Success => "success",
        JobStatus::Failed => "failed",
        JobStatus::Canceled => "canceled",
        JobStatus::Skipped => "skipped",
        _ => "created",
    }
}

/// Brings the deployments of `jobs` (a pipeline's, with their environments) to their
/// jobs' statuses; a deployment that succeeds updates its environment. Runs in the
/// transaction that changed the jobs; a deployment already in step costs nothing more.
pub async fn follow_jobs(
    tx: &mut Conn<'_>,
    jobs: &[(i64, JobStatus, &EnvironmentSpec)],
    at: chrono::NaiveDateTime,
) -> ApiResult<()> {
    let ids: Vec<i64> = jobs
        .iter()
        .filter(|(_, _, env)| deploys(env))
        .map(|(id, _, _)| *id)
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    for deployment in Deployment::for_jobs(tx, &ids).await? {
        let Some((_, status, env)) = jobs.iter().find(|(id, _, _)| *id == deployment.job_id) else {
            continue;
        };
        let target = deployment_status(*status);
        if target == deployment.status {
            continue;
        }
        let finished = matches!(target, "success" | "failed" | "canceled" | "skipped");
        Deployment::set_status(tx, deployment.id, target, finished.then_some(at), at).await?;
        if target == "success" {
            let changes = EnvironmentChanges {
                external_url: env.url.clone().map(Some),
                state: Some("available".into()),
                auto_stop_at: Some(env.auto_stop_in.map(|s| {
                    later(
                        at,
                        chrono::TimeDelta::try_seconds(s).unwrap_or(chrono::TimeDelta::MAX),
                    )
                })),
                updated_at: Some(at),
                ..Default::default()
            };
            Environment::update(tx, deployment.environment_id, &changes).await?;
        }
    }
    Ok(())
}

/// A stop job (`action: stop`) succeeded: its environment is stopped.
pub async fn stop_job_succeeded(
    tx: &mut Conn<'_>,
    project_id: i64,
    env: &EnvironmentSpec,
    at: chrono::NaiveDateTime,
) -> ApiResult<()> {
    if env.action != "stop" {
        return Ok(());
    }
    if let Some(environment) = Environment::find_by_name(tx, project_id, &env.name).await? {
        Environment::transition(
            tx,
            environment.id,
            &["available", "stopping"],
            "stopped",
            at,
        )
        .await?;
    }
    Ok(())
}

/// The job that stops `environment`: the `on_stop` job of its last successful
/// deployment's pipeline (its latest try), if it can still be played.
pub async fn stop_action(tx: &mut Conn<'_>, environment: &Environment) -> ApiResult<Option<Job>> {
    let Some(deployment) = Deployment::last_of(tx, environment.id, true).await? else {
        return Ok(None);
    };
    let Some(deployer) = Job::find(tx, deployment.job_id).await? else {
        return Ok(None);
    };
    let Some(on_stop) = deployer.spec().environment.and_then(|e| e.on_stop) else {
        return Ok(None);
    };
    let stop = Job::for_pipeline(tx, deployer.pipeline_id)
        .await?
        .into_iter()
        .filter(|j| j.name == on_stop && !j.retried)
        .max_by_key(|j| j.id);
    Ok(stop.filter(|j| matches!(j.status, JobStatus::Manual | JobStatus::Scheduled)))
}
