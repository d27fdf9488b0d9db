-- The secret of a project's push webhook (`POST /projects/:id/hooks/push`): GitHub's and
-- Gitea's HMAC key, GitLab's `X-Gitlab-Token`; none: the hook is off.
ALTER TABLE projects ADD COLUMN push_hook_secret TEXT;
