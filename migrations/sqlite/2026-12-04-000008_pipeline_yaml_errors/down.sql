ALTER TABLE pipelines DROP COLUMN yaml_errors;
