-- A user reads their own audit events: find them without reading the whole log. The rowid (`seq`) ends every index
-- entry, so one user's events come out in log order.
CREATE INDEX audit_events_by_user ON audit_events (user_name);
