-- The queue: jobs waiting for a runner. A poll reads the oldest of these; through the
-- primary key it also walked every job handed out since the last vacuum (their old row
-- versions and the live rows that no longer match), so each poll cost more the longer the
-- queue had been draining. This index holds only the waiting jobs. The query spells the
-- condition with literals: with a bound status the planner cannot prove the index applies.
-- (SQLite updates rows in place and reads these jobs through (status, id) already.)
CREATE INDEX index_jobs_queue ON jobs (id) WHERE status = 'pending' AND runner_id IS NULL;
