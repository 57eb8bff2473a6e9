-- People's conversations with serving endpoints (the console's chat history), private to their owner. Deleting the
-- endpoint or the user deletes them.
CREATE TABLE endpoint_conversations (
    conversation_id TEXT    PRIMARY KEY,
    -- Always 'serving-endpoints': it lets the foreign key below name the endpoint's workspace-object row.
    object_type     TEXT    NOT NULL DEFAULT 'serving-endpoints' CHECK (object_type = 'serving-endpoints'),
    endpoint_id     TEXT    NOT NULL,
    owner_id        INTEGER NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
    title           TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    FOREIGN KEY (object_type, endpoint_id) REFERENCES workspace_objects (object_type, object_id) ON DELETE CASCADE
);
CREATE INDEX endpoint_conversations_by_owner ON endpoint_conversations (owner_id, created_at);

CREATE TABLE endpoint_messages (
    -- Orders a conversation's messages.
    seq             INTEGER PRIMARY KEY,
    conversation_id TEXT    NOT NULL REFERENCES endpoint_conversations (conversation_id) ON DELETE CASCADE,
    role            TEXT    NOT NULL CHECK (role IN ('user', 'assistant')),
    content         TEXT    NOT NULL,
    -- The invocation that produced an answer: its id finds the audit events of the agent's calls.
    request_id      TEXT,
    -- A JSON array of strings.
    sources         TEXT    NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX endpoint_messages_by_conversation ON endpoint_messages (conversation_id, seq);
