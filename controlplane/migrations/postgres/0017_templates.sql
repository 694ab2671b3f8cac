-- Templates: a team's named environments. The document is kept as JSON (spec); each
-- change of content (content_hash, SHA-256 of the canonical JSON) bumps version, and
-- saving the same content again changes nothing.
CREATE TABLE templates (
    team_id      TEXT NOT NULL,
    name         TEXT NOT NULL,
    version      BIGINT NOT NULL,
    content_hash TEXT NOT NULL,
    spec         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (team_id, name)
);
