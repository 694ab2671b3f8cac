-- Whether a sandbox may reach addresses outside its own network (egress).
ALTER TABLE sandboxes ADD COLUMN internet INTEGER NOT NULL DEFAULT 1;
