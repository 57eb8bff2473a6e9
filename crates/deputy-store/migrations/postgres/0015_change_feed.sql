-- Replicas keep copies of some tables in memory. A statement that writes one of them announces, on commit, which
-- copy it made stale: `NOTIFY deputy_changes, '<kind>'` (a payload sent twice in one transaction arrives once).
-- The kinds are those of `deputy_store::Change`. A statement-level trigger fires even when no row changed, so a
-- table that reloading a copy writes to (expired revocations are purged on reload) announces only the writes that
-- matter, or replicas would wake each other forever.
CREATE FUNCTION deputy_announce_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('deputy_changes', TG_ARGV[0]);
    RETURN NULL;
END
$$;

CREATE TRIGGER principals_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON principals
    FOR EACH STATEMENT EXECUTE FUNCTION deputy_announce_change('authorization');
CREATE TRIGGER memberships_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON memberships
    FOR EACH STATEMENT EXECUTE FUNCTION deputy_announce_change('authorization');
CREATE TRIGGER securables_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON securables
    FOR EACH STATEMENT EXECUTE FUNCTION deputy_announce_change('authorization');
CREATE TRIGGER grants_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON grants
    FOR EACH STATEMENT EXECUTE FUNCTION deputy_announce_change('authorization');
CREATE TRIGGER workspace_objects_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON workspace_objects
    FOR EACH STATEMENT EXECUTE FUNCTION deputy_announce_change('authorization');
CREATE TRIGGER object_acls_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON object_acls
    FOR EACH STATEMENT EXECUTE FUNCTION deputy_announce_change('authorization');
-- A new token is in no copy yet; a deleted one may be.
CREATE TRIGGER personal_access_tokens_changed AFTER UPDATE OR DELETE OR TRUNCATE ON personal_access_tokens
    FOR EACH STATEMENT EXECUTE FUNCTION deputy_announce_change('personal_access_tokens');
CREATE TRIGGER signing_keys_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON signing_keys
    FOR EACH STATEMENT EXECUTE FUNCTION deputy_announce_change('signing_keys');
CREATE TRIGGER revoked_tokens_changed AFTER INSERT ON revoked_tokens
    FOR EACH STATEMENT EXECUTE FUNCTION deputy_announce_change('revocations');
CREATE TRIGGER settings_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON settings
    FOR EACH STATEMENT EXECUTE FUNCTION deputy_announce_change('settings');
