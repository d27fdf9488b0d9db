ALTER TABLE jobs DROP COLUMN claims_alone;
