//! People's conversations with serving endpoints, kept by the server so that a client's chat history goes through
//! the public API like everything else.
//!
//! **Invariants**
//! - Only the person keeps their history: a delegated token (an agent acting for them) is refused.
//! - Someone else's conversation does not exist for the caller: it answers exactly as an unknown id.
//! - Starting a conversation needs `CAN_QUERY` on the endpoint; the history stays readable after that right is gone,
//!   since it holds only what the person sent and was answered.

use crate::{Serving, endpoint_by_name, serving_object_type};
use deputy_access::{Caller, Error};
use deputy_authz::PermissionLevel;
use deputy_store::catalog::WorkspaceObjectRecord;
use deputy_store::{EndpointConversation, EndpointMessage, EpochMillis, PrincipalId};

pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_CONTENT_BYTES: usize = 64 * 1024;
pub const MAX_SOURCES: usize = 50;
pub const MAX_SOURCE_BYTES: usize = 2 * 1024;
/// Request ids are UUIDs or token ids; the bound keeps the field from carrying content around the content limit.
pub const MAX_REQUEST_ID_BYTES: usize = 256;

/// A conversation as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub id: String,
    pub endpoint_name: String,
    pub title: String,
    pub created_ms: EpochMillis,
}

/// A message to append, as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub role: String,
    pub content: String,
    pub request_id: Option<String>,
    pub sources: Vec<String>,
}

/// The caller as the owner of conversations; agents acting for someone are refused.
fn owner(caller: &Caller) -> Result<PrincipalId, Error> {
    if caller.is_delegated() {
        return Err(Error::permission_denied(
            "conversations are kept by the user, not by an agent acting for them (this token names an actor)",
        ));
    }
    Ok(caller.identity.id)
}

fn missing(id: &str) -> Error {
    Error::not_found(format!("conversation `{id}` does not exist"))
}

/// The caller's conversation `id`; someone else's is missing, so ids cannot be probed.
async fn owned(state: &Serving, caller: &Caller, id: &str) -> Result<EndpointConversation, Error> {
    let owner = owner(caller)?;
    match state.access().store().endpoint_conversation(id).await? {
        Some(conversation) if conversation.owner_id == owner => Ok(conversation),
        _ => Err(missing(id)),
    }
}

fn named(
    conversation: EndpointConversation,
    endpoints: &[WorkspaceObjectRecord],
) -> Result<Conversation, Error> {
    // The store deletes an endpoint's conversations with it: a conversation without one is damage, not a case.
    let endpoint = endpoints
        .iter()
        .find(|record| record.object_id == conversation.endpoint_id)
        .ok_or_else(|| Error::internal("a conversation's serving endpoint is missing"))?;
    Ok(Conversation {
        id: conversation.conversation_id,
        endpoint_name: endpoint.name.clone(),
        title: conversation.title,
        created_ms: conversation.created_at,
    })
}

/// Starts a conversation of the caller with the endpoint they may query.
pub async fn create(
    state: &Serving,
    caller: &Caller,
    endpoint_name: &str,
    title: Option<String>,
) -> Result<Conversation, Error> {
    let owner = owner(caller)?;
    let title = title.unwrap_or_default();
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(Error::invalid_parameter(format!(
            "`title` must be at most {MAX_TITLE_CHARS} characters"
        )));
    }
    let (endpoint, _) =
        endpoint_by_name(state, caller, endpoint_name, PermissionLevel::CanQuery).await?;
    let conversation = EndpointConversation {
        conversation_id: uuid::Uuid::new_v4().simple().to_string(),
        endpoint_id: endpoint.object_id.clone(),
        owner_id: owner,
        title,
        created_at: deputy_access::clock::now_millis(),
    };
    state
        .access()
        .store()
        .create_endpoint_conversation(&conversation)
        .await?;
    named(conversation, &[endpoint])
}

/// The caller's conversations, with one endpoint or all, newest first.
pub async fn list(
    state: &Serving,
    caller: &Caller,
    endpoint_name: Option<&str>,
) -> Result<Vec<Conversation>, Error> {
    let owner = owner(caller)?;
    let store = state.access().store();
    let endpoints = store.list_workspace_objects(serving_object_type()).await?;
    let endpoint_id = match endpoint_name {
        Some(name) => match endpoints
            .iter()
            .find(|record| record.name.eq_ignore_ascii_case(name))
        {
            Some(record) => Some(record.object_id.as_str()),
            // No such endpoint, so no conversations with it; whether it exists is not said.
            None => return Ok(Vec::new()),
        },
        None => None,
    };
    store
        .endpoint_conversations(owner, endpoint_id)
        .await?
        .into_iter()
        .map(|conversation| named(conversation, &endpoints))
        .collect()
}

/// The caller's conversation with its messages in order.
pub async fn get(
    state: &Serving,
    caller: &Caller,
    id: &str,
) -> Result<(Conversation, Vec<EndpointMessage>), Error> {
    let conversation = owned(state, caller, id).await?;
    let store = state.access().store();
    let endpoint = store
        .get_workspace_object(serving_object_type(), &conversation.endpoint_id)
        .await?;
    let messages = store.endpoint_messages(id).await?;
    Ok((named(conversation, endpoint.as_slice())?, messages))
}

/// Appends a message to the caller's conversation.
pub async fn append(
    state: &Serving,
    caller: &Caller,
    id: &str,
    message: NewMessage,
) -> Result<EndpointMessage, Error> {
    owned(state, caller, id).await?;
    check(&message)?;
    let message = EndpointMessage {
        conversation_id: id.to_owned(),
        role: message.role,
        content: message.content,
        request_id: message.request_id,
        sources: message.sources,
        created_at: deputy_access::clock::now_millis(),
    };
    state
        .access()
        .store()
        .append_endpoint_message(&message)
        .await?;
    Ok(message)
}

fn check(message: &NewMessage) -> Result<(), Error> {
    if !matches!(message.role.as_str(), "user" | "assistant") {
        return Err(Error::invalid_parameter(
            "`role` must be `user` or `assistant`",
        ));
    }
    if message.content.len() > MAX_CONTENT_BYTES {
        return Err(Error::invalid_parameter(format!(
            "`content` must be at most {MAX_CONTENT_BYTES} bytes"
        )));
    }
    if message
        .request_id
        .as_ref()
        .is_some_and(|id| id.len() > MAX_REQUEST_ID_BYTES)
    {
        return Err(Error::invalid_parameter(format!(
            "`request_id` must be at most {MAX_REQUEST_ID_BYTES} bytes"
        )));
    }
    if message.sources.len() > MAX_SOURCES {
        return Err(Error::invalid_parameter(format!(
            "at most {MAX_SOURCES} `sources` are kept with a message"
        )));
    }
    if message
        .sources
        .iter()
        .any(|source| source.len() > MAX_SOURCE_BYTES)
    {
        return Err(Error::invalid_parameter(format!(
            "each of `sources` must be at most {MAX_SOURCE_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Deletes the caller's conversation with its messages.
pub async fn delete(state: &Serving, caller: &Caller, id: &str) -> Result<(), Error> {
    owned(state, caller, id).await?;
    match state
        .access()
        .store()
        .delete_endpoint_conversation(id)
        .await?
    {
        true => Ok(()),
        false => Err(missing(id)),
    }
}
