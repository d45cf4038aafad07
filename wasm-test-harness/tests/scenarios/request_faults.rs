//! Bad and awkward requests: every one gets OpenAI's error shape (or goes
//! through intact), nothing reaches the sidecar or the provider by mistake,
//! and the VM never traps.

use serde_json::json;
use tollgate_protocol::AUTHORIZE_PATH;
use tollgate_wasm_test_harness::{Action, CalloutAnswer, Vm};

use crate::common::*;

/// Sends headers and body; returns the stream after the filter's last word.
fn send(vm: &mut Vm, headers: &[(&str, &str)], body: &[u8]) -> u32 {
    let s = vm.open().unwrap();
    let end = body.is_empty();
    vm.request_headers(s, headers, end).unwrap();
    if !end && vm.stream(s).local_reply.is_none() {
        vm.request_body(s, body, true).unwrap();
    }
    s
}

/// The request was refused with `status` and `code`, before any callout.
fn refused(vm: &Vm, s: u32, status: u32, code: &str) {
    let (got, error) = error_of(vm, s);
    assert_eq!(
        (got, error["code"].as_str()),
        (status, Some(code)),
        "{error}"
    );
    assert!(
        vm.dispatched().is_empty(),
        "a bad request reached the sidecar"
    );
    assert!(vm.stream(s).upstream_body.is_empty());
    assert!(vm.failed().is_none());
}

#[test]
fn a_body_in_many_small_chunks_is_read_whole_once() {
    let mut vm = vm();
    let body = chat_body(false);
    let s = vm.open().unwrap();
    vm.request_headers(s, &pairs(&chat_headers(body.len())), false)
        .unwrap();
    for (i, chunk) in body.chunks(1).enumerate() {
        let end = i == body.len() - 1;
        assert_eq!(vm.request_body(s, chunk, end).unwrap(), Action::Pause);
        assert_eq!(
            vm.dispatched().len(),
            usize::from(end),
            "asked before the body ended"
        );
    }
    vm.answer_path(
        AUTHORIZE_PATH,
        CalloutAnswer::Status(200, &allow("h-chunks")),
    )
    .unwrap();
    assert_eq!(vm.stream(s).upstream_body, body);
}

#[test]
fn oversized_bodies_are_refused_declared_or_not() {
    let mut vm = vm_with(json!({"max_body_bytes": 4096}));
    let big = json!({"model": "gpt-4o-mini", "user": "u",
        "messages": [{"role": "user", "content": "x".repeat(10_000)}]})
    .to_string();
    // Declared by content-length: refused at the headers.
    let s = send(&mut vm, &pairs(&chat_headers(big.len())), big.as_bytes());
    refused(&vm, s, 413, "request_too_large");
    // Chunked, no length: refused as soon as the buffer passes the limit.
    let s = vm.open().unwrap();
    let mut h = chat_headers(0);
    h.retain(|(k, _)| k != "content-length");
    vm.request_headers(s, &pairs(&h), false).unwrap();
    for chunk in big.as_bytes().chunks(1000) {
        vm.request_body(s, chunk, false).unwrap();
        if vm.stream(s).local_reply.is_some() {
            break;
        }
    }
    refused(&vm, s, 413, "request_too_large");
    assert!(vm.stream(s).request_buffer.len() <= 5000);
}

#[test]
fn invalid_utf8_in_the_body_is_a_400() {
    let mut vm = vm();
    let mut body = chat_body(false);
    body.splice(20..20, [0xff, 0xfe, 0xc3]);
    let s = send(&mut vm, &pairs(&chat_headers(body.len())), &body);
    let (status, _) = error_of(&vm, s);
    assert_eq!(status, 400);
    assert!(vm.dispatched().is_empty());
}

#[test]
fn invalid_utf8_in_header_values_does_not_trap_the_vm() {
    for header in [
        "authorization",
        "x-paywall-user",
        "x-request-id",
        ":path",
        ":method",
    ] {
        let mut vm = vm();
        let body = chat_body(false);
        let mut map: Vec<(String, Vec<u8>)> = chat_headers(body.len())
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        map.retain(|(k, _)| k != header);
        map.push((header.to_string(), b"Bearer \xff\xfe-\xc3(".to_vec()));
        let s = vm.open().unwrap();
        let result = vm.request_headers_raw(s, map, false);
        assert!(result.is_ok(), "{header}: {result:?}");
        if vm.stream(s).local_reply.is_none() && result.unwrap() == Action::Pause {
            vm.request_body(s, &body, true).unwrap();
        }
        assert!(vm.failed().is_none(), "{header}: the VM trapped");
        vm.close(s).unwrap();
        // The VM still serves the next request.
        allowed(&mut vm, false, "h-after");
    }
}

