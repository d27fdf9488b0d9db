-- Pipeline trigger tokens (GitLab's ci_triggers): other systems start a project's
-- pipelines with one. The token is found by its SHA-256 digest; it is also kept sealed
-- (src/secrets.rs) so that the admin API can show it, as GitLab shows it to its owner.
CREATE TABLE pipeline_triggers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    description TEXT NOT NULL,
    token_digest BLOB NOT NULL UNIQUE,
    token TEXT NOT NULL,
    last_used TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX index_pipeline_triggers_on_project_id ON pipeline_triggers (project_id);
