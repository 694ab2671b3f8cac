-- Cordoned workers keep what they run but take no new sandboxes.
ALTER TABLE workers ADD COLUMN cordoned INTEGER NOT NULL DEFAULT 0;
