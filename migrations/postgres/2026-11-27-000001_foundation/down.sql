DROP TABLE feature_flags;
DROP TABLE jobs;
DROP TABLE pipelines;
DROP TABLE runner_managers;
DROP TABLE runner_projects;
DROP TABLE runners;
DROP TABLE projects;
DROP TABLE instance_settings;
