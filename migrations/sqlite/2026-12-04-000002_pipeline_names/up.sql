-- `workflow:name`: the pipeline's name, its variables expanded (GitLab's pipeline `name`).
ALTER TABLE pipelines ADD COLUMN name TEXT;
