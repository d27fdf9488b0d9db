-- CI/CD variables (GitLab's ci_variables and ci_instance_variables in one table): a
-- project's (project_id set) or the instance's (project_id NULL). The value is sealed
-- with the instance's secret key (src/secrets.rs), never stored in clear.
CREATE TABLE ci_variables (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT REFERENCES projects (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    variable_type TEXT NOT NULL,
    protected BOOLEAN NOT NULL,
    masked BOOLEAN NOT NULL,
    hidden BOOLEAN NOT NULL,
    raw BOOLEAN NOT NULL,
    environment_scope TEXT NOT NULL,
    description TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
-- One variable per key and environment scope in a project, and per key on the instance.
CREATE UNIQUE INDEX index_ci_variables_on_scope_and_key
    ON ci_variables (COALESCE(project_id, 0), key, environment_scope);
