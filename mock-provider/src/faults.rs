//! Fault injection, chosen per request with headers, so end-to-end tests can
//! stage provider failures through Envoy:
//! - `x-mock-status: 503` answers that status with an OpenAI error body;
//! - `x-mock-omit-usage: 1` leaves `usage` out (JSON and stream);
//! - `x-mock-cut-after: N` ends a stream abruptly after N chunks (no usage, no `[DONE]`);
//! - `x-mock-error-after: N` sends an error event after N chunks and ends the
//!   stream there (as OpenAI does when a stream fails midway);
//! - `x-mock-delay-ms: N` waits before answering;
//! - `x-mock-chunk-delay-ms: N` pauses N ms between streamed chunks.

use axum::http::HeaderMap;

#[derive(Debug, Default, Clone)]
pub struct Faults {
    pub status: Option<u16>,
    pub omit_usage: bool,
    pub cut_after: Option<usize>,
    pub error_after: Option<usize>,
    pub delay_ms: Option<u64>,
    pub chunk_delay_ms: Option<u64>,
}

fn header<T: std::str::FromStr>(h: &HeaderMap, name: &str) -> Option<T> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

impl Faults {
    pub fn from_headers(h: &HeaderMap) -> Self {
        Faults {
            status: header(h, "x-mock-status"),
            omit_usage: h.contains_key("x-mock-omit-usage"),
            cut_after: header(h, "x-mock-cut-after"),
            error_after: header(h, "x-mock-error-after"),
            delay_ms: header(h, "x-mock-delay-ms"),
            chunk_delay_ms: header(h, "x-mock-chunk-delay-ms"),
        }
    }
}
