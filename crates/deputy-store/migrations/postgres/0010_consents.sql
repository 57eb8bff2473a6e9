-- End-user consent: a user's permission for an agent endpoint to act on their behalf with at most these scopes.
-- An invocation is allowed (when consent is required) only while the endpoint's declared scopes are within them.
CREATE TABLE consents (
    user_id     BIGINT NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
    endpoint_id TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    granted_ms  BIGINT NOT NULL,
    PRIMARY KEY (user_id, endpoint_id)
);
