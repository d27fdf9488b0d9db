//! Rows and every query on them, as associated functions taking a connection of either
//! backend (`C: AsyncConnection<Backend = …>` through [`crate::db_run!`]).

/// A condition of fixed text, written with literals where a bound value would hide from
/// PostgreSQL's generic plan what the condition selects (a partial index it proves, or
/// which values an `IN` list holds). Unlike `diesel::dsl::sql`, a type of its own with a
/// static query id, so the statement stays in the connection's prepared-statement cache:
/// each condition is its own type, never one type for several texts.
macro_rules! literal_condition {
    (@condition $(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, diesel::query_builder::QueryId)]
        pub(crate) struct $name;

        impl diesel::Expression for $name {
            type SqlType = diesel::sql_types::Bool;
        }

        impl<QS> diesel::AppearsOnTable<QS> for $name {}

        impl diesel::expression::ValidGrouping<()> for $name {
            type IsAggregate = diesel::expression::is_aggregate::Never;
        }
    };
    (@fragment $name:ident, $db:ty, $sql:literal) => {
        impl diesel::query_builder::QueryFragment<$db> for $name {
            fn walk_ast<'b>(
                &'b self,
                mut out: diesel::query_builder::AstPass<'_, 'b, $db>,
            ) -> diesel::QueryResult<()> {
                out.push_sql($sql);
                Ok(())
            }
        }
    };
    ($(#[$doc:meta])* $name:ident, $sql:literal) => {
        literal_condition!(@condition $(#[$doc])* $name);

        impl<DB: diesel::backend::Backend> diesel::query_builder::QueryFragment<DB> for $name {
            fn walk_ast<'b>(
                &'b self,
                mut out: diesel::query_builder::AstPass<'_, 'b, DB>,
            ) -> diesel::QueryResult<()> {
                out.push_sql($sql);
                Ok(())
            }
        }
    };
    // One text for each backend, where their planners need different forms.
    ($(#[$doc:meta])* $name:ident, postgres: $pg:literal, sqlite: $sqlite:literal) => {
        literal_condition!(@condition $(#[$doc])* $name);
        literal_condition!(@fragment $name, diesel::pg::Pg, $pg);
        literal_condition!(@fragment $name, diesel::sqlite::Sqlite, $sqlite);
    };
}

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
pub use job::{Assignee, Candidate, Executing, Job, JobChanges, JobCoverage, Locked, NewJob};
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
