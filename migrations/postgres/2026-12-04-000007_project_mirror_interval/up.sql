-- A project's own pull interval for its upstream, in seconds (0: never on a timer; none:
-- the instance's RUNWAY_MIRROR_INTERVAL), and when an instance last claimed a timed pull
-- of it (instances claim each due pull once, by moving this column).
ALTER TABLE projects ADD COLUMN mirror_interval INTEGER;
ALTER TABLE projects ADD COLUMN mirror_pulled_at TIMESTAMP;
