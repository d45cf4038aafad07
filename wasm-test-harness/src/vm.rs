//! The scenario API: one [`Vm`] is one Envoy worker's instance of the filter.
//! A test plays Envoy — it opens streams, feeds headers and body chunks,
//! answers or fails callouts and moves the clock — and then asserts on what
//! the filter did. When a test panics, the VM prints its host-call trace.

use anyhow::{anyhow, bail, Context as _, Result};
use wasmtime::{Engine, Instance, Linker, Memory, Module, Store, StoreLimitsBuilder, TypedFunc};

use crate::host::{CalloutRecord, CalloutResponse, HeaderMap, Host, LogLine, StreamView};
use crate::module::release_module;
use crate::{proxy_abi, wasi};

pub type StreamId = u32;

/// What a callback told the host to do with the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
}

/// How the sidecar (or the network) answers a callout.
#[derive(Debug, Clone, Copy)]
pub enum CalloutAnswer<'a> {
    /// An HTTP response with this `:status` and body.
    Status(u16, &'a [u8]),
    /// Headers without a `:status`, as from a broken upstream.
    NoStatus(&'a [u8]),
    /// No response: reset, refused or timed out. Envoy delivers no headers.
    Failure,
}

/// Limit on the module's linear memory: a runaway fails the test, not the machine.
const MEMORY_LIMIT: usize = 1 << 30;

struct Exports {
    context_create: TypedFunc<(i32, i32), ()>,
    vm_start: TypedFunc<(i32, i32), i32>,
    configure: TypedFunc<(i32, i32), i32>,
    tick: TypedFunc<i32, ()>,
    request_headers: TypedFunc<(i32, i32, i32), i32>,
    request_body: TypedFunc<(i32, i32, i32), i32>,
    response_headers: TypedFunc<(i32, i32, i32), i32>,
    response_body: TypedFunc<(i32, i32, i32), i32>,
    http_call_response: TypedFunc<(i32, i32, i32, i32, i32), ()>,
    log: TypedFunc<i32, ()>,
    done: TypedFunc<i32, i32>,
    delete: TypedFunc<i32, ()>,
}

impl Exports {
    fn find(store: &mut Store<Host>, instance: &Instance) -> Result<Self> {
        macro_rules! get {
            ($name:literal) => {
                instance
                    .get_typed_func(&mut *store, $name)
                    .map_err(anyhow::Error::from)
                    .with_context(|| format!("export {}", $name))?
            };
        }
        Ok(Exports {
            context_create: get!("proxy_on_context_create"),
            vm_start: get!("proxy_on_vm_start"),
            configure: get!("proxy_on_configure"),
            tick: get!("proxy_on_tick"),
            request_headers: get!("proxy_on_request_headers"),
            request_body: get!("proxy_on_request_body"),
            response_headers: get!("proxy_on_response_headers"),
            response_body: get!("proxy_on_response_body"),
            http_call_response: get!("proxy_on_http_call_response"),
            log: get!("proxy_on_log"),
            done: get!("proxy_on_done"),
            delete: get!("proxy_on_delete"),
        })
    }
}

pub struct Vm {
    store: Store<Host>,
    exports: Exports,
    memory: Memory,
    next_context: u32,
    next_tick_ms: Option<u64>,
    /// The first trap: like Envoy, a VM that trapped serves nothing more.
    failed: Option<String>,
}

fn action(code: i32) -> Result<Action> {
    match code {
        0 => Ok(Action::Continue),
        1 => Ok(Action::Pause),
        other => bail!("callback returned unknown action {other}"),
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec()))
        .collect()
}

impl Vm {
    /// Instantiates the release module and starts the VM (no configuration yet).
    pub fn new() -> Result<Vm> {
        let (engine, module) = release_module()?;
        Vm::with_module(&engine, &module)
    }

