//! The proxy-wasm ABI 0.2.1 host functions (module `env`), with Envoy's
//! semantics where the filter depends on them. Every call is traced.

use wasmtime::{bail, Result};
use wasmtime::{Caller, Linker};

use crate::guest::Guest;
use crate::host::{deserialize_map, serialize_map, splice, CalloutRecord, HeaderMap, Host};
use crate::host::{LocalReply, LogLine, Metric};

const OK: i32 = 0;
const NOT_FOUND: i32 = 1;
const BAD_ARGUMENT: i32 = 2;
const EMPTY: i32 = 7;
const CAS_MISMATCH: i32 = 8;

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

type C<'a> = Caller<'a, Host>;

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

fn show(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.len() > 120 {
        let cut = (0..=120)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        format!("{:?}… ({} bytes)", &text[..cut], bytes.len())
    } else {
        format!("{text:?}")
    }
}

fn proxy_log(mut c: C, level: i32, ptr: i32, len: i32) -> Result<i32> {
    let mut g = Guest::new(&mut c);
    let message = g.read_string(ptr, len)?;
    let host = g.host();
    host.trace(format!("  proxy_log({level}, {message:?})"));
    host.logs.push(LogLine {
        level: level as u32,
        message,
    });
    Ok(OK)
}

fn proxy_get_log_level(mut c: C, out: i32) -> Result<i32> {
    // Trace: the filter's own level decides what it logs.
    Guest::new(&mut c).write_u32(out, 0)?;
    Ok(OK)
}

fn proxy_get_current_time_nanoseconds(mut c: C, out: i32) -> Result<i32> {
    let mut g = Guest::new(&mut c);
    let now = g.host().now_ms;
    g.write_u64(out, now.saturating_mul(1_000_000))?;
    Ok(OK)
}

fn proxy_set_tick_period_milliseconds(mut c: C, period: i32) -> Result<i32> {
    let host = c.data_mut();
    host.trace(format!("  proxy_set_tick_period_milliseconds({period})"));
    host.tick_period_ms = period as u32 as u64;
    Ok(OK)
}

