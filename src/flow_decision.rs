//! The paywall's side of the sidecar conversation: asking it about a request
//! (the authorize callout) and carrying out its decision: forward to the
//! provider under a hold, answer with the link of an action, or refuse.
//! A child of `flow`, sharing the stream's state.

use tollgate_protocol::{Action, ApiError, AuthorizeRequest, ProviderRoute, AUTHORIZE_PATH};

use super::{unavailable, Forwarded, PaywallStream, Pending, State};
use crate::chat_request::{apply, Changes};
use crate::host::{Flow, LogLevel, StreamHost};
use crate::observation::{Decision, Observation};
use crate::provider_attempt::{self, point_at};
use crate::replies::{action_reply, LocalReply};
use crate::request_identity::USER_HEADER;
use crate::response_reader::ResponseReader;
use crate::sidecar::sidecar_callout;

/// What an allowed request goes out with.
pub(super) struct Allowed {
    pub hold_id: String,
    pub route: ProviderRoute,
    /// The output limit the balance affords, when lower than asked.
    pub max_output_tokens: Option<u32>,
    pub fallback: Option<tollgate_protocol::FallbackRoute>,
}

impl PaywallStream {
    /// Sends the authorize callout and waits for its answer.
    pub(super) fn ask_sidecar(
        &mut self,
        host: &mut dyn StreamHost,
        ask: &AuthorizeRequest,
        pending: Pending,
    ) -> Flow {
        let Ok(body) = serde_json::to_vec(ask) else {
            let err = unavailable("could not encode the authorization request");
            return self.reply(host, LocalReply::error(500, &err));
        };
        let callout = sidecar_callout(&self.config, AUTHORIZE_PATH, &self.request_id, body);
        self.asked_at_ms = host.now_ms();
        match host.dispatch(&callout) {
            Ok(token) => {
                self.state = State::AwaitingDecision { token, pending };
                Flow::Pause
            }
            Err(e) => {
                let id = &self.request_id;
                let message = format!("request_id={id} authorize dispatch failed: {e}");
                host.log(LogLevel::Error, &message);
                self.observations.push(Observation::Callout {
                    millis: 0,
                    ok: false,
                });
                self.fail_closed(host)
            }
        }
    }

    /// No usable answer from the sidecar: never forward unauthorized.
    pub(super) fn fail_closed(&mut self, host: &mut dyn StreamHost) -> Flow {
        self.decide(Decision::FailedClosed);
        let err = unavailable("The paywall service is unavailable. Try again shortly.");
        self.reply(host, LocalReply::error(503, &err))
    }

    /// Allowed: swap the paywall key for the provider's route, rewrite the
    /// body where the decision asks, and let the request go.
    pub(super) fn forward(&mut self, host: &mut dyn StreamHost, pending: Pending, a: Allowed) {
        self.decide(Decision::Allowed);
        // On a fallback route each try renames the model for its provider
        // (the provider-attempt filter); the tries, with their keys, stay in
        // this VM.
        let fallback = a
            .fallback
            .filter(|f| provider_attempt::register(&self.request_id, f.attempts.clone()));
        let rename = a
            .route
            .upstream_model
            .as_deref()
            .filter(|m| *m != pending.model && fallback.is_none());
        let clamped_to = rewrite_for_provider(host, &pending, rename, a.max_output_tokens);
        host.set_request_header("authorization", None);
        host.set_request_header(USER_HEADER, None);
        let cluster = match &fallback {
            None => {
                point_at(host, &a.route);
                &a.route.cluster
            }
            Some(f) => &f.cluster,
        };
        host.set_request_header(&self.config.route_header, Some(cluster));
        host.clear_route_cache();
        let (id, hold, provider) = (&self.request_id, &a.hold_id, &a.route.provider);
        let message = format!("request_id={id} allowed hold={hold} provider={provider}");
        host.log(LogLevel::Debug, &message);
        self.state = State::Forwarded(Forwarded {
            hold_id: a.hold_id,
            model: pending.model,
            prompt_tokens: pending.prompt_tokens,
            status: None,
            hide_usage: pending.hide_usage,
            reader: ResponseReader::json(self.config.settle_before_release),
            clamped_to,
            provider: a.route.provider,
            fallback: fallback.is_some(),
            credentials_refused: false,
        });
        host.resume_request();
    }

    /// An action the user must take: an ordinary assistant reply with its link.
    pub(super) fn deny(
        &mut self,
        host: &mut dyn StreamHost,
        pending: &Pending,
        action: Action,
        message: &str,
        link: &str,
    ) {
        self.decide(Decision::Denied(action));
        let created = host.now_ms() / 1000;
        let reply = action_reply(
            action,
            message,
            link,
            &pending.model,
            &self.request_id,
            created,
            pending.stream,
        );
        let note = format!("request_id={} action={}", self.request_id, action.as_str());
        host.log(LogLevel::Debug, &note);
        self.reply(host, reply);
    }

    /// Refused (bad key, unknown model, limits): the sidecar's error as is.
    pub(super) fn refuse(
        &mut self,
        host: &mut dyn StreamHost,
        status: u16,
        error: &ApiError,
        retry_after_secs: Option<u32>,
    ) {
        self.decide(Decision::Rejected);
        let mut reply = LocalReply::error(u32::from(status), error);
        if let Some(secs) = retry_after_secs {
            reply = reply.with_header("retry-after", &secs.to_string());
        }
        self.reply(host, reply);
    }
}

/// The body as the provider gets it, changed on its bytes in one pass: its
/// name for the model, the output limit lowered when the balance covers
/// less, `include_usage` for a stream. A request that needs none of these is
/// not copied out. Returns the limit applied, if any.
fn rewrite_for_provider(
    host: &mut dyn StreamHost,
    pending: &Pending,
    rename: Option<&str>,
    max_output_tokens: Option<u32>,
) -> Option<u32> {
    let changes = Changes {
        model: rename,
        max_output: max_output_tokens,
        include_usage: pending.hide_usage,
    };
    if changes == Changes::default() {
        return None;
    }
    let original = host.request_body(pending.body_size).unwrap_or_default();
    let rewritten = apply(&original, &changes)?;
    host.rewrite_request_body(pending.body_size, &rewritten);
    max_output_tokens
}
