-- The authorization change log: every write to a table the authorization snapshot is built from leaves a row naming
-- what it changed, so a replica (the writer included) updates its snapshot from the rows that changed instead of
-- rebuilding it whole. `deputy_store::catalog::AuthorizationDelta` reads it.
--
-- Readers take "everything up to position N" as done, so positions must be taken in commit order: writers of the log
-- take turns on a transaction-level advisory lock, held until they commit, before their statement touches any row
-- (a BEFORE STATEMENT trigger; taking it after would let two writers each hold rows the other needs).
CREATE TABLE authorization_changes (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject      TEXT   NOT NULL CHECK (subject IN ('directory', 'securable', 'workspace_object')),
    securable_id BIGINT,
    object_type  TEXT,
    object_id    TEXT,
    changed_at   BIGINT NOT NULL
);
CREATE INDEX authorization_changes_by_time ON authorization_changes (changed_at);

-- Positions at or below `through_seq` were pruned: a reader that has not seen them rebuilds its snapshot whole.
CREATE TABLE authorization_changes_pruned (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    through_seq BIGINT NOT NULL
);
INSERT INTO authorization_changes_pruned (singleton, through_seq) VALUES (1, 0);

CREATE FUNCTION deputy_take_authorization_turn() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- "deputy-a" in ASCII; start-ups take "deputy".
    PERFORM pg_advisory_xact_lock(7234312026208152929);
    RETURN NULL;
END
$$;

CREATE FUNCTION deputy_log_authorization_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed RECORD;
    now_ms BIGINT := (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT;
BEGIN
    IF TG_OP = 'DELETE' THEN
        changed := OLD;
    ELSE
        changed := NEW;
    END IF;
    IF TG_TABLE_NAME IN ('principals', 'memberships') THEN
        INSERT INTO authorization_changes (subject, changed_at) VALUES ('directory', now_ms);
    ELSIF TG_TABLE_NAME = 'securables' THEN
        INSERT INTO authorization_changes (subject, securable_id, changed_at)
            VALUES ('securable', changed.id, now_ms);
    ELSIF TG_TABLE_NAME = 'grants' THEN
        INSERT INTO authorization_changes (subject, securable_id, changed_at)
            VALUES ('securable', changed.securable_id, now_ms);
    ELSE
        INSERT INTO authorization_changes (subject, object_type, object_id, changed_at)
            VALUES ('workspace_object', changed.object_type, changed.object_id, now_ms);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER principals_turn BEFORE INSERT OR UPDATE OR DELETE ON principals
    FOR EACH STATEMENT EXECUTE FUNCTION deputy_take_authorization_turn();
CREATE TRIGGER memberships_turn BEFORE INSERT OR UPDATE OR DELETE ON memberships
    FOR EACH STATEMENT EXECUTE FUNCTION deputy_take_authorization_turn();
CREATE TRIGGER securables_turn BEFORE INSERT OR UPDATE OR DELETE ON securables
    FOR EACH STATEMENT EXECUTE FUNCTION deputy_take_authorization_turn();
CREATE TRIGGER grants_turn BEFORE INSERT OR UPDATE OR DELETE ON grants
    FOR EACH STATEMENT EXECUTE FUNCTION deputy_take_authorization_turn();
CREATE TRIGGER workspace_objects_turn BEFORE INSERT OR UPDATE OR DELETE ON workspace_objects
    FOR EACH STATEMENT EXECUTE FUNCTION deputy_take_authorization_turn();
CREATE TRIGGER object_acls_turn BEFORE INSERT OR UPDATE OR DELETE ON object_acls
    FOR EACH STATEMENT EXECUTE FUNCTION deputy_take_authorization_turn();

CREATE TRIGGER principals_logged AFTER INSERT OR UPDATE OR DELETE ON principals
    FOR EACH ROW EXECUTE FUNCTION deputy_log_authorization_change();
CREATE TRIGGER memberships_logged AFTER INSERT OR UPDATE OR DELETE ON memberships
    FOR EACH ROW EXECUTE FUNCTION deputy_log_authorization_change();
CREATE TRIGGER securables_logged AFTER INSERT OR UPDATE OR DELETE ON securables
    FOR EACH ROW EXECUTE FUNCTION deputy_log_authorization_change();
CREATE TRIGGER grants_logged AFTER INSERT OR UPDATE OR DELETE ON grants
    FOR EACH ROW EXECUTE FUNCTION deputy_log_authorization_change();
CREATE TRIGGER workspace_objects_logged AFTER INSERT OR UPDATE OR DELETE ON workspace_objects
    FOR EACH ROW EXECUTE FUNCTION deputy_log_authorization_change();
CREATE TRIGGER object_acls_logged AFTER INSERT OR UPDATE OR DELETE ON object_acls
    FOR EACH ROW EXECUTE FUNCTION deputy_log_authorization_change();
