//! Genie conversations and messages. A conversation belongs to one user in one space (a workspace object of type
//! `genie`); its messages are questions with what answering them produced, kept as an opaque JSON `outcome` that the
//! server owns.

use crate::{EpochMillis, PrincipalId, StoreResult};
use async_trait::async_trait;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationRecord {
    pub conversation_id: String,
    pub space_id: String,
    pub owner_id: PrincipalId,
    pub title: String,
    pub created_at: EpochMillis,
    pub updated_at: EpochMillis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    pub message_id: String,
    pub conversation_id: String,
    pub content: String,
    pub status: String,
    pub outcome: String,
    pub created_at: EpochMillis,
    pub updated_at: EpochMillis,
}

#[async_trait]
pub trait GenieStore: Send + Sync + 'static {
    /// Creates a conversation with its first message, in one transaction.
    async fn create_conversation(
        &self,
        conversation: &ConversationRecord,
        first: &MessageRecord,
    ) -> StoreResult<()>;
    async fn get_conversation(
        &self,
        conversation_id: &str,
    ) -> StoreResult<Option<ConversationRecord>>;
    /// The owner's conversations in a space, newest first, at most `limit` after skipping `offset`.
    async fn list_conversations(
        &self,
        space_id: &str,
        owner_id: PrincipalId,
        offset: i64,
        limit: i64,
    ) -> StoreResult<Vec<ConversationRecord>>;
    async fn delete_conversation(&self, conversation_id: &str) -> StoreResult<()>;
    /// Adds a message to an existing conversation and marks the conversation updated.
    async fn add_message(&self, message: &MessageRecord) -> StoreResult<()>;
    async fn get_message(&self, message_id: &str) -> StoreResult<Option<MessageRecord>>;
    /// A conversation's messages, oldest first.
    async fn messages_of(&self, conversation_id: &str) -> StoreResult<Vec<MessageRecord>>;
    async fn update_message(
        &self,
        message_id: &str,
        status: &str,
        outcome: &str,
        now: EpochMillis,
    ) -> StoreResult<()>;
}

mod sql {
    use super::{ConversationRecord, GenieStore, MessageRecord};
    use crate::sql_store::SqlStore;
    use crate::{EpochMillis, PrincipalId, StoreError, StoreResult};
    use async_trait::async_trait;
    use sqlx::Row;
    use sqlx::any::AnyRow;

