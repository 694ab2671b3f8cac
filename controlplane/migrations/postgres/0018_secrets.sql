-- Team secrets, write-only: each value is sealed (AES-256-GCM, bound to its team and
-- name) with the key in secrets.key, named here by key_id so a replica holding another
-- key can say so. Values are never read back by any API.
CREATE TABLE secrets (
    team_id    TEXT NOT NULL,
    name       TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    sealed     BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (team_id, name)
);
