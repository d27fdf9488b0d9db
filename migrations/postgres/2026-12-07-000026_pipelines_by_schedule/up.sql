-- A schedule's pipelines are listed a page at a time (`GET
-- /projects/:id/pipeline_schedules/:id/pipelines`, oldest first). Without an index every
-- page read every pipeline of the instance; a schedule that runs each minute starts half
-- a million pipelines in a year.
CREATE INDEX index_pipelines_on_schedule_id_and_id ON pipelines (schedule_id, id) WHERE schedule_id IS NOT NULL;
