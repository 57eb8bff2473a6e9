-- Token federation: which other issuers' JWTs `/oidc/v1/token` exchanges for Deputy tokens. A policy with a service
-- principal maps every token it accepts to that service principal (workload identity federation); one without maps
-- the token's subject claim to the user of that name.
CREATE TABLE federation_policies (
    policy_id            TEXT PRIMARY KEY,
    description          TEXT NOT NULL,
    issuer               TEXT NOT NULL,
    audiences            TEXT NOT NULL,
    subject_claim        TEXT NOT NULL,
    subject              TEXT,
    service_principal_id BIGINT REFERENCES principals (id) ON DELETE CASCADE,
    created_ms           BIGINT NOT NULL,
    created_by           BIGINT NOT NULL
);
CREATE INDEX federation_policies_by_issuer ON federation_policies (issuer);
