DROP INDEX index_jobs_on_resource_group_id;
ALTER TABLE jobs DROP COLUMN resource_group_id;
DROP TABLE resource_groups;
DROP INDEX index_jobs_on_scheduled_at;
ALTER TABLE jobs DROP COLUMN scheduled_at;