#[test]
fn deeply_nested_json_is_a_400_without_exhausting_the_stack() {
    let mut vm = vm();
    for depth in [200, 100_000] {
        let body = format!(
            "{{\"model\":\"gpt-4o-mini\",\"user\":\"u\",\"messages\":{}{}}}",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let s = send(&mut vm, &pairs(&chat_headers(body.len())), body.as_bytes());
        let (status, _) = error_of(&vm, s);
        assert_eq!(status, 400, "depth {depth}");
    }
    assert!(vm.dispatched().is_empty());
}

#[test]
fn malformed_chat_requests_are_400s() {
    let mut vm = vm();
    let cases = [
        &b"not json"[..],
        b"[]",
        b"{}",
        b"{\"model\":\"gpt-4o-mini\",\"user\":\"u\"}",
        b"{\"model\":7,\"user\":\"u\",\"messages\":[]}",
        b"{\"model\":\"gpt-4o-mini\",\"user\":\"u\",\"messages\":\"hi\"}",
        b"{\"model\":\"gpt-4o-mini\",\"user\":\"u\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":-1}",
        b"{\"model\":\"gpt-4o-mini\",\"user\":\"u\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"n\":1000000}",
    ];
    for body in cases {
        let s = send(&mut vm, &pairs(&chat_headers(body.len())), body);
        let (status, error) = error_of(&vm, s);
        assert_eq!(status, 400, "{}: {error}", String::from_utf8_lossy(body));
    }
    assert!(vm.dispatched().is_empty());
}

#[test]
fn conflicting_user_ids_are_refused() {
    let mut vm = vm();
    let body = chat_body(false); // body user: alice
    let mut h = chat_headers(body.len());
    h.push(("x-paywall-user".into(), "mallory".into()));
    let s = send(&mut vm, &pairs(&h), &body);
    refused(&vm, s, 400, "conflicting_user");

    let mut h = chat_headers(body.len());
    h.retain(|(k, _)| k != ":path");
    h.push((":path".into(), "/v1/bob/chat/completions".into()));
    h.push(("x-paywall-user".into(), "carol".into()));
    let s = send(&mut vm, &pairs(&h), &body);
    refused(&vm, s, 400, "conflicting_user");

    let anonymous = json!({"model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}]})
    .to_string();
    let s = send(
        &mut vm,
        &pairs(&chat_headers(anonymous.len())),
        anonymous.as_bytes(),
    );
    let (status, _) = error_of(&vm, s);
    assert_eq!(status, 400, "a request without a user must be refused");
}

#[test]
fn missing_headers() {
    let mut vm = vm();
    let body = chat_body(false);
    // No key.
    let mut h = chat_headers(body.len());
    h.retain(|(k, _)| k != "authorization");
    let s = send(&mut vm, &pairs(&h), &body);
    let (status, error) = error_of(&vm, s);
    assert_eq!(
        (status, error["type"].as_str()),
        (401, Some("authentication_error"))
    );
    // Not a bearer key.
    let mut h = chat_headers(body.len());
    h.retain(|(k, _)| k != "authorization");
    h.push(("authorization".into(), "Basic Zm9vOmJhcg==".into()));
    let s = send(&mut vm, &pairs(&h), &body);
    assert_eq!(error_of(&vm, s).0, 401);
    // No request id: the filter makes one and puts it on the reply.
    let mut h = chat_headers(body.len());
    h.retain(|(k, _)| k != "x-request-id" && k != "authorization");
    let s = send(&mut vm, &pairs(&h), &body);
    let reply = vm.stream(s).local_reply.clone().unwrap();
    assert!(reply
        .header("x-request-id")
        .is_some_and(|id| id.starts_with("tollgate-")));
    // No body at all.
    let s = send(&mut vm, &pairs(&chat_headers(0)), b"");
    assert_eq!(error_of(&vm, s).1["code"], "missing_body");
    // The wrong method.
    let mut h = chat_headers(body.len());
    h.retain(|(k, _)| k != ":method");
    h.push((":method".into(), "GET".into()));
    let s = send(&mut vm, &pairs(&h), b"");
    assert_eq!(error_of(&vm, s).0, 405);
    assert_eq!(
        vm.stream(s).local_reply.as_ref().unwrap().header("allow"),
        Some("POST")
    );
    assert!(vm.dispatched().is_empty());
}

#[test]
fn a_client_cannot_pick_the_provider_route() {
    let mut vm = vm();
    let s = vm.open().unwrap();
    let body = chat_body(false);
    let mut h = chat_headers(body.len());
    h.push(("x-tollgate-route".into(), "provider_expensive".into()));
    vm.request_headers(s, &pairs(&h), false).unwrap();
    assert_eq!(vm.stream(s).request_header("x-tollgate-route"), None);
    // Other paths pass through, still without a client-chosen route.
    let s = vm.open().unwrap();
    let a = vm
        .request_headers(
            s,
            &[
                (":method", "GET"),
                (":path", "/v1/models"),
                ("x-tollgate-route", "x"),
            ],
            true,
        )
        .unwrap();
    assert_eq!(a, Action::Continue);
    assert_eq!(vm.stream(s).request_header("x-tollgate-route"), None);
}
