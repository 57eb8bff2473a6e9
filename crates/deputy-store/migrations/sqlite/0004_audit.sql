-- The audit log: one row per on-behalf-of decision or resource access. Append-only: nothing updates or deletes rows.
CREATE TABLE audit_events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms      INTEGER NOT NULL,
    request_id   TEXT NOT NULL,
    user_name    TEXT NOT NULL,
    -- The `act` chain, outermost actor first, as a JSON array of subjects.
    actors       TEXT NOT NULL,
    endpoint     TEXT,
    api          TEXT NOT NULL,
    scope        TEXT,
    securable    TEXT,
    decision     TEXT NOT NULL CHECK (decision IN ('ALLOW', 'DENY')),
    reason       TEXT NOT NULL
);
CREATE INDEX audit_events_by_request ON audit_events (request_id);
