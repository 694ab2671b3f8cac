-- When a sandbox started running (unix ms), so reconciliation knows which sandboxes a
-- worker's heartbeat must already report.
ALTER TABLE sandboxes ADD COLUMN started_at_ms BIGINT;
