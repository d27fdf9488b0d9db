DROP TABLE job_coverages;
