//! Resource groups (`resource_group:`): a job that needs its project's group waits in
//! `waiting_for_resource` until the group's one resource is assigned to it, then is
//! queued (`Ci::Processable`'s `enqueue` event goes to `waiting_for_resource` when the job
//! has a group; ‹app/services/ci/resource_groups/assign_resource_from_resource_group_service.rb›
//! assigns it). The resource is free when nobody holds it or its holder is complete
//! (GitLab releases it when the holder completes, and its `release_resource_from_stale_jobs`
//! covers a holder that completed without doing so).
//!
//! Assignment runs in its own transaction, after the change that freed a resource or queued
//! a job for it has committed (and each second for all groups with waiting jobs, so a crash
//! between the two loses nothing): it locks the group's row before the next job's, and no
//! other transaction takes them in the other order. The hand-over is a compare-and-set on
//! the holder, so across instances the resource goes to one job.

use crate::db::enums::JobStatus;
use crate::db::models::resource_group::{GroupJob, ResourceGroup};
use crate::db::models::{now, Job, JobChanges};
use crate::db::{Conn, DbPool};
use crate::error::ApiResult;
use crate::transaction;

/// The status a job moves to when it is queued: pending, or waiting for its resource.
pub fn enqueued(job_resource_group: Option<i64>) -> JobStatus {
    if job_resource_group.is_some() {
        JobStatus::WaitingForResource
    } else {
        JobStatus::Pending
    }
}

/// Statuses of the jobs `oldest_first` and `newest_first` consider, waiting or not yet:
/// GitLab's `waiting_for_resource_or_upcoming`.
const UPCOMING: &[JobStatus] = &[
    JobStatus::Created,
    JobStatus::Scheduled,
    JobStatus::WaitingForResource,
];

/// The group's jobs in the order its process mode gives them the resource
/// (`Ci::ResourceGroup#upcoming_processables`): `unordered` the waiting jobs (here the
/// oldest first), `oldest_first` and `newest_first` the waiting and the upcoming jobs by
/// pipeline, `newest_ready_first` the waiting jobs of the newest pipeline first. Within a
/// pipeline, waiting jobs first, then the lower job id.
async fn in_order(tx: &mut Conn<'_>, group: &ResourceGroup) -> ApiResult<Vec<GroupJob>> {
    let waiting = [JobStatus::WaitingForResource];
    let (statuses, newest): (&[JobStatus], bool) = match group.process_mode.as_str() {
        "oldest_first" => (UPCOMING, false),
        "newest_first" => (UPCOMING, true),
        "newest_ready_first" => (&waiting, true),
        _ => (&waiting, false),
    };
    let mut jobs = ResourceGroup::jobs_in(tx, group.id, statuses).await?;
    let waits = |j: &GroupJob| j.status != JobStatus::WaitingForResource;
    if newest {
        jobs.sort_by_key(|j| (std::cmp::Reverse(j.pipeline_id), waits(j), j.id));
    } else {
        jobs.sort_by_key(|j| (j.pipeline_id, waits(j), j.id));
    }
    Ok(jobs)
}

/// The ids of the jobs the group's resource goes to, in order (GitLab's `upcoming_jobs`).
pub async fn upcoming(conn: &mut Conn<'_>, group: &ResourceGroup) -> ApiResult<Vec<i64>> {
    Ok(in_order(conn, group)
        .await?
        .into_iter()
        .map(|j| j.id)
        .collect())
}

/// The job the group's free resource goes to next: the first in order, if it waits (an
/// upcoming job of an older pipeline holds the others back under `oldest_first`).
async fn next_job(tx: &mut Conn<'_>, group: &ResourceGroup) -> ApiResult<Option<GroupJob>> {
    Ok(in_order(tx, group)
        .await?
        .into_iter()
        .next()
        .filter(|j| j.status == JobStatus::WaitingForResource))
}

/// Assigns each of `groups`' free resource to its next job, which is queued; answers
/// whether a job became pending (held polls are to be woken).
pub async fn assign(db: &DbPool, groups: &[i64]) -> ApiResult<bool> {
    let mut became_pending = false;
    for &id in groups {
        let mut db = db.write().await?;
        became_pending |= transaction!(&mut db.conn(), |tx| assign_one(tx, id).await)?;
    }
    Ok(became_pending)
}

async fn assign_one(tx: &mut Conn<'_>, id: i64) -> ApiResult<bool> {
    let Some(group) = ResourceGroup::find(tx, id).await? else {
        return Ok(false);
    };
    if let Some(holder) = group.holder_job_id {
        let held = Job::find(tx, holder)
            .await?
            .is_some_and(|j| !j.status.is_complete());
        if held {
            return Ok(false);
        }
    }
    let Some(next) = next_job(tx, &group).await? else {
        return Ok(false);
    };
    let at = now();
    if !ResourceGroup::hand_over(tx, group.id, group.holder_job_id, next.id, at).await? {
        return Ok(false); // another instance assigned it meanwhile
    }
    let changes = JobChanges {
        status: Some(JobStatus::Pending),
        queued_at: Some(Some(at)),
        updated_at: Some(at),
        ..Default::default()
    };
    if !Job::transition(tx, next.id, &[JobStatus::WaitingForResource], &changes).await? {
        // Canceled meanwhile: its holder is then complete, so the resource stays free.
        return Ok(false);
    }
    // The job's pipeline records its status; a job queued does not free any group.
    let _ = super::pipelines::process(tx, next.pipeline_id).await?;
    Ok(true)
}

/// Every group with waiting jobs, assigned where free: the per-second safety net.
pub async fn assign_all(db: &DbPool) -> ApiResult<bool> {
    let groups = {
        let mut db = db.read().await?;
        ResourceGroup::with_waiting_jobs(&mut db.conn()).await?
    };
    assign(db, &groups).await
}
