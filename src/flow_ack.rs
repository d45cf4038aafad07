//! Acknowledged settlement (`settle_before_release`): when a forwarded
//! response reaches its end, its settlement goes to the sidecar at once and
//! the end of the response (held back by the reader) waits for the answer.
//! So a completion that reached the client is already charged: the app reads
//! its new balance right after, and a crash of Envoy can lose only the charges
//! of responses whose end never reached the client. If the sidecar does not
//! answer within `settle_ack_timeout_ms` the end goes anyway and the
//! settlement joins the root context's queue, as without the option.
//! A child of `flow`, sharing the stream's state.

use tollgate_protocol::{SettleRequest, SETTLE_PATH};

use super::{PaywallStream, State};
use crate::host::{Flow, LogLevel, StreamHost};
use crate::observation::Observation;
use crate::sidecar::{sidecar_callout, SettleAnswer};

impl PaywallStream {
    /// The response is at its end and its settlement was just made: send it
    /// and pause the end until the sidecar answers.
    pub(super) fn settle_before_release(&mut self, host: &mut dyn StreamHost) -> Flow {
        if !self.config.settle_before_release {
            return Flow::Continue;
        }
        let Some(settlement) = self.settlement.take() else {
            return Flow::Continue;
        };
        let Ok(body) = serde_json::to_vec(&settlement) else {
            self.settlement = Some(settlement);
            return Flow::Continue;
        };
        let mut callout = sidecar_callout(&self.config, SETTLE_PATH, &self.request_id, body);
        callout.timeout = self.config.settle_ack_timeout;
        match host.dispatch(&callout) {
            Ok(token) => {
                self.state = State::AwaitingAck {
                    token,
                    settlement,
                    sent_at_ms: host.now_ms(),
                };
                Flow::Pause
            }
            Err(e) => {
                let id = &self.request_id;
                host.log(
                    LogLevel::Warn,
                    &format!("request_id={id} settle dispatch failed: {e}; queued"),
                );
                self.settlement = Some(settlement);
                Flow::Continue
            }
        }
    }

    /// The sidecar answered the settlement (or the callout failed or timed
    /// out: `status` None). The end of the response goes either way.
    pub(super) fn on_ack(&mut self, host: &mut dyn StreamHost, status: Option<u16>, body: &[u8]) {
        let Some((settlement, sent_at_ms)) = self.stop_awaiting_ack() else {
            return;
        };
        let answer = SettleAnswer::of(status);
        self.observations.push(Observation::SettleAck {
            millis: host.now_ms().saturating_sub(sent_at_ms),
            answer,
        });
        let id = &self.request_id;
        let hold = &settlement.hold_id;
        match answer {
            SettleAnswer::Acknowledged => host.log(
                LogLevel::Debug,
                &format!("request_id={id} hold={hold} settled before release"),
            ),
            SettleAnswer::Refused => host.log(
                LogLevel::Error,
                &format!(
                    "request_id={id} settlement of hold={hold} refused ({status:?}): {}",
                    String::from_utf8_lossy(body)
                ),
            ),
            SettleAnswer::Retry => {
                host.log(
                    LogLevel::Warn,
                    &format!(
                        "request_id={id} hold={hold} not acknowledged in time ({status:?}); queued"
                    ),
                );
                self.settlement = Some(settlement);
            }
        }
        host.resume_response();
    }

    /// The settlement awaiting its answer and when it was sent, if any; the
    /// stream is then done.
    pub(super) fn stop_awaiting_ack(&mut self) -> Option<(SettleRequest, u64)> {
        if !matches!(self.state, State::AwaitingAck { .. }) {
            return None;
        }
        match std::mem::replace(&mut self.state, State::Done) {
            State::AwaitingAck {
                settlement,
                sent_at_ms,
                ..
            } => Some((settlement, sent_at_ms)),
            _ => None,
        }
    }
}
