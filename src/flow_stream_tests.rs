//! Native tests of the streaming path: usage forced upstream and hidden,
//! aborts, cuts and clamped limits, for any chunking of the stream.

use super::*;

/// Plays a streamed response through the filter in `chunk`-byte pieces,
/// recording what the client receives.
fn stream_through(
    s: &mut PaywallStream,
    h: &mut FakeHost,
    body: &str,
    chunk: usize,
    stop_after: Option<usize>,
) {
    h.resp_headers.insert(":status".into(), "200".into());
    h.resp_headers
        .insert("content-type".into(), "text/event-stream".into());
    s.on_response_headers(h, false);
    let pieces: Vec<&[u8]> = body.as_bytes().chunks(chunk).collect();
    for (i, piece) in pieces.iter().enumerate() {
        if stop_after == Some(i) {
            return;
        }
        h.resp_chunk = piece.to_vec();
        h.replaced_chunk = None;
        s.on_response_body(h, piece.len(), i + 1 == pieces.len());
        let sent = h.replaced_chunk.take().unwrap_or_else(|| piece.to_vec());
        h.forwarded.extend(sent);
    }
}

const SSE: &str = concat!(
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"}}],\"usage\":null}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" world\"}}],\"usage\":null}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":2}}\n\n",
    "data: [DONE]\n\n",
);

const STREAM_BODY: &str = r#"{"model":"gpt-4o","user":"alice","stream":true,"messages":[{"role":"user","content":"hello world"}]}"#;

/// A streamed chat completion from an app with a paywall key.
fn stream_host() -> FakeHost {
    host(
        "POST",
        "/v1/chat/completions",
        Some("Bearer pk"),
        STREAM_BODY,
    )
}

#[test]
fn streams_get_usage_forced_upstream_and_hidden_from_the_client() {
    for chunk in [1, 7, 64, 4096] {
        let mut h = stream_host();
        let mut s = forwarded(&mut h);
        let sent: serde_json::Value = serde_json::from_slice(&h.req_body).unwrap();
        assert_eq!(sent["stream_options"]["include_usage"], true);
        assert_eq!(
            h.req_headers["content-length"],
            h.req_body.len().to_string()
        );
        stream_through(&mut s, &mut h, SSE, chunk, None);
        let client = String::from_utf8(h.forwarded.clone()).unwrap();
        assert!(
            !client.contains("\"usage\":{"),
            "chunk {chunk}: usage chunk reached the client"
        );
        assert!(
            client.contains("Hello") && client.ends_with("data: [DONE]\n\n"),
            "chunk {chunk}"
        );
        let st = s.take_settlement().unwrap();
        assert_eq!(st.usage_source, UsageSource::Provider);
        assert_eq!(
            (st.usage.prompt_tokens, st.usage.completion_tokens),
            (12, 2)
        );
        assert_eq!(st.local_completion_tokens, Some(2));
    }
}

#[test]
fn a_client_that_asked_for_usage_gets_the_stream_untouched() {
    let body = r#"{"model":"gpt-4o","user":"alice","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
    let mut h = host("POST", "/v1/chat/completions", Some("Bearer pk"), body);
    let mut s = forwarded(&mut h);
    assert_eq!(h.req_body, body.as_bytes());
    stream_through(&mut s, &mut h, SSE, 5, None);
    assert_eq!(String::from_utf8(h.forwarded.clone()).unwrap(), SSE);
}

#[test]
fn a_client_that_leaves_mid_stream_pays_for_what_it_received() {
    let mut h = stream_host();
    let mut s = forwarded(&mut h);
    // Three events pass ("", "Hello", " world"), then the client is gone.
    let third_event_end = SSE.match_indices("\n\n").nth(2).unwrap().0 + 2;
    stream_through(&mut s, &mut h, SSE, third_event_end, Some(1));
    assert!(
        s.take_settlement().is_none(),
        "settled before the stream ended"
    );
    s.on_stream_done(&mut h);
    let st = s.take_settlement().unwrap();
    assert_eq!(st.outcome, SettleOutcome::ClientAborted);
    assert_eq!(st.usage_source, UsageSource::Local);
    assert_eq!((st.usage.prompt_tokens, st.usage.completion_tokens), (9, 2)); // "Hello world"
}

