//! Helpers shared by the scenario groups: a configured VM, a paid chat
//! request, the sidecar's answers, and reading the settlements the VM sent.

use serde_json::{json, Value};
use tollgate_protocol::{AUTHORIZE_PATH, SETTLE_BATCH_PATH, SETTLE_PATH};
use tollgate_wasm_test_harness::{Action, CalloutAnswer, StreamId, Vm};

pub const KEY: &str = "pk_harness_0123456789";

pub fn vm() -> Vm {
    Vm::start(&Vm::default_config()).unwrap()
}

pub fn vm_with(overrides: Value) -> Vm {
    let mut config = Vm::default_config();
    for (k, v) in overrides.as_object().unwrap() {
        config[k] = v.clone();
    }
    Vm::start(&config).unwrap()
}

pub fn chat_body(stream: bool) -> Vec<u8> {
    json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Say hello in three words."}],
        "user": "alice",
        "stream": stream,
        "max_tokens": 50
    })
    .to_string()
    .into_bytes()
}

pub fn chat_headers(len: usize) -> Vec<(String, String)> {
    vec![
        (":method".into(), "POST".into()),
        (":path".into(), "/v1/chat/completions".into()),
        (":authority".into(), "tollgate.local".into()),
        ("authorization".into(), format!("Bearer {KEY}")),
        ("content-type".into(), "application/json".into()),
        ("content-length".into(), len.to_string()),
        ("x-request-id".into(), "req-harness".into()),
    ]
}

pub fn pairs(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// Opens a stream and sends a chat request; the filter must be waiting for the sidecar.
pub fn ask(vm: &mut Vm, body: &[u8]) -> StreamId {
    let s = vm.open().unwrap();
    let h = chat_headers(body.len());
    assert_eq!(
        vm.request_headers(s, &pairs(&h), false).unwrap(),
        Action::Pause
    );
    assert_eq!(vm.request_body(s, body, true).unwrap(), Action::Pause);
    assert!(
        vm.pending_to(AUTHORIZE_PATH).is_some(),
        "no authorize callout was sent"
    );
    s
}

pub fn allow(hold: &str) -> Vec<u8> {
    json!({
        "decision": "allow",
        "hold_id": hold,
        "held_micros": 1000,
        "route": {
            "provider": "mock",
            "cluster": "provider_mock",
            "auth_header": "authorization",
            "auth_value": "Bearer sk-provider",
            "upstream_model": null
        }
    })
    .to_string()
    .into_bytes()
}

/// A request the sidecar allowed: forwarded upstream under `hold`.
pub fn allowed(vm: &mut Vm, stream: bool, hold: &str) -> StreamId {
    let s = ask(vm, &chat_body(stream));
    vm.answer_path(AUTHORIZE_PATH, CalloutAnswer::Status(200, &allow(hold)))
        .unwrap();
    let view = vm.stream(s);
    assert!(view.local_reply.is_none(), "{:?}", view.local_reply);
    assert!(view.request_released, "request was not resumed");
    s
}

/// Every settlement the VM has dispatched (retries included), oldest first,
/// taken out of the batches that carried them.
pub fn settle_calls(vm: &Vm) -> Vec<Value> {
    vm.dispatched()
        .iter()
        .filter(|c| c.header(":path") == Some(SETTLE_BATCH_PATH))
        .flat_map(|c| settlements_of(&c.json()))
        .collect()
}

/// The settlements a batch callout carries.
pub fn settlements_of(batch: &Value) -> Vec<Value> {
    batch["settlements"].as_array().cloned().unwrap_or_default()
}

/// The sidecar's answer to a batch: every settlement settled.
pub fn batch_settled(batch: &Value) -> String {
    let results: Vec<Value> = settlements_of(batch)
        .iter()
        .map(|s| {
            json!({"hold_id": s["hold_id"], "status": 200, "settled": {"hold_id": s["hold_id"],
            "state": "posted", "charge_id": "c1", "amount_micros": 1, "replayed": false}})
        })
        .collect();
    json!({ "results": results }).to_string()
}

/// Answers the settlements that held-back response ends wait for
/// (`settle_before_release`), as the sidecar would; returns them.
pub fn acknowledge_ends(vm: &mut Vm) -> Vec<Value> {
    let mut acknowledged = Vec::new();
    while let Some(c) = vm.pending_to(SETTLE_PATH) {
        let settlement = c.json();
        let answer = json!({"hold_id": settlement["hold_id"], "state": "posted", "charge_id": "c1",
            "amount_micros": 1, "replayed": false})
        .to_string();
        vm.answer(c.token, CalloutAnswer::Status(200, answer.as_bytes()))
            .unwrap();
        acknowledged.push(settlement);
    }
    acknowledged
}

/// Lets ticks run and acknowledges every settlement; returns the acknowledged ones.
pub fn deliver_settlements(vm: &mut Vm) -> Vec<Value> {
    let mut delivered = Vec::new();
    for _ in 0..100 {
        vm.advance(100).unwrap();
        while let Some(c) = vm.pending_to(SETTLE_BATCH_PATH) {
            let ack = batch_settled(&c.json());
            vm.answer(c.token, CalloutAnswer::Status(200, ack.as_bytes()))
                .unwrap();
            delivered.extend(settlements_of(&c.json()));
        }
        if vm.metric("tollgate_settlement_backlog") == Some(0) && !delivered.is_empty() {
            break;
        }
    }
    delivered
}

/// The error body of a local reply: OpenAI's `{"error": {...}}`.
pub fn error_of(vm: &Vm, s: StreamId) -> (u32, Value) {
    let reply = vm
        .stream(s)
        .local_reply
        .clone()
        .expect("the filter did not answer locally");
    let body = reply.json();
    assert!(
        body["error"]["message"].is_string() && body["error"]["type"].is_string(),
        "not an OpenAI error: {body}"
    );
    (reply.status, body["error"].clone())
}

/// An SSE chunk carrying `text` as content.
pub fn sse_content(text: &str) -> String {
    let chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
    format!("data: {chunk}\n\n")
}

pub fn sse_usage(prompt: u32, completion: u32) -> String {
    let chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 1,
        "model": "gpt-4o-mini", "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion}});
    format!("data: {chunk}\n\n")
}

pub const SSE_HEADERS: &[(&str, &str)] =
    &[(":status", "200"), ("content-type", "text/event-stream")];
