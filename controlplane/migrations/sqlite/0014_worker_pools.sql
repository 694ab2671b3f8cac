-- Pools and labels: a join token names the pool and labels of the worker that enrolls
-- with it, and the worker carries them (a re-enrollment with its worker token keeps
-- them). Labels are a JSON object of strings. Placement keeps a team's sandboxes in
-- its pools and a request's constraints on the workers whose labels meet them.
ALTER TABLE join_tokens ADD COLUMN pool TEXT NOT NULL DEFAULT 'default';
ALTER TABLE join_tokens ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
ALTER TABLE workers ADD COLUMN pool TEXT NOT NULL DEFAULT 'default';
ALTER TABLE workers ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
