//! The seam between the paywall logic and its proxy-wasm host. The wasm glue
//! implements it with `proxy_wasm::hostcalls`; native tests implement it with
//! a recording fake, so every decision the filter makes is testable off-Envoy.

use std::time::Duration;

use crate::replies::LocalReply;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// What the host should do with the stream after a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop iteration (and buffer, for bodies) until the filter resumes or replies.
    Pause,
}

/// An HTTP call to another cluster (`dispatch_http_call`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callout {
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout: Duration,
}

/// The host operations one HTTP stream needs.
pub trait StreamHost {
    fn request_header(&self, name: &str) -> Option<String>;
    /// Sets (Some) or removes (None) a request header.
    fn set_request_header(&mut self, name: &str, value: Option<&str>);
    /// The buffered request body, `size` bytes from the start.
    fn request_body(&self, size: usize) -> Option<Vec<u8>>;
    /// Replaces the `old_size` buffered request bytes with `body`.
    fn replace_request_body(&mut self, old_size: usize, body: &[u8]);
    /// Replaces the buffered request body and keeps `content-length` true.
    fn rewrite_request_body(&mut self, old_size: usize, body: &[u8]) {
        self.replace_request_body(old_size, body);
        self.set_request_header("content-length", Some(&body.len().to_string()));
    }
    fn response_header(&self, name: &str) -> Option<String>;
    fn set_response_header(&mut self, name: &str, value: Option<&str>);
    /// The current response body chunk of `size` bytes.
    fn response_body(&self, size: usize) -> Option<Vec<u8>>;
    /// Replaces the current `old_size`-byte response chunk with `bytes`.
    fn replace_response_body(&mut self, old_size: usize, bytes: &[u8]);
    fn send_reply(&mut self, reply: &LocalReply);
    /// Dispatches a callout and returns its token.
    fn dispatch(&mut self, callout: &Callout) -> Result<u32, String>;
    fn resume_request(&mut self);
    /// Lets a paused response go on (the bytes held back with it).
    fn resume_response(&mut self);
    /// Makes Envoy pick the route again after the filter changed routing headers.
    fn clear_route_cache(&mut self);
    fn log(&self, level: LogLevel, message: &str);
    /// Host time in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// Why the stream ended, as Envoy's `response.code_details` says
    /// (`upstream_reset_after_response_started{…}`, `downstream_remote_disconnect`).
    fn response_code_details(&self) -> Option<String>;
}
