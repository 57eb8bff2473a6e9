-- Genie conversations and their messages. Spaces themselves are workspace objects (object_type 'genie'), so their
-- ACLs use object_acls; deleting a space deletes its conversations, and deleting a user deletes theirs.
CREATE TABLE genie_conversations (
    conversation_id TEXT    PRIMARY KEY,
    -- Always 'genie': it lets the foreign key below name the space's workspace-object row.
    object_type     TEXT    NOT NULL DEFAULT 'genie' CHECK (object_type = 'genie'),
    space_id        TEXT    NOT NULL,
    owner_id        INTEGER NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
    title           TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    FOREIGN KEY (object_type, space_id) REFERENCES workspace_objects (object_type, object_id) ON DELETE CASCADE
);
CREATE INDEX genie_conversations_by_owner ON genie_conversations (space_id, owner_id, created_at);

CREATE TABLE genie_messages (
    message_id      TEXT    PRIMARY KEY,
    conversation_id TEXT    NOT NULL REFERENCES genie_conversations (conversation_id) ON DELETE CASCADE,
    content         TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    -- What processing produced, as JSON owned by the server: attachments, error, query result summary.
    outcome         TEXT    NOT NULL DEFAULT '{}',
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX genie_messages_by_conversation ON genie_messages (conversation_id, created_at);
