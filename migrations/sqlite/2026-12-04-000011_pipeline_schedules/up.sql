-- Pipeline schedules (GitLab's ci_pipeline_schedules): a cron in a time zone starts a
-- pipeline on a ref with the schedule's variables (JSON `[{key, value, variable_type}]`).
-- `next_run_at` (UTC) is moved forward before a run starts, by one instance only, so that
-- each due time runs once across instances and restarts.
CREATE TABLE pipeline_schedules (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    description TEXT NOT NULL,
    ref TEXT NOT NULL,
    cron TEXT NOT NULL,
    cron_timezone TEXT NOT NULL,
    next_run_at TIMESTAMP NOT NULL,
    active BOOLEAN NOT NULL,
    variables TEXT NOT NULL,
    last_pipeline_id BIGINT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX index_pipeline_schedules_on_next_run_at ON pipeline_schedules (next_run_at);
CREATE INDEX index_pipeline_schedules_on_project_id ON pipeline_schedules (project_id);
-- The schedule a pipeline was started by.
ALTER TABLE pipelines ADD COLUMN schedule_id BIGINT;
