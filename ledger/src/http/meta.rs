//! The sidecar's own port: liveness, Prometheus metrics and the OpenAPI
//! document. Envoy's public listener routes none of them.

use axum::body::Bytes;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Extension;

/// The OpenAPI document as served, rendered once when the router is built
/// (a cheap shared buffer: each answer clones a reference, not the text).
#[derive(Clone)]
pub struct Document(pub Bytes);

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of every API the sidecar serves", content_type = "application/json")))]
pub async fn openapi_json(Extension(doc): Extension<Document>) -> Response {
    ([("content-type", "application/json")], doc.0).into_response()
}

/// Prometheus metrics of the sidecar (its own port only; never routed through Envoy).
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses((status = 200, description = "Prometheus text exposition 0.0.4", content_type = "text/plain")))]
pub async fn metrics() -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
        .into_response()
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "meta",
    responses((status = 200, description = "ok", content_type = "text/plain")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Counts every request the sidecar receives by the area of its path, so an
/// operator (and the trust-boundary test) sees what reached it and from where.
pub async fn count_request(req: Request, next: Next) -> Response {
    crate::metrics::count(crate::metrics::HTTP_REQUESTS, &[area(req.uri().path())]);
    next.run(req).await
}

fn area(path: &str) -> &'static str {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "internal" => "internal",
        "admin" => "admin",
        "v1" => "public",
        "pay" => "pages",
        "webhooks" => "payments",
        "metrics" | "openapi.json" | "healthz" => "meta",
        _ => "other",
    }
}
