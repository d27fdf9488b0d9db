DROP INDEX index_pipelines_on_parent_bridge_id;
ALTER TABLE pipelines DROP COLUMN parent_bridge_id;
