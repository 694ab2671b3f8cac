-- The SSH gateway's credentials.
--
-- Public keys registered to an owner: a team (NULL: a cluster key's owner) and, when
-- the registering API key was bound to one, a user. A key logs in to its owner's
-- sandboxes only. Removing a key keeps its row (revoked_at) so a login with it is
-- refused by name; a fingerprint belongs to one live key at a time.
CREATE TABLE ssh_keys (
    id          TEXT PRIMARY KEY,
    team_id     TEXT,
    user_id     TEXT,
    name        TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE UNIQUE INDEX ssh_keys_live_fingerprint ON ssh_keys (fingerprint) WHERE revoked_at IS NULL;

-- One-time SSH tokens: only the token's SHA-256 is kept. A token opens one login to
-- one sandbox before it expires; used_at marks it spent.
CREATE TABLE ssh_tokens (
    token_hash  TEXT PRIMARY KEY,
    sandbox_id  TEXT NOT NULL,
    team_id     TEXT NOT NULL,
    user_id     TEXT,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX ssh_tokens_expires_at ON ssh_tokens (expires_at);
