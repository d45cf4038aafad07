//! Compiling the release artifact once per process, with an on-disk cache of
//! the compiled code so later runs do not pay Cranelift again. Cranelift is
//! built unoptimised in the dev profile: compiling the module then takes
//! about 13 s once per clean build, against about 2 more minutes to build an
//! optimised Cranelift on two cores (measured); the code it generates is the
//! same either way.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context as _;
use wasmtime::{Config, Engine, Module};

/// The release artifact operators load (`make wasm` builds it).
pub fn release_wasm() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target/wasm32-wasip1/release/tollgate_filter.wasm")
}

/// The engine every harness VM runs on.
pub fn engine() -> anyhow::Result<Engine> {
    Ok(Engine::new(&Config::new())?)
}

/// The release module, compiled once per process.
pub fn release_module() -> anyhow::Result<(Engine, Module)> {
    static MODULE: OnceLock<Result<(Engine, Module), String>> = OnceLock::new();
    MODULE
        .get_or_init(|| load(&release_wasm()).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Compiles `path`, or loads the code compiled earlier for the same bytes.
pub fn load(path: &Path) -> anyhow::Result<(Engine, Module)> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("{}: build it with `make wasm`", path.display()))?;
    let engine = engine()?;
    let cache = cache_path(&bytes);
    if let Some(module) = cache.as_deref().and_then(|p| cached(&engine, p)) {
        return Ok((engine, module));
    }
    let module = Module::new(&engine, &bytes)
        .map_err(anyhow::Error::from)
        .context("compiling the filter")?;
    if let (Some(cache), Ok(code)) = (cache, module.serialize()) {
        // Written to a temporary name first: another test binary may read it.
        let tmp = cache.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, code).is_ok() {
            let _ = std::fs::rename(&tmp, &cache);
        }
    }
    Ok((engine, module))
}

fn cached(engine: &Engine, path: &Path) -> Option<Module> {
    if !path.exists() {
        return None;
    }
    // SAFETY: the file is one this harness serialized from the same bytes
    // with the same wasmtime; wasmtime also checks engine compatibility.
    unsafe { Module::deserialize_file(engine, path) }.ok()
}

/// `target/wasm-harness-cache/<hash of bytes and wasmtime>.cwasm`.
fn cache_path(bytes: &[u8]) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasm-harness-cache");
    std::fs::create_dir_all(&dir).ok()?;
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    env!("CARGO_PKG_VERSION").hash(&mut h);
    wasmtime_version().hash(&mut h);
    Some(dir.join(format!("{:016x}.cwasm", h.finish())))
}

/// Changes whenever the harness binary is rebuilt against another wasmtime.
fn wasmtime_version() -> &'static str {
    // The engine's precompile hash covers flags and version.
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        engine()
            .map(|e| {
                let mut h = DefaultHasher::new();
                e.precompile_compatibility_hash().hash(&mut h);
                format!("{:x}", h.finish())
            })
            .unwrap_or_default()
    })
}
