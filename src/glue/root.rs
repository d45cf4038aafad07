//! The root context: owns the configuration, the per-VM tokenizers and the
//! settlement queue, and delivers settlements on its tick.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};
use tollgate_protocol::{
    SettleBatchRequest, SettleBatchResponse, MAX_SETTLE_BATCH, SETTLE_BATCH_PATH,
};

use super::attempt::AttemptHttp;
use super::envoy_host::{callout_body, callout_status, dispatch, log, now_ms};
use super::metrics::{Metrics, StreamMetrics};
use super::stream::{PaywallHttp, UnconfiguredHttp};
use crate::config::FilterConfig;
use crate::host::LogLevel;
use crate::provider_attempt::is_attempt_config;
use crate::settlement_queue::SettlementQueue;
use crate::sidecar::{sidecar_callout, SettleAnswer};
use crate::tokens::Tokenizers;

/// Settlements dispatched per tick, in one batch callout: a large backlog
/// drains at 2,560 per second (100 ms ticks) without a burst of callouts.
const SETTLEMENTS_PER_TICK: usize = MAX_SETTLE_BATCH;

pub struct PaywallRoot {
    metrics: Metrics,
    /// Defined at configure; shared by the VM's HTTP contexts.
    stream_metrics: Rc<StreamMetrics>,
    config: Option<Rc<FilterConfig>>,
    tokenizers: Option<Rc<Tokenizers>>,
    queue: Rc<RefCell<SettlementQueue>>,
    /// Configured as the provider-attempt role (an upstream filter on fallback
    /// routes) rather than the paywall.
    attempt_role: bool,
}

impl PaywallRoot {
    pub fn new() -> Self {
        PaywallRoot {
            metrics: Metrics::default(),
            stream_metrics: Rc::default(),
            config: None,
            tokenizers: None,
            queue: Rc::default(),
            attempt_role: false,
        }
    }

    fn deliver_due(&mut self) {
        self.deliver(now_ms(), SETTLEMENTS_PER_TICK);
    }

    /// Dispatches up to `limit` settlements whose next attempt is due at `due_ms`.
    fn deliver(&mut self, due_ms: u64, limit: usize) {
        let Some(config) = self.config.clone() else {
            return;
        };
        let Ok(mut queue) = self.queue.try_borrow_mut() else {
            return;
        };
        let now = now_ms();
        let mut left = limit;
        while left > 0 {
            let batch = queue.take_due(due_ms, left.min(MAX_SETTLE_BATCH));
            if batch.is_empty() {
                break;
            }
            left = left.saturating_sub(batch.len());
            let request = SettleBatchRequest {
                settlements: batch.iter().map(|e| e.request.clone()).collect(),
            };
            let body = match serde_json::to_vec(&request) {
                Ok(b) => b,
                Err(e) => {
                    log(
                        LogLevel::Error,
                        &format!("dropping unencodable settlements: {e}"),
                    );
                    continue;
                }
            };
            // One request id names the call: the settlement's, or the batch's size.
            let id = match batch.as_slice() {
                [only] => only.request.request_id.clone(),
                _ => format!("settle-batch-of-{}", batch.len()),
            };
            let callout = sidecar_callout(&config, SETTLE_BATCH_PATH, &id, body);
            match dispatch(&callout) {
                Ok(token) => queue.sent(token, batch),
                Err(e) => {
                    log(
                        LogLevel::Warn,
                        &format!("{id}: settle dispatch failed: {e}"),
                    );
                    for entry in batch {
                        queue.retry_later(entry, now);
                    }
                    break;
                }
            }
        }
    }
}

