-- Workers, the certificates issued to them, join tokens and API keys.
-- Times are integers: *_at in unix seconds, *_ms in unix milliseconds.

CREATE TABLE workers (
    id                  TEXT PRIMARY KEY NOT NULL,
    spiffe_id           TEXT NOT NULL,
    hostname            TEXT NOT NULL DEFAULT '',
    advertise_addr      TEXT NOT NULL DEFAULT '',
    -- JSON array of {name, healthy, message}
    providers           TEXT NOT NULL DEFAULT '[]',
    max_sandboxes       INTEGER NOT NULL DEFAULT 0,
    vcpus               INTEGER NOT NULL DEFAULT 0,
    memory_mb           INTEGER NOT NULL DEFAULT 0,
    version             TEXT NOT NULL DEFAULT '',
    -- active | revoked
    state               TEXT NOT NULL DEFAULT 'active',
    -- what the worker last said of itself: ready | draining | drained
    reported_state      TEXT NOT NULL DEFAULT 'ready',
    -- only the newest signed worker token may re-enroll
    worker_token_jti    TEXT NOT NULL,
    enrolled_at         INTEGER NOT NULL,
    last_heartbeat_ms   INTEGER,
    cert_serial         TEXT NOT NULL,
    cert_expires_at     INTEGER NOT NULL
);

CREATE TABLE worker_certificates (
    serial      TEXT PRIMARY KEY NOT NULL,
    worker_id   TEXT NOT NULL REFERENCES workers (id),
    issued_at   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    -- enroll | reenroll | renew
    reason      TEXT NOT NULL,
    revoked_at  INTEGER
);

CREATE INDEX worker_certificates_by_worker ON worker_certificates (worker_id);

CREATE TABLE join_tokens (
    jti         TEXT PRIMARY KEY NOT NULL,
    worker_id   TEXT,
    max_uses    INTEGER NOT NULL,
    used        INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    created_by  TEXT NOT NULL DEFAULT '',
    revoked_at  INTEGER
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL,
    -- hex SHA-256 of the secret part; the key itself is shown once and never stored
    secret_hash  TEXT NOT NULL,
    -- comma-separated: read, write, exec, admin
    scopes       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER
);
