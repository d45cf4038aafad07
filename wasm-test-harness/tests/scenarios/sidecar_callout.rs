//! The authorize callout under every way the sidecar can fail: the filter
//! fails closed with OpenAI's error shape, forwards nothing and holds nothing.

use serde_json::json;
use tollgate_protocol::{AUTHORIZE_PATH, INTERNAL_SECRET_HEADER, SETTLE_BATCH_PATH};
use tollgate_wasm_test_harness::CalloutAnswer;

use crate::common::*;

#[test]
fn an_allowed_request_goes_upstream_with_the_provider_key_only() {
    let mut vm = vm();
    let s = ask(&mut vm, &chat_body(false));
    let ask_call = vm.pending_to(AUTHORIZE_PATH).unwrap();
    assert_eq!(ask_call.cluster, "tollgate_ledger");
    assert_eq!(
        ask_call.header(INTERNAL_SECRET_HEADER),
        Some("harness-secret-0123456789")
    );
    assert_eq!(ask_call.header("x-request-id"), Some("req-harness"));
    let asked = ask_call.json();
    assert_eq!(asked["paywall_key"], KEY);
    assert_eq!(asked["user"], "alice");
    assert_eq!(asked["model"], "gpt-4o-mini");
    assert!(asked["prompt_tokens"].as_u64().unwrap() > 5);

    vm.answer(ask_call.token, CalloutAnswer::Status(200, &allow("h-1")))
        .unwrap();
    let view = vm.stream(s);
    assert!(view.local_reply.is_none());
    assert_eq!(view.resumes, 1);
    assert_eq!(
        view.request_header("authorization"),
        Some("Bearer sk-provider")
    );
    assert_eq!(
        view.request_header("x-tollgate-route"),
        Some("provider_mock")
    );
    assert_eq!(view.request_header("x-paywall-user"), None);
    assert_eq!(
        view.upstream_body,
        chat_body(false),
        "body must go upstream unchanged"
    );
    assert!(vm
        .host()
        .foreign_calls
        .contains(&"clear_route_cache".to_string()));
    let upstream = String::from_utf8_lossy(&view.upstream_body).to_string()
        + &format!("{:?}", view.request_headers);
    assert!(
        !upstream.contains(KEY),
        "the paywall key reached the provider"
    );
}

/// Each broken answer, and what the client must get instead.
fn fails_closed(answer: CalloutAnswer) {
    let mut vm = vm();
    let s = ask(&mut vm, &chat_body(false));
    vm.answer_path(AUTHORIZE_PATH, answer).unwrap();
    let (status, error) = error_of(&vm, s);
    assert_eq!(status, 503, "{answer:?}");
    assert_eq!(error["code"], "paywall_unavailable");
    let view = vm.stream(s);
    assert!(
        view.upstream_body.is_empty() && !view.request_released,
        "{answer:?} forwarded the request"
    );
    assert_eq!(
        view.local_reply.as_ref().unwrap().header("x-request-id"),
        Some("req-harness")
    );
    vm.close(s).unwrap();
    vm.advance(1_000).unwrap();
    assert!(
        vm.pending_to(SETTLE_BATCH_PATH).is_none(),
        "nothing was held, nothing to settle"
    );
    assert!(vm.failed().is_none());
}

#[test]
fn sidecar_5xx_fails_closed() {
    fails_closed(CalloutAnswer::Status(500, b"{\"error\":\"boom\"}"));
    fails_closed(CalloutAnswer::Status(503, b""));
}

#[test]
fn sidecar_answer_without_status_fails_closed() {
    fails_closed(CalloutAnswer::NoStatus(&allow("h-1")));
}

#[test]
fn sidecar_reset_fails_closed() {
    fails_closed(CalloutAnswer::Failure);
}

#[test]
fn malformed_or_truncated_decisions_fail_closed() {
    let whole = allow("h-1");
    for cut in [0, 1, whole.len() / 2, whole.len() - 1] {
        fails_closed(CalloutAnswer::Status(200, &whole[..cut]));
    }
    fails_closed(CalloutAnswer::Status(200, b"not json"));
    fails_closed(CalloutAnswer::Status(200, b"{\"decision\":\"maybe\"}"));
    fails_closed(CalloutAnswer::Status(
        200,
        b"{\"decision\":\"allow\",\"hold_id\":7}",
    ));
    fails_closed(CalloutAnswer::Status(200, &[0xff, 0xfe, 0x00]));
}

#[test]
fn unexpected_fields_in_a_decision_are_ignored() {
    let mut decision: serde_json::Value = serde_json::from_slice(&allow("h-2")).unwrap();
    decision["future_field"] = json!({"nested": [1, 2, 3]});
    decision["route"]["weight"] = json!(5);
    let mut vm = vm();
    let s = ask(&mut vm, &chat_body(false));
    vm.answer_path(
        AUTHORIZE_PATH,
        CalloutAnswer::Status(200, decision.to_string().as_bytes()),
    )
    .unwrap();
    assert!(vm.stream(s).request_released);
}

#[test]
fn callout_timeout_fails_closed_after_the_configured_time() {
    let mut vm = vm();
    let s = ask(&mut vm, &chat_body(false));
    vm.advance(1_900).unwrap();
    assert!(
        vm.stream(s).local_reply.is_none(),
        "answered before the timeout"
    );
    vm.advance(200).unwrap();
    let (status, error) = error_of(&vm, s);
    assert_eq!(
        (status, error["code"].as_str()),
        (503, Some("paywall_unavailable"))
    );
    assert!(vm.logged("failing closed"));
}

