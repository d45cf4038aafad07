//! Building deterministic chat completions (whole or as chunks).

use serde_json::{json, Value};
use tiktoken_rs::CoreBPE;

/// What the mock will answer, decided from the request.
pub struct Reply {
    pub model: String,
    pub content: Option<String>,
    pub tool_call: Option<(String, String)>,
    pub finish_reason: &'static str,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

fn last_user_text(req: &Value) -> String {
    req["messages"]
        .as_array()
        .and_then(|ms| ms.iter().rev().find(|m| m["role"] == "user"))
        .map(|m| match &m["content"] {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        })
        .unwrap_or_default()
}

fn prompt_tokens(bpe: &CoreBPE, req: &Value) -> usize {
    let mut n = 3;
    for m in req["messages"].as_array().into_iter().flatten() {
        n += 3;
        n += bpe.encode_ordinary(m["role"].as_str().unwrap_or("")).len();
        if let Some(s) = m["content"].as_str() {
            n += bpe.encode_ordinary(s).len();
        }
    }
    if let Some(tools) = req.get("tools") {
        n += bpe.encode_ordinary(&tools.to_string()).len();
    }
    n
}

pub fn decide(bpe: &CoreBPE, req: &Value) -> Reply {
    let model = req["model"].as_str().unwrap_or("mock-gpt").to_string();
    let max_tokens = req["max_completion_tokens"]
        .as_u64()
        .or_else(|| req["max_tokens"].as_u64())
        .map(|v| v as usize);
    let prompt_tokens = prompt_tokens(bpe, req);
    let wants_tool =
        req["tools"].as_array().is_some_and(|t| !t.is_empty()) && req["tool_choice"] != "none";
    if wants_tool {
        let name = req["tools"][0]["function"]["name"]
            .as_str()
            .unwrap_or("tool")
            .to_string();
        let args = json!({"query": last_user_text(req)}).to_string();
        let completion_tokens = bpe.encode_ordinary(&name).len() + bpe.encode_ordinary(&args).len();
        return Reply {
            model,
            content: None,
            tool_call: Some((name, args)),
            finish_reason: "tool_calls",
            prompt_tokens,
            completion_tokens,
        };
    }
    let json_mode = matches!(
        req["response_format"]["type"].as_str(),
        Some("json_object" | "json_schema")
    );
    let text = if json_mode {
        json!({"reply": "mock", "echo": last_user_text(req)}).to_string()
    } else {
        format!(
            "Hello from the mock provider. You said: {}",
            last_user_text(req)
        )
    };
    let mut tokens = bpe.encode_ordinary(&text);
    let mut finish_reason = "stop";
    if let Some(max) = max_tokens {
        if tokens.len() > max {
            tokens.truncate(max);
            finish_reason = "length";
        }
    }
    let content = bpe.decode(&tokens).unwrap_or(text);
    Reply {
        model,
        content: Some(content),
        tool_call: None,
        finish_reason,
        prompt_tokens,
        completion_tokens: tokens.len(),
    }
}

pub fn usage(r: &Reply) -> Value {
    json!({
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "total_tokens": r.prompt_tokens + r.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    })
}

pub fn completion(id: &str, created: u64, r: &Reply) -> Value {
    let message = match &r.tool_call {
        Some((name, args)) => json!({
            "role": "assistant", "content": null, "refusal": null,
            "tool_calls": [{"id": "call_mock_1", "type": "function", "function": {"name": name, "arguments": args}}],
        }),
        None => json!({"role": "assistant", "content": r.content, "refusal": null}),
    };
    json!({
        "id": id, "object": "chat.completion", "created": created, "model": r.model,
        "system_fingerprint": "fp_mock",
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": r.finish_reason}],
        "usage": usage(r),
    })
}

/// The `data:` payloads of a stream, without the final `[DONE]`.
pub fn chunks(bpe: &CoreBPE, id: &str, created: u64, r: &Reply, include_usage: bool) -> Vec<Value> {
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": r.model,
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if include_usage {
            c["usage"] = Value::Null;
        }
        c
    };
    let mut out = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    match &r.tool_call {
        Some((name, args)) => {
            out.push(chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_mock_1", "type": "function", "function": {"name": name, "arguments": ""}}]}),
                Value::Null,
            ));
            for piece in split_by_tokens(bpe, args) {
                out.push(chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                    Value::Null,
                ));
            }
        }
        None => {
            for piece in split_by_tokens(bpe, r.content.as_deref().unwrap_or("")) {
                out.push(chunk(json!({"content": piece}), Value::Null));
            }
        }
    }
    out.push(chunk(json!({}), json!(r.finish_reason)));
    if include_usage {
        out.push(json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": r.model,
            "system_fingerprint": "fp_mock", "choices": [], "usage": usage(r),
        }));
    }
    out
}

/// One piece per token, as real providers stream.
fn split_by_tokens(bpe: &CoreBPE, text: &str) -> Vec<String> {
    let tokens = bpe.encode_ordinary(text);
    let mut pieces = Vec::with_capacity(tokens.len());
    let mut pending: Vec<u32> = Vec::new();
    for t in tokens {
        pending.push(t);
        // A token may end inside a UTF-8 character; emit once the bytes decode.
        if let Ok(s) = bpe.decode(&pending) {
            pieces.push(s);
            pending.clear();
        }
    }
    if !pending.is_empty() {
        if let Ok(bytes) = bpe.decode_bytes(&pending) {
            pieces.push(String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    pieces
}
