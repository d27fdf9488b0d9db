-- Releases (GitLab's releases): a tag of a project with a name, a description and links
-- to its assets (`links`: JSON `[{id, name, url, link_type, direct_asset_path}]`),
-- made through the API by a person or by a job's `release:` step.
CREATE TABLE releases (
    id BIGSERIAL PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    tag_name TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    sha TEXT NOT NULL,
    links TEXT NOT NULL,
    released_at TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (project_id, tag_name)
);