#[test]
fn refused_dispatch_fails_closed() {
    let mut vm = vm();
    vm.refuse_callouts(Some(2)); // BadArgument: e.g. an unknown cluster.
    let s = vm.open().unwrap();
    let body = chat_body(false);
    vm.request_headers(s, &pairs(&chat_headers(body.len())), false)
        .unwrap();
    vm.request_body(s, &body, true).unwrap();
    let (status, _) = error_of(&vm, s);
    assert_eq!(status, 503);
    assert!(vm.logged("authorize dispatch failed"));
}

#[test]
fn a_slow_answer_after_the_client_left_is_never_delivered_and_holds_nothing() {
    let mut vm = vm();
    let s = ask(&mut vm, &chat_body(false));
    let token = vm.pending_to(AUTHORIZE_PATH).unwrap().token;
    vm.close(s).unwrap();
    // Envoy cancels a destroyed context's callouts: the late answer has nowhere to go.
    assert!(vm
        .answer(token, CalloutAnswer::Status(200, &allow("h-late")))
        .is_err());
    vm.advance(5_000).unwrap();
    assert!(
        settle_calls(&vm).is_empty(),
        "settled a request that never ran"
    );
    // The VM still serves.
    let s2 = allowed(&mut vm, false, "h-next");
    assert!(vm.stream(s2).request_released);
}

#[test]
fn denials_come_back_as_an_assistant_message_with_the_link() {
    let decision = json!({"decision": "action", "action": "topup",
        "message": "Your balance is empty.", "link": "https://pay.example/t/abc"});
    for stream in [false, true] {
        let mut vm = vm();
        let s = ask(&mut vm, &chat_body(stream));
        vm.answer_path(
            AUTHORIZE_PATH,
            CalloutAnswer::Status(200, decision.to_string().as_bytes()),
        )
        .unwrap();
        let reply = vm.stream(s).local_reply.clone().unwrap();
        assert_eq!(reply.status, 200);
        let text = String::from_utf8(reply.body.clone()).unwrap();
        assert!(text.contains("https://pay.example/t/abc"), "{text}");
        if stream {
            assert_eq!(reply.header("content-type"), Some("text/event-stream"));
            assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
        } else {
            assert_eq!(reply.json()["choices"][0]["message"]["role"], "assistant");
        }
    }
}

#[test]
fn sidecar_rejections_keep_their_status_and_retry_after() {
    let decision = json!({"decision": "reject", "status": 429, "retry_after_secs": 7,
        "error": {"message": "Too many requests.", "type": "rate_limit_error",
                  "param": null, "code": "rate_limited"}});
    let mut vm = vm();
    let s = ask(&mut vm, &chat_body(false));
    vm.answer_path(
        AUTHORIZE_PATH,
        CalloutAnswer::Status(200, decision.to_string().as_bytes()),
    )
    .unwrap();
    let (status, error) = error_of(&vm, s);
    assert_eq!(
        (status, error["code"].as_str()),
        (429, Some("rate_limited"))
    );
    assert_eq!(
        vm.stream(s)
            .local_reply
            .as_ref()
            .unwrap()
            .header("retry-after"),
        Some("7")
    );
}

#[test]
fn the_route_decides_path_host_key_header_and_model_name() {
    let azure = json!({"decision": "allow", "hold_id": "h-az", "held_micros": 5,
        "route": {"provider": "azure", "cluster": "azure_east", "auth_header": "api-key",
                  "auth_value": "az-secret", "upstream_model": "gpt4o-prod",
                  "path": "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21",
                  "host": "contoso.openai.azure.com"}});
    let mut vm = vm();
    let s = ask(&mut vm, &chat_body(false));
    vm.answer_path(
        AUTHORIZE_PATH,
        CalloutAnswer::Status(200, azure.to_string().as_bytes()),
    )
    .unwrap();
    let view = vm.stream(s);
    assert_eq!(
        view.request_header(":path"),
        Some("/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21")
    );
    assert_eq!(
        view.request_header(":authority"),
        Some("contoso.openai.azure.com")
    );
    assert_eq!(view.request_header("api-key"), Some("az-secret"));
    assert_eq!(
        view.request_header("authorization"),
        None,
        "the paywall key must not go upstream"
    );
    let sent: serde_json::Value = serde_json::from_slice(&view.upstream_body).unwrap();
    assert_eq!(sent["model"], "gpt4o-prod");
    assert_eq!(sent["messages"][0]["content"], "Say hello in three words.");
    assert_eq!(
        view.request_header("content-length"),
        Some(view.upstream_body.len().to_string().as_str())
    );

    // A keyless self-hosted provider: no key header at all.
    let ollama = json!({"decision": "allow", "hold_id": "h-local", "held_micros": 5,
        "route": {"provider": "local", "cluster": "local", "auth_header": "authorization",
                  "auth_value": "", "upstream_model": null, "path": "/v1/chat/completions",
                  "host": "127.0.0.1:11434"}});
    let s = ask(&mut vm, &chat_body(false));
    vm.answer_path(
        AUTHORIZE_PATH,
        CalloutAnswer::Status(200, ollama.to_string().as_bytes()),
    )
    .unwrap();
    let view = vm.stream(s);
    assert_eq!(view.request_header("authorization"), None);
    assert_eq!(
        view.upstream_body,
        chat_body(false),
        "no rename, no rewrite"
    );
}
