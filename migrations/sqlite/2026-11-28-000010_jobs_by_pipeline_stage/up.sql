-- A claim reads the dependencies of the job it assigns: the latest jobs of earlier stages,
-- or the jobs it names. By (pipeline, stage) and (pipeline, name) these are found without
-- reading every job of a large pipeline; the first also serves lookups by pipeline alone.
CREATE INDEX index_jobs_on_pipeline_id_and_stage_idx ON jobs (pipeline_id, stage_idx);
CREATE INDEX index_jobs_on_pipeline_id_and_name ON jobs (pipeline_id, name);
DROP INDEX index_jobs_on_pipeline_id;
