-- Sign-in: people sign in through Deputy's authorization endpoint (an upstream OpenID Connect provider, or the
-- bootstrap admin's local password) and OAuth apps receive authorization codes, access and refresh tokens for them.

-- OAuth apps people sign in to. Not service principals: those authenticate themselves with client credentials.
-- `redirect_uris` is a JSON array; a loopback redirect URI matches any port (RFC 8252 §7.3). `trusted` apps (the
-- preregistered CLI) skip the consent page.
CREATE TABLE oauth_apps (
    client_id     TEXT    PRIMARY KEY,
    name          TEXT    NOT NULL,
    redirect_uris TEXT    NOT NULL,
    scopes        TEXT    NOT NULL,
    secret_hash   TEXT,
    trusted       INTEGER NOT NULL,
    created_ms    INTEGER NOT NULL
);
-- The public client the Databricks SDKs and CLI use by default (`auth_type="external-browser"`).
INSERT INTO oauth_apps (client_id, name, redirect_uris, scopes, secret_hash, trusted, created_ms)
VALUES ('databricks-cli', 'Databricks CLI and SDKs',
        '["http://localhost:8020","http://localhost/","http://127.0.0.1/","http://[::1]/"]', 'all-apis', NULL, 1, 0);

-- Upstream OpenID Connect providers people sign in with. `allowed_domains` is a JSON array (empty: any domain).
CREATE TABLE identity_providers (
    issuer          TEXT    PRIMARY KEY,
    client_id       TEXT    NOT NULL,
    client_secret   TEXT    NOT NULL,
    groups_claim    TEXT,
    username_claim  TEXT    NOT NULL,
    allowed_domains TEXT    NOT NULL,
    created_ms      INTEGER NOT NULL
);

-- Groups whose membership an identity provider's groups claim manages; SCIM-managed groups are never listed here.
CREATE TABLE idp_managed_groups (
    group_id INTEGER PRIMARY KEY REFERENCES principals (id) ON DELETE CASCADE,
    issuer   TEXT    NOT NULL
);

-- Sign-ins in flight, from the authorization request to the code. `request_id` is the handle the browser carries;
-- `browser_hash` is the hash of the cookie set on the browser that started it, so no other browser can finish it.
CREATE TABLE authorization_requests (
    request_id        TEXT    PRIMARY KEY,
    browser_hash      TEXT    NOT NULL,
    client_id         TEXT    NOT NULL,
    redirect_uri      TEXT    NOT NULL,
    state             TEXT,
    code_challenge    TEXT    NOT NULL,
    scopes            TEXT    NOT NULL,
    offline           INTEGER NOT NULL,
    resource          TEXT,
    upstream_issuer   TEXT,
    upstream_nonce    TEXT,
    upstream_verifier TEXT,
    user_id           INTEGER REFERENCES principals (id) ON DELETE CASCADE,
    created_ms        INTEGER NOT NULL
);

-- A sign-in's lineage: its code, every refresh token rotated from it and every access token they gave. Revoking it
-- revokes them all, and the tokens exchanged from those.
CREATE TABLE sign_in_families (
    family_id  TEXT    PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
    client_id  TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    revoked_ms INTEGER
);
CREATE INDEX sign_in_families_by_user ON sign_in_families (user_id);

-- Codes and refresh tokens are stored as SHA-256 hashes; `uses` counts presentations, so a second one is a replay.
CREATE TABLE authorization_codes (
    code_hash      TEXT    PRIMARY KEY,
    family_id      TEXT    NOT NULL REFERENCES sign_in_families (family_id) ON DELETE CASCADE,
    redirect_uri   TEXT    NOT NULL,
    code_challenge TEXT    NOT NULL,
    scopes         TEXT    NOT NULL,
    offline        INTEGER NOT NULL,
    resource       TEXT,
    expires_ms     INTEGER NOT NULL,
    uses           INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE refresh_tokens (
    token_hash TEXT    PRIMARY KEY,
    family_id  TEXT    NOT NULL REFERENCES sign_in_families (family_id) ON DELETE CASCADE,
    scopes     TEXT    NOT NULL,
    resource   TEXT,
    expires_ms INTEGER NOT NULL,
    uses       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);

-- What a user approved an OAuth app to do for them (the consent page of sign-in).
CREATE TABLE app_consents (
    user_id    INTEGER NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
    client_id  TEXT    NOT NULL REFERENCES oauth_apps (client_id) ON DELETE CASCADE,
    scopes     TEXT    NOT NULL,
    granted_ms INTEGER NOT NULL,
    PRIMARY KEY (user_id, client_id)
);

-- argon2id (PHC string) of the bootstrap admin's local password.
CREATE TABLE local_passwords (
    user_id       INTEGER PRIMARY KEY REFERENCES principals (id) ON DELETE CASCADE,
    password_hash TEXT    NOT NULL,
    updated_ms    INTEGER NOT NULL
);
