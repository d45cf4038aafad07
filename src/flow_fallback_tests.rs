//! Native tests of fallback routes: the listener's filter registers the tries
//! and names the aggregate cluster; the provider-attempt role rewrites each
//! try for its provider, whatever an earlier try left on the headers.

use super::*;
use crate::provider_attempt::{self, is_attempt_config, ProviderAttemptStream, PROVIDER_HEADER};

fn fallback_allow_json() -> &'static str {
    r#"{"decision":"allow","hold_id":"hold-1","held_micros":100,
        "route":{"provider":"azure","cluster":"azure","auth_header":"api-key","auth_value":"az-secret",
                 "upstream_model":"prod-4o","path":"/openai/deployments/prod-4o/chat/completions?api-version=1","host":"az.example"},
        "fallback":{"cluster":"fallback+azure+or","attempts":[
            {"provider":"azure","cluster":"azure","auth_header":"api-key","auth_value":"az-secret",
             "upstream_model":"prod-4o","path":"/openai/deployments/prod-4o/chat/completions?api-version=1","host":"az.example"},
            {"provider":"openrouter","cluster":"or","auth_header":"authorization","auth_value":"Bearer or-secret",
             "upstream_model":"openai/gpt-4o","path":"/api/v1/chat/completions","host":"openrouter.ai"}]}}"#
}

/// A request allowed on a fallback route, as the listener's filter leaves it.
fn allowed_on_fallback(request_id: &str) -> (PaywallStream, FakeHost) {
    let mut h = host("POST", "/v1/chat/completions", Some("Bearer pk"), BODY);
    h.req_headers
        .insert("x-request-id".into(), request_id.into());
    let mut s = up_to_callout(&mut h);
    s.on_callout_response(&mut h, 1, Some(200), fallback_allow_json().as_bytes());
    (s, h)
}

/// One upstream try of `listener` (its headers and body) to `cluster`.
fn try_on(listener: &mut FakeHost, cluster: &str) -> FakeHost {
    let mut h = FakeHost {
        req_headers: std::mem::take(&mut listener.req_headers),
        req_body: listener.req_body.clone(),
        upstream_cluster: Some(cluster.into()),
        ..Default::default()
    };
    let mut attempt = ProviderAttemptStream::default();
    assert_eq!(attempt.on_request_headers(&mut h, false), Flow::Pause);
    let len = h.req_body.len();
    assert_eq!(attempt.on_request_body(&mut h, len, true), Flow::Continue);
    attempt.on_response_headers(&mut h);
    // Envoy hands the next try the same headers, changes included.
    listener.req_headers = h.req_headers.clone();
    h
}

#[test]
fn the_listener_names_the_aggregate_cluster_and_keeps_keys_off_the_headers() {
    let (_s, h) = allowed_on_fallback("rid-fb-1");
    assert_eq!(h.req_headers["x-tollgate-route"], "fallback+azure+or");
    let all: String = h
        .req_headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\n"))
        .collect();
    assert!(
        !all.contains("az-secret") && !all.contains("or-secret"),
        "{all}"
    );
    assert!(!h.req_headers.contains_key("authorization"));
    assert!(
        h.req_body.starts_with(br#"{"model":"gpt-4o""#),
        "the body keeps the client's model"
    );
    provider_attempt::forget("rid-fb-1");
}

#[test]
fn each_try_gets_only_its_own_key_path_host_and_model() {
    let (mut s, mut listener) = allowed_on_fallback("rid-fb-2");
    let first = try_on(&mut listener, "azure");
    assert_eq!(first.req_headers["api-key"], "az-secret");
    assert_eq!(first.req_headers[":authority"], "az.example");
    assert!(String::from_utf8_lossy(&first.req_body).contains(r#""model":"prod-4o""#));
    assert_eq!(
        first.req_headers["content-length"],
        first.req_body.len().to_string()
    );

    let second = try_on(&mut listener, "or");
    assert_eq!(second.req_headers["authorization"], "Bearer or-secret");
    assert!(
        !second.req_headers.contains_key("api-key"),
        "the first try's key leaked"
    );
    assert_eq!(second.req_headers[":path"], "/api/v1/chat/completions");
    assert!(String::from_utf8_lossy(&second.req_body).contains(r#""model":"openai/gpt-4o""#));
    assert_eq!(second.resp_headers[PROVIDER_HEADER], "openrouter");

    // The listener's filter reads who answered and names it in the settlement.
    let mut h = listener;
    h.resp_headers = second.resp_headers.clone();
    h.resp_headers.insert(":status".into(), "200".into());
    h.resp_chunk = br#"{"usage":{"prompt_tokens":5,"completion_tokens":2}}"#.to_vec();
    s.on_response_headers(&mut h, false);
    let len = h.resp_chunk.len();
    s.on_response_body(&mut h, len, true);
    let settlement = s.take_settlement().unwrap();
    assert_eq!(settlement.provider.as_deref(), Some("openrouter"));
    assert!(
        !provider_attempt::registered_for("rid-fb-2"),
        "tries forgotten at the end"
    );
}

#[test]
fn a_try_without_registered_tries_or_for_an_unknown_cluster_gets_no_key() {
    let mut stray = FakeHost {
        upstream_cluster: Some("azure".into()),
        ..Default::default()
    };
    stray
        .req_headers
        .insert("x-request-id".into(), "rid-unknown".into());
    let mut attempt = ProviderAttemptStream::default();
    assert_eq!(attempt.on_request_headers(&mut stray, true), Flow::Continue);
    assert!(!stray.req_headers.contains_key("api-key"));

    let (_s, mut listener) = allowed_on_fallback("rid-fb-3");
    let mut h = FakeHost {
        req_headers: listener.req_headers.clone(),
        upstream_cluster: Some("elsewhere".into()),
        ..Default::default()
    };
    let mut attempt = ProviderAttemptStream::default();
    assert_eq!(attempt.on_request_headers(&mut h, true), Flow::Pause);
    assert_eq!(h.replies[0].status, 502);
    assert!(!h.req_headers.contains_key("api-key") && !h.req_headers.contains_key("authorization"));
    listener.req_headers.clear();
    provider_attempt::forget("rid-fb-3");
}

#[test]
fn a_request_id_already_in_flight_goes_to_its_first_provider_only() {
    let (_first, _) = allowed_on_fallback("rid-dup");
    let (_second, h) = allowed_on_fallback("rid-dup");
    assert_eq!(h.req_headers["x-tollgate-route"], "azure");
    assert_eq!(h.req_headers["api-key"], "az-secret");
    assert!(String::from_utf8_lossy(&h.req_body).contains(r#""model":"prod-4o""#));
    provider_attempt::forget("rid-dup");
}

#[test]
fn the_attempt_role_is_chosen_by_its_configuration() {
    assert!(is_attempt_config(br#"{"role": "provider_attempt"}"#));
    assert!(!is_attempt_config(br#"{"role": "paywall"}"#));
    assert!(!is_attempt_config(
        br#"{"role": "provider_attempt", "x": 1}"#
    ));
    assert!(!is_attempt_config(
        br#"{"sidecar_cluster": "ledger", "internal_secret": "0123456789abcdef"}"#
    ));
}
