//! The OpenAI Responses dialect of `/serving-endpoints/responses` (`model` = endpoint name), translated to and from
//! the chat-completions shape the model backends and ChatAgents speak. ResponsesAgents answer in this dialect
//! already; their answers and stream events pass through unchanged.

use deputy_access::Error;
use serde_json::{Value, json};

/// A chat-completions body for a Responses request: `instructions` becomes a system message, `input` (a string or
/// a list of message items whose content is a string or `input_text`/`output_text` parts) the messages.
pub fn chat_body(request: &Value) -> Result<Value, Error> {
    let mut messages = Vec::new();
    if let Some(instructions) = request.get("instructions").and_then(Value::as_str) {
        messages.push(json!({ "role": "system", "content": instructions }));
    }
    match request.get("input") {
        Some(Value::String(text)) => messages.push(json!({ "role": "user", "content": text })),
        Some(Value::Array(items)) => {
            for item in items {
                messages.push(chat_message(item)?);
            }
        }
        _ => {
            return Err(Error::invalid_parameter(
                "`input` must be a string or a list of messages",
            ));
        }
    }
    let mut body = json!({ "messages": messages });
    for (from, to) in [
        ("max_output_tokens", "max_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("stream", "stream"),
    ] {
        if let Some(value) = request.get(from) {
            body[to] = value.clone();
        }
    }
    Ok(body)
}

fn chat_message(item: &Value) -> Result<Value, Error> {
    let role = item
        .get("role")
        .and_then(Value::as_str)
        .filter(|role| ["user", "assistant", "system", "developer"].contains(role))
        .ok_or_else(|| {
            Error::invalid_parameter(
                "each `input` item must be a message with a role of user, assistant, system or developer",
            )
        })?;
    let role = if role == "developer" { "system" } else { role };
    let content = match item.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|part| match part.get("type").and_then(Value::as_str) {
                Some("input_text" | "output_text") => part["text"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| Error::invalid_parameter("a text part needs `text`")),
                other => Err(Error::invalid_parameter(format!(
                    "content parts of type `{}` are not supported",
                    other.unwrap_or("(none)")
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?
            .join(""),
        _ => {
            return Err(Error::invalid_parameter(
                "a message's `content` must be a string or a list of text parts",
            ));
        }
    };
    Ok(json!({ "role": role, "content": content }))
}

/// A Responses object for an answer in the chat shape (an OpenAI chat completion or a ChatAgent's `messages`);
/// an answer that already has `output` (a ResponsesAgent's) passes unchanged.
pub fn response_from_chat(answer: Value, model: &str) -> Value {
    if answer.get("output").is_some() {
        return answer;
    }
    let texts: Vec<String> = if let Some(choices) = answer["choices"].as_array() {
        choices
            .iter()
            .filter_map(|choice| choice["message"]["content"].as_str().map(str::to_owned))
            .collect()
    } else {
        answer["messages"]
            .as_array()
            .map(|messages| {
                messages
                    .iter()
                    .filter(|message| message["role"] == "assistant")
                    .filter_map(|message| message["content"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let output: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(index, text)| output_message(&format!("msg_{index}"), text))
        .collect();
    let mut response = response_object(model, "completed", output);
    if let Some(usage) = answer.get("usage") {
        let input = usage["prompt_tokens"].as_u64().unwrap_or(0);
        let output = usage["completion_tokens"].as_u64().unwrap_or(0);
        response["usage"] = json!({ "input_tokens": input, "output_tokens": output, "total_tokens": input + output });
    }
    if let Some(custom_outputs) = answer.get("custom_outputs") {
        response["custom_outputs"] = custom_outputs.clone();
    }
    response
}

fn output_message(id: &str, text: &str) -> Value {
    json!({
        "type": "message", "id": id, "role": "assistant", "status": "completed",
        "content": [{ "type": "output_text", "text": text, "annotations": [] }],
    })
}

fn response_object(model: &str, status: &str, output: Vec<Value>) -> Value {
    json!({
        "id": format!("resp_{}", uuid::Uuid::new_v4().simple()),
        "object": "response",
        "created_at": deputy_access::clock::now_millis() / 1000,
        "model": model,
        "status": status,
        "output": output,
    })
}

/// Turns a stream of chat-shaped chunks into Responses stream events: `response.created`, one
/// `response.output_text.delta` per piece of text, then `response.completed` with the whole text. Events that are
/// already in the Responses dialect (a ResponsesAgent's, with a `type`) and errors pass unchanged.
pub struct StreamTranslator {
    model: String,
    text: String,
    started: bool,
    passed_through: bool,
}

impl StreamTranslator {
    pub fn new(model: &str) -> StreamTranslator {
        StreamTranslator {
            model: model.to_owned(),
            text: String::new(),
            started: false,
            passed_through: false,
        }
    }

    pub fn events(&mut self, chunk: Value) -> Vec<Value> {
        if chunk.get("type").is_some() || chunk.get("error_code").is_some() {
            self.passed_through = true;
            return vec![chunk];
        }
        let mut events = Vec::new();
        if !self.started {
            self.started = true;
            events.push(json!({
                "type": "response.created",
                "response": response_object(&self.model, "in_progress", Vec::new()),
            }));
        }
        let delta = chunk["choices"][0]["delta"]["content"]
            .as_str()
            .or_else(|| chunk["delta"]["content"].as_str())
            .unwrap_or_default();
        if !delta.is_empty() {
            self.text.push_str(delta);
            events.push(json!({
                "type": "response.output_text.delta", "item_id": "msg_0", "output_index": 0,
                "content_index": 0, "delta": delta,
            }));
        }
        events
    }

    /// The closing event, once the chunks are over; none after a stream that was in this dialect already.
    pub fn finish(&self) -> Option<Value> {
        if self.passed_through && !self.started {
            return None;
        }
        let output = vec![output_message("msg_0", &self.text)];
        Some(
            json!({ "type": "response.completed", "response": response_object(&self.model, "completed", output) }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_forms_become_chat_messages() {
        let body = chat_body(&json!({
            "model": "m", "instructions": "be brief", "max_output_tokens": 5,
            "input": [{ "role": "user", "content": [{ "type": "input_text", "text": "hi" }] },
                      { "role": "assistant", "content": "hello" }],
        }))
        .unwrap();
        assert_eq!(
            body,
            json!({ "messages": [{ "role": "system", "content": "be brief" }, { "role": "user", "content": "hi" },
                                  { "role": "assistant", "content": "hello" }], "max_tokens": 5 })
        );
        let bare = chat_body(&json!({ "input": "hello" })).unwrap();
        assert_eq!(bare["messages"][0]["content"], "hello");
        for bad in [
            json!({}),
            json!({ "input": 3 }),
            json!({ "input": [{ "role": "tool", "content": "x" }] }),
            json!({ "input": [{ "role": "user", "content": [{ "type": "input_image" }] }] }),
        ] {
            assert!(chat_body(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn chat_answers_become_response_objects() {
        let completion = json!({ "choices": [{ "message": { "role": "assistant", "content": "Paris" } }],
                                 "usage": { "prompt_tokens": 3, "completion_tokens": 1 } });
        let response = response_from_chat(completion, "chat");
        assert_eq!(response["object"], "response");
        assert_eq!(response["output"][0]["content"][0]["text"], "Paris");
        assert_eq!(response["usage"]["total_tokens"], 4);
        let agent = json!({ "messages": [{ "role": "assistant", "content": "a" }], "custom_outputs": { "k": 1 } });
        let response = response_from_chat(agent, "agent");
        assert_eq!(response["output"][0]["content"][0]["text"], "a");
        assert_eq!(response["custom_outputs"]["k"], 1);
        let native = json!({ "output": [] });
        assert_eq!(response_from_chat(native.clone(), "x"), native);
    }

    #[test]
    fn chunks_become_delta_events_then_completed() {
        let mut translator = StreamTranslator::new("chat");
        let first = translator.events(json!({ "choices": [{ "delta": { "content": "Par" } }] }));
        assert_eq!(first[0]["type"], "response.created");
        assert_eq!(first[1]["delta"], "Par");
        let second =
            translator.events(json!({ "delta": { "role": "assistant", "content": "is" } }));
        assert_eq!(second.len(), 1);
        let done = translator.finish().unwrap();
        assert_eq!(done["response"]["output"][0]["content"][0]["text"], "Paris");
        let mut native = StreamTranslator::new("agent");
        let event = json!({ "type": "response.output_text.delta", "delta": "x" });
        assert_eq!(native.events(event.clone()), vec![event]);
        assert!(
            native.finish().is_none(),
            "a ResponsesAgent's stream is not closed twice"
        );
    }
}
