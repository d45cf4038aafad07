//! Plugin configurations Envoy might hand the filter: each invalid one is
//! refused (configure returns false) with an error log naming the field, and
//! a VM left unconfigured fails closed instead of letting traffic through.

use serde_json::{json, Value};
use tollgate_wasm_test_harness::{Action, Vm};

use crate::common::*;

fn with(field: &str, value: Value) -> Vec<u8> {
    let mut config = Vm::default_config();
    config[field] = value;
    config.to_string().into_bytes()
}

fn without(field: &str) -> Vec<u8> {
    let mut config = Vm::default_config();
    config.as_object_mut().unwrap().remove(field);
    config.to_string().into_bytes()
}

#[test]
fn each_invalid_field_is_refused_with_a_log_line_naming_it() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (without("sidecar_cluster"), "sidecar_cluster"),
        (with("sidecar_cluster", json!("  ")), "sidecar_cluster"),
        (without("internal_secret"), "internal_secret"),
        (with("internal_secret", json!("short")), "internal_secret"),
        (with("callout_timeout_ms", json!(0)), "callout_timeout_ms"),
        (with("callout_timeout_ms", json!(-5)), "callout_timeout_ms"),
        (with("max_body_bytes", json!(0)), "max_body_bytes"),
        (with("route_header", json!("Not A Header")), "route_header"),
        (
            with("settle_retry_initial_ms", json!(0)),
            "settle_retry_initial_ms",
        ),
        (
            with("settle_retry_max_ms", json!(1)),
            "settle_retry_initial_ms",
        ),
        (with("settle_backlog_max", json!(0)), "settle_backlog_max"),
        (with("tick_ms", json!(1)), "tick_ms"),
        (with("default_encoding", json!("rot13")), "default_encoding"),
        (
            with(
                "model_encodings",
                json!([{"prefix": "gpt", "encoding": "nope"}]),
            ),
            "encoding",
        ),
        (with("sidecar_clustr", json!("typo")), "sidecar_clustr"),
        (b"not json".to_vec(), "invalid plugin configuration"),
        (b"".to_vec(), "invalid plugin configuration"),
        (vec![0xff, 0xfe, b'{'], "invalid plugin configuration"),
    ];
    for (config, field) in cases {
        let mut vm = Vm::new().unwrap();
        let accepted = vm.configure(&config).unwrap();
        let shown = String::from_utf8_lossy(&config);
        assert!(!accepted, "accepted {shown}");
        let line = vm
            .logs()
            .iter()
            .find(|l| l.level >= 4)
            .unwrap_or_else(|| panic!("no error log for {shown}"));
        assert!(
            line.message.contains("rejecting plugin configuration") && line.message.contains(field),
            "{shown}: {}",
            line.message
        );
        assert!(vm.failed().is_none());
    }
}

#[test]
fn an_unconfigured_vm_fails_closed_then_recovers_on_a_good_configuration() {
    let mut vm = Vm::new().unwrap();
    assert!(!vm.configure(b"{}").unwrap());
    let s = vm.open().unwrap();
    let body = chat_body(false);
    let a = vm
        .request_headers(s, &pairs(&chat_headers(body.len())), false)
        .unwrap();
    assert_eq!(a, Action::Pause);
    let (status, error) = error_of(&vm, s);
    assert_eq!(
        (status, error["code"].as_str()),
        (503, Some("paywall_unavailable"))
    );
    vm.close(s).unwrap();

    assert!(vm
        .configure(Vm::default_config().to_string().as_bytes())
        .unwrap());
    allowed(&mut vm, false, "h-recovered");
}
