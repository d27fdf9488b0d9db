CREATE INDEX index_jobs_on_pipeline_id ON jobs (pipeline_id);
DROP INDEX index_jobs_on_pipeline_id_and_name;
DROP INDEX index_jobs_on_pipeline_id_and_stage_idx;
