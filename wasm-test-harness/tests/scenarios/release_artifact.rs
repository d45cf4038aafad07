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
