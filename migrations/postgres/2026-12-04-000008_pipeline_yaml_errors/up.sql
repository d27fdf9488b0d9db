-- Why a pipeline failed before it had jobs: its configuration's errors (GitLab's
-- `yaml_errors`; a push or a mirror pull records such a pipeline, as GitLab does).
ALTER TABLE pipelines ADD COLUMN yaml_errors TEXT;
