-- The planner's count of pipelines, fixed at one for every 20 jobs instead of sampled.
-- A prepared statement's generic plan estimates `pipeline_id = $1` from it: sampled on a
-- young instance with a few large pipelines, it made each pipeline look like a fifth of
-- the table, and every read of one pipeline's jobs (the finish check on each finished
-- job among them) a sequential scan of the whole table. The override only needs to be
-- about right: any pipeline is a small part of the jobs. It applies from the next
-- ANALYZE (autovacuum's). Not one here: on a new, empty table it would record zero rows,
-- and statements prepared before autovacuum analyzed again would keep plans that scan
-- the whole table (the queue's read among them, at a quarter of its speed).
ALTER TABLE jobs ALTER COLUMN pipeline_id SET (n_distinct = -0.05);
