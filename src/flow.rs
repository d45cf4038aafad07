//! The per-request paywall state machine. Every callback either lets the
//! stream continue, pauses it and later resumes it, or answers with a local
//! reply; when a forwarded request ends (normally or not) exactly one
//! settlement is produced for the root context to deliver.

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use tollgate_protocol::{
    ApiError, AuthorizeRequest, AuthorizeResponse, SettleOutcome, SettleRequest, Usage, UsageSource,
};

use crate::chat_request::ChatRequest;
use crate::config::FilterConfig;
use crate::host::{Flow, LogLevel, StreamHost};
use crate::observation::{Decision, Observation};
use crate::provider_attempt::{self, PROVIDER_HEADER};
use crate::replies::LocalReply;
use crate::request_identity::{
    bearer_key, classify_path, resolve_user, PathKind, UserIdError, USER_HEADER,
};
use decision::Allowed;

#[path = "flow_decision.rs"]
mod decision;

#[path = "flow_ack.rs"]
mod ack;
use crate::response_reader::ResponseReader;
use crate::tokens::Tokenizers;

/// What the request headers told us, kept until the body arrives.
#[derive(Debug, Clone)]
struct Caller {
    paywall_key: String,
    path_user: Option<String>,
    header_user: Option<String>,
}

/// A request the sidecar is being asked about.
#[derive(Debug, Clone)]
struct Pending {
    model: String,
    prompt_tokens: u32,
    stream: bool,
    /// The client did not ask for `include_usage`: the filter adds it to the
    /// request and cuts the usage chunk out of the response.
    hide_usage: bool,
    /// Size of the buffered request body, for rewriting it on the decision.
    body_size: usize,
}

/// A request forwarded to a provider under a hold.
#[derive(Debug)]
struct Forwarded {
    hold_id: String,
    model: String,
    prompt_tokens: u32,
    status: Option<u16>,
    hide_usage: bool,
    reader: ResponseReader,
    /// The output limit the sidecar lowered the request to, if it did.
    clamped_to: Option<u32>,
    /// The provider the request went to; on a fallback route, the one the
    /// provider-attempt filter reports as having answered.
    provider: String,
    /// A fallback route's tries are registered under the request id
    /// (forgotten at the end).
    fallback: bool,
    /// The provider refused the key it was given: the client gets a 502 of
    /// ours instead of the provider's answer.
    credentials_refused: bool,
}

#[derive(Debug)]
enum State {
    /// Not a metered request (or not yet seen).
    PassThrough,
    AwaitingBody(Caller),
    AwaitingDecision {
        token: u32,
        pending: Pending,
    },
    /// The filter answered itself; nothing was forwarded.
    Replied,
    Forwarded(Forwarded),
    /// The response is at its end, held back until the sidecar acknowledges
    /// its settlement (see `flow_ack.rs`).
    AwaitingAck {
        token: u32,
        settlement: SettleRequest,
        sent_at_ms: u64,
    },
    /// The settlement has been handed over.
    Done,
}

pub struct PaywallStream {
    config: Rc<FilterConfig>,
    tokenizers: Rc<Tokenizers>,
    state: State,
    request_id: String,
    settlement: Option<SettleRequest>,
    /// For the metrics, drained by the glue after each callback.
    observations: Vec<Observation>,
    /// A decision was observed (so a later reply is not counted again).
    decided: bool,
    /// Host time the authorize callout was dispatched at.
    asked_at_ms: u64,
}

/// A request id for requests that arrive without one: host time plus a
/// per-VM sequence, unique within the VM.
fn fallback_request_id(now_ms: u64) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("tollgate-{now_ms}-{n}")
}

fn unavailable(message: &str) -> ApiError {
    ApiError::new("server_error", "paywall_unavailable", message)
}

impl PaywallStream {
    pub fn new(config: Rc<FilterConfig>, tokenizers: Rc<Tokenizers>) -> Self {
        PaywallStream {
            config,
            tokenizers,
            state: State::PassThrough,
            request_id: String::new(),
            settlement: None,
            observations: Vec::new(),
            decided: false,
            asked_at_ms: 0,
        }
    }

    /// A settlement produced by the last callback, for the root context's queue.
    pub fn take_settlement(&mut self) -> Option<SettleRequest> {
        self.settlement.take()
    }

