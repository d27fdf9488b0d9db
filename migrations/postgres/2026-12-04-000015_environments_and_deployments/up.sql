-- Environments (GitLab's environments): made when a job first names one, or through the
-- API. `state` is available, stopping or stopped; `auto_stop_at` is when an available
-- one stops by itself (its last deployment's `auto_stop_in`).
CREATE TABLE environments (
    id BIGSERIAL PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    slug TEXT NOT NULL,
    external_url TEXT,
    tier TEXT NOT NULL,
    state TEXT NOT NULL,
    description TEXT,
    auto_stop_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (project_id, name)
);
CREATE INDEX index_environments_on_auto_stop_at ON environments (auto_stop_at) WHERE auto_stop_at IS NOT NULL;
-- Deployments (GitLab's deployments): one per job that deploys (`action: start`), its
-- status following the job's. `iid` is the row's id (unique, rising).
CREATE TABLE deployments (
    id BIGSERIAL PRIMARY KEY,
    iid BIGINT NOT NULL,
    project_id BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    environment_id BIGINT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    job_id BIGINT NOT NULL,
    ref TEXT NOT NULL,
    tag BOOLEAN NOT NULL,
    sha TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP
);
CREATE INDEX index_deployments_on_environment_id ON deployments (environment_id, id);
CREATE INDEX index_deployments_on_job_id ON deployments (job_id);