impl Context for PaywallRoot {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let status = callout_status();
        let Ok(mut queue) = self.queue.try_borrow_mut() else {
            return;
        };
        let now = now_ms();
        match SettleAnswer::of(status) {
            SettleAnswer::Acknowledged => {
                let body = callout_body(body_size);
                let results = match serde_json::from_slice::<SettleBatchResponse>(&body) {
                    Ok(answer) => answer.results,
                    Err(_) => {
                        // Not the sidecar's answer (a proxy in between?): none
                        // is done; it settles idempotently, so again is safe.
                        log(
                            LogLevel::Warn,
                            "settlement batch answered without results; will retry",
                        );
                        Vec::new()
                    }
                };
                for (req, fate, error) in queue.answered(token, &results, now) {
                    if fate == SettleAnswer::Acknowledged {
                        self.stream_metrics.delivered();
                        log(
                            LogLevel::Debug,
                            &format!("request_id={} settled hold={}", req.request_id, req.hold_id),
                        );
                    } else {
                        log(
                            LogLevel::Error,
                            &format!(
                                "request_id={} settlement of hold={} refused: {}",
                                req.request_id,
                                req.hold_id,
                                error.unwrap_or_default()
                            ),
                        );
                    }
                }
            }
            SettleAnswer::Refused => {
                let s = status.unwrap_or(0);
                let body = String::from_utf8_lossy(&callout_body(body_size)).into_owned();
                for req in queue.refused(token) {
                    log(
                        LogLevel::Error,
                        &format!(
                            "request_id={} settlement of hold={} refused ({s}): {body}",
                            req.request_id, req.hold_id
                        ),
                    );
                }
            }
            SettleAnswer::Retry => {
                log(
                    LogLevel::Warn,
                    &format!("settlement callout failed (status {status:?}); will retry"),
                );
                queue.failed(token, now);
            }
        }
        if queue.drained() {
            log(
                LogLevel::Info,
                "tollgate: every settlement delivered; VM done",
            );
            let _ = hostcalls::done();
        } else if queue.draining() {
            // Stopping: what must go again goes now, not at a tick.
            drop(queue);
            self.deliver(u64::MAX, usize::MAX);
        }
    }

    /// Envoy is about to stop the VM (configuration change, drain, shutdown).
    /// Settlements still queued would be lost with it, so they all go out now
    /// and the VM reports done only once the sidecar has acknowledged them.
    fn on_done(&mut self) -> bool {
        if let Ok(mut queue) = self.queue.try_borrow_mut() {
            queue.drain();
        }
        self.deliver(u64::MAX, usize::MAX);
        let backlog = self.queue.try_borrow().map_or(0, |q| q.backlog());
        if backlog == 0 {
            return true;
        }
        log(
            LogLevel::Info,
            &format!("tollgate: VM stopping; delivering {backlog} queued settlements first"),
        );
        false
    }
}

impl RootContext for PaywallRoot {
    fn on_configure(&mut self, size: usize) -> bool {
        let raw = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default();
        if is_attempt_config(&raw) {
            // No tokenizers, no queue: this role only rewrites provider tries.
            self.attempt_role = true;
            log(LogLevel::Info, "tollgate: provider-attempt role configured");
            return true;
        }
        let config = match FilterConfig::from_json(&raw) {
            Ok(c) => c,
            Err(e) => {
                log(
                    LogLevel::Error,
                    &format!("tollgate: rejecting plugin configuration: {e}"),
                );
                return false;
            }
        };
        // Tokenizers are built here, once per VM, never per request.
        let tokenizers = match Tokenizers::build(config.encodings.clone()) {
            Ok(t) => t,
            Err(e) => {
                log(
                    LogLevel::Error,
                    &format!("tollgate: cannot build tokenizers: {e}"),
                );
                return false;
            }
        };
        if let Ok(mut q) = self.queue.try_borrow_mut() {
            if q.backlog() == 0 {
                *q = SettlementQueue::for_config(&config);
            }
        }
        if let Err(e) = hostcalls::set_tick_period(config.tick) {
            log(
                LogLevel::Error,
                &format!("tollgate: cannot set tick period: {e:?}"),
            );
            return false;
        }
        self.tokenizers = Some(Rc::new(tokenizers));
        self.config = Some(Rc::new(config));
        self.metrics = Metrics::define();
        self.stream_metrics = Rc::new(StreamMetrics::define());
        log(LogLevel::Info, "tollgate: configured");
        true
    }

    fn on_tick(&mut self) {
        self.deliver_due();
        if let Ok(queue) = self.queue.try_borrow() {
            self.metrics.report(&queue);
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        if self.attempt_role {
            return Some(Box::new(AttemptHttp::default()));
        }
        match (&self.config, &self.tokenizers) {
            (Some(c), Some(t)) => Some(Box::new(PaywallHttp::new(
                c.clone(),
                t.clone(),
                self.queue.clone(),
                self.stream_metrics.clone(),
            ))),
            _ => Some(Box::new(UnconfiguredHttp)),
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