    /// What the last callbacks did, for the metrics.
    pub fn take_observations(&mut self) -> Vec<Observation> {
        std::mem::take(&mut self.observations)
    }

    fn decide(&mut self, decision: Decision) {
        if !self.decided {
            self.decided = true;
            self.observations.push(Observation::Decision(decision));
        }
    }

    pub fn on_request_headers(&mut self, host: &mut dyn StreamHost, end_of_stream: bool) -> Flow {
        // Only this filter may choose a provider route: drop whatever a client sent.
        host.set_request_header(&self.config.route_header, None);
        self.request_id = match host.request_header("x-request-id") {
            Some(id) if !id.is_empty() => id,
            // Envoy generates one unless told not to; every hold and charge needs one.
            _ => {
                let id = fallback_request_id(host.now_ms());
                host.set_request_header("x-request-id", Some(&id));
                id
            }
        };

        let path = host.request_header(":path").unwrap_or_default();
        let path_user = match classify_path(&path) {
            PathKind::Other => return Flow::Continue,
            PathKind::Chat => None,
            PathKind::ChatForUser(u) => Some(u),
        };
        let method = host.request_header(":method").unwrap_or_default();
        if method != "POST" {
            let err = ApiError::invalid_request(
                "method_not_allowed",
                format!("{method} is not allowed on this endpoint; use POST."),
            );
            return self.reply(
                host,
                LocalReply::error(405, &err).with_header("allow", "POST"),
            );
        }
        let paywall_key = match bearer_key(host.request_header("authorization").as_deref()) {
            Ok(k) => k,
            Err(e) => return self.reply(host, LocalReply::error(401, &e)),
        };
        let header_user = host.request_header(USER_HEADER);
        // Conflicts visible without the body are reported now.
        if let Err(e @ UserIdError::Conflicting { .. }) =
            resolve_user(path_user.as_deref(), header_user.as_deref(), None)
        {
            return self.reply(host, LocalReply::error(400, &e.into()));
        }
        let declared_len = host
            .request_header("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared_len.is_some_and(|n| n > self.config.max_body_bytes as u64) {
            return self.too_large(host);
        }
        if end_of_stream {
            let err = ApiError::invalid_request(
                "missing_body",
                "The request has no body; send a chat completion request as JSON.",
            );
            return self.reply(host, LocalReply::error(400, &err));
        }
        self.state = State::AwaitingBody(Caller {
            paywall_key,
            path_user,
            header_user,
        });
        Flow::Pause
    }

    pub fn on_request_body(
        &mut self,
        host: &mut dyn StreamHost,
        body_size: usize,
        end_of_stream: bool,
    ) -> Flow {
        let State::AwaitingBody(caller) = &self.state else {
            return Flow::Continue;
        };
        if body_size > self.config.max_body_bytes {
            return self.too_large(host);
        }
        if !end_of_stream {
            return Flow::Pause;
        }
        let caller = caller.clone();
        let body = host.request_body(body_size).unwrap_or_default();
        let chat = match ChatRequest::parse(&body) {
            Ok(c) => c,
            Err(e) => return self.reply(host, LocalReply::error(400, &e)),
        };
        // A stream is only billed right if the provider reports usage: ask for
        // it (when the request goes), and hide it again from a client that did not.
        let hide_usage = chat.stream && !chat.include_usage;
        let user = match resolve_user(
            caller.path_user.as_deref(),
            caller.header_user.as_deref(),
            chat.user.as_deref(),
        ) {
            Ok(u) => u,
            Err(e) => return self.reply(host, LocalReply::error(400, &e.into())),
        };
        let prompt_tokens = u32::try_from(self.tokenizers.count_prompt(&chat)).unwrap_or(u32::MAX);
        let ask = AuthorizeRequest {
            request_id: self.request_id.clone(),
            paywall_key: caller.paywall_key,
            user,
            model: chat.model.clone(),
            prompt_tokens,
            max_output_tokens: chat.max_output_tokens,
            choices: chat.n,
            stream: chat.stream,
        };
        let pending = Pending {
            model: chat.model,
            prompt_tokens,
            stream: chat.stream,
            hide_usage,
            body_size,
        };
        self.ask_sidecar(host, &ask, pending)
    }

