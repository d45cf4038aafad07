//! Native tests of the paywall state machine against a recording fake host.

use std::collections::BTreeMap;
use std::rc::Rc;

use tollgate_protocol::{
    AuthorizeRequest, SettleOutcome, UsageSource, AUTHORIZE_PATH, INTERNAL_SECRET_HEADER,
};

use super::*;
use crate::host::Callout;
use crate::tokens::{EncodingName, ModelEncodings};

#[derive(Default)]
struct FakeHost {
    req_headers: BTreeMap<String, String>,
    req_body: Vec<u8>,
    resp_headers: BTreeMap<String, String>,
    resp_chunk: Vec<u8>,
    replies: Vec<LocalReply>,
    callouts: Vec<Callout>,
    resumed: u32,
    responses_resumed: u32,
    route_cache_cleared: u32,
    fail_dispatch: bool,
    /// What the client received (chunks after any replacement).
    forwarded: Vec<u8>,
    replaced_chunk: Option<Vec<u8>>,
    /// The provider cluster of an upstream try (provider-attempt role).
    upstream_cluster: Option<String>,
    /// Envoy's `response.code_details` when the stream ends.
    code_details: Option<String>,
}

impl crate::provider_attempt::AttemptHost for FakeHost {
    fn upstream_cluster(&self) -> Option<String> {
        self.upstream_cluster.clone()
    }
}

impl StreamHost for FakeHost {
    fn request_header(&self, name: &str) -> Option<String> {
        self.req_headers.get(name).cloned()
    }
    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        match value {
            Some(v) => self.req_headers.insert(name.into(), v.into()),
            None => self.req_headers.remove(name),
        };
    }
    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        Some(self.req_body[..size.min(self.req_body.len())].to_vec())
    }
    fn replace_request_body(&mut self, _old_size: usize, body: &[u8]) {
        self.req_body = body.to_vec();
    }
    fn replace_response_body(&mut self, _old_size: usize, bytes: &[u8]) {
        self.replaced_chunk = Some(bytes.to_vec());
    }
    fn response_header(&self, name: &str) -> Option<String> {
        self.resp_headers.get(name).cloned()
    }
    fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        match value {
            Some(v) => self.resp_headers.insert(name.into(), v.into()),
            None => self.resp_headers.remove(name),
        };
    }
    fn response_body(&self, size: usize) -> Option<Vec<u8>> {
        Some(self.resp_chunk[..size.min(self.resp_chunk.len())].to_vec())
    }
    fn send_reply(&mut self, reply: &LocalReply) {
        self.replies.push(reply.clone());
    }
    fn dispatch(&mut self, callout: &Callout) -> Result<u32, String> {
        if self.fail_dispatch {
            return Err("BadArgument".into());
        }
        self.callouts.push(callout.clone());
        Ok(self.callouts.len() as u32)
    }
    fn resume_request(&mut self) {
        self.resumed += 1;
    }
    fn resume_response(&mut self) {
        self.responses_resumed += 1;
    }
    fn clear_route_cache(&mut self) {
        self.route_cache_cleared += 1;
    }
    fn log(&self, _level: LogLevel, _message: &str) {}
    fn now_ms(&self) -> u64 {
        1_700_000_000_000
    }
    fn response_code_details(&self) -> Option<String> {
        self.code_details.clone()
    }
}

thread_local! {
    static TOKENIZERS: Rc<Tokenizers> =
        Rc::new(Tokenizers::build(ModelEncodings::builtin(EncodingName::O200kBase)).unwrap());
}

fn stream() -> PaywallStream {
    let config = FilterConfig::from_json(
        br#"{"sidecar_cluster":"ledger","internal_secret":"0123456789abcdef","max_body_bytes":2000,"settle_before_release":false}"#,
    )
    .unwrap();
    PaywallStream::new(Rc::new(config), TOKENIZERS.with(Rc::clone))
}

fn host(method: &str, path: &str, auth: Option<&str>, body: &str) -> FakeHost {
    let mut h = FakeHost::default();
    h.req_headers.insert(":method".into(), method.into());
    h.req_headers.insert(":path".into(), path.into());
    h.req_headers.insert("x-request-id".into(), "rid-1".into());
    h.req_headers
        .insert("x-tollgate-route".into(), "spoofed".into());
    if let Some(a) = auth {
        h.req_headers.insert("authorization".into(), a.into());
    }
    h.req_body = body.as_bytes().to_vec();
    h
}

const BODY: &str =
    r#"{"model":"gpt-4o","user":"alice","messages":[{"role":"user","content":"hello world"}]}"#;

