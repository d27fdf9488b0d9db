-- Child pipelines (`trigger:include`): the bridge job whose trigger made the pipeline. One
-- pipeline per bridge, so that two instances triggering the same bridge make one.
ALTER TABLE pipelines ADD COLUMN parent_bridge_id BIGINT;
CREATE UNIQUE INDEX index_pipelines_on_parent_bridge_id ON pipelines (parent_bridge_id) WHERE parent_bridge_id IS NOT NULL;