    /// The sidecar answered (or the callout failed: `status` None).
    pub fn on_callout_response(
        &mut self,
        host: &mut dyn StreamHost,
        token: u32,
        status: Option<u16>,
        body: &[u8],
    ) {
        let pending = match &self.state {
            State::AwaitingDecision { token: t, pending } if *t == token => pending.clone(),
            State::AwaitingAck { token: t, .. } if *t == token => {
                return self.on_ack(host, status, body);
            }
            _ => return,
        };
        let decision = match status {
            Some(200) => serde_json::from_slice::<AuthorizeResponse>(body).ok(),
            _ => None,
        };
        self.observations.push(Observation::Callout {
            millis: host.now_ms().saturating_sub(self.asked_at_ms),
            ok: decision.is_some(),
        });
        let Some(decision) = decision else {
            let id = &self.request_id;
            host.log(
                LogLevel::Warn,
                &format!("request_id={id} paywall sidecar gave no usable answer (status {status:?}); failing closed"),
            );
            self.fail_closed(host);
            return;
        };
        match decision {
            AuthorizeResponse::Allow {
                hold_id,
                route,
                max_output_tokens,
                fallback,
                ..
            } => {
                let allowed = Allowed {
                    hold_id,
                    route,
                    max_output_tokens,
                    fallback,
                };
                self.forward(host, pending, allowed);
            }
            AuthorizeResponse::Action {
                action,
                message,
                link,
            } => self.deny(host, &pending, action, &message, &link),
            AuthorizeResponse::Reject {
                status,
                error,
                retry_after_secs,
            } => self.refuse(host, status, &error, retry_after_secs),
        }
    }

    pub fn on_response_headers(&mut self, host: &mut dyn StreamHost, end_of_stream: bool) -> Flow {
        if !self.request_id.is_empty() {
            host.set_response_header("x-request-id", Some(&self.request_id));
        }
        if let State::Forwarded(f) = &mut self.state {
            if let Some(max) = f.clamped_to {
                host.set_response_header("x-tollgate-max-tokens", Some(&max.to_string()));
            }
            if f.fallback {
                if let Some(answered) = host.response_header(PROVIDER_HEADER) {
                    f.provider = answered;
                }
            } else {
                host.set_response_header(PROVIDER_HEADER, Some(&f.provider));
            }
            f.status = host.response_header(":status").and_then(|s| s.parse().ok());
            if matches!(f.status, Some(401 | 403)) {
                // The operator's or the paywall owner's key is wrong, not the
                // app's: a 401 would blame the app's key, and the provider's
                // body may quote part of the key. The hold is voided.
                host.log(
                    LogLevel::Warn,
                    &format!(
                        "request_id={} provider={} refused its credentials (status {:?})",
                        self.request_id, f.provider, f.status
                    ),
                );
                host.set_response_header(":status", Some("502"));
                host.set_response_header("content-type", Some("application/json"));
                host.set_response_header("content-length", None);
                f.credentials_refused = true;
            }
            let event_stream = host
                .response_header("content-type")
                .is_some_and(|ct| ct.starts_with("text/event-stream"));
            if event_stream {
                f.reader = ResponseReader::sse(f.hide_usage, self.config.settle_before_release);
            }
            if end_of_stream {
                self.finish(SettleOutcome::Completed);
                return self.settle_before_release(host);
            }
        }
        Flow::Continue
    }

    pub fn on_response_body(
        &mut self,
        host: &mut dyn StreamHost,
        body_size: usize,
        end_of_stream: bool,
    ) -> Flow {
        if let State::Forwarded(f) = &mut self.state {
            if f.credentials_refused {
                let ours = if end_of_stream {
                    provider_refused_credentials().to_body().into_bytes()
                } else {
                    Vec::new()
                };
                host.replace_response_body(body_size, &ours);
                if end_of_stream {
                    self.finish(SettleOutcome::Completed);
                    return self.settle_before_release(host);
                }
                return Flow::Continue;
            }
            let chunk = if body_size > 0 {
                host.response_body(body_size).unwrap_or_default()
            } else {
                Vec::new()
            };
            let counter = self.tokenizers.counter(&f.model);
            if let Some(replacement) = f.reader.feed(&chunk, end_of_stream, counter) {
                host.replace_response_body(body_size, &replacement);
            }
            if end_of_stream {
                self.finish(SettleOutcome::Completed);
                return self.settle_before_release(host);
            }
        }
        Flow::Continue
    }