/// Runs headers + body; returns the stream paused on the authorize callout.
fn up_to_callout(h: &mut FakeHost) -> PaywallStream {
    let mut s = stream();
    assert_eq!(s.on_request_headers(h, false), Flow::Pause);
    let len = h.req_body.len();
    assert_eq!(s.on_request_body(h, len, true), Flow::Pause);
    assert!(h.replies.is_empty(), "unexpected reply: {:?}", h.replies);
    s
}

fn allow_json() -> &'static str {
    r#"{"decision":"allow","hold_id":"hold-1","held_micros":100,
        "route":{"provider":"mock","cluster":"mock","auth_header":"authorization","auth_value":"Bearer sk-up","upstream_model":null}}"#
}

fn error_code(reply: &LocalReply) -> String {
    let v: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

#[test]
fn other_paths_pass_through_but_lose_spoofed_route_header() {
    let mut h = host("GET", "/v1/user/balance?user=a", Some("Bearer pk"), "");
    let mut s = stream();
    assert_eq!(s.on_request_headers(&mut h, true), Flow::Continue);
    assert!(!h.req_headers.contains_key("x-tollgate-route"));
    assert!(h.replies.is_empty() && h.callouts.is_empty());
}

/// method, path, authorization, body, expected status, expected error code
type BadCase<'a> = (&'a str, &'a str, Option<&'a str>, &'a str, u32, &'a str);

#[test]
fn bad_requests_get_openai_errors_and_no_callout() {
    let cases: &[BadCase] = &[
        (
            "GET",
            "/v1/chat/completions",
            Some("Bearer pk"),
            BODY,
            405,
            "method_not_allowed",
        ),
        (
            "POST",
            "/v1/chat/completions",
            None,
            BODY,
            401,
            "invalid_api_key",
        ),
        (
            "POST",
            "/v1/chat/completions",
            Some("Basic x"),
            BODY,
            401,
            "invalid_api_key",
        ),
        (
            "POST",
            "/v1/chat/completions",
            Some("Bearer pk"),
            "{bad",
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/chat/completions",
            Some("Bearer pk"),
            r#"{"messages":[{"role":"user","content":"x"}],"user":"a"}"#,
            400,
            "missing_required_parameter",
        ),
        (
            "POST",
            "/v1/chat/completions",
            Some("Bearer pk"),
            r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
            400,
            "missing_user",
        ),
        (
            "POST",
            "/v1/bob/chat/completions",
            Some("Bearer pk"),
            BODY,
            400,
            "conflicting_user",
        ),
    ];
    for (method, path, auth, body, status, code) in cases {
        let mut h = host(method, path, *auth, body);
        let mut s = stream();
        if s.on_request_headers(&mut h, false) == Flow::Pause && h.replies.is_empty() {
            s.on_request_body(&mut h, body.len(), true);
        }
        assert_eq!(h.replies.len(), 1, "{method} {path} {body}");
        let r = &h.replies[0];
        assert_eq!(r.status, *status, "{method} {path} {body}");
        assert_eq!(error_code(r), *code, "{method} {path} {body}");
        assert!(r.headers.contains(&("x-request-id".into(), "rid-1".into())));
        assert!(h.callouts.is_empty());
        assert_eq!(h.resumed, 0);
    }
}

#[test]
fn header_and_path_users_that_disagree_are_rejected_before_the_body() {
    let mut h = host(
        "POST",
        "/v1/alice/chat/completions",
        Some("Bearer pk"),
        BODY,
    );
    h.req_headers.insert(USER_HEADER.into(), "bob".into());
    let mut s = stream();
    assert_eq!(s.on_request_headers(&mut h, false), Flow::Pause);
    assert_eq!(h.replies[0].status, 400);
}

#[test]
fn oversized_bodies_are_413_by_header_or_by_size() {
    let mut h = host("POST", "/v1/chat/completions", Some("Bearer pk"), BODY);
    h.req_headers.insert("content-length".into(), "5000".into());
    stream().on_request_headers(&mut h, false);
    assert_eq!(h.replies[0].status, 413);

    let mut h = host("POST", "/v1/chat/completions", Some("Bearer pk"), BODY);
    let mut s = stream();
    s.on_request_headers(&mut h, false);
    assert_eq!(s.on_request_body(&mut h, 1000, false), Flow::Pause);
    s.on_request_body(&mut h, 2001, false);
    assert_eq!(h.replies[0].status, 413);
    assert_eq!(error_code(&h.replies[0]), "request_too_large");
}