    fn conversation_from_row(row: &AnyRow) -> StoreResult<ConversationRecord> {
        Ok(ConversationRecord {
            conversation_id: row.try_get("conversation_id")?,
            space_id: row.try_get("space_id")?,
            owner_id: PrincipalId(row.try_get("owner_id")?),
            title: row.try_get("title")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }

    fn message_from_row(row: &AnyRow) -> StoreResult<MessageRecord> {
        Ok(MessageRecord {
            message_id: row.try_get("message_id")?,
            conversation_id: row.try_get("conversation_id")?,
            content: row.try_get("content")?,
            status: row.try_get("status")?,
            outcome: row.try_get("outcome")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }

    async fn insert_message(
        connection: &mut sqlx::AnyConnection,
        message: &MessageRecord,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO genie_messages (message_id, conversation_id, content, status, outcome, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&message.message_id)
        .bind(&message.conversation_id)
        .bind(&message.content)
        .bind(&message.status)
        .bind(&message.outcome)
        .bind(message.created_at)
        .bind(message.updated_at)
        .execute(connection)
        .await?;
        Ok(())
    }

    #[async_trait]
    impl GenieStore for SqlStore {
        async fn create_conversation(
            &self,
            conversation: &ConversationRecord,
            first: &MessageRecord,
        ) -> StoreResult<()> {
            let mut transaction = self.pool().begin().await?;
            sqlx::query(
                "INSERT INTO genie_conversations (conversation_id, space_id, owner_id, title, created_at, \
                 updated_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&conversation.conversation_id)
            .bind(&conversation.space_id)
            .bind(conversation.owner_id.0)
            .bind(&conversation.title)
            .bind(conversation.created_at)
            .bind(conversation.updated_at)
            .execute(&mut *transaction)
            .await?;
            insert_message(&mut transaction, first).await?;
            transaction.commit().await?;
            Ok(())
        }

        async fn get_conversation(
            &self,
            conversation_id: &str,
        ) -> StoreResult<Option<ConversationRecord>> {
            let row = sqlx::query("SELECT * FROM genie_conversations WHERE conversation_id = $1")
                .bind(conversation_id)
                .fetch_optional(self.pool())
                .await?;
            row.as_ref().map(conversation_from_row).transpose()
        }

        async fn list_conversations(
            &self,
            space_id: &str,
            owner_id: PrincipalId,
            offset: i64,
            limit: i64,
        ) -> StoreResult<Vec<ConversationRecord>> {
            let rows = sqlx::query(
                "SELECT * FROM genie_conversations WHERE space_id = $1 AND owner_id = $2 \
                 ORDER BY created_at DESC, conversation_id LIMIT $3 OFFSET $4",
            )
            .bind(space_id)
            .bind(owner_id.0)
            .bind(limit)
            .bind(offset)
            .fetch_all(self.pool())
            .await?;
            rows.iter().map(conversation_from_row).collect()
        }

        async fn delete_conversation(&self, conversation_id: &str) -> StoreResult<()> {
            let deleted = sqlx::query("DELETE FROM genie_conversations WHERE conversation_id = $1")
                .bind(conversation_id)
                .execute(self.pool())
                .await?;
            match deleted.rows_affected() {
                0 => Err(StoreError::NotFound(format!(
                    "conversation `{conversation_id}`"
                ))),
                _ => Ok(()),
            }
        }

        async fn add_message(&self, message: &MessageRecord) -> StoreResult<()> {
            let mut transaction = self.pool().begin().await?;
            let touched = sqlx::query(
                "UPDATE genie_conversations SET updated_at = $1 WHERE conversation_id = $2",
            )
            .bind(message.created_at)
            .bind(&message.conversation_id)
            .execute(&mut *transaction)
            .await?;
            if touched.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!(
                    "conversation `{}`",
                    message.conversation_id
                )));
            }
            insert_message(&mut transaction, message).await?;
            transaction.commit().await?;
            Ok(())
        }

        async fn get_message(&self, message_id: &str) -> StoreResult<Option<MessageRecord>> {
            let row = sqlx::query("SELECT * FROM genie_messages WHERE message_id = $1")
                .bind(message_id)
                .fetch_optional(self.pool())
                .await?;
            row.as_ref().map(message_from_row).transpose()
        }

        async fn messages_of(&self, conversation_id: &str) -> StoreResult<Vec<MessageRecord>> {
            let rows = sqlx::query(
                "SELECT * FROM genie_messages WHERE conversation_id = $1 ORDER BY created_at, rowid",
            )
            .bind(conversation_id)
            .fetch_all(self.pool())
            .await?;
            rows.iter().map(message_from_row).collect()
        }

        async fn update_message(
            &self,
            message_id: &str,
            status: &str,
            outcome: &str,
            now: EpochMillis,
        ) -> StoreResult<()> {
            let updated = sqlx::query(
                "UPDATE genie_messages SET status = $1, outcome = $2, updated_at = $3 WHERE message_id = $4",
            )
            .bind(status)
            .bind(outcome)
            .bind(now)
            .bind(message_id)
            .execute(self.pool())
            .await?;
            match updated.rows_affected() {
                0 => Err(StoreError::NotFound(format!("message `{message_id}`"))),
                _ => Ok(()),
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::MetadataStore;
        use crate::catalog::{CatalogStore, WorkspaceObjectRecord};
        use crate::test_support::{self, open_temporary};

        #[tokio::test]
        async fn conversations_follow_their_space_and_keep_message_order() {
            let (_dir, store) = open_temporary().await;
            let alice = store
                .create_identity(test_support::user("alice"), 1)
                .await
                .unwrap();
            store
                .create_workspace_object(WorkspaceObjectRecord {
                    object_type: "genie".into(),
                    object_id: "s1".into(),
                    name: "Sales".into(),
                    owner_id: alice.id,
                    spec: "{}".into(),
                    created_at: 1,
                })
                .await
                .unwrap();
            let conversation = ConversationRecord {
                conversation_id: "c1".into(),
                space_id: "s1".into(),
                owner_id: alice.id,
                title: "q1".into(),
                created_at: 2,
                updated_at: 2,
            };
            let message = |id: &str, at| MessageRecord {
                message_id: id.into(),
                conversation_id: "c1".into(),
                content: format!("question {id}"),
                status: "SUBMITTED".into(),
                outcome: "{}".into(),
                created_at: at,
                updated_at: at,
            };
            store
                .create_conversation(&conversation, &message("m1", 2))
                .await
                .unwrap();
            store.add_message(&message("m2", 3)).await.unwrap();
            store
                .update_message("m1", "COMPLETED", r#"{"x":1}"#, 4)
                .await
                .unwrap();
            let messages = store.messages_of("c1").await.unwrap();
            let ids: Vec<_> = messages.iter().map(|m| m.message_id.as_str()).collect();
            assert_eq!(ids, ["m1", "m2"]);
            assert_eq!(messages[0].status, "COMPLETED");
            assert_eq!(messages[0].outcome, r#"{"x":1}"#);
            assert_eq!(
                store
                    .get_conversation("c1")
                    .await
                    .unwrap()
                    .unwrap()
                    .updated_at,
                3
            );
            let orphan = MessageRecord {
                conversation_id: "nope".into(),
                ..message("m3", 5)
            };
            assert!(matches!(
                store.add_message(&orphan).await,
                Err(StoreError::NotFound(_))
            ));
            store.delete_workspace_object("genie", "s1").await.unwrap();
            assert!(store.get_conversation("c1").await.unwrap().is_none());
            assert!(store.get_message("m2").await.unwrap().is_none());
        }
    }
}
