-- Automatic pipeline cleanup (GitLab's project setting `ci_delete_pipelines_in_seconds`):
-- pipelines created longer ago are deleted with their jobs, logs and artifacts. NULL: the
-- instance's `RUNWAY_DELETE_PIPELINES_AFTER`, if set; else kept.
ALTER TABLE projects ADD COLUMN ci_delete_pipelines_in_seconds INTEGER;
-- A project's oldest pipelines first, without walking the newer ones.
CREATE INDEX index_pipelines_on_project_id_and_created_at ON pipelines (project_id, created_at, id);
