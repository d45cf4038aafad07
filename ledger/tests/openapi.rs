//! The OpenAPI document is generated from the handlers' annotations; these
//! tests check it against what the router serves, in both directions: every
//! documented sidecar operation is routed, no route is served undocumented,
//! the sidecar serves the document itself, and no operation of the API has
//! gone missing.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tollgate_ledger::http::{openapi, router, AppState};
use tower::ServiceExt;

/// The API as it stood when the document was hand-written: removing any of
/// these is a breaking change for apps, operators or the filter.
const API: &[(&str, &str)] = &[
    ("post", "/internal/v1/authorize"),
    ("post", "/internal/v1/settle"),
    ("post", "/internal/v1/settle-batch"),
    ("post", "/v1/chat/completions"),
    ("get", "/v1/models"),
    ("get", "/v1/user/balance"),
    ("post", "/v1/user/balance/deposit"),
    ("post", "/v1/user/charge"),
    ("get", "/v1/user/balance/topup"),
    ("get", "/v1/user/ledger"),
    ("get", "/v1/user/connect"),
    ("get", "/v1/user/disconnect"),
    ("get", "/pay/connect/{token}"),
    ("post", "/pay/connect/{token}"),
    ("get", "/pay/topup/{token}"),
    ("post", "/pay/topup/{token}"),
    ("get", "/pay/topup/{token}/success"),
    ("get", "/pay/topup/{token}/cancel"),
    ("post", "/webhooks/stripe"),
    ("get", "/admin/v1/paywalls"),
    ("post", "/admin/v1/paywalls"),
    ("patch", "/admin/v1/paywalls/{id}"),
    ("get", "/admin/v1/paywalls/{id}/keys"),
    ("post", "/admin/v1/paywalls/{id}/keys"),
    ("delete", "/admin/v1/paywalls/{id}/keys/{key_id}"),
    ("put", "/admin/v1/paywalls/{id}/limits"),
    ("get", "/admin/v1/paywalls/{id}/provider-keys"),
    ("put", "/admin/v1/paywalls/{id}/provider-keys/{provider}"),
    ("delete", "/admin/v1/paywalls/{id}/provider-keys/{provider}"),
    ("get", "/admin/v1/webhooks"),
    ("get", "/admin/v1/webhooks/{id}/deliveries"),
    (
        "post",
        "/admin/v1/webhooks/{id}/deliveries/{delivery_id}/replay",
    ),
    ("get", "/admin/v1/providers"),
    ("put", "/admin/v1/providers/{id}"),
    ("put", "/admin/v1/models/{name}"),
    ("get", "/admin/v1/models/{name}/prices"),
    ("get", "/openapi.json"),
    ("get", "/metrics"),
    ("get", "/healthz"),
];

const METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];

fn document() -> Value {
    serde_json::to_value(openapi()).unwrap()
}

/// (method, path, served by the sidecar) of every documented operation.
fn operations(doc: &Value) -> Vec<(String, String, bool)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if METHODS.contains(&method.as_str()) {
                let sidecar = op.get("x-served-by").is_none();
                ops.push((method.clone(), path.clone(), sidecar));
            }
        }
    }
    ops
}

async fn app() -> (common::TestDb, axum::Router) {
    let t = common::open("sqlite").await.unwrap();
    let app = router(Arc::new(AppState {
        db: t.db.clone(),
        settings: common::settings(),
        internal_secret: "x".repeat(20),
        admin_token_hash: None,
    }));
    (t, app)
}

async fn call(app: &axum::Router, method: &str, path: &str) -> (StatusCode, String) {
    let uri = path
        .replace("{token}", "t")
        .replace("{id}", "app")
        .replace("{key_id}", "k")
        .replace("{delivery_id}", "d")
        .replace("{provider}", "mock")
        .replace("{name}", "m");
    let req = Request::builder()
        .method(method.to_uppercase().as_str())
        .uri(&uri)
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn is_fallback(status: StatusCode, body: &str) -> bool {
    status == StatusCode::NOT_FOUND && body.contains("Unknown endpoint")
}

#[test]
fn no_operation_of_the_api_went_missing() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(m, p, _)| (m, p))
        .collect();
    let expected: BTreeSet<(String, String)> = API
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, expected);
}

#[tokio::test]
async fn every_documented_operation_is_served() {
    let doc = document();
    let (_t, app) = app().await;
    for (method, path, sidecar) in operations(&doc) {
        let (status, body) = call(&app, &method, &path).await;
        let routed = !is_fallback(status, &body) && status != StatusCode::METHOD_NOT_ALLOWED;
        // The filter's operations are Envoy's: the sidecar must not answer them.
        assert_eq!(routed, sidecar, "{method} {path} answered {status}");
    }
}

#[tokio::test]
async fn nothing_is_served_undocumented() {
    let doc = document();
    let (_t, app) = app().await;
    // Every other method on a documented path is refused.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS.iter().filter(|m| item.get(**m).is_none()) {
            let (status, body) = call(&app, method, path).await;
            assert!(
                status == StatusCode::METHOD_NOT_ALLOWED || is_fallback(status, &body),
                "{method} {path} is served but not documented ({status})"
            );
        }
    }
    // And routes are only ever added from their annotations: the router is
    // built with `routes!` alone, never axum's undocumented `.route(`.
    let src = std::fs::read_to_string("src/http/mod.rs").unwrap();
    assert!(src.contains(".routes(routes!("));
    for dir in ["src", "src/http"] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(
                    !text.contains(".route(\"") && !text.contains(".nest("),
                    "{} adds a route without documenting it",
                    path.display()
                );
            }
        }
    }
}

#[tokio::test]
async fn the_sidecar_serves_the_document_it_generates() {
    let (_t, app) = app().await;
    let (status, body) = call(&app, "get", "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let served: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(served, document());
}

#[test]
fn every_operation_says_who_may_call_it_and_every_reference_resolves() {
    let doc = document();
    for (method, path, _) in operations(&doc) {
        let op = &doc["paths"][&path][&method];
        let schemes: Vec<&str> = op["security"]
            .as_array()
            .map(|s| {
                s.iter()
                    .flat_map(|r| r.as_object().unwrap().keys())
                    .map(String::as_str)
                    .collect()
            })
            .unwrap_or_default();
        let expected: &[&str] = if path.starts_with("/admin/") {
            &["adminToken"]
        } else if path.starts_with("/internal/") {
            &["internalSecret"]
        } else if path.starts_with("/v1/") {
            &["paywallKey"]
        } else if path.starts_with("/webhooks/") {
            &["stripeSignature"]
        } else {
            &[]
        };
        assert_eq!(schemes, expected, "{method} {path}");
        assert!(op["responses"]["200"].is_object() || op["responses"]["201"].is_object());
    }
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"").skip(1) {
        let target = reference.split('"').next().unwrap();
        let name = target.trim_start_matches("#/components/schemas/");
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "unresolved {target}"
        );
    }
    for scheme in [
        "paywallKey",
        "adminToken",
        "internalSecret",
        "stripeSignature",
    ] {
        assert!(doc["components"]["securitySchemes"][scheme].is_object());
    }
}
