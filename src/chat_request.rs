//! Parsing and validating an OpenAI chat-completions request body.
//!
//! Only what the paywall needs is extracted; the body itself is forwarded
//! untouched, so fields this parser does not know survive.

use serde_json::{Map, Value};
use tollgate_protocol::ApiError;

use crate::json_patch::{self, Members};

/// One message as the tokenizer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptMessage {
    pub role: String,
    pub name: Option<String>,
    /// Text content; for multi-part content, the text parts joined; tool calls as JSON.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRequest {
    pub model: String,
    pub user: Option<String>,
    pub stream: bool,
    /// `stream_options.include_usage` as the client sent it.
    pub include_usage: bool,
    /// `max_completion_tokens`, or the older `max_tokens`.
    pub max_output_tokens: Option<u32>,
    pub n: u32,
    pub messages: Vec<PromptMessage>,
    /// Tool definitions serialized as JSON, counted as prompt text.
    pub tools_json: Option<String>,
}

const MAX_CHOICES: u32 = 128;

fn bad(code: &str, param: &str, message: &str) -> ApiError {
    ApiError::invalid_request(code, message).with_param(param)
}

impl ChatRequest {
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::invalid_request(
                "invalid_json",
                format!("We could not parse the JSON body of your request: {e}"),
            )
        })?;
        let obj = value.as_object().ok_or_else(|| {
            ApiError::invalid_request("invalid_json", "The request body must be a JSON object.")
        })?;
        let max_output_tokens = match optional_u32(obj, "max_completion_tokens")? {
            Some(v) => Some(v),
            None => optional_u32(obj, "max_tokens")?,
        };
        Ok(ChatRequest {
            model: parse_model(obj)?,
            user: optional_string(obj, "user")?,
            stream: optional_bool(obj, "stream")?.unwrap_or(false),
            include_usage: obj
                .get("stream_options")
                .and_then(|o| o.get("include_usage"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
            max_output_tokens,
            n: parse_n(obj)?,
            messages: parse_messages_field(obj)?,
            tools_json: parse_tools(obj)?,
        })
    }
}

type Object = Map<String, Value>;

fn parse_model(obj: &Object) -> Result<String, ApiError> {
    match obj.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => Ok(m.clone()),
        Some(_) => Err(bad(
            "invalid_type",
            "model",
            "`model` must be a non-empty string.",
        )),
        None => Err(bad(
            "missing_required_parameter",
            "model",
            "You must provide a model parameter.",
        )),
    }
}

fn parse_messages_field(obj: &Object) -> Result<Vec<PromptMessage>, ApiError> {
    match obj.get("messages") {
        Some(Value::Array(ms)) if !ms.is_empty() => parse_messages(ms),
        Some(Value::Array(_)) => Err(bad(
            "empty_array",
            "messages",
            "`messages` must contain at least one message.",
        )),
        Some(_) => Err(bad(
            "invalid_type",
            "messages",
            "`messages` must be an array.",
        )),
        None => Err(bad(
            "missing_required_parameter",
            "messages",
            "Missing required parameter: 'messages'.",
        )),
    }
}

fn optional_string(obj: &Object, field: &str) -> Result<Option<String>, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(
            "invalid_type",
            field,
            &format!("`{field}` must be a string."),
        )),
    }
}

fn optional_bool(obj: &Object, field: &str) -> Result<Option<bool>, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad(
            "invalid_type",
            field,
            &format!("`{field}` must be a boolean."),
        )),
    }
}

/// Choices asked for. OpenAI's own bound: a huge n would ask the sidecar to
/// hold n × the output.
fn parse_n(obj: &Object) -> Result<u32, ApiError> {
    let n = optional_u32(obj, "n")?.unwrap_or(1);
    if !(1..=MAX_CHOICES).contains(&n) {
        return Err(bad(
            "invalid_value",
            "n",
            &format!("`n` must be between 1 and {MAX_CHOICES}."),
        ));
    }
    Ok(n)
}

fn parse_tools(obj: &Object) -> Result<Option<String>, ApiError> {
    match obj.get("tools") {
        None | Some(Value::Null) => Ok(None),
        Some(t @ Value::Array(_)) => Ok(Some(t.to_string())),
        Some(_) => Err(bad("invalid_type", "tools", "`tools` must be an array.")),
    }
}

