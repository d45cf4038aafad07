//! The root context's settlement queue: retries with backoff while the
//! sidecar is away, a bounded backlog, refusals that are not retried, and a
//! drain when Envoy stops the VM.

use std::collections::HashMap;

use serde_json::json;
use tollgate_protocol::SETTLE_BATCH_PATH;
use tollgate_wasm_test_harness::{CalloutAnswer, Vm};

use crate::common::*;

/// Runs `n` short streaming requests to completion; returns their holds.
fn complete_requests(vm: &mut Vm, n: usize, prefix: &str) -> Vec<String> {
    (0..n)
        .map(|i| {
            let hold = format!("{prefix}-{i}");
            let s = allowed(vm, true, &hold);
            vm.response_headers(s, SSE_HEADERS, false).unwrap();
            let body = sse_content("Hi") + &sse_usage(3, 1) + "data: [DONE]\n\n";
            vm.response_body(s, body.as_bytes(), true).unwrap();
            vm.close(s).unwrap();
            hold
        })
        .collect()
}

/// Fails every settlement callout for `ms` of host time; returns how many
/// settlements (not batches) failed.
fn sidecar_down_for(vm: &mut Vm, ms: u64, answer: CalloutAnswer) -> usize {
    let mut failed = 0;
    for _ in 0..ms / 100 {
        vm.advance(100).unwrap();
        while let Some(c) = vm.pending_to(SETTLE_BATCH_PATH) {
            vm.answer(c.token, answer).unwrap();
            failed += settlements_of(&c.json()).len();
        }
    }
    failed
}

fn acknowledged_per_hold(delivered: &[serde_json::Value]) -> HashMap<String, usize> {
    let mut per_hold = HashMap::new();
    for s in delivered {
        *per_hold
            .entry(s["hold_id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    per_hold
}

#[test]
fn settlements_survive_a_sidecar_outage_and_arrive_once() {
    let mut vm = vm();
    let holds = complete_requests(&mut vm, 5, "h-outage");
    let failed = sidecar_down_for(&mut vm, 3_000, CalloutAnswer::Failure)
        + sidecar_down_for(&mut vm, 2_000, CalloutAnswer::Status(503, b""));
    assert!(failed >= 10, "retries while down: {failed}");
    assert_eq!(vm.metric("tollgate_settlement_backlog"), Some(5));
    assert!(vm.metric("tollgate_settlement_retries").unwrap() >= failed as i64);

    let per_hold = acknowledged_per_hold(&deliver_settlements(&mut vm));
    assert_eq!(per_hold.len(), 5);
    for hold in &holds {
        assert_eq!(per_hold.get(hold), Some(&1), "{hold}");
    }
    assert_eq!(vm.metric("tollgate_settlement_backlog"), Some(0));
    assert_eq!(vm.metric("tollgate_settlements_delivered"), Some(5));
    // Backoff: with a 5 s cap, 5 s of outage costs far fewer than one retry per tick.
    assert!(failed < 5 * 50, "no backoff: {failed} attempts");
}

#[test]
fn a_full_backlog_drops_with_a_metric_and_a_log_line_and_keeps_serving() {
    let mut vm = vm_with(json!({"settle_backlog_max": 3}));
    complete_requests(&mut vm, 5, "h-full");
    sidecar_down_for(&mut vm, 500, CalloutAnswer::Failure);
    assert_eq!(vm.metric("tollgate_settlement_dropped"), Some(2));
    assert_eq!(vm.metric("tollgate_settlement_backlog"), Some(3));
    assert!(vm.logged("settlement backlog full"));
    assert!(vm.failed().is_none());
    let per_hold = acknowledged_per_hold(&deliver_settlements(&mut vm));
    assert_eq!(
        per_hold.len(),
        3,
        "the three queued ones arrive: {per_hold:?}"
    );
    // And the VM goes on serving.
    complete_requests(&mut vm, 1, "h-after");
    assert_eq!(
        acknowledged_per_hold(&deliver_settlements(&mut vm)).len(),
        1
    );
}

#[test]
fn a_refused_settlement_is_not_retried_but_429_is() {
    let mut vm = vm();
    complete_requests(&mut vm, 1, "h-refused");
    vm.advance(100).unwrap();
    vm.answer_path(
        SETTLE_BATCH_PATH,
        CalloutAnswer::Status(404, br#"{"error":"unknown hold"}"#),
    )
    .unwrap();
    vm.advance(10_000).unwrap();
    assert_eq!(settle_calls(&vm).len(), 1, "a 404 will not change on retry");
    assert!(vm.logged("refused (404)"));
    assert_eq!(vm.metric("tollgate_settlement_backlog"), Some(0));

    complete_requests(&mut vm, 1, "h-busy");
    vm.advance(100).unwrap();
    vm.answer_path(SETTLE_BATCH_PATH, CalloutAnswer::Status(429, b""))
        .unwrap();
    assert_eq!(
        acknowledged_per_hold(&deliver_settlements(&mut vm)).len(),
        1
    );
}

#[test]
fn settlement_callouts_time_out_and_are_retried() {
    let mut vm = vm();
    complete_requests(&mut vm, 1, "h-slow");
    vm.advance(100).unwrap();
    assert!(vm.pending_to(SETTLE_BATCH_PATH).is_some());
    vm.advance(2_100).unwrap(); // the callout's own timeout passes unanswered
    assert!(vm.metric("tollgate_settlement_retries").unwrap() >= 1);
    let per_hold = acknowledged_per_hold(&deliver_settlements(&mut vm));
    assert_eq!(per_hold.get("h-slow-0"), Some(&1));
}

#[test]
fn stopping_the_vm_delivers_every_queued_settlement_first() {
    let mut vm = vm();
    complete_requests(&mut vm, 3, "h-drain");
    // Envoy stops the VM before the next tick: nothing has been sent yet.
    assert!(settle_calls(&vm).is_empty());
    assert!(!vm.shutdown().unwrap(), "the VM must ask for time to drain");
    let pending = vm.pending();
    assert_eq!(pending.len(), 1, "all three go out at once, in one batch");
    let batch = pending[0].json();
    assert_eq!(settlements_of(&batch).len(), 3);
    // The sidecar answers for two of them: the third goes out again at once.
    let mut partial: serde_json::Value = serde_json::from_str(&batch_settled(&batch)).unwrap();
    partial["results"].as_array_mut().unwrap().pop();
    vm.answer(
        pending[0].token,
        CalloutAnswer::Status(200, partial.to_string().as_bytes()),
    )
    .unwrap();
    assert!(
        !vm.host().done,
        "done before every settlement was acknowledged"
    );
    let again = vm.pending_to(SETTLE_BATCH_PATH).expect("the third again");
    assert_eq!(settlements_of(&again.json()).len(), 1);
    let ack = batch_settled(&again.json());
    vm.answer(again.token, CalloutAnswer::Status(200, ack.as_bytes()))
        .unwrap();
    assert!(vm.host().done);
    // An idle VM stops at once.
    let mut idle = vm_with(json!({}));
    assert!(idle.shutdown().unwrap());
}
