//! Provider responses under faults: split anywhere, missing usage, garbage
//! lines, resets and client aborts. Each forwarded request ends in exactly one
//! settlement with the right outcome and usage.

use serde_json::{json, Value};
use tollgate_wasm_test_harness::Vm;

use crate::common::*;

const WORDS: [&str; 6] = ["Hello", " there", ",", " friend", "!", " Bye"];

/// A provider stream: role, six content chunks, finish, usage, [DONE].
fn provider_stream(with_usage: bool) -> Vec<String> {
    let role = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]});
    let finish = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
    let mut events = vec![format!("data: {role}\n\n")];
    events.extend(WORDS.iter().map(|w| sse_content(w)));
    events.push(format!("data: {finish}\n\n"));
    if with_usage {
        events.push(sse_usage(11, 7));
    }
    events.push("data: [DONE]\n\n".into());
    events
}

/// The one settlement the VM delivered for `hold`.
fn settlement_of(delivered: &[Value], hold: &str) -> Value {
    let mine: Vec<&Value> = delivered.iter().filter(|s| s["hold_id"] == hold).collect();
    assert_eq!(mine.len(), 1, "settlements for {hold}: {mine:?}");
    mine[0].clone()
}

/// Feeds a response; at its end, acknowledges the settlement the end waits
/// for (returned) so the end reaches the client.
fn feed(vm: &mut Vm, s: u32, chunks: &[&[u8]], end: bool) -> Vec<Value> {
    vm.response_headers(s, SSE_HEADERS, false).unwrap();
    for (i, chunk) in chunks.iter().enumerate() {
        vm.response_body(s, chunk, end && i == chunks.len() - 1)
            .unwrap();
    }
    acknowledge_ends(vm)
}

/// Every settlement the sidecar got: at the end of responses, then from the queue.
fn all_settlements(vm: &mut Vm, acknowledged: Vec<Value>) -> Vec<Value> {
    let mut all = acknowledged;
    all.extend(deliver_settlements(vm));
    all
}

#[test]
fn a_stream_split_byte_by_byte_reaches_the_client_intact_and_settles_once() {
    let mut vm = vm();
    let s = allowed(&mut vm, true, "h-bytes");
    let events = provider_stream(true);
    let bytes = events.concat().into_bytes();
    let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
    let acknowledged = feed(&mut vm, s, &chunks, true);
    vm.close(s).unwrap();
    // The client did not ask for usage: it gets everything but the usage event.
    let expected: String = events
        .iter()
        .filter(|e| !e.contains("\"usage\""))
        .cloned()
        .collect();
    assert_eq!(String::from_utf8_lossy(&vm.stream(s).client_body), expected);
    assert_eq!(
        vm.stream(s).response_header("x-request-id"),
        Some("req-harness")
    );

    let settled = settlement_of(&all_settlements(&mut vm, acknowledged), "h-bytes");
    assert_eq!(settled["outcome"], "completed");
    assert_eq!(settled["usage_source"], "provider");
    assert_eq!(settled["usage"]["prompt_tokens"], 11);
    assert_eq!(settled["usage"]["completion_tokens"], 7);
    // Each of the six pieces is one token; the provider's 7 is what is billed.
    assert_eq!(settled["local_completion_tokens"], 6);
    assert_eq!(settled["request_id"], "req-harness");
}

