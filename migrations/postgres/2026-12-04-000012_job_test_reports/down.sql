DROP TABLE job_test_reports;