#[test]
fn a_stream_cut_before_its_usage_bills_the_local_count() {
    let mut h = stream_host();
    let mut s = forwarded(&mut h);
    let cut = SSE.find("data: {\"choices\":[],").unwrap();
    stream_through(&mut s, &mut h, &SSE[..cut], 16, None);
    let st = s.take_settlement().unwrap();
    assert_eq!(st.outcome, SettleOutcome::Completed);
    assert_eq!(st.usage_source, UsageSource::Local);
    assert_eq!(st.usage.completion_tokens, 2);
}

/// Where the provider stopped: a stream that ends (cleanly or by an
/// upstream reset) without a finish reason or `[DONE]` is `provider_cut`;
/// an error event after a 200 is `provider_error`; both bill what was streamed.
#[test]
fn provider_cuts_and_error_events_are_named_and_bill_what_streamed() {
    let first_two = SSE.match_indices("\n\n").nth(2).unwrap().0 + 2; // "", "Hello", " world"
    let error_event =
        "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n";
    let with_error = format!("{}{error_event}", &SSE[..first_two]);
    let cases: [(&str, &str, Option<&str>, SettleOutcome); 3] = [
        // The upstream ended its body early: end_of_stream, no finish, no [DONE].
        ("ended", &SSE[..first_two], None, SettleOutcome::ProviderCut),
        // Envoy reset the stream after the provider's connection dropped.
        (
            "reset",
            SSE,
            Some("upstream_reset_after_response_started{connection_termination}"),
            SettleOutcome::ProviderCut,
        ),
        ("error", &with_error, None, SettleOutcome::ProviderError),
    ];
    for (name, body, reset, expected) in cases {
        let mut h = stream_host();
        let mut s = forwarded(&mut h);
        let stop = reset.map(|_| first_two / 16); // a reset: the end never comes
        stream_through(&mut s, &mut h, body, 16, stop);
        if let Some(details) = reset {
            h.code_details = Some(details.into());
            s.on_stream_done(&mut h);
        }
        let st = s.take_settlement().unwrap();
        assert_eq!(st.outcome, expected, "{name}");
        assert_eq!(st.upstream_status, 200, "{name}");
        assert_eq!(st.usage_source, UsageSource::Local, "{name}");
        assert_eq!(st.usage.prompt_tokens, 9, "{name}");
        assert!(
            st.usage.completion_tokens >= 1,
            "{name}: what streamed is billed"
        );
    }
    // A client that leaves is still `client_aborted` (Envoy names the downstream).
    let mut h = stream_host();
    let mut s = forwarded(&mut h);
    stream_through(&mut s, &mut h, SSE, 16, Some(3));
    h.code_details = Some("downstream_remote_disconnect".into());
    s.on_stream_done(&mut h);
    assert_eq!(
        s.take_settlement().unwrap().outcome,
        SettleOutcome::ClientAborted
    );
}

#[test]
fn a_clamped_allow_lowers_the_limit_and_says_so() {
    let body = r#"{"model":"gpt-4o","user":"alice","max_completion_tokens":500,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut h = host("POST", "/v1/chat/completions", Some("Bearer pk"), body);
    let mut s = up_to_callout(&mut h);
    let decision = r#"{"decision":"allow","hold_id":"hold-1","held_micros":100,"max_output_tokens":42,
        "route":{"provider":"mock","cluster":"mock","auth_header":"authorization","auth_value":"Bearer sk-up","upstream_model":null}}"#;
    s.on_callout_response(&mut h, 1, Some(200), decision.as_bytes());
    let sent: serde_json::Value = serde_json::from_slice(&h.req_body).unwrap();
    assert_eq!(sent["max_completion_tokens"], 42);
    assert_eq!(
        h.req_headers["content-length"],
        h.req_body.len().to_string()
    );
    h.resp_headers.insert(":status".into(), "200".into());
    s.on_response_headers(&mut h, false);
    assert_eq!(h.resp_headers["x-tollgate-max-tokens"], "42");
}

#[test]
fn a_clamped_stream_keeps_its_forced_usage() {
    let mut h = stream_host();
    let mut s = up_to_callout(&mut h);
    let decision = r#"{"decision":"allow","hold_id":"hold-1","held_micros":100,"max_output_tokens":7,
        "route":{"provider":"mock","cluster":"mock","auth_header":"authorization","auth_value":"Bearer sk-up","upstream_model":null}}"#;
    s.on_callout_response(&mut h, 1, Some(200), decision.as_bytes());
    let sent: serde_json::Value = serde_json::from_slice(&h.req_body).unwrap();
    assert_eq!(
        (
            sent["max_tokens"].as_u64(),
            sent["stream_options"]["include_usage"].as_bool()
        ),
        (Some(7), Some(true))
    );
}
