-- `workflow:auto_cancel` (GitLab keeps it in `ci_pipeline_metadata`): what a newer
-- pipeline on the same ref (`conservative`, `interruptible`, `none`) and a failed job
-- (`none`, `all`) do to this pipeline.
ALTER TABLE pipelines ADD COLUMN auto_cancel_on_new_commit TEXT NOT NULL DEFAULT 'conservative';
ALTER TABLE pipelines ADD COLUMN auto_cancel_on_job_failure TEXT NOT NULL DEFAULT 'none';
