//! Per-request HTTP context: forwards callbacks to [`PaywallStream`] and hands
//! its settlement to the root context's queue.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use tollgate_protocol::ApiError;

use super::envoy_host::{callout_body, callout_status, log, now_ms, EnvoyHost};
use super::metrics::StreamMetrics;
use crate::config::FilterConfig;
use crate::flow::PaywallStream;
use crate::host::{Flow, LogLevel, StreamHost};
use crate::replies::LocalReply;
use crate::settlement_queue::{Enqueued, SettlementQueue};
use crate::tokens::Tokenizers;

pub struct PaywallHttp {
    flow: PaywallStream,
    host: EnvoyHost,
    queue: Rc<RefCell<SettlementQueue>>,
    metrics: Rc<StreamMetrics>,
}

impl PaywallHttp {
    pub fn new(
        config: Rc<FilterConfig>,
        tokenizers: Rc<Tokenizers>,
        queue: Rc<RefCell<SettlementQueue>>,
        metrics: Rc<StreamMetrics>,
    ) -> Self {
        PaywallHttp {
            flow: PaywallStream::new(config, tokenizers),
            host: EnvoyHost,
            queue,
            metrics,
        }
    }

    fn record_observations(&mut self) {
        for observation in self.flow.take_observations() {
            self.metrics.record(observation);
        }
    }

    fn hand_over_settlement(&mut self) {
        self.record_observations();
        let Some(settlement) = self.flow.take_settlement() else {
            return;
        };
        let id = settlement.request_id.clone();
        let hold = settlement.hold_id.clone();
        let accepted = match self.queue.try_borrow_mut() {
            Ok(mut q) => q.push(settlement, now_ms()),
            Err(_) => Enqueued::Rejected,
        };
        if accepted == Enqueued::Rejected {
            log(
                LogLevel::Error,
                &format!("request_id={id} settlement backlog full; hold={hold} left to the sidecar's expiry policy"),
            );
        }
    }
}

pub fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    }
}

impl Context for PaywallHttp {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let status = callout_status();
        let body = callout_body(body_size);
        self.flow
            .on_callout_response(&mut self.host, token, status, &body);
        // An unacknowledged settlement joins the queue.
        self.hand_over_settlement();
    }
}

impl HttpContext for PaywallHttp {
    fn on_http_request_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        let a = action(self.flow.on_request_headers(&mut self.host, end_of_stream));
        self.record_observations();
        a
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let a = action(
            self.flow
                .on_request_body(&mut self.host, body_size, end_of_stream),
        );
        self.record_observations();
        a
    }

    fn on_http_response_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        let a = action(self.flow.on_response_headers(&mut self.host, end_of_stream));
        self.hand_over_settlement();
        a
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let a = action(
            self.flow
                .on_response_body(&mut self.host, body_size, end_of_stream),
        );
        self.hand_over_settlement();
        a
    }

    fn on_log(&mut self) {
        self.flow.on_stream_done(&mut self.host);
        self.hand_over_settlement();
    }
}

/// Used only if a request arrives before a successful configure: fail closed.
pub struct UnconfiguredHttp;

impl Context for UnconfiguredHttp {}

impl HttpContext for UnconfiguredHttp {
    fn on_http_request_headers(&mut self, _n: usize, _end_of_stream: bool) -> Action {
        let err = ApiError::new(
            "server_error",
            "paywall_unavailable",
            "The paywall is not configured.",
        );
        EnvoyHost.send_reply(&LocalReply::error(503, &err));
        Action::Pause
    }
}
