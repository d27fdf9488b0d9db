-- The planner's count of pipelines, fixed at one for every 20 jobs instead of sampled.
-- A prepared statement's generic plan estimates `pipeline_id = $1` from it: sampled on a
-- young instance with a few large pipelines, it made each pipeline look like a fifth of
-- the table, and every read of one pipeline's jobs (the finish check on each finished
-- job among them) a sequential scan of the whole table. The override only needs to be
-- about right: any pipeline is a small part of the jobs.
ALTER TABLE jobs ALTER COLUMN pipeline_id SET (n_distinct = -0.05);
-- Taken at once rather than at autovacuum's next ANALYZE.
ANALYZE jobs;
