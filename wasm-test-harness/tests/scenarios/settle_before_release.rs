//! Acknowledged settlement through the released `.wasm`: a stream's usage
//! event and `[DONE]` reach the client only after the sidecar acknowledged
//! the charge; without an answer in `settle_ack_timeout_ms` they go anyway
//! and the settlement is queued; with the option off nothing waits.

use serde_json::json;
use tollgate_protocol::SETTLE_PATH;

use crate::common::*;

fn stream_events() -> String {
    [
        sse_content("Hello"),
        sse_content(" there"),
        sse_usage(11, 2),
        "data: [DONE]\n\n".to_string(),
    ]
    .concat()
}

fn client_body(vm: &tollgate_wasm_test_harness::Vm, s: u32) -> String {
    String::from_utf8_lossy(&vm.stream(s).client_body).into_owned()
}

#[test]
fn done_waits_for_the_acknowledged_charge() {
    let mut vm = vm_with(json!({"settle_ack_timeout_ms": 500}));
    let s = allowed(&mut vm, true, "h-ack");
    vm.response_headers(s, SSE_HEADERS, false).unwrap();
    let events = stream_events();
    let (head, tail) = events.split_at(events.find("data: [DONE]").unwrap());
    vm.response_body(s, head.as_bytes(), false).unwrap();
    vm.response_body(s, tail.as_bytes(), false).unwrap();
    let so_far = client_body(&vm, s);
    assert!(
        so_far.contains("there") && !so_far.contains("[DONE]"),
        "{so_far}"
    );
    vm.response_body(s, b"", true).unwrap();
    assert!(
        !client_body(&vm, s).contains("[DONE]"),
        "not before the answer"
    );
    let callout = vm
        .pending_to(SETTLE_PATH)
        .expect("the settlement is sent at once");
    assert_eq!(callout.timeout_ms, 500);
    assert_eq!(callout.json()["hold_id"], "h-ack");
    let acknowledged = acknowledge_ends(&mut vm);
    assert_eq!(acknowledged.len(), 1);
    assert!(client_body(&vm, s).ends_with("data: [DONE]\n\n"));
    vm.close(s).unwrap();
    assert!(
        deliver_settlements(&mut vm).is_empty(),
        "acknowledged: nothing left for the queue"
    );
}

#[test]
fn without_an_answer_in_time_the_end_goes_and_the_settlement_is_queued() {
    let mut vm = vm_with(json!({"settle_ack_timeout_ms": 300}));
    let s = allowed(&mut vm, true, "h-late");
    vm.response_headers(s, SSE_HEADERS, false).unwrap();
    vm.response_body(s, stream_events().as_bytes(), true)
        .unwrap();
    assert!(!client_body(&vm, s).contains("[DONE]"));
    vm.advance(400).unwrap();
    assert!(
        client_body(&vm, s).ends_with("data: [DONE]\n\n"),
        "released at the timeout"
    );
    vm.close(s).unwrap();
    let queued = deliver_settlements(&mut vm);
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0]["hold_id"], "h-late");
    assert_eq!(queued[0]["outcome"], "completed");
}

#[test]
fn switched_off_nothing_waits() {
    let mut vm = vm_with(json!({"settle_before_release": false}));
    let s = allowed(&mut vm, true, "h-off");
    vm.response_headers(s, SSE_HEADERS, false).unwrap();
    vm.response_body(s, stream_events().as_bytes(), true)
        .unwrap();
    assert!(client_body(&vm, s).ends_with("data: [DONE]\n\n"));
    assert!(vm.pending_to(SETTLE_PATH).is_none());
    vm.close(s).unwrap();
    assert_eq!(deliver_settlements(&mut vm).len(), 1);
}
