-- `coverage`: the number the job's regular expression found in its log when it ended
-- (GitLab's `ci_builds.coverage`). A table of its own: the jobs table is at diesel's
-- 32-column limit, and most jobs have no coverage.
CREATE TABLE job_coverages (
    job_id BIGINT PRIMARY KEY NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    coverage DOUBLE PRECISION NOT NULL
);
