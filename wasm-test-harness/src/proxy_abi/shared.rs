//! Host functions shared across a VM's contexts: properties, shared data
//! (with compare-and-swap), shared queues and metrics.

use wasmtime::Result;

use super::{show, BAD_ARGUMENT, C, CAS_MISMATCH, EMPTY, NOT_FOUND, OK};
use crate::guest::Guest;
use crate::host::{Host, Metric};

pub(super) fn proxy_get_property(
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
    g.give_found(value.as_deref(), ptr_out, size_out, NOT_FOUND)
}

pub(super) fn proxy_set_property(
    mut c: C,
    path_ptr: i32,
    path_len: i32,
    ptr: i32,
    len: i32,
) -> Result<i32> {
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

pub(super) fn proxy_get_shared_data(
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

pub(super) fn proxy_set_shared_data(
    mut c: C,
    kp: i32,
    kl: i32,
    vp: i32,
    vl: i32,
    cas: i32,
) -> Result<i32> {
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

pub(super) fn proxy_register_shared_queue(mut c: C, np: i32, nl: i32, id_out: i32) -> Result<i32> {
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

pub(super) fn proxy_resolve_shared_queue(
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

pub(super) fn proxy_dequeue_shared_queue(
    mut c: C,
    id: i32,
    ptr_out: i32,
    size_out: i32,
) -> Result<i32> {
    let mut g = Guest::new(&mut c);
    let item = match queue_mut(g.host(), id) {
        None => return Ok(NOT_FOUND),
        Some(q) => q.pop_front(),
    };
    g.host().trace(format!(
        "  proxy_dequeue_shared_queue({id}) -> {}",
        item.is_some()
    ));
    g.give_found(item.as_deref(), ptr_out, size_out, EMPTY)
}

pub(super) fn proxy_enqueue_shared_queue(mut c: C, id: i32, ptr: i32, len: i32) -> Result<i32> {
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

pub(super) fn proxy_define_metric(
    mut c: C,
    kind: i32,
    np: i32,
    nl: i32,
    id_out: i32,
) -> Result<i32> {
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

pub(super) fn proxy_get_metric(mut c: C, id: i32, out: i32) -> Result<i32> {
    let mut g = Guest::new(&mut c);
    let Some(value) = metric_mut(g.host(), id).map(|m| m.value) else {
        return Ok(NOT_FOUND);
    };
    g.write_u64(out, value as u64)?;
    Ok(OK)
}

pub(super) fn proxy_record_metric(mut c: C, id: i32, value: i64) -> Result<i32> {
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

pub(super) fn proxy_increment_metric(mut c: C, id: i32, delta: i64) -> Result<i32> {
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
