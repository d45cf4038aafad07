//! Host functions on an HTTP stream: its headers and bodies as Envoy holds
//! them, continuing or answering it, and HTTP callouts.

use wasmtime::{bail, Result};

use super::{show, BAD_ARGUMENT, C, NOT_FOUND, OK};
use crate::guest::Guest;
use crate::host::{
    deserialize_map, serialize_map, splice, CalloutRecord, HeaderMap, Host, LocalReply,
};

// Map types.
const REQUEST_HEADERS: i32 = 0;
const RESPONSE_HEADERS: i32 = 2;
const CALLOUT_RESPONSE_HEADERS: i32 = 6;

// Buffer types.
const REQUEST_BODY: i32 = 0;
const RESPONSE_BODY: i32 = 1;
const CALLOUT_RESPONSE_BODY: i32 = 4;
const VM_CONFIGURATION: i32 = 6;
const PLUGIN_CONFIGURATION: i32 = 7;

fn map_name(t: i32) -> &'static str {
    match t {
        REQUEST_HEADERS => "request_headers",
        1 => "request_trailers",
        RESPONSE_HEADERS => "response_headers",
        3 => "response_trailers",
        CALLOUT_RESPONSE_HEADERS => "callout_response_headers",
        7 => "callout_response_trailers",
        _ => "unknown_map",
    }
}

fn map_of(host: &mut Host, t: i32) -> Option<&mut HeaderMap> {
    match t {
        REQUEST_HEADERS => host.stream().map(|s| &mut s.request_headers),
        RESPONSE_HEADERS => host.stream().map(|s| &mut s.response_headers),
        CALLOUT_RESPONSE_HEADERS => host.callout_response.as_mut().map(|r| &mut r.headers),
        _ => None,
    }
}

fn buffer_of(host: &mut Host, t: i32) -> Option<&mut Vec<u8>> {
    match t {
        REQUEST_BODY => host.stream().map(|s| &mut s.request_buffer),
        RESPONSE_BODY => host.stream().map(|s| &mut s.response_buffer),
        CALLOUT_RESPONSE_BODY => host.callout_response.as_mut().map(|r| &mut r.body),
        VM_CONFIGURATION => Some(&mut host.vm_config),
        PLUGIN_CONFIGURATION => Some(&mut host.plugin_config),
        _ => None,
    }
}

pub(super) fn proxy_get_buffer_bytes(
    mut c: C,
    t: i32,
    start: i32,
    max: i32,
    ptr_out: i32,
    size_out: i32,
) -> Result<i32> {
    let mut g = Guest::new(&mut c);
    let Some(buffer) = buffer_of(g.host(), t) else {
        g.host()
            .trace(format!("  proxy_get_buffer_bytes({t}) -> NotFound"));
        return Ok(NOT_FOUND);
    };
    let (start, max) = (start as u32 as usize, max as u32 as usize);
    if start > buffer.len() {
        return Ok(BAD_ARGUMENT);
    }
    let end = start.saturating_add(max).min(buffer.len());
    let bytes = buffer[start..end].to_vec();
    g.host().trace(format!(
        "  proxy_get_buffer_bytes({t}, {start}, {max}) -> {}",
        show(&bytes)
    ));
    g.give(&bytes, ptr_out, size_out)?;
    Ok(OK)
}

pub(super) fn proxy_set_buffer_bytes(
    mut c: C,
    t: i32,
    start: i32,
    size: i32,
    ptr: i32,
    len: i32,
) -> Result<i32> {
    let mut g = Guest::new(&mut c);
    let data = g.read(ptr, len)?;
    let host = g.host();
    host.trace(format!(
        "  proxy_set_buffer_bytes({t}, {start}, {size}, {})",
        show(&data)
    ));
    let ok = match t {
        REQUEST_BODY | RESPONSE_BODY => buffer_of(host, t)
            .is_some_and(|b| splice(b, start as u32 as usize, size as u32 as usize, &data)),
        _ => false,
    };
    Ok(if ok { OK } else { BAD_ARGUMENT })
}

