-- Foundation schema: runners and their managers, projects, pipelines, jobs (builds),
-- feature flags and instance settings. Kept column-for-column identical to the SQLite
-- migration of the same name; a test compares the two.

CREATE TABLE instance_settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE projects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    namespace_path TEXT NOT NULL,
    description TEXT,
    repository_url TEXT,
    default_branch TEXT NOT NULL DEFAULT 'main',
    protected_branches TEXT NOT NULL DEFAULT '[]',
    build_timeout INTEGER NOT NULL DEFAULT 3600,
    shared_runners_enabled BOOLEAN NOT NULL DEFAULT TRUE,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (namespace_path, path)
);

CREATE TABLE runners (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    runner_type TEXT NOT NULL,
    name TEXT,
    description TEXT NOT NULL DEFAULT '',
    maintenance_note TEXT,
    tag_list TEXT NOT NULL DEFAULT '[]',
    run_untagged BOOLEAN NOT NULL DEFAULT TRUE,
    locked BOOLEAN NOT NULL DEFAULT FALSE,
    paused BOOLEAN NOT NULL DEFAULT FALSE,
    access_level TEXT NOT NULL DEFAULT 'not_protected',
    maximum_timeout INTEGER,
    token_digest BLOB NOT NULL UNIQUE,
    token_prefix TEXT NOT NULL,
    token_expires_at TIMESTAMP,
    contacted_at TIMESTAMP,
    creation_state TEXT NOT NULL DEFAULT 'started',
    registration_type TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE runner_projects (
    runner_id BIGINT NOT NULL REFERENCES runners (id) ON DELETE CASCADE,
    project_id BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (runner_id, project_id)
);
CREATE INDEX index_runner_projects_on_project_id ON runner_projects (project_id);

CREATE TABLE runner_managers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    runner_id BIGINT NOT NULL REFERENCES runners (id) ON DELETE CASCADE,
    system_xid TEXT NOT NULL,
    version TEXT,
    revision TEXT,
    platform TEXT,
    architecture TEXT,
    executor_type TEXT,
    ip_address TEXT,
    config TEXT NOT NULL DEFAULT '{}',
    labels TEXT NOT NULL DEFAULT '{}',
    runtime_features TEXT NOT NULL DEFAULT '{}',
    contacted_at TIMESTAMP,
    creation_state TEXT NOT NULL DEFAULT 'started',
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (runner_id, system_xid)
);

CREATE TABLE pipelines (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    ref TEXT NOT NULL,
    sha TEXT NOT NULL,
    before_sha TEXT NOT NULL DEFAULT '0000000000000000000000000000000000000000',
    tag BOOLEAN NOT NULL DEFAULT FALSE,
    protected BOOLEAN NOT NULL DEFAULT FALSE,
    source TEXT NOT NULL DEFAULT 'api',
    status TEXT NOT NULL DEFAULT 'created',
    ci_config TEXT NOT NULL,
    variables TEXT NOT NULL DEFAULT '[]',
    stages TEXT NOT NULL DEFAULT '[]',
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    started_at TIMESTAMP,
    finished_at TIMESTAMP
);
CREATE INDEX index_pipelines_on_project_id ON pipelines (project_id);

CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline_id BIGINT NOT NULL REFERENCES pipelines (id) ON DELETE CASCADE,
    project_id BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    stage TEXT NOT NULL,
    stage_idx INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'created',
    when_ TEXT NOT NULL DEFAULT 'on_success',
    allow_failure BOOLEAN NOT NULL DEFAULT FALSE,
    tag_list TEXT NOT NULL DEFAULT '[]',
    options TEXT NOT NULL DEFAULT '{}',
    protected BOOLEAN NOT NULL DEFAULT FALSE,
    timeout INTEGER,
    token_digest BLOB UNIQUE,
    runner_id BIGINT REFERENCES runners (id) ON DELETE SET NULL,
    runner_manager_id BIGINT REFERENCES runner_managers (id) ON DELETE SET NULL,
    failure_reason TEXT,
    exit_code INTEGER,
    retried BOOLEAN NOT NULL DEFAULT FALSE,
    cancel_gracefully BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    queued_at TIMESTAMP,
    started_at TIMESTAMP,
    finished_at TIMESTAMP,
    erased_at TIMESTAMP,
    ack_deadline TIMESTAMP,
    trace_size BIGINT NOT NULL DEFAULT 0,
    trace_crc32 BIGINT NOT NULL DEFAULT 0,
    trace_checksum_ok BOOLEAN,
    debug_trace BOOLEAN NOT NULL DEFAULT FALSE,
    dotenv_variables TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX index_jobs_on_pipeline_id ON jobs (pipeline_id);
CREATE INDEX index_jobs_on_project_id ON jobs (project_id);
CREATE INDEX index_jobs_on_runner_id ON jobs (runner_id);
CREATE INDEX index_jobs_on_runner_manager_id ON jobs (runner_manager_id);
CREATE INDEX index_jobs_on_status ON jobs (status, id);

-- The job log, one row per accepted PATCH: durable once the PATCH is answered.
CREATE TABLE trace_chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    "offset" BIGINT NOT NULL,
    data BLOB NOT NULL,
    UNIQUE (job_id, "offset")
);

-- Artifacts: the files live in object storage under store_path; one per type and job.
CREATE TABLE job_artifacts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    project_id BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    file_type TEXT NOT NULL,
    file_format TEXT NOT NULL,
    filename TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    store_path TEXT NOT NULL,
    expire_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    UNIQUE (job_id, file_type)
);
CREATE INDEX index_job_artifacts_on_expire_at ON job_artifacts (expire_at);

CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id BIGINT NOT NULL,
    details TEXT NOT NULL DEFAULT '{}',
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE feature_flags (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    scope_type TEXT NOT NULL,
    scope_key TEXT NOT NULL DEFAULT '',
    enabled BOOLEAN NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (name, scope_type, scope_key)
);
