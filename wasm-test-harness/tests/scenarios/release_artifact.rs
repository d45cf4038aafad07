//! The release `.wasm` links against any proxy-wasm 0.2.1 host with WASI
//! preview1: no unknown import, every callback exported, and release settings
//! applied (stripped, sized). `make test` builds the artifact first.

use tollgate_wasm_test_harness::{missing_exports, read_abi, release_wasm, unknown_imports};

#[test]
fn release_wasm_matches_the_proxy_wasm_abi() {
    let path = release_wasm();
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!("{}: {e} — build it with `make wasm`", path.display());
    });
    let abi = read_abi(&bytes).unwrap();
    assert_eq!(
        unknown_imports(&abi),
        Vec::<String>::new(),
        "imports a host cannot provide"
    );
    assert_eq!(
        missing_exports(&abi),
        Vec::<&str>::new(),
        "callbacks the host cannot call"
    );
    assert!(
        abi.imports
            .iter()
            .any(|(m, n)| m == "env" && n == "proxy_http_call"),
        "the filter must call out to the sidecar"
    );
    // strip = true: no name section left behind.
    let has_names = wasmparser::Parser::new(0)
        .parse_all(&bytes)
        .filter_map(Result::ok)
        .any(|p| matches!(p, wasmparser::Payload::CustomSection(c) if c.name() == "name"));
    assert!(!has_names, "release wasm is not stripped");
    eprintln!(
        "release wasm: {} bytes, {} imports, {} exports",
        bytes.len(),
        abi.imports.len(),
        abi.exports.len()
    );
}

/// The harness itself: a module importing what no proxy-wasm host provides, or
/// a WASI function the harness leaves out, is refused by name, never linked to
/// a silent stub.
#[test]
fn an_import_the_harness_does_not_provide_fails_by_name() {
    use tollgate_wasm_test_harness::module::engine;
    use tollgate_wasm_test_harness::wasmtime::Module;
    use tollgate_wasm_test_harness::Vm;

    let engine = engine().unwrap();
    for (import, name) in [
        (
            r#"(import "env" "proxy_teleport" (func (param i32) (result i32)))"#,
            "env.proxy_teleport",
        ),
        (
            r#"(import "wasi_snapshot_preview1" "path_open" (func (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))"#,
            "wasi_snapshot_preview1.path_open",
        ),
    ] {
        let wat = format!(
            r#"(module
                 (import "env" "proxy_log" (func (param i32 i32 i32) (result i32)))
                 {import}
                 (memory (export "memory") 1))"#
        );
        let module = Module::new(&engine, wat::parse_str(&wat).unwrap()).unwrap();
        let err = Vm::with_module(&engine, &module)
            .err()
            .expect("instantiated anyway");
        assert!(err.to_string().contains(name), "{err}");
    }
}
