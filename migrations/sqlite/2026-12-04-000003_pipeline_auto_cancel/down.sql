ALTER TABLE pipelines DROP COLUMN auto_cancel_on_job_failure;
ALTER TABLE pipelines DROP COLUMN auto_cancel_on_new_commit;
