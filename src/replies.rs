//! Bodies the filter answers with itself: OpenAI-shaped errors, and the
//! "action needed" reply rendered as an ordinary assistant message.

use serde_json::json;
use tollgate_protocol::Action;

/// A reply the filter sends instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl LocalReply {
    pub fn error(status: u32, err: &tollgate_protocol::ApiError) -> Self {
        LocalReply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: err.to_body(),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// The assistant message that asks the user to act, as a `chat.completion`
/// (or an SSE stream of `chat.completion.chunk`s ending in `[DONE]` when the
/// client asked for a stream), so an unmodified app shows it as a normal reply.
pub fn action_reply(
    action: Action,
    message: &str,
    link: &str,
    model: &str,
    request_id: &str,
    created: u64,
    stream: bool,
) -> LocalReply {
    let content = if link.is_empty() {
        message.to_string()
    } else {
        format!("{message}\n\n{link}")
    };
    let id = format!("chatcmpl-tollgate-{request_id}");
    let (content_type, body) = if stream {
        let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
            json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            })
        };
        let events = [
            chunk(json!({"role": "assistant", "content": ""}), json!(null)),
            chunk(json!({"content": content}), json!(null)),
            chunk(json!({}), json!("stop")),
        ];
        let mut body = String::new();
        for e in events {
            body.push_str("data: ");
            body.push_str(&e.to_string());
            body.push_str("\n\n");
        }
        body.push_str("data: [DONE]\n\n");
        ("text/event-stream", body)
    } else {
        let completion = json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": null},
                "logprobs": null,
                "finish_reason": "stop",
            }],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        });
        ("application/json", completion.to_string())
    };
    LocalReply {
        status: 200,
        headers: vec![
            ("content-type".into(), content_type.into()),
            ("x-tollgate-action".into(), action.as_str().into()),
        ],
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_reply_is_a_chat_completion_with_the_link() {
        let r = action_reply(
            Action::Topup,
            "Top up",
            "http://x/pay/t",
            "gpt-4o",
            "rid",
            7,
            false,
        );
        assert_eq!(r.status, 200);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        assert!(v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("http://x/pay/t"));
        assert!(r
            .headers
            .contains(&("x-tollgate-action".into(), "topup".into())));
    }

    #[test]
    fn a_reply_without_link_is_just_the_message() {
        let r = action_reply(Action::SpendCap, "Limit reached.", "", "m", "rid", 7, false);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "Limit reached.");
        assert!(r
            .headers
            .contains(&("x-tollgate-action".into(), "spend_cap".into())));
    }

    #[test]
    fn stream_reply_is_valid_sse_ending_in_done() {
        let r = action_reply(Action::Topup, "Top up", "http://l", "m", "rid", 7, true);
        let events: Vec<&str> = r.body.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.last(), Some(&"data: [DONE]"));
        for e in &events[..events.len() - 1] {
            let v: serde_json::Value =
                serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(v["object"], "chat.completion.chunk");
        }
        assert!(r.body.contains("http://l"));
    }
}
