//! Rows and every query on them, as associated functions taking a connection of either
//! backend (`C: AsyncConnection<Backend = …>` through [`crate::db_run!`]).

pub mod artifact;
pub mod ci_minutes;
pub mod ci_variable;
pub mod environment;
pub mod feature_flag;
pub mod job;
pub mod mirror_head;
pub mod pipeline;
pub mod project;
pub mod release;
pub mod resource_group;
pub mod runner;
pub mod runner_manager;
pub mod schedule;
pub mod setting;
pub mod signing_key;
pub mod trace;
pub mod trigger;
pub mod ui_session;

pub use artifact::{job_by_token_digest, AuditEvent, JobArtifact, NewJobArtifact, TestReportRow};
pub use ci_minutes::CiMinutesUsage;
pub use ci_variable::{CiVariable, CiVariableFields};
pub use feature_flag::FeatureFlag;
pub use job::{Assignee, Candidate, Job, JobChanges, JobCoverage, NewJob};
pub use mirror_head::MirrorHead;
pub use pipeline::{NewPipeline, Pipeline};
pub use project::{NewProject, Project};
pub use runner::{NewRunner, Runner, RunnerChanges, RunnerFilter};
pub use runner_manager::{ManagerHeartbeat, RunnerManager};
pub use schedule::{PipelineSchedule, ScheduleFields};
pub use setting::InstanceSetting;
pub use trace::{Appended, StoredChunk, TraceChunk};
pub use trigger::PipelineTrigger;
pub use ui_session::UiSessionRow;

/// Current time as stored: UTC, microsecond precision (what both backends keep), so that a
/// value read back compares equal to the value written.
pub fn now() -> chrono::NaiveDateTime {
    let now = chrono::Utc::now().naive_utc();
    chrono::DurationRound::duration_trunc(now, chrono::TimeDelta::microseconds(1)).unwrap_or(now)
}

/// `interval` after `t`, or the end of time if that is past what a timestamp holds.
pub fn later(t: chrono::NaiveDateTime, interval: chrono::Duration) -> chrono::NaiveDateTime {
    t.checked_add_signed(interval)
        .unwrap_or(chrono::NaiveDateTime::MAX)
}
