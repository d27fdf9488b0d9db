//! Pipeline schedules (GitLab's `Ci::PipelineSchedule` and its worker): a cron in a time
//! zone starts a pipeline on a ref with the schedule's variables, source `schedule`. The
//! poll runs every second on each instance; a due schedule's `next_run_at` is moved to
//! its next time before its pipeline starts, by the one instance whose update finds the
//! time it read, so each due time runs once across instances. A time missed while no
//! instance ran (a restart) runs once when one starts again, as GitLab runs a late
//! schedule once, not once per missed time.

use std::str::FromStr;

use chrono::{NaiveDateTime, TimeZone};
use serde::{Deserialize, Serialize};

use crate::db::models::{now, Pipeline, PipelineSchedule, Project};
use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// A schedule's variable, as stored and as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScheduleVariable {
    pub key: String,
    pub value: String,
    pub variable_type: String,
}

/// The cron's next time strictly after `after` (UTC), read in `timezone`; `None` when the
/// cron or the zone does not parse, or the cron never fires.
pub fn next_run(cron: &str, timezone: &str, after: NaiveDateTime) -> Option<NaiveDateTime> {
    let zone = chrono_tz::Tz::from_str(timezone).ok()?;
    // GitLab's crons (Fugit) have five fields, or a nickname such as `@daily`.
    if cron.len() > 255 || cron.split_whitespace().count() > 5 {
        return None;
    }
    let parsed = croner::Cron::new(cron).parse().ok()?;
    let start = zone.from_utc_datetime(&after);
    let next = parsed.find_next_occurrence(&start, false).ok()?;
    Some(next.naive_utc())
}

/// Whether the zone is one Runway knows (IANA names, `UTC` among them).
pub fn known_timezone(timezone: &str) -> bool {
    chrono_tz::Tz::from_str(timezone).is_ok()
}

/// The schedule's variables.
pub fn variables(schedule: &PipelineSchedule) -> Vec<ScheduleVariable> {
    serde_json::from_str(&schedule.variables).unwrap_or_default()
}

/// Runs the schedule now (a due time, or `play`): a pipeline on its ref, as the API
/// creates one, with source `schedule` and the schedule's variables.
pub async fn run(
    state: &AppState,
    project: &Project,
    schedule: &PipelineSchedule,
) -> ApiResult<Pipeline> {
    let ref_ = schedule
        .ref_
        .strip_prefix("refs/heads/")
        .or_else(|| schedule.ref_.strip_prefix("refs/tags/"))
        .unwrap_or(&schedule.ref_)
        .to_string();
    let params = crate::api::admin::projects::CreatePipelineParams {
        ref_,
        sha: None,
        variables: variables(schedule)
            .into_iter()
            .map(|v| crate::service::pipelines::PipelineVariable {
                key: v.key,
                value: v.value,
            })
            .collect(),
        ci_config: None,
        inputs: None,
    };
    let mut request =
        crate::api::admin::projects::pipeline_request(state, project, params, "schedule").await?;
    request.schedule_id = Some(schedule.id);
    let pipeline = state.pipelines.create(project, request).await?;
    let mut db = state.db.write().await?;
    PipelineSchedule::ran(&mut db.conn(), schedule.id, pipeline.id).await?;
    Ok(pipeline)
}

/// One poll: each due schedule claimed and run. Answers how many ran.
pub async fn run_due(state: &AppState) -> ApiResult<usize> {
    let at = now();
    let due = {
        let mut db = state.db.read().await?;
        PipelineSchedule::due(&mut db.conn(), at).await?
    };
    let mut ran = 0;
    for schedule in due {
        let Some(next) = next_run(&schedule.cron, &schedule.cron_timezone, at) else {
            tracing::warn!(
                schedule_id = schedule.id,
                "a schedule whose cron no longer parses"
            );
            continue;
        };
        let (claimed, project) = {
            let mut db = state.db.write().await?;
            let claimed =
                PipelineSchedule::claim(&mut db.conn(), schedule.id, schedule.next_run_at, next)
                    .await?;
            (
                claimed,
                Project::find(&mut db.conn(), schedule.project_id).await?,
            )
        };
        let (true, Some(project)) = (claimed, project) else {
            continue;
        };
        match run(state, &project, &schedule).await {
            Ok(_) => ran += 1,
            Err(e) => {
                tracing::info!(schedule_id = schedule.id, error = %e, "the scheduled pipeline was refused")
            }
        }
    }
    Ok(ran)
}

/// 404 in GitLab's words for a schedule not found.
pub fn not_found() -> ApiError {
    ApiError::not_found("Pipeline Schedule")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").expect("time")
    }

    #[test]
    fn crons_in_time_zones() {
        let after = at("2026-12-04 10:30:15");
        assert_eq!(
            next_run("* * * * *", "UTC", after),
            Some(at("2026-12-04 10:31:00"))
        );
        assert_eq!(
            next_run("0 2 * * *", "UTC", after),
            Some(at("2026-12-05 02:00:00"))
        );
        // 02:00 in Berlin (UTC+1 in December) is 01:00 UTC.
        assert_eq!(
            next_run("0 2 * * *", "Europe/Berlin", after),
            Some(at("2026-12-05 01:00:00"))
        );
        assert_eq!(
            next_run("@daily", "UTC", after),
            Some(at("2026-12-05 00:00:00"))
        );
        assert_eq!(
            next_run("*/15 * * * 1-5", "UTC", after),
            Some(at("2026-12-04 10:45:00"))
        );
        for bad in ["", "not a cron", "61 * * * *", "* * * * * * *"] {
            assert_eq!(next_run(bad, "UTC", after), None, "{bad:?}");
        }
        assert_eq!(next_run("* * * * *", "Mars/Olympus", after), None);
        assert!(known_timezone("Asia/Tokyo") && !known_timezone("Nowhere"));
    }
}
