-- Managed API keys: an optional expiry, and when the key was last used (written at
-- most once a minute per key, so a busy key does not cost a write per request).
-- Both unix seconds; NULL means never.
ALTER TABLE api_keys ADD COLUMN expires_at INTEGER;
ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;