/// Which field carries the client's output limit: `max_completion_tokens`
/// when the client used it, `max_tokens` otherwise (the one every
/// OpenAI-compatible provider reads).
fn output_limit_field(members: &Members) -> &'static str {
    match members.value("max_completion_tokens") {
        Some(v) if v != b"null" => "max_completion_tokens",
        _ => "max_tokens",
    }
}

/// What the filter changes in a request before it goes to the provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes<'a> {
    /// The provider's name for the model (an alias or a provider-specific id
    /// such as OpenRouter's `openai/gpt-4o`).
    pub model: Option<&'a str>,
    /// The output limit (per choice) the balance affords.
    pub max_output: Option<u32>,
    /// Ask for `stream_options.include_usage`.
    pub include_usage: bool,
}

/// The body with `changes` made on its bytes (see `json_patch`): every other
/// byte as the client sent it. None when there is nothing to change or the
/// body is not a JSON object (already rejected).
pub fn apply(body: &[u8], changes: &Changes) -> Option<Vec<u8>> {
    if *changes == Changes::default() {
        return None;
    }
    let members = Members::scan(body)?;
    let mut edits: Vec<(&str, String)> = Vec::with_capacity(3);
    if let Some(model) = changes.model {
        edits.push(("model", serde_json::to_string(model).ok()?));
    }
    if let Some(max) = changes.max_output {
        edits.push((output_limit_field(&members), max.to_string()));
    }
    if changes.include_usage {
        let options = match members.value("stream_options") {
            Some(o) if o.first() == Some(&b'{') => {
                String::from_utf8(json_patch::set_members(o, &[("include_usage", "true")])?).ok()?
            }
            _ => r#"{"include_usage":true}"#.to_string(),
        };
        edits.push(("stream_options", options));
    }
    let edits: Vec<(&str, &str)> = edits.iter().map(|(k, v)| (*k, v.as_str())).collect();
    members.set(&edits)
}

/// The body with its output limit lowered to `max` (per choice).
pub fn limit_output(body: &[u8], max: u32) -> Option<Vec<u8>> {
    apply(
        body,
        &Changes {
            max_output: Some(max),
            ..Changes::default()
        },
    )
}

/// The body with `model` replaced by the provider's name for it.
pub fn set_model(body: &[u8], model: &str) -> Option<Vec<u8>> {
    apply(
        body,
        &Changes {
            model: Some(model),
            ..Changes::default()
        },
    )
}

/// The body with `stream_options.include_usage` set to true.
pub fn force_include_usage(body: &[u8]) -> Option<Vec<u8>> {
    apply(
        body,
        &Changes {
            include_usage: true,
            ..Changes::default()
        },
    )
}

fn optional_u32(obj: &Map<String, Value>, key: &str) -> Result<Option<u32>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .map(Some)
            .ok_or_else(|| {
                bad(
                    "invalid_value",
                    key,
                    &format!("`{key}` must be a non-negative integer."),
                )
            }),
        Some(_) => Err(bad(
            "invalid_type",
            key,
            &format!("`{key}` must be an integer."),
        )),
    }
}

fn parse_messages(ms: &[Value]) -> Result<Vec<PromptMessage>, ApiError> {
    let mut out = Vec::with_capacity(ms.len());
    for (i, m) in ms.iter().enumerate() {
        let param = format!("messages.[{i}]");
        let obj = m
            .as_object()
            .ok_or_else(|| bad("invalid_type", &param, "Each message must be an object."))?;
        let role = match obj.get("role") {
            Some(Value::String(r)) if !r.is_empty() => r.clone(),
            _ => {
                return Err(bad(
                    "missing_required_parameter",
                    &format!("{param}.role"),
                    "Each message needs a `role` string.",
                ))
            }
        };
        if !ROLES.contains(&role.as_str()) {
            return Err(bad(
                "invalid_value",
                &format!("{param}.role"),
                &format!(
                    "Unknown role {role:?}; expected one of {}.",
                    ROLES.join(", ")
                ),
            ));
        }
        check_content(obj, &role, &param)?;
        let name = obj.get("name").and_then(Value::as_str).map(str::to_string);
        let mut text = content_text(obj.get("content"));
        if let Some(calls) = obj.get("tool_calls") {
            text.push_str(&calls.to_string());
        }
        out.push(PromptMessage { role, name, text });
    }
    Ok(out)
}

