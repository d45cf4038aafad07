//! The proxy-wasm ABI 0.2.1 host functions (module `env`), with Envoy's
//! semantics where the filter depends on them. Every call is traced.
//! [`http`]: headers, bodies, stream control, local replies and callouts;
//! [`shared`]: properties, shared data, queues and metrics; here: logs, time,
//! contexts and the linker table.

mod http;
mod shared;

use wasmtime::{bail, Result};
use wasmtime::{Caller, Linker};

use crate::guest::Guest;
use crate::host::{Host, LogLine};
use http::*;
use shared::*;

const OK: i32 = 0;
const NOT_FOUND: i32 = 1;
const BAD_ARGUMENT: i32 = 2;
const EMPTY: i32 = 7;
const CAS_MISMATCH: i32 = 8;

type C<'a> = Caller<'a, Host>;

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

/// gRPC is part of the ABI but not of what Tollgate does: a call traps by name.
fn grpc(name: &'static str) -> impl Fn() -> Result<i32> {
    move || bail!("{name}: the harness does not implement gRPC calls")
}

/// Every host function of the ABI, by subject.
pub fn link(linker: &mut Linker<Host>) -> Result<()> {
    link_logging_and_time(linker)?;
    link_buffers_and_headers(linker)?;
    link_properties_and_shared_state(linker)?;
    link_stream_and_calls(linker)?;
    link_metrics(linker)?;
    link_grpc(linker)
}

const ENV: &str = "env";

fn link_logging_and_time(linker: &mut Linker<Host>) -> Result<()> {
    linker.func_wrap(ENV, "proxy_log", proxy_log)?;
    linker.func_wrap(ENV, "proxy_get_log_level", proxy_get_log_level)?;
    linker.func_wrap(
        ENV,
        "proxy_get_current_time_nanoseconds",
        proxy_get_current_time_nanoseconds,
    )?;
    linker.func_wrap(
        ENV,
        "proxy_set_tick_period_milliseconds",
        proxy_set_tick_period_milliseconds,
    )?;
    Ok(())
}

fn link_buffers_and_headers(linker: &mut Linker<Host>) -> Result<()> {
    linker.func_wrap(ENV, "proxy_get_buffer_bytes", proxy_get_buffer_bytes)?;
    linker.func_wrap(ENV, "proxy_set_buffer_bytes", proxy_set_buffer_bytes)?;
    linker.func_wrap(
        ENV,
        "proxy_get_header_map_pairs",
        proxy_get_header_map_pairs,
    )?;
    linker.func_wrap(
        ENV,
        "proxy_set_header_map_pairs",
        proxy_set_header_map_pairs,
    )?;
    linker.func_wrap(
        ENV,
        "proxy_get_header_map_value",
        proxy_get_header_map_value,
    )?;
    linker.func_wrap(
        ENV,
        "proxy_replace_header_map_value",
        proxy_replace_header_map_value,
    )?;
    linker.func_wrap(
        ENV,
        "proxy_remove_header_map_value",
        proxy_remove_header_map_value,
    )?;
    linker.func_wrap(
        ENV,
        "proxy_add_header_map_value",
        proxy_add_header_map_value,
    )?;
    Ok(())
}

fn link_properties_and_shared_state(linker: &mut Linker<Host>) -> Result<()> {
    linker.func_wrap(ENV, "proxy_get_property", proxy_get_property)?;
    linker.func_wrap(ENV, "proxy_set_property", proxy_set_property)?;
    linker.func_wrap(ENV, "proxy_get_shared_data", proxy_get_shared_data)?;
    linker.func_wrap(ENV, "proxy_set_shared_data", proxy_set_shared_data)?;
    linker.func_wrap(
        ENV,
        "proxy_register_shared_queue",
        proxy_register_shared_queue,
    )?;
    linker.func_wrap(
        ENV,
        "proxy_resolve_shared_queue",
        proxy_resolve_shared_queue,
    )?;
    linker.func_wrap(
        ENV,
        "proxy_dequeue_shared_queue",
        proxy_dequeue_shared_queue,
    )?;
    linker.func_wrap(
        ENV,
        "proxy_enqueue_shared_queue",
        proxy_enqueue_shared_queue,
    )?;
    Ok(())
}

fn link_stream_and_calls(linker: &mut Linker<Host>) -> Result<()> {
    linker.func_wrap(ENV, "proxy_continue_stream", proxy_continue_stream)?;
    linker.func_wrap(ENV, "proxy_close_stream", proxy_close_stream)?;
    linker.func_wrap(ENV, "proxy_send_local_response", proxy_send_local_response)?;
    linker.func_wrap(ENV, "proxy_http_call", proxy_http_call)?;
    linker.func_wrap(ENV, "proxy_get_status", proxy_get_status)?;
    linker.func_wrap(
        ENV,
        "proxy_set_effective_context",
        proxy_set_effective_context,
    )?;
    linker.func_wrap(
        ENV,
        "proxy_call_foreign_function",
        proxy_call_foreign_function,
    )?;
    linker.func_wrap(ENV, "proxy_done", proxy_done)?;
    Ok(())
}

fn link_metrics(linker: &mut Linker<Host>) -> Result<()> {
    linker.func_wrap(ENV, "proxy_define_metric", proxy_define_metric)?;
    linker.func_wrap(ENV, "proxy_get_metric", proxy_get_metric)?;
    linker.func_wrap(ENV, "proxy_record_metric", proxy_record_metric)?;
    linker.func_wrap(ENV, "proxy_increment_metric", proxy_increment_metric)?;
    Ok(())
}

/// gRPC signatures, typed as the ABI declares them; every call is refused.
fn link_grpc(linker: &mut Linker<Host>) -> Result<()> {
    let call = grpc("proxy_grpc_call");
    linker.func_wrap(
        ENV,
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
        ENV,
        "proxy_grpc_stream",
        move |_: C, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| {
            stream()
        },
    )?;
    let send = grpc("proxy_grpc_send");
    linker.func_wrap(
        ENV,
        "proxy_grpc_send",
        move |_: C, _: i32, _: i32, _: i32, _: i32| send(),
    )?;
    let cancel = grpc("proxy_grpc_cancel");
    linker.func_wrap(ENV, "proxy_grpc_cancel", move |_: C, _: i32| cancel())?;
    let close = grpc("proxy_grpc_close");
    linker.func_wrap(ENV, "proxy_grpc_close", move |_: C, _: i32| close())?;
    Ok(())
}
