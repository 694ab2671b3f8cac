-- The cluster's identity, recorded by the first control plane that starts on this
-- database: every replica must present the same CA and token key, and one whose keys
-- differ refuses to start. admin_key_id is set, once, by whoever made the first admin
-- key, so replicas starting together on an empty database cannot each make one.
CREATE TABLE cluster (
    id                INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    trust_domain      TEXT NOT NULL,
    -- hex SHA-256 of the CA certificate (DER)
    ca_sha256         TEXT NOT NULL,
    -- hex SHA-256 of the token verification key (SPKI PEM)
    token_key_sha256  TEXT NOT NULL,
    created_at_ms     INTEGER NOT NULL,
    admin_key_id      TEXT
);
