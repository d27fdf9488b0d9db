DROP TABLE pipeline_triggers;
