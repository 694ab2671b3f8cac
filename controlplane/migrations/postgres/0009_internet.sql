-- Whether a sandbox may reach addresses outside its own network (egress).
ALTER TABLE sandboxes ADD COLUMN internet BOOLEAN NOT NULL DEFAULT TRUE;
