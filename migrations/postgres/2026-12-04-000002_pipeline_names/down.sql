ALTER TABLE pipelines DROP COLUMN name;
