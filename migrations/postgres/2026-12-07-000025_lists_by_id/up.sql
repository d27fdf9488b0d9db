-- The admin API's lists (a project's pipelines and jobs, a runner's jobs) read one page,
-- newest first: `WHERE project_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3`. An index on
-- the project alone orders its entries by their place in the heap, so a page of a project
-- that is neither most of the table nor a small part of it read all of its rows and sorted
-- them. With the id after the key, a page reads its own rows. (SQLite needs no change:
-- there an index's entries end in the rowid, which is the id.)
CREATE INDEX index_pipelines_on_project_id_and_id ON pipelines (project_id, id);
DROP INDEX index_pipelines_on_project_id;
CREATE INDEX index_jobs_on_project_id_and_id ON jobs (project_id, id);
DROP INDEX index_jobs_on_project_id;
CREATE INDEX index_jobs_on_runner_id_and_id ON jobs (runner_id, id);
DROP INDEX index_jobs_on_runner_id;
