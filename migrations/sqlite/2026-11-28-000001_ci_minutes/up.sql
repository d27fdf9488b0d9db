-- CI minutes: what each finished job ran, per project and runner, and an optional
-- monthly quota per project on instance runners (GitLab's `shared_runners_minutes_limit`).
ALTER TABLE projects ADD COLUMN shared_runners_minutes_limit INTEGER;

CREATE TABLE ci_minutes_usages (
    job_id BIGINT PRIMARY KEY NOT NULL,
    project_id BIGINT NOT NULL,
    runner_id BIGINT NOT NULL,
    runner_type TEXT NOT NULL,
    duration_seconds REAL NOT NULL,
    cost_factor REAL NOT NULL,
    minutes REAL NOT NULL,
    finished_at TIMESTAMP NOT NULL
);
CREATE INDEX ci_minutes_usages_project_month ON ci_minutes_usages (project_id, finished_at);
