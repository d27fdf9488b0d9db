ALTER TABLE pipelines DROP COLUMN has_sources;
