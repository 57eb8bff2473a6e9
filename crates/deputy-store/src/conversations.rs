//! People's conversations with serving endpoints: the chat history a client keeps through the API. A conversation
//! belongs to one principal and one endpoint (a workspace object of type `serving-endpoints`); its messages are
//! what the person asked and what the endpoint answered, in order.

use crate::{EpochMillis, PrincipalId, StoreResult};
use async_trait::async_trait;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConversation {
    pub conversation_id: String,
    pub endpoint_id: String,
    pub owner_id: PrincipalId,
    pub title: String,
    pub created_at: EpochMillis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointMessage {
    pub conversation_id: String,
    /// `user` or `assistant`.
    pub role: String,
    pub content: String,
    pub request_id: Option<String>,
    pub sources: Vec<String>,
    pub created_at: EpochMillis,
}

#[async_trait]
pub trait ConversationStore: Send + Sync + 'static {
    async fn create_endpoint_conversation(
        &self,
        conversation: &EndpointConversation,
    ) -> StoreResult<()>;
    async fn endpoint_conversation(
        &self,
        conversation_id: &str,
    ) -> StoreResult<Option<EndpointConversation>>;
    /// The owner's conversations, with one endpoint or all, newest first.
    async fn endpoint_conversations(
        &self,
        owner_id: PrincipalId,
        endpoint_id: Option<&str>,
    ) -> StoreResult<Vec<EndpointConversation>>;
    /// Deletes a conversation with its messages; false when there was none.
    async fn delete_endpoint_conversation(&self, conversation_id: &str) -> StoreResult<bool>;
    /// Appends a message; `NotFound` when its conversation does not exist (any more).
    async fn append_endpoint_message(&self, message: &EndpointMessage) -> StoreResult<()>;
    /// A conversation's messages in the order they were appended.
    async fn endpoint_messages(&self, conversation_id: &str) -> StoreResult<Vec<EndpointMessage>>;
}

mod sql {
    use super::{ConversationStore, EndpointConversation, EndpointMessage};
    use crate::sql_store::SqlStore;
    use crate::{PrincipalId, StoreError, StoreResult};
    use async_trait::async_trait;
    use sqlx::Row;
    use sqlx::any::AnyRow;

    fn conversation_of(row: &AnyRow) -> StoreResult<EndpointConversation> {
        Ok(EndpointConversation {
            conversation_id: row.try_get("conversation_id")?,
            endpoint_id: row.try_get("endpoint_id")?,
            owner_id: PrincipalId(row.try_get("owner_id")?),
            title: row.try_get("title")?,
            created_at: row.try_get("created_at")?,
        })
    }

    fn message_of(row: &AnyRow) -> StoreResult<EndpointMessage> {
        let sources: String = row.try_get("sources")?;
        Ok(EndpointMessage {
            conversation_id: row.try_get("conversation_id")?,
            role: row.try_get("role")?,
            content: row.try_get("content")?,
            request_id: row.try_get("request_id")?,
            sources: serde_json::from_str(&sources)
                .map_err(|error| StoreError::Corrupt(error.to_string()))?,
            created_at: row.try_get("created_at")?,
        })
    }