#[test]
fn authorize_callout_carries_secret_estimate_and_ids() {
    let mut h = host("POST", "/v1/chat/completions", Some("Bearer pk_live"), BODY);
    up_to_callout(&mut h);
    let c = &h.callouts[0];
    assert_eq!(c.cluster, "ledger");
    assert!(c.headers.contains(&(":path".into(), AUTHORIZE_PATH.into())));
    assert!(c
        .headers
        .contains(&(INTERNAL_SECRET_HEADER.into(), "0123456789abcdef".into())));
    let ask: AuthorizeRequest = serde_json::from_slice(&c.body).unwrap();
    assert_eq!(ask.paywall_key, "pk_live");
    assert_eq!(ask.user, "alice");
    assert_eq!(ask.request_id, "rid-1");
    assert_eq!(ask.prompt_tokens, 9);
    assert_eq!(ask.max_output_tokens, None);
    assert_eq!(ask.choices, 1);
}

#[test]
fn allow_swaps_credentials_routes_and_resumes() {
    let mut h = host(
        "POST",
        "/v1/alice/chat/completions",
        Some("Bearer pk"),
        BODY,
    );
    h.req_headers.insert(USER_HEADER.into(), "alice".into());
    let mut s = up_to_callout(&mut h);
    s.on_callout_response(&mut h, 1, Some(200), allow_json().as_bytes());
    assert_eq!(h.resumed, 1);
    assert_eq!(h.route_cache_cleared, 1);
    assert_eq!(h.req_headers["authorization"], "Bearer sk-up");
    assert_eq!(h.req_headers["x-tollgate-route"], "mock");
    assert_eq!(h.req_headers[":path"], "/v1/chat/completions");
    assert!(!h.req_headers.contains_key(USER_HEADER));
    assert!(h.replies.is_empty());
}

#[test]
fn stale_callout_tokens_are_ignored() {
    let mut h = host("POST", "/v1/chat/completions", Some("Bearer pk"), BODY);
    let mut s = up_to_callout(&mut h);
    s.on_callout_response(&mut h, 99, Some(200), allow_json().as_bytes());
    assert_eq!(h.resumed, 0);
    assert!(h.replies.is_empty());
}

#[test]
fn action_decision_becomes_an_assistant_message() {
    for stream_flag in [false, true] {
        let body = format!(
            r#"{{"model":"gpt-4o","user":"a","stream":{stream_flag},"messages":[{{"role":"user","content":"x"}}]}}"#
        );
        let mut h = host("POST", "/v1/chat/completions", Some("Bearer pk"), &body);
        let mut s = up_to_callout(&mut h);
        let decision = r#"{"decision":"action","action":"topup","message":"Please top up.","link":"http://127.0.0.1:8080/pay/t"}"#;
        s.on_callout_response(&mut h, 1, Some(200), decision.as_bytes());
        let r = &h.replies[0];
        assert_eq!(r.status, 200);
        assert!(r.body.contains("http://127.0.0.1:8080/pay/t"));
        assert!(r
            .headers
            .contains(&("x-tollgate-action".into(), "topup".into())));
        let ct = if stream_flag {
            "text/event-stream"
        } else {
            "application/json"
        };
        assert!(r.headers.contains(&("content-type".into(), ct.into())));
        assert_eq!(h.resumed, 0);
    }
}