const ROLES: [&str; 6] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// Content is a string or an array of parts; only an assistant message that
/// calls tools (or refuses) may leave it out, as OpenAI's API does.
fn check_content(msg: &Map<String, Value>, role: &str, param: &str) -> Result<(), ApiError> {
    let param = format!("{param}.content");
    match msg.get("content") {
        Some(Value::String(_)) => Ok(()),
        Some(Value::Array(parts)) if parts.iter().all(Value::is_object) => Ok(()),
        None | Some(Value::Null)
            if role == "assistant"
                && ["tool_calls", "function_call", "refusal"]
                    .iter()
                    .any(|k| msg.get(*k).is_some_and(|v| !v.is_null())) =>
        {
            Ok(())
        }
        None | Some(Value::Null) => Err(bad(
            "missing_required_parameter",
            &param,
            "Each message needs `content` (a string or an array of content parts).",
        )),
        Some(_) => Err(bad(
            "invalid_type",
            &param,
            "`content` must be a string or an array of content parts.",
        )),
    }
}

/// Text of a message's content: a string, or the `text` of each part of an array.
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_fields_the_paywall_needs() {
        let r = ChatRequest::parse(
            br#"{"model":"gpt-4o","user":"u1","stream":true,"max_tokens":50,"n":2,
                 "messages":[{"role":"system","content":"be brief"},
                             {"role":"user","name":"ann","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"x"}}]}],
                 "tools":[{"type":"function","function":{"name":"f"}}]}"#,
        )
        .unwrap();
        assert_eq!(r.model, "gpt-4o");
        assert_eq!(r.user.as_deref(), Some("u1"));
        assert!(r.stream);
        assert_eq!(r.max_output_tokens, Some(50));
        assert_eq!(r.n, 2);
        assert_eq!(r.messages.len(), 2);
        assert_eq!(r.messages[1].text, "hi");
        assert_eq!(r.messages[1].name.as_deref(), Some("ann"));
        assert!(r.tools_json.unwrap().contains("\"f\""));
    }

    #[test]
    fn an_assistant_tool_call_needs_no_content() {
        let r = ChatRequest::parse(
            br#"{"model":"m","messages":[{"role":"assistant","content":null,
                 "tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},
                 {"role":"tool","tool_call_id":"c","content":"42"}]}"#,
        )
        .unwrap();
        assert!(r.messages[0].text.contains("\"f\""));
    }

    #[test]
    fn set_model_replaces_only_the_model() {
        let body = br#"{"model":"fast","messages":[{"role":"user","content":"x"}],"x_extra":1}"#;
        let out: Value =
            serde_json::from_slice(&set_model(body, "openai/gpt-4o").unwrap()).unwrap();
        assert_eq!(out["model"], "openai/gpt-4o");
        assert_eq!(out["x_extra"], 1);
        assert_eq!(out["messages"][0]["content"], "x");
    }

    #[test]
    fn max_completion_tokens_wins_over_max_tokens() {
        let r = ChatRequest::parse(
            br#"{"model":"m","max_tokens":10,"max_completion_tokens":20,"messages":[{"role":"user","content":"x"}]}"#,
        )
        .unwrap();
        assert_eq!(r.max_output_tokens, Some(20));
    }

    #[test]
    fn rejects_bad_bodies_with_param_and_code() {
        let cases: &[(&[u8], &str, Option<&str>)] = &[
            (b"{not json", "invalid_json", None),
            (b"[]", "invalid_json", None),
            (
                br#"{"messages":[{"role":"user","content":"x"}]}"#,
                "missing_required_parameter",
                Some("model"),
            ),
            (
                br#"{"model":"m"}"#,
                "missing_required_parameter",
                Some("messages"),
            ),
            (
                br#"{"model":"m","messages":[]}"#,
                "empty_array",
                Some("messages"),
            ),
            (
                br#"{"model":"m","messages":[{"role":"user"}]}"#,
                "missing_required_parameter",
                Some("messages.[0].content"),
            ),
            (
                br#"{"model":"m","messages":[{"role":"user","content":7}]}"#,
                "invalid_type",
                Some("messages.[0].content"),
            ),
            (
                br#"{"model":"m","messages":[{"role":"user","content":["hi"]}]}"#,
                "invalid_type",
                Some("messages.[0].content"),
            ),
            (
                br#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#,
                "invalid_value",
                Some("messages.[0].role"),
            ),
            (
                br#"{"model":"","messages":[{"role":"user","content":"x"}]}"#,
                "invalid_type",
                Some("model"),
            ),
            (
                br#"{"model":"m","messages":[{"content":"x"}]}"#,
                "missing_required_parameter",
                Some("messages.[0].role"),
            ),
            (
                br#"{"model":"m","user":5,"messages":[{"role":"user","content":"x"}]}"#,
                "invalid_type",
                Some("user"),
            ),
            (
                br#"{"model":"m","max_tokens":-1,"messages":[{"role":"user","content":"x"}]}"#,
                "invalid_value",
                Some("max_tokens"),
            ),
            (
                br#"{"model":"m","stream":"yes","messages":[{"role":"user","content":"x"}]}"#,
                "invalid_type",
                Some("stream"),
            ),
        ];
        for (body, code, param) in cases {
            let e = ChatRequest::parse(body).unwrap_err();
            assert_eq!(
                e.code.as_deref(),
                Some(*code),
                "{}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(
                e.param.as_deref(),
                *param,
                "{}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(e.kind, "invalid_request_error");
        }
    }

    #[test]
    fn include_usage_is_forced_and_everything_else_kept() {
        let body = br#"{"model":"m","stream":true,"stream_options":{"other":1},"messages":[{"role":"user","content":"x"}],"tools":[]}"#;
        let r = ChatRequest::parse(body).unwrap();
        assert!(r.stream && !r.include_usage);
        let forced = force_include_usage(body).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&forced).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["stream_options"]["other"], 1);
        assert_eq!(v["messages"][0]["content"], "x");
        assert!(ChatRequest::parse(&forced).unwrap().include_usage);
        let odd = force_include_usage(br#"{"stream_options":5}"#).unwrap();
        assert_eq!(
            String::from_utf8(odd).unwrap(),
            r#"{"stream_options":{"include_usage":true}}"#
        );
    }

    #[test]
    fn output_limit_goes_where_the_client_put_it() {
        let old = br#"{"model":"m","max_tokens":500,"messages":[]}"#;
        let v: serde_json::Value = serde_json::from_slice(&limit_output(old, 40).unwrap()).unwrap();
        assert_eq!(
            (v["max_tokens"].as_u64(), v.get("max_completion_tokens")),
            (Some(40), None)
        );
        let new = br#"{"model":"m","max_completion_tokens":500,"messages":[]}"#;
        let v: serde_json::Value = serde_json::from_slice(&limit_output(new, 40).unwrap()).unwrap();
        assert_eq!(
            (v["max_completion_tokens"].as_u64(), v.get("max_tokens")),
            (Some(40), None)
        );
        let none = br#"{"model":"m","messages":[]}"#;
        let v: serde_json::Value =
            serde_json::from_slice(&limit_output(none, 40).unwrap()).unwrap();
        assert_eq!(v["max_tokens"], 40);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let body = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":{}1{}}}]}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert_eq!(
            ChatRequest::parse(body.as_bytes())
                .unwrap_err()
                .code
                .as_deref(),
            Some("invalid_json")
        );
    }

    #[test]
    fn changes_keep_key_order_spelling_and_unknown_fields() {
        let body = br#"{"stream":true, "temperature":0.70, "model":"gpt-4o","max_tokens":900,
            "vendor_x":{"b":1,"a":2},"stream_options":{"z":1},"messages":[{"role":"user","content":"hi"}]}"#;
        let changes = Changes {
            model: Some("openai/gpt-4o"),
            max_output: Some(40),
            include_usage: true,
        };
        let out = String::from_utf8(apply(body, &changes).unwrap()).unwrap();
        assert_eq!(
            out,
            r#"{"stream":true, "temperature":0.70, "model":"openai/gpt-4o","max_tokens":40,
            "vendor_x":{"b":1,"a":2},"stream_options":{"z":1,"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#
        );
        assert_eq!(apply(body, &Changes::default()), None, "nothing to change");
    }
}