    /// Instantiates any proxy-wasm module and starts its VM.
    pub fn with_module(engine: &Engine, module: &Module) -> Result<Vm> {
        let mut host = Host::new();
        host.limits = StoreLimitsBuilder::new().memory_size(MEMORY_LIMIT).build();
        let mut store = Store::new(engine, host);
        store.limiter(|h| &mut h.limits);
        let mut linker = Linker::new(engine);
        proxy_abi::link(&mut linker)?;
        wasi::link(&mut linker)?;
        for import in module.imports() {
            if linker.get_by_import(&mut store, &import).is_none() {
                bail!(
                    "the module imports {}.{}, which this harness does not provide",
                    import.module(),
                    import.name()
                );
            }
        }
        let instance = linker.instantiate(&mut store, module)?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| anyhow!("the module exports no memory"))?;
        let exports = Exports::find(&mut store, &instance)?;
        if let Ok(init) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
            init.call(&mut store, ())?;
        }
        let mut vm = Vm {
            store,
            exports,
            memory,
            next_context: 2,
            next_tick_ms: None,
            failed: None,
        };
        vm.host_mut().root = 1;
        vm.host_mut().current = 1;
        vm.call("proxy_on_context_create(root)", |s, e| {
            e.context_create.call(s, (1, 0))
        })?;
        let started = vm.call("proxy_on_vm_start", |s, e| e.vm_start.call(s, (1, 0)))?;
        if started == 0 {
            bail!("proxy_on_vm_start returned false");
        }
        Ok(vm)
    }

    /// A started VM with `config` as plugin configuration, which must be accepted.
    pub fn start(config: &serde_json::Value) -> Result<Vm> {
        let mut vm = Vm::new()?;
        if !vm.configure(config.to_string().as_bytes())? {
            bail!("configuration rejected: {:?}", vm.logs());
        }
        Ok(vm)
    }

    /// The plugin configuration every scenario starts from.
    pub fn default_config() -> serde_json::Value {
        serde_json::json!({
            "sidecar_cluster": "tollgate_ledger",
            "internal_secret": "harness-secret-0123456789",
            "callout_timeout_ms": 2000,
            "settle_retry_initial_ms": 200,
            "settle_retry_max_ms": 5000,
            "tick_ms": 100
        })
    }

    /// `proxy_on_configure` with this plugin configuration; false means rejected.
    pub fn configure(&mut self, config: &[u8]) -> Result<bool> {
        self.host_mut().plugin_config = config.to_vec();
        let len = config.len() as i32;
        let ok = self.call("proxy_on_configure", |s, e| e.configure.call(s, (1, len)))?;
        self.sync_tick();
        Ok(ok != 0)
    }

    /// Runs one callback on behalf of Envoy; a trap fails the VM.
    fn call<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Store<Host>, &Exports) -> wasmtime::Result<T>,
    ) -> Result<T> {
        if let Some(trap) = &self.failed {
            bail!("the VM failed earlier ({trap}); Envoy would not call {what}");
        }
        self.host_mut().trace(format!("→ {what}"));
        match f(&mut self.store, &self.exports) {
            Ok(v) => Ok(v),
            Err(e) => {
                let message = format!("{e:?}");
                self.host_mut()
                    .trace(format!("✗ trap in {what}: {message}"));
                self.failed = Some(message.clone());
                Err(anyhow!("trap in {what}: {message}"))
            }
        }
    }

    fn enter(&mut self, context: u32) {
        self.host_mut().current = context;
    }

    // ---- streams -------------------------------------------------------

    /// Creates an HTTP context, as Envoy does for each new request.
    pub fn open(&mut self) -> Result<StreamId> {
        let id = self.next_context;
        self.next_context += 1;
        self.host_mut().streams.insert(id, StreamView::default());
        self.enter(id);
        self.call(&format!("proxy_on_context_create({id})"), |s, e| {
            e.context_create.call(s, (id as i32, 1))
        })?;
        Ok(id)
    }

    fn view_mut(&mut self, id: StreamId) -> Result<&mut StreamView> {
        self.store
            .data_mut()
            .streams
            .get_mut(&id)
            .ok_or_else(|| anyhow!("stream {id} is not open"))
    }

    pub fn stream(&self, id: StreamId) -> &StreamView {
        static CLOSED: std::sync::OnceLock<StreamView> = std::sync::OnceLock::new();
        self.host()
            .streams
            .get(&id)
            .or_else(|| self.host().closed.get(&id))
            .unwrap_or_else(|| CLOSED.get_or_init(StreamView::default))
    }

    fn ensure_unanswered(&mut self, id: StreamId) -> Result<()> {
        if let Some(reply) = &self.view_mut(id)?.local_reply {
            bail!(
                "stream {id} was already answered locally ({})",
                reply.status
            );
        }
        Ok(())
    }

    pub fn request_headers(
        &mut self,
        id: StreamId,
        pairs: &[(&str, &str)],
        end: bool,
    ) -> Result<Action> {
        self.request_headers_raw(id, headers(pairs), end)
    }

    /// Request headers with raw values (Envoy passes bytes, not always UTF-8).
    pub fn request_headers_raw(
        &mut self,
        id: StreamId,
        map: HeaderMap,
        end: bool,
    ) -> Result<Action> {
        let n = map.len() as i32;
        let view = self.view_mut(id)?;
        view.request_headers = map;
        view.request_ended = end;
        self.enter(id);
        let code = self.call(
            &format!("proxy_on_request_headers({id}, end={end})"),
            |s, e| e.request_headers.call(s, (id as i32, n, end as i32)),
        )?;
        let a = action(code)?;
        if a == Action::Continue {
            self.view_mut(id)?.request_released = true;
        }
        Ok(a)
    }

    /// One request body chunk; while the filter pauses, Envoy keeps buffering.
    pub fn request_body(&mut self, id: StreamId, chunk: &[u8], end: bool) -> Result<Action> {
        self.ensure_unanswered(id)?;
        let view = self.view_mut(id)?;
        view.request_buffer.extend_from_slice(chunk);
        view.request_ended = end;
        let size = view.request_buffer.len() as i32;
        self.enter(id);
        let code = self.call(
            &format!("proxy_on_request_body({id}, {size}, end={end})"),
            |s, e| e.request_body.call(s, (id as i32, size, end as i32)),
        )?;
        let a = action(code)?;
        let view = self.view_mut(id)?;
        if a == Action::Continue && view.local_reply.is_none() {
            view.request_released = true;
            let body = std::mem::take(&mut view.request_buffer);
            view.upstream_body.extend_from_slice(&body);
        }
        Ok(a)
    }

    pub fn response_headers(
        &mut self,
        id: StreamId,
        pairs: &[(&str, &str)],
        end: bool,
    ) -> Result<Action> {
        let view = self.view_mut(id)?;
        view.response_headers = headers(pairs);
        self.enter(id);
        let code = self.call(
            &format!("proxy_on_response_headers({id}, end={end})"),
            |s, e| {
                e.response_headers
                    .call(s, (id as i32, pairs.len() as i32, end as i32))
            },
        )?;
        action(code)
    }

    /// One response body chunk; what the filter lets through reaches the client.
    pub fn response_body(&mut self, id: StreamId, chunk: &[u8], end: bool) -> Result<Action> {
        let view = self.view_mut(id)?;
        view.response_buffer.extend_from_slice(chunk);
        let size = view.response_buffer.len() as i32;
        self.enter(id);
        let code = self.call(
            &format!("proxy_on_response_body({id}, {size}, end={end})"),
            |s, e| e.response_body.call(s, (id as i32, size, end as i32)),
        )?;
        let a = action(code)?;
        if a == Action::Continue {
            let view = self.view_mut(id)?;
            let body = std::mem::take(&mut view.response_buffer);
            view.client_body.extend_from_slice(&body);
        }
        Ok(a)
    }

    /// The stream ends (completed, reset or abandoned by the client): Envoy
    /// logs it, destroys the context and cancels its pending callouts.
    pub fn close(&mut self, id: StreamId) -> Result<()> {
        self.enter(id);
        let raw = id as i32;
        self.call(&format!("proxy_on_log({id})"), |s, e| e.log.call(s, raw))?;
        self.call(&format!("proxy_on_done({id})"), |s, e| e.done.call(s, raw))?;
        self.call(&format!("proxy_on_delete({id})"), |s, e| {
            e.delete.call(s, raw)
        })?;
        let host = self.host_mut();
        host.callouts.retain(|_, c| c.context != id);
        if let Some(view) = host.streams.remove(&id) {
            host.closed.insert(id, view);
        }
        host.current = host.root;
        Ok(())
    }

    /// Envoy stops the VM: `proxy_on_done` on the root context. False means
    /// the filter asked for time and will call `proxy_done` itself.
    pub fn shutdown(&mut self) -> Result<bool> {
        self.enter(1);
        Ok(self.call("proxy_on_done(root)", |s, e| e.done.call(s, 1))? != 0)
    }

    // ---- callouts ------------------------------------------------------

    /// Callouts waiting for an answer, oldest first.
    pub fn pending(&self) -> Vec<CalloutRecord> {
        self.host().callouts.values().cloned().collect()
    }

    /// The oldest pending callout to `path`, if any.
    pub fn pending_to(&self, path: &str) -> Option<CalloutRecord> {
        self.host()
            .callouts
            .values()
            .find(|c| c.header(":path") == Some(path))
            .cloned()
    }

    /// Every callout dispatched so far, answered or not.
    pub fn dispatched(&self) -> &[CalloutRecord] {
        &self.host().callout_log
    }

    /// Delivers the answer to a pending callout.
    pub fn answer(&mut self, token: u32, answer: CalloutAnswer) -> Result<()> {
        let Some(callout) = self.host_mut().callouts.remove(&token) else {
            bail!("callout {token} is not pending (answered, timed out or cancelled)");
        };
        let response = match answer {
            CalloutAnswer::Status(status, body) => CalloutResponse {
                headers: vec![
                    (":status".into(), status.to_string().into_bytes()),
                    ("content-type".into(), b"application/json".to_vec()),
                ],
                body: body.to_vec(),
            },
            CalloutAnswer::NoStatus(body) => CalloutResponse {
                headers: vec![("content-type".into(), b"application/json".to_vec())],
                body: body.to_vec(),
            },
            CalloutAnswer::Failure => CalloutResponse::default(),
        };
        let (n, len) = (response.headers.len() as i32, response.body.len() as i32);
        self.host_mut().callout_response = Some(response);
        self.enter(callout.context);
        let context = callout.context as i32;
        let label = match answer {
            CalloutAnswer::Status(status, body) => {
                format!("{status}, {:?}", String::from_utf8_lossy(body))
            }
            CalloutAnswer::NoStatus(_) => "no :status".into(),
            CalloutAnswer::Failure => "failure".into(),
        };
        let result = self.call(
            &format!("proxy_on_http_call_response({context}, token={token}, {label})"),
            |s, e| {
                e.http_call_response
                    .call(s, (context, token as i32, n, len, 0))
            },
        );
        self.host_mut().callout_response = None;
        result
    }

    /// Answers the oldest pending callout to `path`.
    pub fn answer_path(&mut self, path: &str, answer: CalloutAnswer) -> Result<CalloutRecord> {
        let callout = self
            .pending_to(path)
            .ok_or_else(|| anyhow!("no callout to {path} is pending"))?;
        self.answer(callout.token, answer)?;
        Ok(callout)
    }

    /// Makes `proxy_http_call` fail with this status (None: accept again).
    pub fn refuse_callouts(&mut self, status: Option<u32>) {
        self.host_mut().refuse_callouts = status;
    }

    // ---- time ----------------------------------------------------------

    /// The next tick is one period from now (after configure or a tick).
    fn sync_tick(&mut self) {
        let period = self.host().tick_period_ms;
        self.next_tick_ms = (period > 0).then(|| self.host().now_ms + period);
    }

    /// Time passes: ticks fire and callouts past their deadline time out, in order.
    pub fn advance(&mut self, ms: u64) -> Result<()> {
        let target = self.host().now_ms + ms;
        loop {
            let deadline = self
                .host()
                .callouts
                .values()
                .map(|c| (c.deadline_ms, c.token))
                .min();
            let tick = self.next_tick_ms;
            let next = match (deadline, tick) {
                (Some((d, _)), Some(t)) => d.min(t),
                (Some((d, _)), None) => d,
                (None, Some(t)) => t,
                (None, None) => break,
            };
            if next > target {
                break;
            }
            self.host_mut().now_ms = next.max(self.host().now_ms);
            match deadline {
                Some((d, token)) if d == next => self.answer(token, CalloutAnswer::Failure)?,
                _ => self.tick()?,
            }
        }
        self.host_mut().now_ms = target;
        Ok(())
    }

    /// One `proxy_on_tick` now.
    pub fn tick(&mut self) -> Result<()> {
        self.enter(1);
        self.call("proxy_on_tick", |s, e| e.tick.call(s, 1))?;
        self.sync_tick();
        Ok(())
    }

    pub fn now_ms(&self) -> u64 {
        self.host().now_ms
    }

    // ---- observations ----------------------------------------------------

    pub fn host(&self) -> &Host {
        self.store.data()
    }

    pub fn host_mut(&mut self) -> &mut Host {
        self.store.data_mut()
    }

    pub fn logs(&self) -> &[LogLine] {
        &self.host().logs
    }

    /// Whether any log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.logs().iter().any(|l| l.message.contains(needle))
    }

    pub fn metric(&self, name: &str) -> Option<i64> {
        self.host().metric_by_name(name).map(|m| m.value)
    }

    /// The module's linear memory, in bytes (it never shrinks).
    pub fn memory_bytes(&self) -> usize {
        self.memory.data_size(&self.store)
    }

    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// The last `n` host-call trace lines.
    pub fn trace_tail(&self, n: usize) -> String {
        let trace = &self.host().trace;
        trace[trace.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- host-call trace (last 200 lines) ----\n{}\n---- end of trace ----",
                self.trace_tail(200)
            );
        }
    }
}
