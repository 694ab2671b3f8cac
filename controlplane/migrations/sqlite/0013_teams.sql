-- Teams own sandboxes, users and API keys, and carry their quotas (NULL: no limit).
-- A team's id is its name. Everything that existed before teams belongs to `default`;
-- keys made before teams stay cluster keys (no team), so they see what they saw.
CREATE TABLE teams (
    id             TEXT PRIMARY KEY NOT NULL,
    created_at     INTEGER NOT NULL,
    max_sandboxes  INTEGER,
    max_vcpus      INTEGER,
    max_memory_mb  INTEGER,
    max_ttl_secs   INTEGER,
    -- JSON array of the worker pools its sandboxes may use; empty: any
    pools          TEXT NOT NULL DEFAULT '[]'
);

INSERT INTO teams (id, created_at) VALUES ('default', CAST(strftime('%s', 'now') AS INTEGER));

CREATE TABLE users (
    team_id     TEXT NOT NULL REFERENCES teams (id),
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (team_id, name)
);

-- NULL team: a cluster key (with the admin scope, a cluster admin); a user binds the
-- key to one user of its team.
ALTER TABLE api_keys ADD COLUMN team_id TEXT;
ALTER TABLE api_keys ADD COLUMN user_id TEXT;

ALTER TABLE sandboxes ADD COLUMN team_id TEXT NOT NULL DEFAULT 'default';
CREATE INDEX sandboxes_by_team ON sandboxes (team_id, state);

-- Who acted, beside the key: the team and user the call was made for.
ALTER TABLE audit_events ADD COLUMN team_id TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_events ADD COLUMN user_id TEXT NOT NULL DEFAULT '';
