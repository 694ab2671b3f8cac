-- When a control plane claimed a sandbox for destruction (unix ms): a claim that is
-- old enough (its replica died mid-destroy) may be taken over by another.
ALTER TABLE sandboxes ADD COLUMN destroying_since_ms BIGINT;