#[test]
fn a_client_that_asked_for_usage_gets_it() {
    let mut vm = vm();
    let body = json!({"model": "gpt-4o-mini", "user": "alice", "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "hi"}]})
    .to_string();
    let s = ask(&mut vm, body.as_bytes());
    vm.answer_path(
        tollgate_protocol::AUTHORIZE_PATH,
        tollgate_wasm_test_harness::CalloutAnswer::Status(200, &allow("h-usage")),
    )
    .unwrap();
    let all = provider_stream(true).concat();
    feed(&mut vm, s, &[all.as_bytes()], true);
    assert_eq!(String::from_utf8_lossy(&vm.stream(s).client_body), all);
}

#[test]
fn a_missing_usage_chunk_is_billed_from_the_local_count() {
    let mut vm = vm();
    let s = allowed(&mut vm, true, "h-nousage");
    let all = provider_stream(false).concat();
    let acknowledged = feed(&mut vm, s, &[all.as_bytes()], true);
    vm.close(s).unwrap();
    let settled = settlement_of(&all_settlements(&mut vm, acknowledged), "h-nousage");
    assert_eq!(settled["outcome"], "completed");
    assert_eq!(settled["usage_source"], "local");
    assert_eq!(
        settled["usage"]["completion_tokens"],
        settled["local_completion_tokens"]
    );
    assert!(settled["usage"]["completion_tokens"].as_u64().unwrap() >= 6);
    assert!(
        settled["usage"]["prompt_tokens"].as_u64().unwrap() > 5,
        "the prompt estimate"
    );
}

#[test]
fn malformed_event_lines_pass_through_without_harm() {
    let mut vm = vm();
    let s = allowed(&mut vm, true, "h-garbage");
    let mut events = provider_stream(true);
    events.insert(
        2,
        "data: {\"choices\": [{\"delta\": {\"content\": \n\n".into(),
    );
    events.insert(3, ": keep-alive comment\n\n".into());
    events.insert(4, "event: mystery\nid: 7\nretry: 10\n\n".into());
    events.insert(5, "a line with no colon\n\n".into());
    events.insert(
        6,
        "data: \n\ndata: null\n\ndata: []\n\ndata: {\"choices\": 5}\n\n".into(),
    );
    events.insert(7, "data: \u{1F600}\u{FFFD}\r\n\r\n".into());
    let all = events.concat();
    let acknowledged = feed(&mut vm, s, &[all.as_bytes()], true);
    vm.close(s).unwrap();
    assert!(vm.failed().is_none());
    let client = String::from_utf8_lossy(&vm.stream(s).client_body).into_owned();
    assert!(client.contains("a line with no colon") && client.contains("event: mystery"));
    let settled = settlement_of(&all_settlements(&mut vm, acknowledged), "h-garbage");
    assert_eq!(settled["usage"]["completion_tokens"], 7);
}

#[test]
fn an_upstream_reset_mid_event_bills_what_was_streamed() {
    let mut vm = vm();
    let s = allowed(&mut vm, true, "h-reset");
    let all = provider_stream(true).concat();
    let cut = all.find(" friend").unwrap() + 3; // inside the fourth content event
    assert!(feed(&mut vm, s, &[&all.as_bytes()[..cut]], false).is_empty());
    // Envoy ends the stream without end_of_stream, and says why.
    let details = b"response\0code_details".to_vec();
    vm.host_mut().properties.insert(
        details.clone(),
        b"upstream_reset_after_response_started{connection_termination}".to_vec(),
    );
    vm.close(s).unwrap();
    vm.host_mut().properties.remove(&details);
    let settled = settlement_of(&deliver_settlements(&mut vm), "h-reset");
    assert_eq!(settled["outcome"], "provider_cut");
    assert_eq!(settled["usage_source"], "local");
    let counted = settled["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(
        (2..=4).contains(&counted),
        "three whole content events, got {counted}"
    );
}

#[test]
fn a_client_abort_at_every_chunk_position_settles_each_hold_once() {
    let mut vm = vm();
    let events = provider_stream(true);
    let mut holds = Vec::new();
    let mut acknowledged = Vec::new();
    for k in 0..=events.len() {
        let hold = format!("h-abort-{k}");
        let s = allowed(&mut vm, true, &hold);
        let chunks: Vec<&[u8]> = events[..k].iter().map(|e| e.as_bytes()).collect();
        if k > 0 {
            acknowledged.extend(feed(&mut vm, s, &chunks, k == events.len()));
        }
        vm.close(s).unwrap();
        holds.push(hold);
    }
    let delivered = all_settlements(&mut vm, acknowledged);
    assert_eq!(delivered.len(), holds.len(), "one settlement per hold");
    let mut last = 0;
    for (k, hold) in holds.iter().enumerate() {
        let settled = settlement_of(&delivered, hold);
        let expected = if k == events.len() {
            "completed"
        } else {
            "client_aborted"
        };
        assert_eq!(settled["outcome"], expected, "abort after {k} events");
        let completion = settled["local_completion_tokens"].as_u64().unwrap();
        assert!(completion >= last, "the local count went down at {k}");
        last = completion;
        // Once the usage event has passed, the provider's figure is billed.
        let usage_seen = events[..k].iter().any(|e| e.contains("\"usage\""));
        let source = if usage_seen { "provider" } else { "local" };
        assert_eq!(settled["usage_source"], source, "abort after {k} events");
    }
    assert!(last >= 6);
}

#[test]
fn a_provider_error_before_any_token_voids_the_hold() {
    let mut vm = vm();
    let s = allowed(&mut vm, true, "h-503");
    vm.response_headers(
        s,
        &[(":status", "503"), ("content-type", "application/json")],
        false,
    )
    .unwrap();
    vm.response_body(
        s,
        br#"{"error":{"message":"overloaded","type":"server_error"}}"#,
        true,
    )
    .unwrap();
    let acknowledged = acknowledge_ends(&mut vm);
    vm.close(s).unwrap();
    let settled = settlement_of(&all_settlements(&mut vm, acknowledged), "h-503");
    assert_eq!(settled["outcome"], "provider_error");
    assert_eq!(settled["upstream_status"], 503);
    assert_eq!(settled["usage"]["prompt_tokens"], 0);
    assert_eq!(settled["usage"]["completion_tokens"], 0);
}

#[test]
fn a_json_response_in_chunks_is_billed_from_its_usage() {
    let mut vm = vm();
    let s = allowed(&mut vm, false, "h-json");
    let body = json!({"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": "Hello there, friend!"}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}})
    .to_string();
    vm.response_headers(
        s,
        &[(":status", "200"), ("content-type", "application/json")],
        false,
    )
    .unwrap();
    let chunks: Vec<&[u8]> = body.as_bytes().chunks(7).collect();
    for (i, c) in chunks.iter().enumerate() {
        vm.response_body(s, c, i == chunks.len() - 1).unwrap();
    }
    // The end of the body (at least its last byte) waits for the charge to be acknowledged.
    let early = vm.stream(s).client_body.clone();
    assert!(body.as_bytes().starts_with(&early) && early.len() < body.len());
    let acknowledged = acknowledge_ends(&mut vm);
    vm.close(s).unwrap();
    assert_eq!(vm.stream(s).client_body, body.as_bytes());
    let settled = settlement_of(&all_settlements(&mut vm, acknowledged), "h-json");
    assert_eq!(
        (
            settled["usage"]["prompt_tokens"].as_u64(),
            settled["usage"]["completion_tokens"].as_u64()
        ),
        (Some(12), Some(5))
    );
    assert_eq!(settled["usage_source"], "provider");
}
