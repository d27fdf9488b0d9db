-- A job's JUnit report (`artifacts:reports:junit`), read when it was uploaded: JSON
-- `{cases: [...], suite_error}` (src/service/junit.rs). Apart from `jobs`, so that loading
-- jobs never reads reports.
CREATE TABLE job_test_reports (
    job_id BIGINT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    pipeline_id BIGINT NOT NULL,
    report TEXT NOT NULL
);
CREATE INDEX index_job_test_reports_on_pipeline_id ON job_test_reports (pipeline_id);
