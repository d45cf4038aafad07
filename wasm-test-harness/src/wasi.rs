//! The WASI preview1 functions a proxy-wasm filter built for wasm32-wasip1
//! imports, answered as a sandboxed host does: no arguments, no environment,
//! no files; stdout and stderr become log lines; the clock is the harness's
//! clock and randomness is seeded, so every run is the same.

use wasmtime::{bail, Result};
use wasmtime::{Caller, Linker};

use crate::guest::Guest;
use crate::host::{Host, LogLine};

const SUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EINVAL: i32 = 28;
const ENOSYS: i32 = 52;

type C<'a> = Caller<'a, Host>;

fn zero_sizes(mut c: C, count_out: i32, size_out: i32) -> Result<i32> {
    let mut g = Guest::new(&mut c);
    g.write_u32(count_out, 0)?;
    g.write_u32(size_out, 0)?;
    Ok(SUCCESS)
}

fn nothing(_: C, _: i32, _: i32) -> Result<i32> {
    Ok(SUCCESS)
}

fn clock_time_get(mut c: C, clock: i32, _precision: i64, out: i32) -> Result<i32> {
    // realtime, monotonic, process and thread clocks all follow the harness clock.
    if !(0..=3).contains(&clock) {
        return Ok(EINVAL);
    }
    let mut g = Guest::new(&mut c);
    let now = g.host().now_ms;
    g.write_u64(out, now.saturating_mul(1_000_000))?;
    Ok(SUCCESS)
}

fn clock_res_get(mut c: C, _clock: i32, out: i32) -> Result<i32> {
    Guest::new(&mut c).write_u64(out, 1_000_000)?;
    Ok(SUCCESS)
}

fn fd_write(mut c: C, fd: i32, iovs: i32, iovs_len: i32, written_out: i32) -> Result<i32> {
    if fd != 1 && fd != 2 {
        return Ok(EBADF);
    }
    let mut g = Guest::new(&mut c);
    let mut text = Vec::new();
    for i in 0..iovs_len {
        let iov = g.read(iovs + i * 8, 8)?;
        let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
        let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
        text.extend(g.read(ptr, len)?);
    }
    g.write_u32(written_out, text.len() as u32)?;
    let host = g.host();
    let message = String::from_utf8_lossy(&text).trim_end().to_string();
    host.trace(format!("  fd_write({fd}, {message:?})"));
    host.logs.push(LogLine {
        level: if fd == 1 { 2 } else { 4 },
        message,
    });
    Ok(SUCCESS)
}

fn fd_fdstat_get(mut c: C, fd: i32, out: i32) -> Result<i32> {
    if !(0..=2).contains(&fd) {
        return Ok(EBADF);
    }
    // filetype character device, no flags, no rights beyond reading/writing.
    let mut stat = [0u8; 24];
    stat[0] = 2;
    Guest::new(&mut c).write(out, &stat)?;
    Ok(SUCCESS)
}

fn random_get(mut c: C, ptr: i32, len: i32) -> Result<i32> {
    let mut g = Guest::new(&mut c);
    let bytes = g.host().random_bytes(len as u32 as usize);
    g.write(ptr, &bytes)?;
    Ok(SUCCESS)
}

fn proc_exit(_: C, code: i32) -> Result<()> {
    bail!("the module called proc_exit({code})")
}

pub fn link(linker: &mut Linker<Host>) -> Result<()> {
    let m = "wasi_snapshot_preview1";
    linker.func_wrap(m, "args_sizes_get", zero_sizes)?;
    linker.func_wrap(m, "args_get", nothing)?;
    linker.func_wrap(m, "environ_sizes_get", zero_sizes)?;
    linker.func_wrap(m, "environ_get", nothing)?;
    linker.func_wrap(m, "clock_time_get", clock_time_get)?;
    linker.func_wrap(m, "clock_res_get", clock_res_get)?;
    linker.func_wrap(m, "fd_write", fd_write)?;
    linker.func_wrap(m, "fd_fdstat_get", fd_fdstat_get)?;
    linker.func_wrap(m, "fd_close", |_: C, _: i32| Ok(EBADF))?;
    linker.func_wrap(m, "fd_seek", |_: C, _: i32, _: i64, _: i32, _: i32| {
        Ok(EBADF)
    })?;
    linker.func_wrap(m, "fd_read", |_: C, _: i32, _: i32, _: i32, _: i32| {
        Ok(EBADF)
    })?;
    // No preopened directories: the module has no file system.
    linker.func_wrap(m, "fd_prestat_get", |_: C, _: i32, _: i32| Ok(EBADF))?;
    linker.func_wrap(m, "fd_prestat_dir_name", |_: C, _: i32, _: i32, _: i32| {
        Ok(EBADF)
    })?;
    linker.func_wrap(m, "random_get", random_get)?;
    linker.func_wrap(m, "sched_yield", |_: C| Ok(SUCCESS))?;
    linker.func_wrap(m, "poll_oneoff", |_: C, _: i32, _: i32, _: i32, _: i32| {
        Ok(ENOSYS)
    })?;
    linker.func_wrap(m, "proc_exit", proc_exit)?;
    Ok(())
}
