-- A sandbox's startup phases (scheduled, building image, starting services, creating,
-- on_start, ready) as a JSON list of {name, started_ms, ended_ms, detail, error},
-- written by the replica that creates it; the sandbox JSON and its event stream read
-- them.
ALTER TABLE sandboxes ADD COLUMN phases TEXT NOT NULL DEFAULT '[]';
