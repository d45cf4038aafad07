//! Acknowledged settlement: the end of a response waits for the sidecar's
//! answer to its settlement, and a settlement is never lost on the way
//! (timeout, refusal, client gone).

use std::rc::Rc;
use std::time::Duration;

use tollgate_protocol::{SettleRequest, SETTLE_PATH};

use super::*;

/// A stream whose config leaves `settle_before_release` at its default.
fn acking_stream() -> PaywallStream {
    let config = FilterConfig::from_json(
        br#"{"sidecar_cluster":"ledger","internal_secret":"0123456789abcdef","settle_ack_timeout_ms":750}"#,
    )
    .unwrap();
    PaywallStream::new(Rc::new(config), TOKENIZERS.with(Rc::clone))
}

const RESPONSE: &str = r#"{"choices":[{"message":{"role":"assistant","content":"Hi"}}],"usage":{"prompt_tokens":11,"completion_tokens":1,"total_tokens":12}}"#;

/// A JSON response up to its end: returns the stream paused on the settle
/// callout (token 2; the authorize callout was 1).
fn at_the_end(h: &mut FakeHost) -> PaywallStream {
    let mut s = acking_stream();
    assert_eq!(s.on_request_headers(h, false), Flow::Pause);
    let len = h.req_body.len();
    assert_eq!(s.on_request_body(h, len, true), Flow::Pause);
    s.on_callout_response(h, 1, Some(200), allow_json().as_bytes());
    h.resp_headers.insert(":status".into(), "200".into());
    h.resp_headers
        .insert("content-type".into(), "application/json".into());
    assert_eq!(s.on_response_headers(h, false), Flow::Continue);
    let (a, b) = RESPONSE.split_at(30);
    h.resp_chunk = a.as_bytes().to_vec();
    assert_eq!(s.on_response_body(h, a.len(), false), Flow::Continue);
    // The last byte of what went so far waits for the end.
    assert_eq!(h.replaced_chunk.take().unwrap(), &a.as_bytes()[..29]);
    h.resp_chunk = b.as_bytes().to_vec();
    assert_eq!(
        s.on_response_body(h, b.len(), true),
        Flow::Pause,
        "the end waits"
    );
    assert_eq!(h.replaced_chunk.take().unwrap(), &RESPONSE.as_bytes()[29..]);
    assert!(s.take_settlement().is_none(), "sent, not queued");
    assert_eq!(h.responses_resumed, 0);
    s
}

fn sent_settlement(h: &FakeHost) -> SettleRequest {
    let callout = h.callouts.last().unwrap();
    assert_eq!(callout.timeout, Duration::from_millis(750));
    let path = callout.headers.iter().find(|(k, _)| k == ":path").unwrap();
    assert_eq!(path.1, SETTLE_PATH);
    serde_json::from_slice(&callout.body).unwrap()
}

#[test]
fn the_end_of_a_response_goes_once_its_charge_is_acknowledged() {
    let mut h = host("POST", "/v1/chat/completions", Some("Bearer pk"), BODY);
    let mut s = at_the_end(&mut h);
    let sent = sent_settlement(&h);
    assert_eq!(
        (sent.hold_id.as_str(), sent.request_id.as_str()),
        ("hold-1", "rid-1")
    );
    assert_eq!(sent.usage.completion_tokens, 1);
    s.on_callout_response(&mut h, 2, Some(200), br#"{"hold_id":"hold-1"}"#);
    assert_eq!(h.responses_resumed, 1);
    assert!(
        s.take_settlement().is_none(),
        "acknowledged: nothing to queue"
    );
    s.on_stream_done(&mut h);
    assert!(s.take_settlement().is_none(), "settled twice");
}

#[test]
fn no_answer_in_time_releases_the_end_and_queues_the_settlement() {
    let mut h = host("POST", "/v1/chat/completions", Some("Bearer pk"), BODY);
    let mut s = at_the_end(&mut h);
    let sent = sent_settlement(&h);
    s.on_callout_response(&mut h, 9, Some(200), b"{}");
    assert_eq!(
        h.responses_resumed, 0,
        "another callout's answer is not ours"
    );
    s.on_callout_response(&mut h, 2, None, b"");
    assert_eq!(h.responses_resumed, 1);
    assert_eq!(s.take_settlement(), Some(sent));
    s.on_stream_done(&mut h);
    assert!(s.take_settlement().is_none(), "queued twice");
}

#[test]
fn a_refused_settlement_releases_the_end_and_is_not_retried() {
    let mut h = host("POST", "/v1/chat/completions", Some("Bearer pk"), BODY);
    let mut s = at_the_end(&mut h);
    s.on_callout_response(&mut h, 2, Some(404), br#"{"error":{}}"#);
    assert_eq!(h.responses_resumed, 1);
    assert!(s.take_settlement().is_none());
}

#[test]
fn a_client_gone_while_the_end_waits_leaves_the_settlement_to_the_queue() {
    let mut h = host("POST", "/v1/chat/completions", Some("Bearer pk"), BODY);
    let mut s = at_the_end(&mut h);
    let sent = sent_settlement(&h);
    h.code_details = Some("downstream_remote_disconnect".into());
    s.on_stream_done(&mut h);
    assert_eq!(
        s.take_settlement(),
        Some(sent),
        "the sidecar may get it twice; it takes it once"
    );
    s.on_callout_response(&mut h, 2, Some(200), b"{}");
    assert!(s.take_settlement().is_none());
}

#[test]
fn a_failed_dispatch_releases_the_end_at_once() {
    let mut h = host("POST", "/v1/chat/completions", Some("Bearer pk"), BODY);
    let mut s = acking_stream();
    s.on_request_headers(&mut h, false);
    let len = h.req_body.len();
    s.on_request_body(&mut h, len, true);
    s.on_callout_response(&mut h, 1, Some(200), allow_json().as_bytes());
    h.resp_headers.insert(":status".into(), "200".into());
    s.on_response_headers(&mut h, false);
    h.fail_dispatch = true;
    h.resp_chunk = RESPONSE.as_bytes().to_vec();
    assert_eq!(
        s.on_response_body(&mut h, RESPONSE.len(), true),
        Flow::Continue
    );
    assert!(s.take_settlement().is_some(), "queued");
}
