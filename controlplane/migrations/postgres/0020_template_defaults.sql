-- A template's `workdir` (where commands and sessions start when they name none),
-- `shell` (what an interactive session with no command runs) and `ports` (the ports
-- it serves previews on, a JSON list), kept with each sandbox made from it.
ALTER TABLE sandboxes ADD COLUMN workdir TEXT NOT NULL DEFAULT '';
ALTER TABLE sandboxes ADD COLUMN shell TEXT NOT NULL DEFAULT '';
ALTER TABLE sandboxes ADD COLUMN ports TEXT NOT NULL DEFAULT '[]';
