-- The branch and tag heads of each mirrored project that pipelines were started for (or
-- that were there at the first pull): a pull starts a pipeline for a head only by moving
-- its row, so that several instances start it once.
CREATE TABLE mirror_heads (
    project_id BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    ref TEXT NOT NULL,
    sha TEXT NOT NULL,
    PRIMARY KEY (project_id, ref)
);
