-- Whether the pipeline's commit is in the project's repository (its jobs fetch it from
-- Runway), or the pipeline was made from a configuration alone for a project without a
-- repository (its jobs run without sources).
ALTER TABLE pipelines ADD COLUMN has_sources BOOLEAN NOT NULL DEFAULT TRUE;
UPDATE pipelines SET has_sources = FALSE
  WHERE project_id IN (SELECT id FROM projects WHERE repository_url IS NULL OR repository_url = '');
