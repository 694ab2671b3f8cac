-- Sandboxes, their fenced leases, and per-worker capacity reservations.

ALTER TABLE workers ADD COLUMN reserved BIGINT NOT NULL DEFAULT 0;

CREATE TABLE sandboxes (
    id           TEXT PRIMARY KEY NOT NULL,
    -- creating | running | destroying | destroyed | error
    state        TEXT NOT NULL,
    provider     TEXT NOT NULL,
    image        TEXT NOT NULL,
    memory_mb    BIGINT NOT NULL,
    vcpus        BIGINT NOT NULL,
    owner_id     TEXT NOT NULL DEFAULT '',
    template     TEXT NOT NULL DEFAULT '',
    -- JSON object of string values
    metadata     TEXT NOT NULL DEFAULT '{}',
    worker_id    TEXT,
    vm_id        TEXT NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    destroyed_at BIGINT,
    error        TEXT NOT NULL DEFAULT ''
);

CREATE INDEX sandboxes_by_state ON sandboxes (state);

-- A live sandbox's lease. The generation only grows; every mutating call to the
-- worker carries it and the worker refuses older ones.
CREATE TABLE leases (
    sandbox_id    TEXT PRIMARY KEY NOT NULL REFERENCES sandboxes (id),
    worker_id     TEXT NOT NULL REFERENCES workers (id),
    generation    BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);

CREATE INDEX leases_by_worker ON leases (worker_id);