pub(super) fn proxy_get_header_map_pairs(
    mut c: C,
    t: i32,
    ptr_out: i32,
    size_out: i32,
) -> Result<i32> {
    let mut g = Guest::new(&mut c);
    let bytes = map_of(g.host(), t)
        .map(|m| serialize_map(m))
        .unwrap_or_default();
    g.host()
        .trace(format!("  proxy_get_header_map_pairs({})", map_name(t)));
    g.give(&bytes, ptr_out, size_out)?;
    Ok(OK)
}

pub(super) fn proxy_set_header_map_pairs(mut c: C, t: i32, ptr: i32, len: i32) -> Result<i32> {
    let mut g = Guest::new(&mut c);
    let data = g.read(ptr, len)?;
    let Some(pairs) = deserialize_map(&data) else {
        bail!("proxy_set_header_map_pairs: malformed map");
    };
    let host = g.host();
    host.trace(format!("  proxy_set_header_map_pairs({})", map_name(t)));
    match map_of(host, t) {
        Some(map) if t != CALLOUT_RESPONSE_HEADERS => {
            *map = pairs;
            Ok(OK)
        }
        _ => Ok(BAD_ARGUMENT),
    }
}

pub(super) fn proxy_get_header_map_value(
    mut c: C,
    t: i32,
    key_ptr: i32,
    key_len: i32,
    ptr_out: i32,
    size_out: i32,
) -> Result<i32> {
    let mut g = Guest::new(&mut c);
    let key = g.read_string(key_ptr, key_len)?;
    let value =
        map_of(g.host(), t).and_then(|m| crate::host::lookup_raw(m, &key).map(<[u8]>::to_vec));
    g.host().trace(format!(
        "  proxy_get_header_map_value({}, {key:?}) -> {}",
        map_name(t),
        value.as_deref().map_or("NotFound".into(), show)
    ));
    g.give_found(value.as_deref(), ptr_out, size_out, NOT_FOUND)
}

/// Sets, adds or removes one header (`value` None removes).
fn edit_header(
    c: &mut C,
    what: &str,
    t: i32,
    key: (i32, i32),
    value: Option<(i32, i32)>,
    add: bool,
) -> Result<i32> {
    let mut g = Guest::new(c);
    let name = g.read_string(key.0, key.1)?.to_ascii_lowercase();
    let value = match value {
        Some((p, l)) => Some(g.read(p, l)?),
        None => None,
    };
    let host = g.host();
    host.trace(format!(
        "  {what}({}, {name:?}{})",
        map_name(t),
        value
            .as_deref()
            .map_or(String::new(), |v| format!(", {}", show(v)))
    ));
    let Some(map) = map_of(host, t).filter(|_| t != CALLOUT_RESPONSE_HEADERS) else {
        return Ok(BAD_ARGUMENT);
    };
    match value {
        Some(v) if add => map.push((name, v)),
        Some(v) => {
            map.retain(|(k, _)| !k.eq_ignore_ascii_case(&name));
            map.push((name, v));
        }
        None => map.retain(|(k, _)| !k.eq_ignore_ascii_case(&name)),
    }
    Ok(OK)
}

pub(super) fn proxy_replace_header_map_value(
    mut c: C,
    t: i32,
    kp: i32,
    kl: i32,
    vp: i32,
    vl: i32,
) -> Result<i32> {
    edit_header(
        &mut c,
        "proxy_replace_header_map_value",
        t,
        (kp, kl),
        Some((vp, vl)),
        false,
    )
}

pub(super) fn proxy_add_header_map_value(
    mut c: C,
    t: i32,
    kp: i32,
    kl: i32,
    vp: i32,
    vl: i32,
) -> Result<i32> {
    edit_header(
        &mut c,
        "proxy_add_header_map_value",
        t,
        (kp, kl),
        Some((vp, vl)),
        true,
    )
}