fn proxy_get_buffer_bytes(
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

fn proxy_set_buffer_bytes(
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

fn proxy_get_header_map_pairs(mut c: C, t: i32, ptr_out: i32, size_out: i32) -> Result<i32> {
    let mut g = Guest::new(&mut c);
    let bytes = map_of(g.host(), t)
        .map(|m| serialize_map(m))
        .unwrap_or_default();
    g.host()
        .trace(format!("  proxy_get_header_map_pairs({})", map_name(t)));
    g.give(&bytes, ptr_out, size_out)?;
    Ok(OK)
}

fn proxy_set_header_map_pairs(mut c: C, t: i32, ptr: i32, len: i32) -> Result<i32> {
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

fn proxy_get_header_map_value(
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
    match value {
        Some(v) => {
            g.give(&v, ptr_out, size_out)?;
            Ok(OK)
        }
        None => Ok(NOT_FOUND),
    }
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

fn proxy_replace_header_map_value(
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

fn proxy_add_header_map_value(mut c: C, t: i32, kp: i32, kl: i32, vp: i32, vl: i32) -> Result<i32> {
    edit_header(
        &mut c,
        "proxy_add_header_map_value",
        t,
        (kp, kl),
        Some((vp, vl)),
        true,
    )
}

fn proxy_remove_header_map_value(mut c: C, t: i32, kp: i32, kl: i32) -> Result<i32> {
    edit_header(
        &mut c,
        "proxy_remove_header_map_value",
        t,
        (kp, kl),
        None,
        false,
    )
}

fn proxy_get_property(
    mut c: C,
    path_ptr: i32,
    path_len: i32,
    ptr_out: i32,
    size_out: i32,
) -> Result<i32> {
    let mut g = Guest::new(&mut c);
    let path = g.read(path_ptr, path_len)?;
    let value = g.host().properties.get(&path).cloned();
    g.host().trace(format!(
        "  proxy_get_property({}) -> {}",
        show(&path),
        value.as_deref().map_or("NotFound".into(), show)
    ));
    match value {
        Some(v) => {
            g.give(&v, ptr_out, size_out)?;
            Ok(OK)
        }
        None => Ok(NOT_FOUND),
    }
}

fn proxy_set_property(mut c: C, path_ptr: i32, path_len: i32, ptr: i32, len: i32) -> Result<i32> {
    let mut g = Guest::new(&mut c);
    let path = g.read(path_ptr, path_len)?;
    let value = g.read(ptr, len)?;
    let host = g.host();
    host.trace(format!(
        "  proxy_set_property({}, {})",
        show(&path),
        show(&value)
    ));
    host.properties.insert(path, value);
    Ok(OK)
}

fn proxy_get_shared_data(
    mut c: C,
    kp: i32,
    kl: i32,
    ptr_out: i32,
    size_out: i32,
    cas_out: i32,
) -> Result<i32> {
    let mut g = Guest::new(&mut c);
    let key = g.read_string(kp, kl)?;
    let entry = g.host().shared_data.get(&key).cloned();
    g.host().trace(format!(
        "  proxy_get_shared_data({key:?}) -> {}",
        entry.is_some()
    ));
    match entry {
        Some((value, cas)) => {
            g.give(&value, ptr_out, size_out)?;
            g.write_u32(cas_out, cas)?;
            Ok(OK)
        }
        None => Ok(NOT_FOUND),
    }
}

fn proxy_set_shared_data(mut c: C, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32) -> Result<i32> {
    let mut g = Guest::new(&mut c);
    let key = g.read_string(kp, kl)?;
    let value = g.read(vp, vl)?;
    let host = g.host();
    host.trace(format!(
        "  proxy_set_shared_data({key:?}, {}, cas={cas})",
        show(&value)
    ));
    let current = host.shared_data.get(&key).map_or(0, |(_, c)| *c);
    if cas != 0 && cas as u32 != current {
        return Ok(CAS_MISMATCH);
    }
    host.shared_data
        .insert(key, (value, current.wrapping_add(1).max(1)));
    Ok(OK)
}

fn proxy_register_shared_queue(mut c: C, np: i32, nl: i32, id_out: i32) -> Result<i32> {
    let mut g = Guest::new(&mut c);
    let name = g.read_string(np, nl)?;
    let host = g.host();
    let index = match host.queues.iter().position(|(n, _)| *n == name) {
        Some(i) => i,
        None => {
            host.queues.push((name.clone(), Default::default()));
            host.queues.len() - 1
        }
    };
    host.trace(format!(
        "  proxy_register_shared_queue({name:?}) -> {}",
        index + 1
    ));
    g.write_u32(id_out, index as u32 + 1)?;
    Ok(OK)
}

fn proxy_resolve_shared_queue(
    mut c: C,
    _vp: i32,
    _vl: i32,
    np: i32,
    nl: i32,
    id_out: i32,
) -> Result<i32> {
    let mut g = Guest::new(&mut c);
    let name = g.read_string(np, nl)?;
    let found = g.host().queues.iter().position(|(n, _)| *n == name);
    g.host().trace(format!(
        "  proxy_resolve_shared_queue({name:?}) -> {found:?}"
    ));
    match found {
        Some(i) => {
            g.write_u32(id_out, i as u32 + 1)?;
            Ok(OK)
        }
        None => Ok(NOT_FOUND),
    }
}

fn queue_mut(host: &mut Host, id: i32) -> Option<&mut std::collections::VecDeque<Vec<u8>>> {
    let index = (id as u32 as usize).checked_sub(1)?;
    host.queues.get_mut(index).map(|(_, q)| q)
}

fn proxy_dequeue_shared_queue(mut c: C, id: i32, ptr_out: i32, size_out: i32) -> Result<i32> {
    let mut g = Guest::new(&mut c);
    let item = match queue_mut(g.host(), id) {
        None => return Ok(NOT_FOUND),
        Some(q) => q.pop_front(),
    };
    g.host().trace(format!(
        "  proxy_dequeue_shared_queue({id}) -> {}",
        item.is_some()
    ));
    match item {
        Some(v) => {
            g.give(&v, ptr_out, size_out)?;
            Ok(OK)
        }
        None => Ok(EMPTY),
    }
}

fn proxy_enqueue_shared_queue(mut c: C, id: i32, ptr: i32, len: i32) -> Result<i32> {
    let mut g = Guest::new(&mut c);
    let value = g.read(ptr, len)?;
    let host = g.host();
    host.trace(format!(
        "  proxy_enqueue_shared_queue({id}, {})",
        show(&value)
    ));
    match queue_mut(host, id) {
        Some(q) => {
            q.push_back(value);
            Ok(OK)
        }
        None => Ok(NOT_FOUND),
    }
}

fn proxy_continue_stream(mut c: C, stream_type: i32) -> Result<i32> {
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

fn proxy_close_stream(mut c: C, stream_type: i32) -> Result<i32> {
    c.data_mut()
        .trace(format!("  proxy_close_stream({stream_type})"));
    Ok(OK)
}

#[allow(clippy::too_many_arguments)]
fn proxy_send_local_response(
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
fn proxy_http_call(
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

fn proxy_get_status(mut c: C, code_out: i32, ptr_out: i32, size_out: i32) -> Result<i32> {
    let mut g = Guest::new(&mut c);
    g.write_u32(code_out, 0)?;
    g.give(&[], ptr_out, size_out)?;
    Ok(OK)
}

fn proxy_set_effective_context(mut c: C, id: i32) -> Result<i32> {
    let host = c.data_mut();
    let id = id as u32;
    if id != host.root && !host.streams.contains_key(&id) {
        host.trace(format!(
            "  proxy_set_effective_context({id}) -> BadArgument"
        ));
        return Ok(BAD_ARGUMENT);
    }
    host.current = id;
    Ok(OK)
}

fn proxy_call_foreign_function(
    mut c: C,
    np: i32,
    nl: i32,
    _ap: i32,
    _al: i32,
    ptr_out: i32,
    size_out: i32,
) -> Result<i32> {
    let mut g = Guest::new(&mut c);
    let name = g.read_string(np, nl)?;
    let host = g.host();
    host.trace(format!("  proxy_call_foreign_function({name:?})"));
    host.foreign_calls.push(name.clone());
    if name == "clear_route_cache" {
        g.give(&[], ptr_out, size_out)?;
        return Ok(OK);
    }
    Ok(NOT_FOUND)
}

fn proxy_done(mut c: C) -> Result<i32> {
    let host = c.data_mut();
    host.trace("  proxy_done()");
    host.done = true;
    Ok(OK)
}

fn proxy_define_metric(mut c: C, kind: i32, np: i32, nl: i32, id_out: i32) -> Result<i32> {
    let mut g = Guest::new(&mut c);
    let name = g.read_string(np, nl)?;
    let host = g.host();
    let index = match host.metrics.iter().position(|m| m.name == name) {
        Some(i) => i,
        None => {
            host.metrics.push(Metric {
                kind: kind as u32,
                name: name.clone(),
                value: 0,
            });
            host.metrics.len() - 1
        }
    };
    host.trace(format!(
        "  proxy_define_metric({kind}, {name:?}) -> {}",
        index + 1
    ));
    g.write_u32(id_out, index as u32 + 1)?;
    Ok(OK)
}

fn metric_mut(host: &mut Host, id: i32) -> Option<&mut Metric> {
    let index = (id as u32 as usize).checked_sub(1)?;
    host.metrics.get_mut(index)
}

fn proxy_get_metric(mut c: C, id: i32, out: i32) -> Result<i32> {
    let mut g = Guest::new(&mut c);
    let Some(value) = metric_mut(g.host(), id).map(|m| m.value) else {
        return Ok(NOT_FOUND);
    };
    g.write_u64(out, value as u64)?;
    Ok(OK)
}

fn proxy_record_metric(mut c: C, id: i32, value: i64) -> Result<i32> {
    let host = c.data_mut();
    host.trace(format!("  proxy_record_metric({id}, {value})"));
    match metric_mut(host, id) {
        Some(m) => {
            m.value = value;
            Ok(OK)
        }
        None => Ok(NOT_FOUND),
    }
}

fn proxy_increment_metric(mut c: C, id: i32, delta: i64) -> Result<i32> {
    let host = c.data_mut();
    host.trace(format!("  proxy_increment_metric({id}, {delta})"));
    match metric_mut(host, id) {
        // Envoy's counters never go down; gauges may.
        Some(m) if m.kind == 0 && delta < 0 => Ok(BAD_ARGUMENT),
        Some(m) => {
            m.value += delta;
            Ok(OK)
        }
        None => Ok(NOT_FOUND),
    }
}

/// gRPC is part of the ABI but not of what Tollgate does: a call traps by name.
fn grpc(name: &'static str) -> impl Fn() -> Result<i32> {
    move || bail!("{name}: the harness does not implement gRPC calls")
}

pub fn link(linker: &mut Linker<Host>) -> Result<()> {
    let env = "env";
    linker.func_wrap(env, "proxy_log", proxy_log)?;
    linker.func_wrap(env, "proxy_get_log_level", proxy_get_log_level)?;
    linker.func_wrap(
        env,
        "proxy_get_current_time_nanoseconds",
        proxy_get_current_time_nanoseconds,
    )?;
    linker.func_wrap(
        env,
        "proxy_set_tick_period_milliseconds",
        proxy_set_tick_period_milliseconds,
    )?;
    linker.func_wrap(env, "proxy_get_buffer_bytes", proxy_get_buffer_bytes)?;
    linker.func_wrap(env, "proxy_set_buffer_bytes", proxy_set_buffer_bytes)?;
    linker.func_wrap(
        env,
        "proxy_get_header_map_pairs",
        proxy_get_header_map_pairs,
    )?;
    linker.func_wrap(
        env,
        "proxy_set_header_map_pairs",
        proxy_set_header_map_pairs,
    )?;
    linker.func_wrap(
        env,
        "proxy_get_header_map_value",
        proxy_get_header_map_value,
    )?;
    linker.func_wrap(
        env,
        "proxy_replace_header_map_value",
        proxy_replace_header_map_value,
    )?;
    linker.func_wrap(
        env,
        "proxy_remove_header_map_value",
        proxy_remove_header_map_value,
    )?;
    linker.func_wrap(
        env,
        "proxy_add_header_map_value",
        proxy_add_header_map_value,
    )?;
    linker.func_wrap(env, "proxy_get_property", proxy_get_property)?;
    linker.func_wrap(env, "proxy_set_property", proxy_set_property)?;
    linker.func_wrap(env, "proxy_get_shared_data", proxy_get_shared_data)?;
    linker.func_wrap(env, "proxy_set_shared_data", proxy_set_shared_data)?;
    linker.func_wrap(
        env,
        "proxy_register_shared_queue",
        proxy_register_shared_queue,
    )?;
    linker.func_wrap(
        env,
        "proxy_resolve_shared_queue",
        proxy_resolve_shared_queue,
    )?;
    linker.func_wrap(
        env,
        "proxy_dequeue_shared_queue",
        proxy_dequeue_shared_queue,
    )?;
    linker.func_wrap(
        env,
        "proxy_enqueue_shared_queue",
        proxy_enqueue_shared_queue,
    )?;
    linker.func_wrap(env, "proxy_continue_stream", proxy_continue_stream)?;
    linker.func_wrap(env, "proxy_close_stream", proxy_close_stream)?;
    linker.func_wrap(env, "proxy_send_local_response", proxy_send_local_response)?;
    linker.func_wrap(env, "proxy_http_call", proxy_http_call)?;
    linker.func_wrap(env, "proxy_get_status", proxy_get_status)?;
    linker.func_wrap(
        env,
        "proxy_set_effective_context",
        proxy_set_effective_context,
    )?;
    linker.func_wrap(
        env,
        "proxy_call_foreign_function",
        proxy_call_foreign_function,
    )?;
    linker.func_wrap(env, "proxy_done", proxy_done)?;
    linker.func_wrap(env, "proxy_define_metric", proxy_define_metric)?;
    linker.func_wrap(env, "proxy_get_metric", proxy_get_metric)?;
    linker.func_wrap(env, "proxy_record_metric", proxy_record_metric)?;
    linker.func_wrap(env, "proxy_increment_metric", proxy_increment_metric)?;
    // gRPC signatures, typed as the ABI declares them.
    let call = grpc("proxy_grpc_call");
    linker.func_wrap(
        env,
        "proxy_grpc_call",
        move |_: C,
              _: i32,
              _: i32,
              _: i32,
              _: i32,
              _: i32,
              _: i32,
              _: i32,
              _: i32,
              _: i32,
              _: i32,
              _: i32,
              _: i32| call(),
    )?;
    let stream = grpc("proxy_grpc_stream");
    linker.func_wrap(
        env,
        "proxy_grpc_stream",
        move |_: C, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| {
            stream()
        },
    )?;
    let send = grpc("proxy_grpc_send");
    linker.func_wrap(
        env,
        "proxy_grpc_send",
        move |_: C, _: i32, _: i32, _: i32, _: i32| send(),
    )?;
    let cancel = grpc("proxy_grpc_cancel");
    linker.func_wrap(env, "proxy_grpc_cancel", move |_: C, _: i32| cancel())?;
    let close = grpc("proxy_grpc_close");
    linker.func_wrap(env, "proxy_grpc_close", move |_: C, _: i32| close())?;
    Ok(())
}
