-- Finishing a job without reading its whole pipeline (issue 25): a pipeline whose jobs
-- wait for stages only (no job has `needs`, GitLab's scheduling_type `stage`) cannot move
-- on while a job of the finished job's stage or an earlier one is still pending or
-- running. Pipelines from before this column are read whole, as before.
ALTER TABLE pipelines ADD COLUMN stage_scheduled BOOLEAN NOT NULL DEFAULT FALSE;
-- The pipeline's jobs in one status, for those checks.
CREATE INDEX index_jobs_on_pipeline_id_and_status ON jobs (pipeline_id, status, stage_idx);
