//! Settlements waiting for delivery to the sidecar. Owned by the root context:
//! a callout made by a stream dies with the stream, so streams only enqueue
//! here and the root context delivers what is due in batches (one callout
//! carries many), retrying each settlement with exponential backoff.
//! The sidecar settles idempotently by hold id, so a retry after a lost
//! answer can never charge twice.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tollgate_protocol::backoff::{backoff_ms, jitter_seed, with_jitter};
use tollgate_protocol::{SettleBatchResult, SettleRequest};

use crate::config::{self, FilterConfig};
use crate::sidecar::SettleAnswer;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSettlement {
    pub request: SettleRequest,
    pub attempts: u32,
    next_attempt_ms: u64,
}

#[derive(Debug)]
pub struct SettlementQueue {
    waiting: VecDeque<PendingSettlement>,
    /// Batches sent, by callout token.
    in_flight: HashMap<u32, Vec<PendingSettlement>>,
    retry_initial: Duration,
    retry_max: Duration,
    capacity: usize,
    dropped: u64,
    retries: u64,
    /// Envoy is stopping the VM: everything goes out now, backoff or not.
    draining: bool,
}

/// Result of offering a settlement to the queue.
#[derive(Debug, PartialEq, Eq)]
pub enum Enqueued {
    Accepted,
    /// The backlog is full; the hold will be resolved by the sidecar's expiry policy.
    Rejected,
}

impl Default for SettlementQueue {
    /// The configuration's defaults (before a configuration is applied).
    fn default() -> Self {
        SettlementQueue::new(
            Duration::from_millis(config::DEFAULT_SETTLE_RETRY_INITIAL_MS),
            Duration::from_millis(config::DEFAULT_SETTLE_RETRY_MAX_MS),
            config::DEFAULT_SETTLE_BACKLOG_MAX,
        )
    }
}

impl SettlementQueue {
    pub fn for_config(c: &FilterConfig) -> Self {
        SettlementQueue::new(
            c.settle_retry_initial,
            c.settle_retry_max,
            c.settle_backlog_max,
        )
    }

    pub fn new(retry_initial: Duration, retry_max: Duration, capacity: usize) -> Self {
        SettlementQueue {
            waiting: VecDeque::new(),
            in_flight: HashMap::new(),
            retry_initial,
            retry_max,
            capacity,
            dropped: 0,
            retries: 0,
            draining: false,
        }
    }

    pub fn push(&mut self, request: SettleRequest, now_ms: u64) -> Enqueued {
        if self.backlog() >= self.capacity {
            self.dropped += 1;
            return Enqueued::Rejected;
        }
        self.waiting.push_back(PendingSettlement {
            request,
            attempts: 0,
            next_attempt_ms: now_ms,
        });
        Enqueued::Accepted
    }

    /// Envoy is about to stop the VM: settlements still queued would be lost
    /// with it, so every one is due now, and the VM may stop only once
    /// [`Self::drained`].
    pub fn drain(&mut self) {
        self.draining = true;
        for e in &mut self.waiting {
            e.next_attempt_ms = 0;
        }
    }

    pub fn draining(&self) -> bool {
        self.draining
    }

    /// Draining, and the sidecar acknowledged (or refused) everything.
    pub fn drained(&self) -> bool {
        self.draining && self.backlog() == 0
    }

