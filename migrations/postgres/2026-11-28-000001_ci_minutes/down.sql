DROP TABLE ci_minutes_usages;
ALTER TABLE projects DROP COLUMN shared_runners_minutes_limit;
