//! Pipeline progression, GitLab's semantics, as pure functions over job states: which
//! `created` jobs become `pending`, `manual` or `skipped` once what they wait for is done,
//! and the pipeline's status from its jobs' (‹app/services/ci/process_build_service.rb›,
//! ‹app/models/concerns/ci/has_status.rb›).

use crate::ci::config::When;
use crate::db::enums::{JobStatus, PipelineStatus};

/// What progression needs to know of a job (the latest try of each name only).
#[derive(Debug, Clone)]
pub struct JobState {
    pub id: i64,
    pub name: String,
    pub stage_idx: i32,
    pub status: JobStatus,
    pub when: When,
    pub allow_failure: bool,
    /// `None`: waits for every earlier stage; `Some`: for these jobs only.
    pub needs: Option<Vec<String>>,
}

impl JobState {
    fn complete(&self) -> bool {
        self.status.is_complete()
    }

    /// Done as far as later jobs are concerned: complete, or a manual job others may pass.
    fn settled(&self) -> bool {
        self.complete() || (self.status == JobStatus::Manual && self.allow_failure)
    }
}

/// The combined result of the jobs a job waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prior {
    Success,
    Failed,
    Canceled,
    Skipped,
}

fn prior_of(jobs: &[&JobState]) -> Prior {
    let considered: Vec<&&JobState> = jobs
        .iter()
        .filter(|j| j.status != JobStatus::Manual)
        .collect();
    if considered
        .iter()
        .any(|j| j.status == JobStatus::Failed && !j.allow_failure)
    {
        Prior::Failed
    } else if considered.iter().any(|j| j.status == JobStatus::Canceled) {
        Prior::Canceled
    } else if !jobs.is_empty() && considered.iter().all(|j| j.status == JobStatus::Skipped) {
        // Only skipped (or passable manual) jobs before this one.
        Prior::Skipped
    } else {
        Prior::Success
    }
}

/// The status a `created` job moves to, or `None` while what it waits for is not done.
fn next_status(job: &JobState, all: &[JobState]) -> Option<JobStatus> {
    let prior: Vec<&JobState> = match &job.needs {
        Some(needs) => all.iter().filter(|o| needs.contains(&o.name)).collect(),
        None => all.iter().filter(|o| o.stage_idx < job.stage_idx).collect(),
    };
    if !prior.iter().all(|p| p.settled()) {
        return None;
    }
    let prior = prior_of(&prior);
    let runs = match job.when {
        When::OnSuccess | When::Manual | When::Delayed => {
            matches!(prior, Prior::Success | Prior::Skipped)
        }
        When::OnFailure => prior == Prior::Failed,
        When::Always => true,
    };
    Some(match (runs, job.when) {
        (false, _) => JobStatus::Skipped,
        (true, When::Manual) => JobStatus::Manual,
        // `Ci::Build`'s `schedule` event: a delayed job waits for its time.
        (true, When::Delayed) => JobStatus::Scheduled,
        (true, _) => JobStatus::Pending,
    })
}

/// Moves `created` jobs on until nothing changes; returns the changes (job id, status).
pub fn advance(jobs: &mut [JobState]) -> Vec<(i64, JobStatus)> {
    let mut changes: Vec<(i64, JobStatus)> = Vec::new();
    loop {
        let mut changed = false;
        for i in 0..jobs.len() {
            if jobs[i].status != JobStatus::Created {
                continue;
            }
            if let Some(status) = next_status(&jobs[i], jobs) {
                jobs[i].status = status;
                changes.retain(|(id, _)| *id != jobs[i].id);
                changes.push((jobs[i].id, status));
                changed = true;
            }
        }
        if !changed {
            return changes;
        }
    }
}

