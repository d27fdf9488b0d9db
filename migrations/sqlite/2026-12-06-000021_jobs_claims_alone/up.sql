-- Whether a job's claim is all its assignment writes and reads: it requires no runner
-- feature, starts no deployment and reads no dependency. On PostgreSQL such a claim is
-- one statement, committed by itself. False for rows written before: the full claim.
ALTER TABLE jobs ADD COLUMN claims_alone BOOLEAN NOT NULL DEFAULT FALSE;