    /// Everything not yet acknowledged by the sidecar.
    pub fn backlog(&self) -> usize {
        self.waiting.len() + self.in_flight.values().map(Vec::len).sum::<usize>()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn retries(&self) -> u64 {
        self.retries
    }

    /// Removes and returns up to `limit` entries whose next attempt is due.
    /// Each must come back through [`Self::sent`] or [`Self::retry_later`].
    pub fn take_due(&mut self, now_ms: u64, limit: usize) -> Vec<PendingSettlement> {
        let mut due = Vec::new();
        let mut keep = VecDeque::with_capacity(self.waiting.len());
        while let Some(e) = self.waiting.pop_front() {
            if due.len() < limit && e.next_attempt_ms <= now_ms {
                due.push(e);
            } else {
                keep.push_back(e);
            }
        }
        self.waiting = keep;
        due
    }

    /// The callout for this batch was dispatched under `token`.
    pub fn sent(&mut self, token: u32, batch: Vec<PendingSettlement>) {
        self.in_flight.insert(token, batch);
    }

    /// The sidecar answered the batch with one result per settlement: each is
    /// done (settled, or refused for good) or, like one it did not mention,
    /// tried again later. Returns the settlements that are done, with what
    /// became of them and the sidecar's error text.
    pub fn answered(
        &mut self,
        token: u32,
        results: &[SettleBatchResult],
        now_ms: u64,
    ) -> Vec<(SettleRequest, SettleAnswer, Option<String>)> {
        let mut done = Vec::new();
        for entry in self.in_flight.remove(&token).unwrap_or_default() {
            let result = results.iter().find(|r| r.hold_id == entry.request.hold_id);
            match result.map(|r| (SettleAnswer::of(Some(r.status)), r)) {
                Some((answer @ (SettleAnswer::Acknowledged | SettleAnswer::Refused), r)) => {
                    done.push((entry.request, answer, r.error.clone()))
                }
                _ => self.retry_later(entry, now_ms),
            }
        }
        done
    }

    /// The sidecar refused the whole batch for good (a 4xx such as a wrong
    /// secret): retrying would not change it. Returns the settlements dropped.
    pub fn refused(&mut self, token: u32) -> Vec<SettleRequest> {
        let batch = self.in_flight.remove(&token).unwrap_or_default();
        batch.into_iter().map(|e| e.request).collect()
    }

    /// The callout failed (no answer, 5xx, dispatch error): try again later.
    pub fn failed(&mut self, token: u32, now_ms: u64) {
        for e in self.in_flight.remove(&token).unwrap_or_default() {
            self.retry_later(e, now_ms);
        }
    }

    pub fn retry_later(&mut self, mut entry: PendingSettlement, now_ms: u64) {
        entry.attempts = entry.attempts.saturating_add(1);
        self.retries += 1;
        let wait = if self.draining {
            0
        } else {
            self.backoff_ms(&entry)
        };
        entry.next_attempt_ms = now_ms.saturating_add(wait);
        self.waiting.push_back(entry);
    }

    /// Exponential, with jitter by hold id (see `tollgate_protocol::backoff`).
    fn backoff_ms(&self, entry: &PendingSettlement) -> u64 {
        let initial = u64::try_from(self.retry_initial.as_millis()).unwrap_or(u64::MAX);
        let max = u64::try_from(self.retry_max.as_millis()).unwrap_or(u64::MAX);
        let ceiling = backoff_ms(initial, max, entry.attempts);
        with_jitter(ceiling, jitter_seed(&entry.request.hold_id), entry.attempts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_protocol::{SettleOutcome, Usage, UsageSource};

    fn req(hold: &str) -> SettleRequest {
        SettleRequest {
            hold_id: hold.into(),
            request_id: format!("r-{hold}"),
            usage: Usage::default(),
            usage_source: UsageSource::Provider,
            local_completion_tokens: None,
            outcome: SettleOutcome::Completed,
            upstream_status: 200,
            provider: None,
        }
    }

    fn ok(hold: &str) -> SettleBatchResult {
        SettleBatchResult {
            hold_id: hold.into(),
            status: 200,
            settled: None,
            error: None,
        }
    }

    fn acknowledge(q: &mut SettlementQueue, token: u32, holds: &[&str]) -> Vec<String> {
        let results: Vec<_> = holds.iter().map(|h| ok(h)).collect();
        q.answered(token, &results, 0)
            .into_iter()
            .map(|(r, _, _)| r.hold_id)
            .collect()
    }

    fn queue(cap: usize) -> SettlementQueue {
        SettlementQueue::new(Duration::from_millis(100), Duration::from_millis(1000), cap)
    }

    #[test]
    fn delivers_once_after_failures_with_backoff() {
        let mut q = queue(10);
        q.push(req("a"), 0);
        let due = q.take_due(0, 10);
        assert_eq!(due.len(), 1);
        q.sent(1, due);
        q.failed(1, 0); // attempt 1 failed → retry in 75..=100 ms
        assert!(q.take_due(74, 10).is_empty());
        let due = q.take_due(100, 10);
        q.sent(2, due);
        q.failed(2, 100); // attempt 2 failed → retry in 150..=200 ms
        assert!(q.take_due(249, 10).is_empty());
        let due = q.take_due(300, 10);
        assert_eq!(due[0].attempts, 2);
        q.sent(3, due);
        assert_eq!(acknowledge(&mut q, 3, &["a"]), ["a"]);
        assert_eq!(q.backlog(), 0);
        assert!(acknowledge(&mut q, 3, &["a"]).is_empty());
        assert_eq!(q.retries(), 2);
    }

    #[test]
    fn backoff_is_capped_and_jittered_by_hold() {
        let q = queue(1);
        let entry = |hold: &str, attempts| PendingSettlement {
            request: req(hold),
            attempts,
            next_attempt_ms: 0,
        };
        assert!((75..=100).contains(&q.backoff_ms(&entry("a", 1))));
        assert!((600..=800).contains(&q.backoff_ms(&entry("a", 4))));
        assert!((750..=1000).contains(&q.backoff_ms(&entry("a", 5))));
        assert!((750..=1000).contains(&q.backoff_ms(&entry("a", u32::MAX))));
        let spread: std::collections::BTreeSet<u64> = (0..50)
            .map(|i| q.backoff_ms(&entry(&format!("h{i}"), 5)))
            .collect();
        assert!(
            spread.len() > 10,
            "settlements that failed together retry apart"
        );
    }

    #[test]
    fn draining_sends_everything_now_and_ends_when_all_is_answered() {
        let mut q = queue(10);
        q.push(req("a"), 0);
        q.push(req("b"), 0);
        let due = q.take_due(0, 1);
        q.sent(1, due);
        q.failed(1, 0); // "a" waits its backoff
        assert!(!q.drained());
        q.drain();
        assert!(!q.drained());
        let due = q.take_due(0, usize::MAX);
        assert_eq!(due.len(), 2, "backoff no longer holds anything back");
        for (token, e) in (10..).zip(due) {
            q.sent(token, vec![e]);
        }
        q.failed(10, 0); // a failure while draining retries at once
        let again = q.take_due(0, usize::MAX);
        assert_eq!(again.len(), 1);
        q.sent(12, again);
        acknowledge(&mut q, 11, &["a", "b"]);
        assert!(!q.drained(), "one is still out");
        acknowledge(&mut q, 12, &["a", "b"]);
        assert!(q.drained());
    }

    #[test]
    fn backlog_is_bounded() {
        let mut q = queue(2);
        assert_eq!(q.push(req("a"), 0), Enqueued::Accepted);
        assert_eq!(q.push(req("b"), 0), Enqueued::Accepted);
        assert_eq!(q.push(req("c"), 0), Enqueued::Rejected);
        assert_eq!(q.dropped(), 1);
        // In-flight entries still count toward the bound.
        let due = q.take_due(0, 1);
        q.sent(7, due);
        assert_eq!(q.push(req("d"), 0), Enqueued::Rejected);
    }

    #[test]
    fn each_settlement_of_a_batch_gets_its_own_fate() {
        let mut q = queue(10);
        for hold in ["done", "unknown", "busy", "unmentioned"] {
            q.push(req(hold), 0);
        }
        let due = q.take_due(0, 10);
        q.sent(1, due);
        let results = [
            ok("done"),
            SettleBatchResult {
                status: 404,
                error: Some("no hold unknown".into()),
                ..ok("unknown")
            },
            SettleBatchResult {
                status: 503,
                ..ok("busy")
            },
        ];
        let done: Vec<_> = q
            .answered(1, &results, 0)
            .into_iter()
            .map(|(r, a, e)| (r.hold_id, a, e))
            .collect();
        assert_eq!(
            done,
            [
                ("done".to_string(), SettleAnswer::Acknowledged, None),
                (
                    "unknown".to_string(),
                    SettleAnswer::Refused,
                    Some("no hold unknown".to_string())
                ),
            ]
        );
        let retried: Vec<_> = q
            .take_due(u64::MAX, 10)
            .into_iter()
            .map(|e| e.request.hold_id)
            .collect();
        assert_eq!(retried, ["busy", "unmentioned"]);
        assert_eq!(q.retries(), 2);
    }

    #[test]
    fn a_batch_refused_whole_is_dropped() {
        let mut q = queue(10);
        q.push(req("a"), 0);
        q.push(req("b"), 0);
        let due = q.take_due(0, 10);
        q.sent(1, due);
        assert_eq!(q.refused(1).len(), 2);
        assert_eq!(q.backlog(), 0);
    }
}
