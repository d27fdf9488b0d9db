ALTER TABLE jobs ALTER COLUMN pipeline_id RESET (n_distinct);
