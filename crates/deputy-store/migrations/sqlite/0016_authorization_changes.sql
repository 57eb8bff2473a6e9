-- The authorization change log: every write to a table the authorization snapshot is built from leaves a row naming
-- what it changed, so the server updates its snapshot from the rows that changed instead of rebuilding it whole.
-- `deputy_store::catalog::AuthorizationDelta` reads it. SQLite has one writer at a time, so positions follow commits.
CREATE TABLE authorization_changes (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    subject      TEXT    NOT NULL CHECK (subject IN ('directory', 'securable', 'workspace_object')),
    securable_id INTEGER,
    object_type  TEXT,
    object_id    TEXT,
    changed_at   INTEGER NOT NULL
);
CREATE INDEX authorization_changes_by_time ON authorization_changes (changed_at);

-- Positions at or below `through_seq` were pruned: a reader that has not seen them rebuilds its snapshot whole.
CREATE TABLE authorization_changes_pruned (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    through_seq INTEGER NOT NULL
);
INSERT INTO authorization_changes_pruned (singleton, through_seq) VALUES (1, 0);


CREATE TRIGGER principals_insert_logged AFTER INSERT ON principals BEGIN
    INSERT INTO authorization_changes (subject, changed_at) VALUES ('directory', CAST(strftime('%s', 'now') AS INTEGER) * 1000);
END;
CREATE TRIGGER principals_update_logged AFTER UPDATE ON principals BEGIN
    INSERT INTO authorization_changes (subject, changed_at) VALUES ('directory', CAST(strftime('%s', 'now') AS INTEGER) * 1000);
END;
CREATE TRIGGER principals_delete_logged AFTER DELETE ON principals BEGIN
    INSERT INTO authorization_changes (subject, changed_at) VALUES ('directory', CAST(strftime('%s', 'now') AS INTEGER) * 1000);
END;

CREATE TRIGGER memberships_insert_logged AFTER INSERT ON memberships BEGIN
    INSERT INTO authorization_changes (subject, changed_at) VALUES ('directory', CAST(strftime('%s', 'now') AS INTEGER) * 1000);
END;
CREATE TRIGGER memberships_update_logged AFTER UPDATE ON memberships BEGIN
    INSERT INTO authorization_changes (subject, changed_at) VALUES ('directory', CAST(strftime('%s', 'now') AS INTEGER) * 1000);
END;
CREATE TRIGGER memberships_delete_logged AFTER DELETE ON memberships BEGIN
    INSERT INTO authorization_changes (subject, changed_at) VALUES ('directory', CAST(strftime('%s', 'now') AS INTEGER) * 1000);
END;

CREATE TRIGGER securables_insert_logged AFTER INSERT ON securables BEGIN
    INSERT INTO authorization_changes (subject, securable_id, changed_at) VALUES ('securable', NEW.id, CAST(strftime('%s', 'now') AS INTEGER) * 1000);
END;
CREATE TRIGGER securables_update_logged AFTER UPDATE ON securables BEGIN
    INSERT INTO authorization_changes (subject, securable_id, changed_at) VALUES ('securable', NEW.id, CAST(strftime('%s', 'now') AS INTEGER) * 1000);
END;
CREATE TRIGGER securables_delete_logged AFTER DELETE ON securables BEGIN
    INSERT INTO authorization_changes (subject, securable_id, changed_at) VALUES ('securable', OLD.id, CAST(strftime('%s', 'now') AS INTEGER) * 1000);
END;

CREATE TRIGGER grants_insert_logged AFTER INSERT ON grants BEGIN
    INSERT INTO authorization_changes (subject, securable_id, changed_at) VALUES ('securable', NEW.securable_id, CAST(strftime('%s', 'now') AS INTEGER) * 1000);
END;
CREATE TRIGGER grants_update_logged AFTER UPDATE ON grants BEGIN
    INSERT INTO authorization_changes (subject, securable_id, changed_at) VALUES ('securable', NEW.securable_id, CAST(strftime('%s', 'now') AS INTEGER) * 1000);
END;
CREATE TRIGGER grants_delete_logged AFTER DELETE ON grants BEGIN
    INSERT INTO authorization_changes (subject, securable_id, changed_at) VALUES ('securable', OLD.securable_id, CAST(strftime('%s', 'now') AS INTEGER) * 1000);
END;

CREATE TRIGGER workspace_objects_insert_logged AFTER INSERT ON workspace_objects BEGIN
    INSERT INTO authorization_changes (subject, object_type, object_id, changed_at) VALUES ('workspace_object', NEW.object_type, NEW.object_id, CAST(strftime('%s', 'now') AS INTEGER) * 1000);
END;
CREATE TRIGGER workspace_objects_update_logged AFTER UPDATE ON workspace_objects BEGIN
    INSERT INTO authorization_changes (subject, object_type, object_id, changed_at) VALUES ('workspace_object', NEW.object_type, NEW.object_id, CAST(strftime('%s', 'now') AS INTEGER) * 1000);
END;
CREATE TRIGGER workspace_objects_delete_logged AFTER DELETE ON workspace_objects BEGIN
    INSERT INTO authorization_changes (subject, object_type, object_id, changed_at) VALUES ('workspace_object', OLD.object_type, OLD.object_id, CAST(strftime('%s', 'now') AS INTEGER) * 1000);
END;

CREATE TRIGGER object_acls_insert_logged AFTER INSERT ON object_acls BEGIN
    INSERT INTO authorization_changes (subject, object_type, object_id, changed_at) VALUES ('workspace_object', NEW.object_type, NEW.object_id, CAST(strftime('%s', 'now') AS INTEGER) * 1000);
END;
CREATE TRIGGER object_acls_update_logged AFTER UPDATE ON object_acls BEGIN
    INSERT INTO authorization_changes (subject, object_type, object_id, changed_at) VALUES ('workspace_object', NEW.object_type, NEW.object_id, CAST(strftime('%s', 'now') AS INTEGER) * 1000);
END;
CREATE TRIGGER object_acls_delete_logged AFTER DELETE ON object_acls BEGIN
    INSERT INTO authorization_changes (subject, object_type, object_id, changed_at) VALUES ('workspace_object', OLD.object_type, OLD.object_id, CAST(strftime('%s', 'now') AS INTEGER) * 1000);
END;