    /// The stream is over (Envoy's `on_log`): a forwarded request that did not
    /// complete is settled now, with what it used so far. Envoy's code details
    /// say who ended it: the provider's side (an upstream reset) or the client.
    pub fn on_stream_done(&mut self, host: &mut dyn StreamHost) {
        // Gone while its end waited for the sidecar: the settlement is queued
        // (the sidecar takes it once, however many times it arrives).
        if let Some((settlement, _)) = self.stop_awaiting_ack() {
            self.settlement = Some(settlement);
            return;
        }
        if matches!(self.state, State::Forwarded(_)) {
            let upstream_ended = host
                .response_code_details()
                .is_some_and(|d| d.starts_with("upstream_"));
            self.finish(if upstream_ended {
                SettleOutcome::ProviderCut
            } else {
                SettleOutcome::ClientAborted
            });
        }
    }

    /// `ended`: how the stream ended as the host saw it — `Completed` when the
    /// response reached its end, else who cut it. What the response carried
    /// (an error status, an error event, no finish) refines it.
    fn finish(&mut self, ended: SettleOutcome) {
        let State::Forwarded(f) = std::mem::replace(&mut self.state, State::Done) else {
            return;
        };
        if f.fallback {
            provider_attempt::forget(&self.request_id);
        }
        let status = f.status.unwrap_or(0);
        let provider_ok = (200..300).contains(&status);
        let reading = f.reader.reading(self.tokenizers.counter(&f.model));
        let local_completion = reading.local_completion_tokens;
        self.observations.push(Observation::Tokens {
            prompt: u64::from(f.prompt_tokens),
            completion: u64::from(local_completion),
        });
        let outcome = match ended {
            // An error status: the provider produced nothing (the hold is voided).
            _ if status != 0 && !provider_ok => SettleOutcome::ProviderError,
            // Ended without any status at all: nothing to bill either.
            SettleOutcome::Completed if !provider_ok => SettleOutcome::ProviderError,
            _ if reading.error.is_some() => SettleOutcome::ProviderError,
            SettleOutcome::Completed if !reading.ended_properly => SettleOutcome::ProviderCut,
            // A client that left before any provider answer: the provider may
            // still have run the prompt, so the prompt estimate is charged.
            o => o,
        };
        let voided = outcome == SettleOutcome::ProviderError && !provider_ok;
        let (usage, usage_source) = match reading.provider_usage {
            Some(u) if provider_ok => (u, UsageSource::Provider),
            _ if voided => (Usage::default(), UsageSource::Local),
            _ => (
                Usage {
                    prompt_tokens: f.prompt_tokens,
                    completion_tokens: local_completion,
                    cached_prompt_tokens: 0,
                },
                UsageSource::Local,
            ),
        };
        self.settlement = Some(SettleRequest {
            hold_id: f.hold_id,
            request_id: self.request_id.clone(),
            usage,
            usage_source,
            local_completion_tokens: Some(local_completion),
            outcome,
            upstream_status: status,
            provider: f.fallback.then_some(f.provider),
        });
    }

    fn too_large(&mut self, host: &mut dyn StreamHost) -> Flow {
        let err = ApiError::invalid_request(
            "request_too_large",
            format!(
                "The request body exceeds the limit of {} bytes.",
                self.config.max_body_bytes
            ),
        );
        self.reply(host, LocalReply::error(413, &err))
    }

    fn reply(&mut self, host: &mut dyn StreamHost, reply: LocalReply) -> Flow {
        let mut reply = reply;
        if !self.request_id.is_empty() {
            reply = reply.with_header("x-request-id", &self.request_id);
        }
        // A reply before any decision is the filter's own: bad input (4xx)
        // or its own failure (5xx).
        self.decide(if reply.status >= 500 {
            Decision::FailedClosed
        } else {
            Decision::Invalid
        });
        if reply.status >= 400 {
            host.log(
                LogLevel::Debug,
                &format!(
                    "request_id={} rejected status={}",
                    self.request_id, reply.status
                ),
            );
        }
        host.send_reply(&reply);
        self.state = State::Replied;
        Flow::Pause
    }
}

/// What a client gets when the provider refused the key Tollgate sent.
fn provider_refused_credentials() -> ApiError {
    ApiError::new(
        "server_error",
        "provider_auth_failed",
        "The model provider refused the credentials configured for it (this is not about your API key).",
    )
}

#[cfg(test)]
#[path = "flow_tests.rs"]
mod tests;
