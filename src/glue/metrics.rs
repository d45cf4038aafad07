//! Filter metrics through proxy-wasm (Envoy shows them in `/stats` as
//! `wasmcustom.<name>`). Each worker VM adds its own deltas, so a gauge is the
//! sum over VMs and a counter their total.

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

use crate::settlement_queue::SettlementQueue;

#[derive(Debug, Default)]
pub struct Metrics {
    backlog: Option<u32>,
    retries: Option<u32>,
    dropped: Option<u32>,
    delivered: Option<u32>,
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
            delivered: define(MetricType::Counter, "tollgate_settlements_delivered"),
            ..Default::default()
        }
    }

    pub fn delivered(&self) {
        add(self.delivered, 1);
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
