-- Web page sessions (src/ui): the SHA-256 of the cookie's random id (never the id), and
-- when the sign-in ends. Kept in the database so that a restart, or another instance on
-- the same database, does not sign anyone out.
CREATE TABLE ui_sessions (
    id_digest BYTEA PRIMARY KEY NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX ui_sessions_expires_at ON ui_sessions (expires_at);
