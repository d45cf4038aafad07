//! The ABI contract of a proxy-wasm module: what it imports and exports,
//! checked against the proxy-wasm ABI 0.2.1 host functions and WASI preview1,
//! so an artifact that a host cannot link fails loudly and by name.

use wasmparser::{Parser, Payload, TypeRef};

/// Host functions of proxy-wasm ABI 0.2.1 (module `env`).
pub const PROXY_WASM_0_2_1_IMPORTS: &[&str] = &[
    "proxy_log",
    "proxy_get_log_level",
    "proxy_get_current_time_nanoseconds",
    "proxy_set_tick_period_milliseconds",
    "proxy_get_buffer_bytes",
    "proxy_set_buffer_bytes",
    "proxy_get_header_map_pairs",
    "proxy_set_header_map_pairs",
    "proxy_get_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_add_header_map_value",
    "proxy_get_property",
    "proxy_set_property",
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "proxy_register_shared_queue",
    "proxy_resolve_shared_queue",
    "proxy_dequeue_shared_queue",
    "proxy_enqueue_shared_queue",
    "proxy_continue_stream",
    "proxy_close_stream",
    "proxy_send_local_response",
    "proxy_http_call",
    "proxy_grpc_call",
    "proxy_grpc_stream",
    "proxy_grpc_send",
    "proxy_grpc_cancel",
    "proxy_grpc_close",
    "proxy_get_status",
    "proxy_set_effective_context",
    "proxy_call_foreign_function",
    "proxy_done",
    "proxy_define_metric",
    "proxy_get_metric",
    "proxy_record_metric",
    "proxy_increment_metric",
];

/// WASI preview1 functions (module `wasi_snapshot_preview1`) a host provides.
pub const WASI_PREVIEW1_IMPORTS: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "fd_advise",
    "fd_allocate",
    "fd_close",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_pwrite",
    "fd_read",
    "fd_readdir",
    "fd_renumber",
    "fd_seek",
    "fd_sync",
    "fd_tell",
    "fd_write",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "poll_oneoff",
    "proc_exit",
    "proc_raise",
    "sched_yield",
    "random_get",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

/// Exports a proxy-wasm host needs from an HTTP filter module.
pub const REQUIRED_EXPORTS: &[&str] = &[
    "_initialize",
    "memory",
    "proxy_abi_version_0_2_1",
    "proxy_on_memory_allocate",
    "proxy_on_context_create",
    "proxy_on_vm_start",
    "proxy_on_configure",
    "proxy_on_tick",
    "proxy_on_request_headers",
    "proxy_on_request_body",
    "proxy_on_response_headers",
    "proxy_on_response_body",
    "proxy_on_http_call_response",
    "proxy_on_log",
    "proxy_on_done",
    "proxy_on_delete",
];

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ModuleAbi {
    /// (module, name) of every imported function.
    pub imports: Vec<(String, String)>,
    pub exports: Vec<String>,
}

/// Reads the import and export sections of a wasm module.
pub fn read_abi(bytes: &[u8]) -> anyhow::Result<ModuleAbi> {
    let mut abi = ModuleAbi::default();
    for payload in Parser::new(0).parse_all(bytes) {
        match payload? {
            Payload::ImportSection(reader) => {
                for group in reader {
                    for item in group? {
                        let (_, import) = item?;
                        if let TypeRef::Func(_) = import.ty {
                            abi.imports
                                .push((import.module.to_string(), import.name.to_string()));
                        } else {
                            anyhow::bail!(
                                "unexpected non-function import {}.{}",
                                import.module,
                                import.name
                            );
                        }
                    }
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    abi.exports.push(export?.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(abi)
}

/// Imports a proxy-wasm 0.2.1 host with WASI preview1 cannot satisfy.
pub fn unknown_imports(abi: &ModuleAbi) -> Vec<String> {
    abi.imports
        .iter()
        .filter(|(module, name)| match module.as_str() {
            "env" => !PROXY_WASM_0_2_1_IMPORTS.contains(&name.as_str()),
            "wasi_snapshot_preview1" => !WASI_PREVIEW1_IMPORTS.contains(&name.as_str()),
            _ => true,
        })
        .map(|(m, n)| format!("{m}.{n}"))
        .collect()
}

pub fn missing_exports(abi: &ModuleAbi) -> Vec<&'static str> {
    REQUIRED_EXPORTS
        .iter()
        .copied()
        .filter(|e| !abi.exports.iter().any(|x| x == e))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_unknown_imports_by_name() {
        let abi = ModuleAbi {
            imports: vec![
                ("env".into(), "proxy_log".into()),
                ("env".into(), "proxy_teleport".into()),
                ("wasi_snapshot_preview1".into(), "fd_write".into()),
                ("other".into(), "f".into()),
            ],
            exports: vec!["memory".into()],
        };
        assert_eq!(unknown_imports(&abi), ["env.proxy_teleport", "other.f"]);
        assert!(missing_exports(&abi).contains(&"proxy_on_request_headers"));
    }
}