pub(super) fn proxy_remove_header_map_value(mut c: C, t: i32, kp: i32, kl: i32) -> Result<i32> {
    edit_header(
        &mut c,
        "proxy_remove_header_map_value",
        t,
        (kp, kl),
        None,
        false,
    )
}

pub(super) fn proxy_continue_stream(mut c: C, stream_type: i32) -> Result<i32> {
    let host = c.data_mut();
    host.trace(format!("  proxy_continue_stream({stream_type})"));
    let Some(s) = host.stream() else {
        return Ok(BAD_ARGUMENT);
    };
    match stream_type {
        0 => {
            s.resumes += 1;
            s.request_released = true;
            if s.request_ended {
                let body = std::mem::take(&mut s.request_buffer);
                s.upstream_body.extend_from_slice(&body);
            }
        }
        1 => {
            let body = std::mem::take(&mut s.response_buffer);
            s.client_body.extend_from_slice(&body);
        }
        _ => return Ok(BAD_ARGUMENT),
    }
    Ok(OK)
}

pub(super) fn proxy_close_stream(mut c: C, stream_type: i32) -> Result<i32> {
    c.data_mut()
        .trace(format!("  proxy_close_stream({stream_type})"));
    Ok(OK)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn proxy_send_local_response(
    mut c: C,
    status: i32,
    _dp: i32,
    _dl: i32,
    bp: i32,
    bl: i32,
    hp: i32,
    hl: i32,
    _grpc: i32,
) -> Result<i32> {
    let mut g = Guest::new(&mut c);
    let body = g.read(bp, bl)?;
    let Some(headers) = deserialize_map(&g.read(hp, hl)?) else {
        bail!("proxy_send_local_response: malformed header map");
    };
    let host = g.host();
    host.trace(format!(
        "  proxy_send_local_response({status}, {})",
        show(&body)
    ));
    let reply = LocalReply {
        status: status as u32,
        headers: headers
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect(),
        body,
    };
    match host.stream() {
        Some(s) if s.local_reply.is_none() => {
            s.local_reply = Some(reply);
            Ok(OK)
        }
        // Envoy refuses a second reply on one stream.
        _ => Ok(BAD_ARGUMENT),
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn proxy_http_call(
    mut c: C,
    up: i32,
    ul: i32,
    hp: i32,
    hl: i32,
    bp: i32,
    bl: i32,
    _tp: i32,
    _tl: i32,
    timeout_ms: i32,
    token_out: i32,
) -> Result<i32> {
    let mut g = Guest::new(&mut c);
    let cluster = g.read_string(up, ul)?;
    let Some(headers) = deserialize_map(&g.read(hp, hl)?) else {
        bail!("proxy_http_call: malformed header map");
    };
    let body = g.read(bp, bl)?;
    let host = g.host();
    let headers: Vec<(String, String)> = headers
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    // Envoy rejects a call without these pseudo-headers.
    let complete = [":method", ":path", ":authority"]
        .iter()
        .all(|h| headers.iter().any(|(k, v)| k == h && !v.is_empty()));
    let refused = host.refuse_callouts.map(|s| s as i32);
    let status = refused.unwrap_or(if complete { OK } else { BAD_ARGUMENT });
    host.trace(format!(
        "  proxy_http_call({cluster:?}, {}, timeout={timeout_ms}) -> status {status}",
        show(&body)
    ));
    if status != OK {
        return Ok(status);
    }
    let token = host.next_token;
    host.next_token += 1;
    let record = CalloutRecord {
        token,
        context: host.current,
        cluster,
        headers,
        body,
        timeout_ms: timeout_ms as u32,
        deadline_ms: host.now_ms + timeout_ms as u32 as u64,
    };
    host.callouts.insert(token, record.clone());
    host.callout_log.push(record);
    g.write_u32(token_out, token)?;
    Ok(OK)
}
