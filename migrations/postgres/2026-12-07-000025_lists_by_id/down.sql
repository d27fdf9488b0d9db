CREATE INDEX index_jobs_on_runner_id ON jobs (runner_id);
DROP INDEX index_jobs_on_runner_id_and_id;
CREATE INDEX index_jobs_on_project_id ON jobs (project_id);
DROP INDEX index_jobs_on_project_id_and_id;
CREATE INDEX index_pipelines_on_project_id ON pipelines (project_id);
DROP INDEX index_pipelines_on_project_id_and_id;