/// The pipeline's status from its latest jobs.
pub fn pipeline_status(jobs: &[JobState]) -> PipelineStatus {
    let any = |s: JobStatus| jobs.iter().any(|j| j.status == s);
    let started = jobs
        .iter()
        .any(|j| j.complete() || matches!(j.status, JobStatus::Running | JobStatus::Canceling));
    if jobs.is_empty() {
        PipelineStatus::Skipped
    } else if any(JobStatus::Canceling) && !any(JobStatus::Running) {
        PipelineStatus::Canceling
    } else if any(JobStatus::Running) || any(JobStatus::Canceling) {
        PipelineStatus::Running
    } else if any(JobStatus::Pending) || any(JobStatus::Preparing) {
        if started {
            PipelineStatus::Running
        } else {
            PipelineStatus::Pending
        }
    } else if any(JobStatus::WaitingForResource) {
        // `Ci::Status::Composite`: after running and pending, before manual.
        PipelineStatus::WaitingForResource
    } else if jobs
        .iter()
        .any(|j| j.status == JobStatus::Manual && !j.allow_failure)
    {
        PipelineStatus::Manual
    } else if any(JobStatus::Scheduled) {
        // `Ci::Status::Composite`: a scheduled job names the pipeline's status before
        // the jobs created after it.
        PipelineStatus::Scheduled
    } else if any(JobStatus::Created) {
        if started {
            PipelineStatus::Running
        } else {
            PipelineStatus::Created
        }
    } else if jobs
        .iter()
        .any(|j| j.status == JobStatus::Failed && !j.allow_failure)
    {
        PipelineStatus::Failed
    } else if any(JobStatus::Canceled) {
        PipelineStatus::Canceled
    } else if any(JobStatus::Success) || any(JobStatus::Failed) {
        PipelineStatus::Success
    } else if any(JobStatus::Manual) {
        PipelineStatus::Manual
    } else {
        PipelineStatus::Skipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: i64, name: &str, stage: i32, when: When) -> JobState {
        JobState {
            id,
            name: name.into(),
            stage_idx: stage,
            status: JobStatus::Created,
            when,
            allow_failure: false,
            needs: None,
        }
    }

    fn statuses(jobs: &[JobState]) -> Vec<&'static str> {
        jobs.iter().map(|j| j.status.as_str()).collect()
    }

    #[test]
    fn stages_run_in_order_and_failures_skip_later_stages() {
        let mut jobs = vec![
            job(1, "build", 1, When::OnSuccess),
            job(2, "test", 2, When::OnSuccess),
            job(3, "cleanup", 3, When::Always),
            job(4, "report", 3, When::OnFailure),
        ];
        assert_eq!(advance(&mut jobs), vec![(1, JobStatus::Pending)]);
        assert_eq!(pipeline_status(&jobs), PipelineStatus::Pending);
        jobs[0].status = JobStatus::Running;
        assert_eq!(pipeline_status(&jobs), PipelineStatus::Running);
        jobs[0].status = JobStatus::Failed;
        advance(&mut jobs);
        // Stage 3 sees build failed (test skipped): `always` and `on_failure` both run.
        assert_eq!(
            statuses(&jobs),
            vec!["failed", "skipped", "pending", "pending"]
        );
    }

    #[test]
    fn on_failure_jobs_run_after_a_failure() {
        let mut jobs = vec![
            job(1, "build", 1, When::OnSuccess),
            job(2, "report", 2, When::OnFailure),
        ];
        advance(&mut jobs);
        jobs[0].status = JobStatus::Failed;
        advance(&mut jobs);
        assert_eq!(statuses(&jobs), vec!["failed", "pending"]);
        jobs[1].status = JobStatus::Success;
        assert_eq!(pipeline_status(&jobs), PipelineStatus::Failed);
    }

    #[test]
    fn needs_start_before_their_stage_and_allow_failure_passes() {
        let mut jobs = vec![
            job(1, "a", 1, When::OnSuccess),
            job(2, "b", 1, When::OnSuccess),
            JobState {
                needs: Some(vec!["a".into()]),
                ..job(3, "c", 2, When::OnSuccess)
            },
            JobState {
                needs: Some(vec![]),
                ..job(4, "d", 2, When::OnSuccess)
            },
        ];
        advance(&mut jobs);
        assert_eq!(
            statuses(&jobs),
            vec!["pending", "pending", "created", "pending"]
        );
        jobs[0].status = JobStatus::Failed;
        jobs[0].allow_failure = true;
        advance(&mut jobs);
        assert_eq!(
            statuses(&jobs),
            vec!["failed", "pending", "pending", "pending"]
        );
        for j in &mut jobs[1..] {
            j.status = JobStatus::Success;
        }
        assert_eq!(pipeline_status(&jobs), PipelineStatus::Success);
    }

    #[test]
    fn manual_jobs_wait_and_block_only_without_allow_failure() {
        let mut jobs = vec![
            JobState {
                allow_failure: true,
                ..job(1, "optional", 1, When::Manual)
            },
            job(2, "next", 2, When::OnSuccess),
        ];
        advance(&mut jobs);
        assert_eq!(statuses(&jobs), vec!["manual", "pending"]);
        let mut blocking = vec![
            job(1, "gate", 1, When::Manual),
            job(2, "next", 2, When::OnSuccess),
        ];
        advance(&mut blocking);
        assert_eq!(statuses(&blocking), vec!["manual", "created"]);
        assert_eq!(pipeline_status(&blocking), PipelineStatus::Manual);
    }
}
