//! 10,000 requests through one VM: the module's memory must level off after
//! warm-up instead of growing with every request.

use std::time::Instant;

use serde_json::json;
use tollgate_protocol::{AUTHORIZE_PATH, SETTLE_BATCH_PATH};
use tollgate_wasm_test_harness::{CalloutAnswer, Vm};

use crate::common::*;

const REQUESTS: usize = 10_000;
const WARM_UP: usize = 1_000;

/// One request of the mix: streamed or not, allowed, denied or refused.
fn one_request(vm: &mut Vm, i: usize) {
    let stream = i.is_multiple_of(2);
    let hold = format!("h-{i}");
    match i % 10 {
        // A denial: the top-up message.
        7 => {
            let s = ask(vm, &chat_body(stream));
            let deny = json!({"decision": "action", "action": "topup", "message": "Top up.",
                "link": format!("https://pay.example/{i}")});
            vm.answer_path(
                AUTHORIZE_PATH,
                CalloutAnswer::Status(200, deny.to_string().as_bytes()),
            )
            .unwrap();
            vm.close(s).unwrap();
        }
        // A bad request.
        9 => {
            let s = vm.open().unwrap();
            let body = b"{\"model\": 5}";
            vm.request_headers(s, &pairs(&chat_headers(body.len())), false)
                .unwrap();
            vm.request_body(s, body, true).unwrap();
            vm.close(s).unwrap();
        }
        _ => {
            let s = allowed(vm, stream, &hold);
            if stream {
                vm.response_headers(s, SSE_HEADERS, false).unwrap();
                for w in ["The", " answer", " is", " forty", "-two", "."] {
                    vm.response_body(s, sse_content(w).as_bytes(), false)
                        .unwrap();
                }
                // Every fifth streamed request is abandoned by its client.
                if !i.is_multiple_of(5) {
                    let tail = sse_usage(12, 6) + "data: [DONE]\n\n";
                    vm.response_body(s, tail.as_bytes(), true).unwrap();
                }
            } else {
                let body = json!({"id": "c", "object": "chat.completion", "model": "gpt-4o-mini",
                    "choices": [{"index": 0, "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "The answer is forty-two."}}],
                    "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18}});
                vm.response_headers(
                    s,
                    &[(":status", "200"), ("content-type", "application/json")],
                    false,
                )
                .unwrap();
                vm.response_body(s, body.to_string().as_bytes(), true)
                    .unwrap();
            }
            vm.close(s).unwrap();
        }
    }
}

/// Acknowledges whatever settlements the next tick sends.
fn settle_due(vm: &mut Vm) -> usize {
    vm.advance(100).unwrap();
    let mut n = 0;
    while let Some(c) = vm.pending_to(SETTLE_BATCH_PATH) {
        let ack = batch_settled(&c.json());
        vm.answer(c.token, CalloutAnswer::Status(200, ack.as_bytes()))
            .unwrap();
        n += settlements_of(&c.json()).len();
    }
    n
}

#[test]
fn ten_thousand_requests_through_one_vm_do_not_grow_its_memory() {
    let mut vm = vm();
    let configured = vm.memory_bytes();
    let started = Instant::now();
    let mut settled = 0;
    let mut after_warm_up = 0;
    for i in 0..REQUESTS {
        one_request(&mut vm, i);
        if i % 50 == 49 {
            settled += settle_due(&mut vm);
        }
        if i + 1 == WARM_UP {
            after_warm_up = vm.memory_bytes();
        }
    }
    settled += settle_due(&mut vm);
    let end = vm.memory_bytes();
    let paid = (0..REQUESTS).filter(|i| i % 10 != 7 && i % 10 != 9).count();
    assert_eq!(settled, paid, "one settlement per forwarded request");
    assert_eq!(vm.metric("tollgate_settlement_backlog"), Some(0));
    assert!(vm.failed().is_none());
    let growth = end.saturating_sub(after_warm_up);
    eprintln!(
        "long run: {REQUESTS} requests in {:.1} s through one VM; linear memory {:.1} MiB after configure, \
         {:.1} MiB after {WARM_UP}, {:.1} MiB after {REQUESTS} (growth after warm-up: {growth} bytes)",
        started.elapsed().as_secs_f64(),
        configured as f64 / 1048576.0,
        after_warm_up as f64 / 1048576.0,
        end as f64 / 1048576.0,
    );
    // Linear memory grows in 64 KiB pages; a leak of even 8 bytes per request
    // would need more than one page over the 9,000 requests after warm-up.
    assert!(
        growth <= 65_536,
        "memory grew by {growth} bytes after warm-up"
    );
}
