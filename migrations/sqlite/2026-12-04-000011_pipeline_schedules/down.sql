ALTER TABLE pipelines DROP COLUMN schedule_id;
DROP TABLE pipeline_schedules;
