//! [`StreamHost`] implemented with `proxy_wasm::hostcalls`. Host errors are
//! logged and swallowed: the filter must never panic inside Envoy.

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel as PwLogLevel, MapType};

use crate::host::{Callout, LogLevel, StreamHost};
use crate::provider_attempt::AttemptHost;
use crate::replies::LocalReply;

#[derive(Default)]
pub struct EnvoyHost;

pub fn log(level: LogLevel, message: &str) {
    let level = match level {
        LogLevel::Debug => PwLogLevel::Debug,
        LogLevel::Info => PwLogLevel::Info,
        LogLevel::Warn => PwLogLevel::Warn,
        LogLevel::Error => PwLogLevel::Error,
    };
    let _ = hostcalls::log(level, message);
}

pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| u64::try_from(d.as_millis()).ok())
        .unwrap_or(0)
}

/// A header value; bytes that are not UTF-8 become U+FFFD. Envoy passes
/// header values as bytes, and the SDK's string getter panics on invalid
/// UTF-8, which would take the VM down with a single crafted header.
fn map_value(map: MapType, name: &str) -> Option<String> {
    hostcalls::get_map_value_bytes(map, name)
        .ok()
        .flatten()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

fn report<T, E: std::fmt::Debug>(what: &str, r: Result<T, E>) {
    if let Err(e) = r {
        log(LogLevel::Warn, &format!("host call {what} failed: {e:?}"));
    }
}

impl StreamHost for EnvoyHost {
    fn request_header(&self, name: &str) -> Option<String> {
        map_value(MapType::HttpRequestHeaders, name)
    }

    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        report(
            "set_request_header",
            hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value),
        );
    }

    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size)
            .ok()
            .flatten()
    }

    fn replace_request_body(&mut self, old_size: usize, body: &[u8]) {
        report(
            "set_request_body",
            hostcalls::set_buffer(BufferType::HttpRequestBody, 0, old_size, body),
        );
    }

    fn replace_response_body(&mut self, old_size: usize, bytes: &[u8]) {
        report(
            "set_response_body",
            hostcalls::set_buffer(BufferType::HttpResponseBody, 0, old_size, bytes),
        );
    }

    fn response_header(&self, name: &str) -> Option<String> {
        map_value(MapType::HttpResponseHeaders, name)
    }

    fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        report(
            "set_response_header",
            hostcalls::set_map_value(MapType::HttpResponseHeaders, name, value),
        );
    }

    fn response_body(&self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size)
            .ok()
            .flatten()
    }

    fn send_reply(&mut self, reply: &LocalReply) {
        let headers: Vec<(&str, &str)> = reply
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        report(
            "send_http_response",
            hostcalls::send_http_response(reply.status, headers, Some(reply.body.as_bytes())),
        );
    }

    fn dispatch(&mut self, callout: &Callout) -> Result<u32, String> {
        dispatch(callout)
    }

    fn resume_request(&mut self) {
        report("resume_http_request", hostcalls::resume_http_request());
    }

    fn resume_response(&mut self) {
        report("resume_http_response", hostcalls::resume_http_response());
    }

    fn clear_route_cache(&mut self) {
        // Envoy ≥1.33 exposes this as a foreign function; older ones refresh the
        // route automatically on header changes, so NotFound is fine.
        let _ = hostcalls::call_foreign_function("clear_route_cache", None);
    }

    fn log(&self, level: LogLevel, message: &str) {
        log(level, message);
    }

    fn now_ms(&self) -> u64 {
        now_ms()
    }

    fn response_code_details(&self) -> Option<String> {
        hostcalls::get_property(vec!["response", "code_details"])
            .ok()
            .flatten()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }
}

pub fn dispatch(callout: &Callout) -> Result<u32, String> {
    let headers: Vec<(&str, &str)> = callout
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    hostcalls::dispatch_http_call(
        &callout.cluster,
        headers,
        Some(&callout.body),
        vec![],
        callout.timeout,
    )
    .map_err(|s| format!("{s:?}"))
}

/// `:status` of the current callout response; None when the call failed or timed out.
pub fn callout_status() -> Option<u16> {
    map_value(MapType::HttpCallResponseHeaders, ":status").and_then(|s| s.parse().ok())
}

pub fn callout_body(size: usize) -> Vec<u8> {
    hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, size)
        .ok()
        .flatten()
        .unwrap_or_default()
}

impl AttemptHost for EnvoyHost {
    /// The provider cluster of the endpoint Envoy picked for this try, from
    /// the endpoint metadata `envoy-providers` writes (`tollgate.cluster`).
    fn upstream_cluster(&self) -> Option<String> {
        let path = vec![
            "xds",
            "upstream_host_metadata",
            "filter_metadata",
            "tollgate",
            "cluster",
        ];
        hostcalls::get_property(path)
            .ok()
            .flatten()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }
}
