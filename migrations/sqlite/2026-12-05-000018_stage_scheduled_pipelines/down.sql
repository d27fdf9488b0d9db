DROP INDEX index_jobs_on_pipeline_id_and_status;
ALTER TABLE pipelines DROP COLUMN stage_scheduled;
