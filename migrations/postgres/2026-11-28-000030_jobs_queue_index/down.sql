DROP INDEX index_jobs_queue;
