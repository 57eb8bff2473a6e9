-- Foundation schema: the workspace, identities, credentials, signing keys, settings.
-- Times are Unix epoch milliseconds. Names compare case-insensitively, as Databricks does.

CREATE TABLE workspace (
    singleton    INTEGER PRIMARY KEY CHECK (singleton = 1),
    workspace_id INTEGER NOT NULL,
    created_at   INTEGER NOT NULL
);

CREATE TABLE principals (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT    NOT NULL CHECK (kind IN ('user', 'service_principal', 'group')),
    -- userName for users, applicationId for service principals, displayName for groups.
    name         TEXT    NOT NULL COLLATE NOCASE,
    display_name TEXT    NOT NULL,
    given_name   TEXT,
    family_name  TEXT,
    external_id  TEXT,
    active       INTEGER NOT NULL DEFAULT 1,
    created_at   INTEGER NOT NULL,
    UNIQUE (kind, name)
);

CREATE TABLE memberships (
    group_id  INTEGER NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
    member_id INTEGER NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, member_id)
);
CREATE INDEX memberships_by_member ON memberships (member_id);

CREATE TABLE personal_access_tokens (
    token_id     TEXT    PRIMARY KEY,
    owner_id     INTEGER NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
    created_by   INTEGER NOT NULL,
    secret_hash  TEXT    NOT NULL UNIQUE,
    comment      TEXT    NOT NULL DEFAULT '',
    scopes       TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    -- -1 when the token never expires, as the Databricks API reports it.
    expires_at   INTEGER NOT NULL
);
CREATE INDEX personal_access_tokens_by_owner ON personal_access_tokens (owner_id);

CREATE TABLE client_secrets (
    secret_id    TEXT    PRIMARY KEY,
    principal_id INTEGER NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
    secret_hash  TEXT    NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
);
CREATE INDEX client_secrets_by_principal ON client_secrets (principal_id);

-- Unlike every other table, times here are in seconds, the unit of JWT claims.
CREATE TABLE signing_keys (
    kid        TEXT    PRIMARY KEY,
    seed       BLOB    NOT NULL,
    created_at INTEGER NOT NULL,
    retired_at INTEGER
);

-- JWT ids revoked before their expiry; rows past expires_at can be purged.
CREATE TABLE revoked_tokens (
    jti        TEXT    PRIMARY KEY,
    expires_at INTEGER NOT NULL
);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
