-- A ref's unfinished pipelines, and only those: what canceling redundant pipelines reads
-- on every new pipeline (`Pipeline::older_on_ref`, whose condition is these literals, so
-- that the planner proves this index's own). The (project_id, ref, status, id) index
-- serves that read only when the planner puts the statuses in its index condition; on a
-- table not yet analyzed it put `id < $4` there instead and filtered the statuses, reading
-- every pipeline of the ref for each new one (1,000 pipelines: 420 buffers, 0.7 ms). This
-- index holds the unfinished pipelines alone, so any plan over it reads a few pages.
CREATE INDEX index_pipelines_unfinished_on_project_id_and_ref ON pipelines (project_id, ref, id)
  WHERE status IN ('created', 'waiting_for_resource', 'preparing', 'pending', 'running', 'scheduled');
