//! Usage extraction from provider responses (OpenAI's `usage` object), kept
//! apart from the text the filter counts itself, so "provider said zero" and
//! "provider said nothing" stay different things.

use serde_json::Value;
use tollgate_protocol::Usage;

/// What one response told us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseReading {
    /// The provider's usage, if the response carried one.
    pub provider_usage: Option<Usage>,
    /// The generated text (content, refusals, tool-call arguments) for the local count.
    pub completion_text: String,
}

fn as_u32(v: Option<&Value>) -> Option<u32> {
    v.and_then(Value::as_u64)
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// Reads a `usage` object; `None` unless both token counts are present.
pub fn parse_usage(v: &Value) -> Option<Usage> {
    let prompt_tokens = as_u32(v.get("prompt_tokens"))?;
    let completion_tokens = as_u32(v.get("completion_tokens"))?;
    let cached_prompt_tokens = as_u32(
        v.get("prompt_tokens_details")
            .and_then(|d| d.get("cached_tokens")),
    )
    .unwrap_or(0)
    .min(prompt_tokens);
    Some(Usage {
        prompt_tokens,
        completion_tokens,
        cached_prompt_tokens,
    })
}

/// Appends the generated text of one choice object (`message` or `delta`).
pub fn push_choice_text(out: &mut String, msg: &Value) {
    for key in ["content", "refusal"] {
        if let Some(s) = msg.get(key).and_then(Value::as_str) {
            out.push_str(s);
        }
    }
    if let Some(calls) = msg.get("tool_calls").and_then(Value::as_array) {
        for call in calls {
            if let Some(f) = call.get("function") {
                for key in ["name", "arguments"] {
                    if let Some(s) = f.get(key).and_then(Value::as_str) {
                        out.push_str(s);
                    }
                }
            }
        }
    }
}

fn read_object(v: &Value, reading: &mut ResponseReading, field: &str) {
    if let Some(u) = v.get("usage").and_then(parse_usage) {
        reading.provider_usage = Some(u);
    }
    if let Some(choices) = v.get("choices").and_then(Value::as_array) {
        for c in choices {
            if let Some(msg) = c.get(field) {
                push_choice_text(&mut reading.completion_text, msg);
            }
        }
    }
}

/// A non-streaming `chat.completion` body.
pub fn read_json_response(body: &[u8]) -> ResponseReading {
    let mut reading = ResponseReading::default();
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        read_object(&v, &mut reading, "message");
    }
    reading
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_usage_and_text_from_json() {
        let r = read_json_response(
            br#"{"choices":[{"message":{"content":"Hi there","tool_calls":[{"function":{"name":"f","arguments":"{}"}}]}}],
                "usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":4}}}"#,
        );
        assert_eq!(
            r.provider_usage,
            Some(Usage {
                prompt_tokens: 12,
                completion_tokens: 3,
                cached_prompt_tokens: 4
            })
        );
        assert_eq!(r.completion_text, "Hi theref{}");
    }

    #[test]
    fn missing_usage_is_none_not_zero() {
        let r = read_json_response(br#"{"choices":[{"message":{"content":"x"}}]}"#);
        assert_eq!(r.provider_usage, None);
        let r = read_json_response(br#"{"usage":{"prompt_tokens":0,"completion_tokens":0}}"#);
        assert_eq!(r.provider_usage, Some(Usage::default()));
    }
}
