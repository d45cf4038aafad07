//! Filter metrics through proxy-wasm (Envoy shows them in `/stats` as
//! `wasmcustom.<name>`). Each worker VM adds its own deltas, so a gauge is the
//! sum over VMs and a counter their total.

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

use tollgate_protocol::Action;

use crate::observation::{Decision, Observation};
use crate::settlement_queue::SettlementQueue;
use crate::sidecar::SettleAnswer;

#[derive(Debug, Default)]
pub struct Metrics {
    backlog: Option<u32>,
    retries: Option<u32>,
    dropped: Option<u32>,
    /// What this VM reported last, so the next report adds only the change.
    last_backlog: i64,
    last_retries: u64,
    last_dropped: u64,
}

fn define(kind: MetricType, name: &str) -> Option<u32> {
    hostcalls::define_metric(kind, name).ok()
}

fn add(id: Option<u32>, delta: i64) {
    if let (Some(id), true) = (id, delta != 0) {
        let _ = hostcalls::increment_metric(id, delta);
    }
}

impl Metrics {
    pub fn define() -> Self {
        Metrics {
            backlog: define(MetricType::Gauge, "tollgate_settlement_backlog"),
            retries: define(MetricType::Counter, "tollgate_settlement_retries"),
            dropped: define(MetricType::Counter, "tollgate_settlement_dropped"),
            ..Default::default()
        }
    }

    /// Reports the queue's state (called every tick).
    pub fn report(&mut self, queue: &SettlementQueue) {
        let backlog = i64::try_from(queue.backlog()).unwrap_or(i64::MAX);
        add(self.backlog, backlog - self.last_backlog);
        self.last_backlog = backlog;
        let retries = queue.retries();
        add(
            self.retries,
            i64::try_from(retries - self.last_retries).unwrap_or(0),
        );
        self.last_retries = retries;
        let dropped = queue.dropped();
        add(
            self.dropped,
            i64::try_from(dropped - self.last_dropped).unwrap_or(0),
        );
        self.last_dropped = dropped;
    }
}

/// Per-request metrics (one set per VM, shared by its HTTP contexts):
/// decisions, denials by action, tokens counted, the sidecar call.
#[derive(Debug, Default)]
pub struct StreamMetrics {
    allowed: Option<u32>,
    denied_topup: Option<u32>,
    denied_authorize: Option<u32>,
    denied_spend_cap: Option<u32>,
    rejected: Option<u32>,
    invalid: Option<u32>,
    failed_closed: Option<u32>,
    prompt_tokens: Option<u32>,
    completion_tokens: Option<u32>,
    callout_failures: Option<u32>,
    callout_latency_ms: Option<u32>,
    ack_latency_ms: Option<u32>,
    ack_missed: Option<u32>,
    /// Settlements the sidecar acknowledged, at the end of a response or
    /// from the root context's queue.
    delivered: Option<u32>,
}

impl StreamMetrics {
    pub fn define() -> Self {
        let counter = |name| define(MetricType::Counter, name);
        StreamMetrics {
            allowed: counter("tollgate_requests_allowed"),
            denied_topup: counter("tollgate_requests_denied_topup"),
            denied_authorize: counter("tollgate_requests_denied_authorize"),
            denied_spend_cap: counter("tollgate_requests_denied_spend_cap"),
            rejected: counter("tollgate_requests_rejected"),
            invalid: counter("tollgate_requests_invalid"),
            failed_closed: counter("tollgate_requests_failed_closed"),
            prompt_tokens: counter("tollgate_tokens_prompt"),
            completion_tokens: counter("tollgate_tokens_completion"),
            callout_failures: counter("tollgate_callout_failures"),
            callout_latency_ms: define(MetricType::Histogram, "tollgate_callout_latency_ms"),
            ack_latency_ms: define(MetricType::Histogram, "tollgate_settle_ack_latency_ms"),
            ack_missed: counter("tollgate_settle_ack_missed"),
            delivered: counter("tollgate_settlements_delivered"),
        }
    }

    pub fn delivered(&self) {
        add(self.delivered, 1);
    }

    pub fn record(&self, observation: Observation) {
        match observation {
            Observation::Decision(d) => add(
                match d {
                    Decision::Allowed => self.allowed,
                    Decision::Denied(Action::Topup) => self.denied_topup,
                    Decision::Denied(Action::Authorize) => self.denied_authorize,
                    Decision::Denied(Action::SpendCap) => self.denied_spend_cap,
                    Decision::Rejected => self.rejected,
                    Decision::Invalid => self.invalid,
                    Decision::FailedClosed => self.failed_closed,
                },
                1,
            ),
            Observation::Callout { millis, ok } => {
                if !ok {
                    add(self.callout_failures, 1);
                }
                if let Some(id) = self.callout_latency_ms {
                    let _ = hostcalls::record_metric(id, millis);
                }
            }
            Observation::SettleAck { millis, answer } => {
                match answer {
                    SettleAnswer::Acknowledged => self.delivered(),
                    SettleAnswer::Retry => add(self.ack_missed, 1),
                    SettleAnswer::Refused => {}
                }
                if let Some(id) = self.ack_latency_ms {
                    let _ = hostcalls::record_metric(id, millis);
                }
            }
            Observation::Tokens { prompt, completion } => {
                add(
                    self.prompt_tokens,
                    i64::try_from(prompt).unwrap_or(i64::MAX),
                );
                add(
                    self.completion_tokens,
                    i64::try_from(completion).unwrap_or(i64::MAX),
                );
            }
        }
    }
}
