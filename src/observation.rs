//! What a stream did, for the filter's metrics: the decision on a request,
//! the sidecar call's latency, the tokens counted. The stream records them;
//! the glue drains them after each callback into proxy-wasm metrics, so the
//! logic stays host-agnostic and testable.

use tollgate_protocol::Action;

use crate::sidecar::SettleAnswer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Forwarded to a provider.
    Allowed,
    /// Answered with an assistant message: top up, authorize, spend cap.
    Denied(Action),
    /// Refused by the sidecar with an error (unknown key or model, limits).
    Rejected,
    /// Refused by the filter itself before asking (bad input).
    Invalid,
    /// The sidecar could not be asked or gave no usable answer: 503.
    FailedClosed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    Decision(Decision),
    /// The authorize callout: how long it took and whether it gave an answer.
    Callout {
        millis: u64,
        ok: bool,
    },
    /// The settlement a response's end waited for (`settle_before_release`):
    /// how long, and what the sidecar answered (`Retry`: queued).
    SettleAck {
        millis: u64,
        answer: SettleAnswer,
    },
    /// Tokens the filter counted itself for a forwarded request.
    Tokens {
        prompt: u64,
        completion: u64,
    },
}
