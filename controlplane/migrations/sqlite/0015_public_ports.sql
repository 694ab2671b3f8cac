-- Ports of a sandbox that anyone may reach through its preview URL, without an API
-- key or a preview link. A port is private (absent here) by default.
CREATE TABLE public_ports (
    sandbox_id TEXT NOT NULL,
    port INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (sandbox_id, port)
);
