ALTER TABLE jobs DROP COLUMN interruptible;