    #[async_trait]
    impl ConversationStore for SqlStore {
        async fn create_endpoint_conversation(
            &self,
            conversation: &EndpointConversation,
        ) -> StoreResult<()> {
            sqlx::query(
                "INSERT INTO endpoint_conversations (conversation_id, endpoint_id, owner_id, title, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&conversation.conversation_id)
            .bind(&conversation.endpoint_id)
            .bind(conversation.owner_id.0)
            .bind(&conversation.title)
            .bind(conversation.created_at)
            .execute(self.pool())
            .await?;
            Ok(())
        }

        async fn endpoint_conversation(
            &self,
            conversation_id: &str,
        ) -> StoreResult<Option<EndpointConversation>> {
            let row = sqlx::query(
                "SELECT conversation_id, endpoint_id, owner_id, title, created_at FROM endpoint_conversations \
                 WHERE conversation_id = $1",
            )
            .bind(conversation_id)
            .fetch_optional(self.pool())
            .await?;
            row.as_ref().map(conversation_of).transpose()
        }

        async fn endpoint_conversations(
            &self,
            owner_id: PrincipalId,
            endpoint_id: Option<&str>,
        ) -> StoreResult<Vec<EndpointConversation>> {
            let query = match endpoint_id {
                Some(endpoint_id) => sqlx::query(
                    "SELECT conversation_id, endpoint_id, owner_id, title, created_at FROM endpoint_conversations \
                     WHERE owner_id = $1 AND endpoint_id = $2 ORDER BY created_at DESC, rowid DESC",
                )
                .bind(owner_id.0)
                .bind(endpoint_id),
                None => sqlx::query(
                    "SELECT conversation_id, endpoint_id, owner_id, title, created_at FROM endpoint_conversations \
                     WHERE owner_id = $1 ORDER BY created_at DESC, rowid DESC",
                )
                .bind(owner_id.0),
            };
            let rows = query.fetch_all(self.pool()).await?;
            rows.iter().map(conversation_of).collect()
        }

        async fn delete_endpoint_conversation(&self, conversation_id: &str) -> StoreResult<bool> {
            let deleted =
                sqlx::query("DELETE FROM endpoint_conversations WHERE conversation_id = $1")
                    .bind(conversation_id)
                    .execute(self.pool())
                    .await?;
            Ok(deleted.rows_affected() > 0)
        }

        async fn append_endpoint_message(&self, message: &EndpointMessage) -> StoreResult<()> {
            let sources = serde_json::to_string(&message.sources)
                .map_err(|error| StoreError::Corrupt(error.to_string()))?;
            // One statement: a conversation deleted meanwhile gets no orphan, and the caller hears it is gone.
            let inserted = sqlx::query(
                "INSERT INTO endpoint_messages (conversation_id, role, content, request_id, sources, created_at) \
                 SELECT conversation_id, $1, $2, $3, $4, $5 FROM endpoint_conversations WHERE conversation_id = $6",
            )
            .bind(&message.role)
            .bind(&message.content)
            .bind(&message.request_id)
            .bind(sources)
            .bind(message.created_at)
            .bind(&message.conversation_id)
            .execute(self.pool())
            .await?;
            match inserted.rows_affected() {
                0 => Err(StoreError::NotFound(format!(
                    "conversation `{}`",
                    message.conversation_id
                ))),
                _ => Ok(()),
            }
        }

        async fn endpoint_messages(
            &self,
            conversation_id: &str,
        ) -> StoreResult<Vec<EndpointMessage>> {
            let rows = sqlx::query(
                "SELECT conversation_id, role, content, request_id, sources, created_at FROM endpoint_messages \
                 WHERE conversation_id = $1 ORDER BY seq",
            )
            .bind(conversation_id)
            .fetch_all(self.pool())
            .await?;
            rows.iter().map(message_of).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{CatalogStore, WorkspaceObjectRecord};
    use crate::test_support::{self, open_temporary};
    use crate::{MetadataStore, StoreError};

    #[tokio::test]
    async fn conversations_keep_message_order_and_go_with_their_endpoint() {
        let (_dir, store) = open_temporary().await;
        let alice = store
            .create_identity(test_support::user("alice"), 1)
            .await
            .unwrap()
            .id;
        for id in ["e1", "e2"] {
            store
                .create_workspace_object(WorkspaceObjectRecord {
                    object_type: "serving-endpoints".into(),
                    object_id: id.into(),
                    name: id.into(),
                    owner_id: alice,
                    spec: "{}".into(),
                    created_at: 1,
                })
                .await
                .unwrap();
        }
        let conversation = |id: &str, endpoint: &str| EndpointConversation {
            conversation_id: id.into(),
            endpoint_id: endpoint.into(),
            owner_id: alice,
            title: format!("about {id}"),
            created_at: 2,
        };
        for (id, endpoint) in [("c1", "e1"), ("c2", "e1"), ("c3", "e2")] {
            store
                .create_endpoint_conversation(&conversation(id, endpoint))
                .await
                .unwrap();
        }
        let ids = |conversations: Vec<EndpointConversation>| {
            conversations
                .into_iter()
                .map(|c| c.conversation_id)
                .collect::<Vec<_>>()
        };
        // Created in the same millisecond: the later one is still the newer.
        assert_eq!(
            ids(store.endpoint_conversations(alice, None).await.unwrap()),
            ["c3", "c2", "c1"]
        );
        assert_eq!(
            ids(store
                .endpoint_conversations(alice, Some("e1"))
                .await
                .unwrap()),
            ["c2", "c1"]
        );

        let message = |content: &str, role: &str| EndpointMessage {
            conversation_id: "c1".into(),
            role: role.into(),
            content: content.into(),
            request_id: (role == "assistant").then(|| "r1".into()),
            sources: vec!["main.docs.index".into()],
            created_at: 3,
        };
        for (content, role) in [("q1", "user"), ("a1", "assistant"), ("q2", "user")] {
            store
                .append_endpoint_message(&message(content, role))
                .await
                .unwrap();
        }
        let messages = store.endpoint_messages("c1").await.unwrap();
        let contents: Vec<_> = messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(contents, ["q1", "a1", "q2"]);
        assert_eq!(messages[1], message("a1", "assistant"));

        let orphan = EndpointMessage {
            conversation_id: "nope".into(),
            ..message("x", "user")
        };
        assert!(matches!(
            store.append_endpoint_message(&orphan).await,
            Err(StoreError::NotFound(_))
        ));

        assert!(store.delete_endpoint_conversation("c1").await.unwrap());
        assert!(!store.delete_endpoint_conversation("c1").await.unwrap());
        assert!(store.endpoint_messages("c1").await.unwrap().is_empty());

        store
            .delete_workspace_object("serving-endpoints", "e1")
            .await
            .unwrap();
        assert!(store.endpoint_conversation("c2").await.unwrap().is_none());
        assert_eq!(
            ids(store.endpoint_conversations(alice, None).await.unwrap()),
            ["c3"]
        );
    }
}
