-- Cordoned workers keep what they run but take no new sandboxes.
ALTER TABLE workers ADD COLUMN cordoned BOOLEAN NOT NULL DEFAULT FALSE;
