-- The audit log: one row per mutating API call and per exec, each carrying the hash of
-- the one before, so an edited or deleted record breaks the chain.

CREATE TABLE audit_events (
    seq         BIGINT PRIMARY KEY NOT NULL,
    at_ms       BIGINT NOT NULL,
    -- key:<api key id> | system
    actor       TEXT NOT NULL,
    operation   TEXT NOT NULL,
    worker_id   TEXT NOT NULL DEFAULT '',
    sandbox_id  TEXT NOT NULL DEFAULT '',
    -- what was asked (a command line, a path); never a secret
    detail      TEXT NOT NULL DEFAULT '',
    -- ok, or an error code
    outcome     TEXT NOT NULL,
    request_id  TEXT NOT NULL DEFAULT '',
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);

-- The newest record, so deleting records at the end is detected too. Appends move it
-- with a conditional update: concurrent writers (or replicas) cannot fork the chain.
CREATE TABLE audit_head (
    id    BIGINT PRIMARY KEY NOT NULL CHECK (id = 1),
    seq   BIGINT NOT NULL,
    hash  TEXT NOT NULL
);

INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '');
