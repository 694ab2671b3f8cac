-- Workers, the certificates issued to them, join tokens and API keys.
-- Times are integers: *_at in unix seconds, *_ms in unix milliseconds.
-- Mirrors migrations/sqlite/0001_fleet.sql (BIGINT for SQLite's INTEGER).

CREATE TABLE workers (
    id                  TEXT PRIMARY KEY NOT NULL,
    spiffe_id           TEXT NOT NULL,
    hostname            TEXT NOT NULL DEFAULT '',
    advertise_addr      TEXT NOT NULL DEFAULT '',
    -- JSON array of {name, healthy, message}
    providers           TEXT NOT NULL DEFAULT '[]',
    max_sandboxes       BIGINT NOT NULL DEFAULT 0,
    vcpus               BIGINT NOT NULL DEFAULT 0,
    memory_mb           BIGINT NOT NULL DEFAULT 0,
    version             TEXT NOT NULL DEFAULT '',
    -- active | revoked
    state               TEXT NOT NULL DEFAULT 'active',
    -- what the worker last said of itself: ready | draining | drained
    reported_state      TEXT NOT NULL DEFAULT 'ready',
    -- only the newest signed worker token may re-enroll
    worker_token_jti    TEXT NOT NULL,
    enrolled_at         BIGINT NOT NULL,
    last_heartbeat_ms   BIGINT,
    cert_serial         TEXT NOT NULL,
    cert_expires_at     BIGINT NOT NULL
);

CREATE TABLE worker_certificates (
    serial      TEXT PRIMARY KEY NOT NULL,
    worker_id   TEXT NOT NULL REFERENCES workers (id),
    issued_at   BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    -- enroll | reenroll | renew
    reason      TEXT NOT NULL,
    revoked_at  BIGINT
);

CREATE INDEX worker_certificates_by_worker ON worker_certificates (worker_id);

CREATE TABLE join_tokens (
    jti         TEXT PRIMARY KEY NOT NULL,
    worker_id   TEXT,
    max_uses    BIGINT NOT NULL,
    used        BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL DEFAULT '',
    revoked_at  BIGINT
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL,
    -- hex SHA-256 of the secret part; the key itself is shown once and never stored
    secret_hash  TEXT NOT NULL,
    -- comma-separated: read, write, exec, admin
    scopes       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);
