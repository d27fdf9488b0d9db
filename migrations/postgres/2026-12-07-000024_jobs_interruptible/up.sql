-- Whether a job is `interruptible` (its spec's flag, also in `options`): a new pipeline
-- looks for the started jobs that are not, to decide in one statement which older
-- pipelines of its ref it cancels as redundant, instead of a read per pipeline.
ALTER TABLE jobs ADD COLUMN interruptible BOOLEAN NOT NULL DEFAULT FALSE;
-- The rows written before: the text is searched first, so that only the jobs that may
-- have the flag are parsed.
UPDATE jobs SET interruptible = TRUE
WHERE options LIKE '%"interruptible":true%' AND (options::jsonb ->> 'interruptible') = 'true';
