ALTER TABLE projects DROP COLUMN mirror_pulled_at;
ALTER TABLE projects DROP COLUMN mirror_interval;
