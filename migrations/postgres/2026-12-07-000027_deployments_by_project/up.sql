-- A project's deployments are listed a page at a time (`GET /projects/:id/deployments`);
-- without an index on the project each page read every deployment of the instance.
CREATE INDEX index_deployments_on_project_id_and_id ON deployments (project_id, id);
