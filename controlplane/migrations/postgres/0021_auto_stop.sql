-- Auto-stop: a sandbox with `auto_stop_secs` > 0 is stopped once it has had no exec,
-- file, session or port traffic for that long. `active_at` (unix seconds) is when it
-- last had some, written at most once per activity interval; 0: none since it started
-- running (its `started_at_ms` counts then).
ALTER TABLE sandboxes ADD COLUMN auto_stop_secs BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sandboxes ADD COLUMN active_at BIGINT NOT NULL DEFAULT 0;
