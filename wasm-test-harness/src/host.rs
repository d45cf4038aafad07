//! What the host knows: per-stream headers and bodies (as Envoy would hold
//! them), pending callouts, logs, metrics, shared data, queues, the clock and
//! a trace of every host call, printed when a scenario fails.

use std::collections::{BTreeMap, HashMap, VecDeque};

/// Wall-clock start of every VM: a fixed instant, so runs are repeatable.
pub const EPOCH_MS: u64 = 1_795_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// proxy-wasm level: 0 trace … 5 critical; stdout/stderr lines are 2/4.
    pub level: u32,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl LocalReply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        lookup(&self.headers, name)
    }
}

/// An HTTP call the filter dispatched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalloutRecord {
    pub token: u32,
    /// The context that dispatched it (a stream, or the root).
    pub context: u32,
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u32,
    /// Host time at which Envoy would time it out.
    pub deadline_ms: u64,
}

impl CalloutRecord {
    pub fn header(&self, name: &str) -> Option<&str> {
        lookup(&self.headers, name)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Header names and raw values: Envoy passes values as bytes, not always UTF-8.
pub type HeaderMap = Vec<(String, Vec<u8>)>;

/// One HTTP stream as Envoy holds it around the filter.
#[derive(Debug, Default, Clone)]
pub struct StreamView {
    pub request_headers: HeaderMap,
    /// Request bytes Envoy holds because the filter paused.
    pub request_buffer: Vec<u8>,
    pub request_ended: bool,
    /// The filter let the request go upstream (continued or resumed).
    pub request_released: bool,
    /// Request bytes that went upstream.
    pub upstream_body: Vec<u8>,
    pub response_headers: HeaderMap,
    pub response_buffer: Vec<u8>,
    /// Response bytes the client received.
    pub client_body: Vec<u8>,
    pub local_reply: Option<LocalReply>,
    /// proxy_continue_stream(HttpRequest) calls.
    pub resumes: u32,
}

impl StreamView {
    pub fn request_header(&self, name: &str) -> Option<&str> {
        lookup_raw(&self.request_headers, name).and_then(|v| std::str::from_utf8(v).ok())
    }

    pub fn response_header(&self, name: &str) -> Option<&str> {
        lookup_raw(&self.response_headers, name).and_then(|v| std::str::from_utf8(v).ok())
    }
}

pub(crate) fn lookup_raw<'a>(map: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    map.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

pub(crate) fn lookup<'a>(map: &'a [(String, String)], name: &str) -> Option<&'a str> {
    map.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metric {
    /// 0 counter, 1 gauge, 2 histogram.
    pub kind: u32,
    pub name: String,
    pub value: i64,
}

/// The answer being delivered to `proxy_on_http_call_response`.
#[derive(Debug, Default, Clone)]
pub struct CalloutResponse {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct Host {
    pub now_ms: u64,
    pub vm_config: Vec<u8>,
    pub plugin_config: Vec<u8>,
    /// Context whose state host calls act on (Envoy's effective context).
    pub current: u32,
    pub root: u32,
    pub streams: BTreeMap<u32, StreamView>,
    /// Streams after `close`, kept for assertions.
    pub closed: BTreeMap<u32, StreamView>,
    pub callouts: BTreeMap<u32, CalloutRecord>,
    /// Every callout ever dispatched, in order.
    pub callout_log: Vec<CalloutRecord>,
    pub next_token: u32,
    pub callout_response: Option<CalloutResponse>,
    pub tick_period_ms: u64,
    pub logs: Vec<LogLine>,
    pub metrics: Vec<Metric>,
    pub shared_data: HashMap<String, (Vec<u8>, u32)>,
    pub queues: Vec<(String, VecDeque<Vec<u8>>)>,
    /// Properties by path, segments joined with `\0` as the ABI sends them.
    pub properties: HashMap<Vec<u8>, Vec<u8>>,
    pub foreign_calls: Vec<String>,
    /// When set, `proxy_http_call` fails with this status (e.g. 2 BadArgument
    /// for an unknown cluster), as Envoy does.
    pub refuse_callouts: Option<u32>,
    pub trace: Vec<String>,
    /// The module called `proxy_done` (a root context finished draining).
    pub done: bool,
    pub rng_state: u64,
    pub limits: wasmtime::StoreLimits,
}

impl Host {
    pub fn new() -> Self {
        Host {
            now_ms: EPOCH_MS,
            next_token: 1,
            rng_state: 0x9E37_79B9_7F4A_7C15,
            ..Default::default()
        }
    }

    pub fn trace(&mut self, line: impl Into<String>) {
        // A long run would keep millions of lines; the tail is what helps.
        if self.trace.len() >= 20_000 {
            self.trace.drain(..10_000);
        }
        self.trace.push(line.into());
    }

    pub fn stream(&mut self) -> Option<&mut StreamView> {
        let id = self.current;
        self.streams.get_mut(&id)
    }

    pub fn metric_by_name(&self, name: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.name == name)
    }

    /// Deterministic bytes for WASI `random_get` (xorshift64*).
    pub fn random_bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let mut x = self.rng_state;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.rng_state = x;
            out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

/// Replaces `[start, start+len)` of `buf` with `data`, as Envoy's
/// `setBuffer` does for the whole-buffer, prepend and append cases.
pub fn splice(buf: &mut Vec<u8>, start: usize, len: usize, data: &[u8]) -> bool {
    if start > buf.len() {
        return false;
    }
    let end = start.saturating_add(len).min(buf.len());
    buf.splice(start..end, data.iter().copied());
    true
}

/// proxy-wasm's serialized map: count, (key len, value len) pairs, then the
/// NUL-terminated keys and values.
pub fn serialize_map(map: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(map.len() as u32).to_le_bytes());
    for (k, v) in map {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in map {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// The inverse of [`serialize_map`]; `None` for a malformed map.
pub fn deserialize_map(bytes: &[u8]) -> Option<HeaderMap> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let word = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let n = word(0)?;
    let mut sizes = Vec::with_capacity(n.min(1024));
    for i in 0..n {
        sizes.push((word(4 + i * 8)?, word(8 + i * 8)?));
    }
    let mut p = 4 + n * 8;
    let mut take = |len: usize| -> Option<Vec<u8>> {
        let s = bytes.get(p..p + len)?;
        p += len + 1;
        Some(s.to_vec())
    };
    let mut map = Vec::with_capacity(n.min(1024));
    for (klen, vlen) in sizes {
        let k = String::from_utf8_lossy(&take(klen)?).into_owned();
        let v = take(vlen)?;
        map.push((k, v));
    }
    Some(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_round_trip() {
        let map = vec![
            (":path".to_string(), b"/v1/chat/completions".to_vec()),
            ("x-empty".to_string(), Vec::new()),
        ];
        assert_eq!(deserialize_map(&serialize_map(&map)), Some(map));
        assert_eq!(deserialize_map(&[3, 0, 0, 0]), None);
    }

    #[test]
    fn splice_replaces_prepends_and_appends() {
        let mut b = b"hello".to_vec();
        assert!(splice(&mut b, 0, 5, b"bye"));
        assert_eq!(b, b"bye");
        assert!(splice(&mut b, 0, 0, b">"));
        assert!(splice(&mut b, 4, 0, b"<"));
        assert_eq!(b, b">bye<");
        assert!(!splice(&mut b, 9, 0, b"x"));
    }
}
