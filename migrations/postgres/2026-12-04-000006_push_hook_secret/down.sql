ALTER TABLE projects DROP COLUMN push_hook_secret;
