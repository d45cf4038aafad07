//! The OpenAPI document in the repo matches what the router serves: every
//! documented sidecar operation is routed, every route is documented, and the
//! sidecar serves the document itself.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tollgate_ledger::http::{router, AppState, OPENAPI, ROUTES};
use tower::ServiceExt;

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if op.get("x-served-by").is_none() {
                ops.insert((method.clone(), path.clone()));
            }
        }
    }
    ops
}

#[tokio::test]
async fn the_document_and_the_router_agree() {
    let doc: Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        documented(&doc),
        routes,
        "openapi.json and http::ROUTES differ"
    );

    // Every listed route is really routed: the fallback never answers it.
    let t = common::open("sqlite").await.unwrap();
    let app = router(Arc::new(AppState {
        db: t.db.clone(),
        settings: common::settings(),
        internal_secret: "x".repeat(20),
        admin_token_hash: None,
    }));
    for (method, path) in ROUTES {
        let uri = path
            .replace("{token}", "t")
            .replace("{id}", "app")
            .replace("{key_id}", "k")
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
        let fallback = status == StatusCode::NOT_FOUND
            && String::from_utf8_lossy(&body).contains("Unknown endpoint");
        let wrong_method = status == StatusCode::METHOD_NOT_ALLOWED;
        assert!(
            !fallback && !wrong_method,
            "{method} {path} is not routed ({status})"
        );
    }
    // And served as is.
    let req = Request::builder()
        .uri("/openapi.json")
        .body(Body::empty())
        .unwrap();
    let resp = app.oneshot(req).await.unwrap();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    assert_eq!(body, OPENAPI.as_bytes());
}
