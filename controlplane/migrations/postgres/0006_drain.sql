-- Drain: no new sandboxes; existing ones run until destroyed or until the deadline.
-- '' | draining | drained
ALTER TABLE workers ADD COLUMN drain_state TEXT NOT NULL DEFAULT '';
ALTER TABLE workers ADD COLUMN drain_deadline_ms BIGINT;
-- How many sandboxes the worker's provider reported in its last heartbeat.
ALTER TABLE workers ADD COLUMN reported_sandboxes BIGINT NOT NULL DEFAULT 0;
