-- Unity Catalog: securables, their grants, and the access-control lists of workspace objects.

CREATE TABLE securables (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    -- catalog, schema, table, view, function, volume, registered_model, vector_index, connection, ...
    kind        TEXT    NOT NULL,
    -- Objects whose names collide share a namespace (tables, views and vector indexes are all relations).
    namespace   TEXT    NOT NULL,
    full_name   TEXT    NOT NULL COLLATE NOCASE,
    parent_id   INTEGER REFERENCES securables (id) ON DELETE CASCADE,
    owner_id    INTEGER NOT NULL,
    comment     TEXT,
    -- JSON objects: user properties, and the kind-specific description (columns, function signature, options...).
    properties  TEXT    NOT NULL DEFAULT '{}',
    spec        TEXT    NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL,
    created_by  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    updated_by  INTEGER NOT NULL,
    UNIQUE (namespace, full_name)
);
CREATE INDEX securables_by_parent ON securables (parent_id);

CREATE TABLE grants (
    securable_id INTEGER NOT NULL REFERENCES securables (id) ON DELETE CASCADE,
    principal_id INTEGER NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
    privilege    TEXT    NOT NULL,
    PRIMARY KEY (securable_id, principal_id, privilege)
);
CREATE INDEX grants_by_principal ON grants (principal_id);

-- Workspace objects (serving endpoints, warehouses, vector-search endpoints, Genie spaces) and their ACLs.
CREATE TABLE workspace_objects (
    object_type TEXT    NOT NULL,
    object_id   TEXT    NOT NULL,
    name        TEXT    NOT NULL COLLATE NOCASE,
    owner_id    INTEGER NOT NULL,
    spec        TEXT    NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (object_type, object_id),
    UNIQUE (object_type, name)
);

CREATE TABLE object_acls (
    object_type  TEXT    NOT NULL,
    object_id    TEXT    NOT NULL,
    principal_id INTEGER NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
    level        TEXT    NOT NULL,
    PRIMARY KEY (object_type, object_id, principal_id),
    FOREIGN KEY (object_type, object_id) REFERENCES workspace_objects (object_type, object_id) ON DELETE CASCADE
);
