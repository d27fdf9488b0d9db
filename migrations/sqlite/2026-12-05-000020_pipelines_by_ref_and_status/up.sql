-- A ref's unfinished pipelines, without walking the project's history: what canceling
-- redundant pipelines looks for on every new pipeline (GitLab's ci_pipelines index on
-- project_id, ref, status, id).
CREATE INDEX index_pipelines_on_project_id_and_ref_and_status ON pipelines (project_id, ref, status, id);