#[test]
fn reject_decision_keeps_status_and_retry_after() {
    let mut h = host("POST", "/v1/chat/completions", Some("Bearer pk"), BODY);
    let mut s = up_to_callout(&mut h);
    let decision = r#"{"decision":"reject","status":429,"retry_after_secs":7,
        "error":{"message":"slow down","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}"#;
    s.on_callout_response(&mut h, 1, Some(200), decision.as_bytes());
    assert_eq!(h.replies[0].status, 429);
    assert!(h.replies[0]
        .headers
        .contains(&("retry-after".into(), "7".into())));
}

#[test]
fn sidecar_failures_fail_closed_with_503() {
    let answers: &[(Option<u16>, &str)] = &[
        (None, ""),
        (Some(500), "{}"),
        (Some(200), "{truncated"),
        (Some(200), r#"{"decision":"maybe"}"#),
    ];
    for (status, body) in answers {
        let mut h = host("POST", "/v1/chat/completions", Some("Bearer pk"), BODY);
        let mut s = up_to_callout(&mut h);
        s.on_callout_response(&mut h, 1, *status, body.as_bytes());
        assert_eq!(h.replies[0].status, 503, "{status:?} {body}");
        assert_eq!(error_code(&h.replies[0]), "paywall_unavailable");
        assert_eq!(h.resumed, 0);
    }
    let mut h = host("POST", "/v1/chat/completions", Some("Bearer pk"), BODY);
    h.fail_dispatch = true;
    let mut s = stream();
    s.on_request_headers(&mut h, false);
    s.on_request_body(&mut h, BODY.len(), true);
    assert_eq!(h.replies[0].status, 503);
}

fn forwarded(h: &mut FakeHost) -> PaywallStream {
    let mut s = up_to_callout(h);
    s.on_callout_response(h, 1, Some(200), allow_json().as_bytes());
    s
}

#[test]
fn completed_response_settles_once_with_provider_usage() {
    let mut h = host("POST", "/v1/chat/completions", Some("Bearer pk"), BODY);
    let mut s = forwarded(&mut h);
    h.resp_headers.insert(":status".into(), "200".into());
    h.resp_headers
        .insert("content-type".into(), "application/json".into());
    assert_eq!(s.on_response_headers(&mut h, false), Flow::Continue);
    assert_eq!(h.resp_headers["x-request-id"], "rid-1");
    let resp = r#"{"choices":[{"message":{"role":"assistant","content":"Hi there"}}],"usage":{"prompt_tokens":11,"completion_tokens":2,"total_tokens":13}}"#;
    let (a, b) = resp.split_at(40);
    h.resp_chunk = a.as_bytes().to_vec();
    s.on_response_body(&mut h, a.len(), false);
    assert!(s.take_settlement().is_none());
    h.resp_chunk = b.as_bytes().to_vec();
    s.on_response_body(&mut h, b.len(), true);
    let st = s.take_settlement().unwrap();
    assert_eq!(st.hold_id, "hold-1");
    assert_eq!(st.request_id, "rid-1");
    assert_eq!(st.outcome, SettleOutcome::Completed);
    assert_eq!(st.usage_source, UsageSource::Provider);
    assert_eq!(
        (st.usage.prompt_tokens, st.usage.completion_tokens),
        (11, 2)
    );
    assert_eq!(st.local_completion_tokens, Some(2));
    s.on_stream_done(&mut h);
    assert!(s.take_settlement().is_none(), "settled twice");
}

#[test]
fn response_without_usage_bills_the_local_count() {
    let mut h = host("POST", "/v1/chat/completions", Some("Bearer pk"), BODY);
    let mut s = forwarded(&mut h);
    h.resp_headers.insert(":status".into(), "200".into());
    s.on_response_headers(&mut h, false);
    let resp = r#"{"choices":[{"message":{"content":"Hi there"}}]}"#;
    h.resp_chunk = resp.as_bytes().to_vec();
    s.on_response_body(&mut h, resp.len(), true);
    let st = s.take_settlement().unwrap();
    assert_eq!(st.usage_source, UsageSource::Local);
    assert_eq!((st.usage.prompt_tokens, st.usage.completion_tokens), (9, 2));
}

#[test]
fn upstream_error_voids_and_client_abort_charges_what_was_used() {
    let mut h = host("POST", "/v1/chat/completions", Some("Bearer pk"), BODY);
    let mut s = forwarded(&mut h);
    h.resp_headers.insert(":status".into(), "503".into());
    s.on_response_headers(&mut h, true);
    let st = s.take_settlement().unwrap();
    assert_eq!(st.outcome, SettleOutcome::ProviderError);
    assert_eq!(st.usage.completion_tokens, 0);
    assert_eq!(st.upstream_status, 503);

    let mut h = host("POST", "/v1/chat/completions", Some("Bearer pk"), BODY);
    let mut s = forwarded(&mut h);
    s.on_stream_done(&mut h);
    let st = s.take_settlement().unwrap();
    assert_eq!(st.outcome, SettleOutcome::ClientAborted);
    assert_eq!(st.usage_source, UsageSource::Local);
    assert_eq!(st.usage.prompt_tokens, 9);
    s.on_stream_done(&mut h);
    assert!(s.take_settlement().is_none());
}

#[test]
fn a_provider_refusing_its_key_becomes_our_502_and_voids() {
    for status in ["401", "403"] {
        let mut h = host("POST", "/v1/chat/completions", Some("Bearer pk"), BODY);
        let mut s = forwarded(&mut h);
        h.resp_headers.insert(":status".into(), status.into());
        h.resp_headers.insert("content-length".into(), "80".into());
        s.on_response_headers(&mut h, false);
        assert_eq!(h.resp_headers[":status"], "502");
        assert!(!h.resp_headers.contains_key("content-length"));
        // The provider's body (which may quote the key) is dropped, chunk by chunk.
        let leak = br#"{"error":{"message":"Incorrect API key provided: sk-up"#;
        h.resp_chunk = leak.to_vec();
        s.on_response_body(&mut h, leak.len(), false);
        assert_eq!(h.replaced_chunk.take().unwrap(), b"");
        h.resp_chunk = b"**1234\"}}".to_vec();
        s.on_response_body(&mut h, 8, true);
        let body = String::from_utf8(h.replaced_chunk.take().unwrap()).unwrap();
        assert!(
            body.contains("provider_auth_failed") && !body.contains("sk-up"),
            "{body}"
        );
        let st = s.take_settlement().unwrap();
        assert_eq!(st.outcome, SettleOutcome::ProviderError);
        assert_eq!(st.upstream_status.to_string(), status);
    }
}

#[test]
fn denied_requests_never_settle() {
    let mut h = host("POST", "/v1/chat/completions", Some("Bearer pk"), BODY);
    let mut s = up_to_callout(&mut h);
    s.on_callout_response(&mut h, 1, None, b"");
    s.on_response_headers(&mut h, true);
    s.on_stream_done(&mut h);
    assert!(s.take_settlement().is_none());
}

#[test]
fn requests_without_an_id_get_one() {
    let mut h = host("POST", "/v1/chat/completions", Some("Bearer pk"), BODY);
    h.req_headers.remove("x-request-id");
    up_to_callout(&mut h);
    let id = h.req_headers["x-request-id"].clone();
    assert!(id.starts_with("tollgate-1700000000000-"), "{id}");
    let ask: AuthorizeRequest = serde_json::from_slice(&h.callouts[0].body).unwrap();
    assert_eq!(ask.request_id, id);
}

#[path = "flow_stream_tests.rs"]
mod stream;

#[path = "flow_fallback_tests.rs"]
mod fallback;

#[test]
fn each_request_is_observed_once_for_the_metrics() {
    use crate::observation::{Decision, Observation};
    use tollgate_protocol::Action;
    let decisions = |obs: &[Observation]| -> Vec<Decision> {
        obs.iter()
            .filter_map(|o| match o {
                Observation::Decision(d) => Some(*d),
                _ => None,
            })
            .collect()
    };

    // Allowed, forwarded, completed: one decision, one callout, the tokens.
    let mut h = host("POST", "/v1/chat/completions", Some("Bearer pk"), BODY);
    let mut s = forwarded(&mut h);
    h.resp_headers.insert(":status".into(), "200".into());
    let resp = r#"{"choices":[{"message":{"content":"hi there"}}]}"#;
    h.resp_chunk = resp.as_bytes().to_vec();
    s.on_response_headers(&mut h, false);
    s.on_response_body(&mut h, resp.len(), true);
    let obs = s.take_observations();
    assert_eq!(decisions(&obs), vec![Decision::Allowed]);
    assert!(obs.contains(&Observation::Callout {
        millis: 0,
        ok: true
    }));
    assert!(obs
        .iter()
        .any(|o| matches!(o, Observation::Tokens { prompt: 9, completion } if *completion > 0)));
    assert!(s.take_observations().is_empty(), "drained");

    // A top-up answer, a sidecar failure, bad input.
    let mut h = host("POST", "/v1/chat/completions", Some("Bearer pk"), BODY);
    let mut s = up_to_callout(&mut h);
    let topup = r#"{"decision":"action","action":"topup","message":"m","link":"http://x"}"#;
    s.on_callout_response(&mut h, 1, Some(200), topup.as_bytes());
    assert_eq!(
        decisions(&s.take_observations()),
        vec![Decision::Denied(Action::Topup)]
    );

    let mut h = host("POST", "/v1/chat/completions", Some("Bearer pk"), BODY);
    let mut s = up_to_callout(&mut h);
    s.on_callout_response(&mut h, 1, Some(500), b"");
    let obs = s.take_observations();
    assert_eq!(decisions(&obs), vec![Decision::FailedClosed]);
    assert!(obs.contains(&Observation::Callout {
        millis: 0,
        ok: false
    }));

    let mut h = host("POST", "/v1/chat/completions", Some("Bearer pk"), "{bad");
    let mut s = stream();
    s.on_request_headers(&mut h, false);
    let len = h.req_body.len();
    s.on_request_body(&mut h, len, true);
    assert_eq!(decisions(&s.take_observations()), vec![Decision::Invalid]);
}

#[path = "flow_ack_tests.rs"]
mod ack;
