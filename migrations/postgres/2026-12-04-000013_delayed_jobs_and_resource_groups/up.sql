-- `when: delayed` jobs wait in `scheduled` until `scheduled_at` (GitLab's
-- ci_builds.scheduled_at), then are queued by whichever instance sees them due first.
ALTER TABLE jobs ADD COLUMN scheduled_at TIMESTAMP;
CREATE INDEX index_jobs_on_scheduled_at ON jobs (scheduled_at) WHERE scheduled_at IS NOT NULL;
-- Resource groups (GitLab's ci_resource_groups with its one ci_resources row): at most one
-- job of a project's group holds the resource at a time. `holder_job_id` is moved from
-- the value read to the next job in one statement, so two instances never both assign it.
CREATE TABLE resource_groups (
    id BIGSERIAL PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    process_mode TEXT NOT NULL,
    holder_job_id BIGINT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (project_id, key)
);
-- The group a job needs (set when its pipeline is created).
ALTER TABLE jobs ADD COLUMN resource_group_id BIGINT;
CREATE INDEX index_jobs_on_resource_group_id ON jobs (resource_group_id, status) WHERE resource_group_id IS NOT NULL;
