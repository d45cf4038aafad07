//! Fallback routes: one try of a request against one provider. The filter's
//! second role ("provider_attempt") runs as an Envoy *upstream* HTTP filter on
//! a fallback route's aggregate cluster, so it sees every try Envoy makes —
//! the first, and each retry on the next provider after a 429, a 5xx or a
//! failed connection — and rewrites that try for its provider: key header,
//! path, authority, model name. It also names the provider on the response.
//!
//! The listener's filter keeps the tries' instructions (which include keys)
//! in a registry inside the VM, keyed by the request id: no key travels in a
//! header. Envoy hands every try the same request headers, including what an
//! earlier try changed, so each try first removes every key header of the
//! route before setting its own (a provider never sees another's key).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use tollgate_protocol::{ApiError, ProviderRoute};

use crate::chat_request::set_model;
use crate::host::{Flow, LogLevel, StreamHost};
use crate::replies::LocalReply;

/// Response header naming the provider that answered.
pub const PROVIDER_HEADER: &str = "x-tollgate-provider";

/// The host of an upstream try: a stream, plus which provider cluster Envoy
/// picked for this try (from the endpoint's metadata).
pub trait AttemptHost: StreamHost {
    fn upstream_cluster(&self) -> Option<String>;
}

thread_local! {
    // One VM is single-threaded; the listener's and the upstream filter's
    // contexts of a request run in the same VM when they share its vm_id.
    static REGISTRY: RefCell<Registry> = RefCell::new(Registry::default());
}

#[derive(Default)]
struct Registry {
    routes: HashMap<String, Rc<Vec<ProviderRoute>>>,
}

/// Keeps a request's tries until [`forget`]. False when another request in
/// flight has the same id (a client may send its own): that request then
/// goes to its first provider only, so tries never mix between requests.
pub fn register(request_id: &str, attempts: Vec<ProviderRoute>) -> bool {
    REGISTRY.with(|r| {
        let mut r = r.borrow_mut();
        if r.routes.contains_key(request_id) {
            return false;
        }
        r.routes.insert(request_id.to_string(), Rc::new(attempts));
        true
    })
}

pub fn forget(request_id: &str) {
    REGISTRY.with(|r| {
        r.borrow_mut().routes.remove(request_id);
    });
}

fn lookup(request_id: &str) -> Option<Rc<Vec<ProviderRoute>>> {
    REGISTRY.with(|r| r.borrow().routes.get(request_id).cloned())
}

/// Whether a request's tries are registered (tests check none is left behind).
#[cfg(test)]
pub fn registered_for(request_id: &str) -> bool {
    REGISTRY.with(|r| r.borrow().routes.contains_key(request_id))
}

/// Whether a plugin configuration selects this role: `{"role": "provider_attempt"}`.
pub fn is_attempt_config(raw: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RoleOnly {
        role: String,
    }
    serde_json::from_slice::<RoleOnly>(raw).is_ok_and(|c| c.role == "provider_attempt")
}

/// Sends the request to one provider: its key header (the client's
/// `authorization` was removed by the listener's filter), path and authority.
pub fn point_at(host: &mut dyn StreamHost, route: &ProviderRoute) {
    if !route.auth_value.is_empty() {
        host.set_request_header(&route.auth_header, Some(&route.auth_value));
    }
    host.set_request_header(":path", Some(&route.path));
    if let Some(authority) = &route.host {
        host.set_request_header(":authority", Some(authority));
    }
}

/// One try, as the provider-attempt filter handles it.
#[derive(Debug, Default)]
pub struct ProviderAttemptStream {
    provider: Option<String>,
    /// The model name this try's provider knows, once the body has arrived.
    rename: Option<String>,
}

impl ProviderAttemptStream {
    pub fn on_request_headers(&mut self, host: &mut dyn AttemptHost, end_of_stream: bool) -> Flow {
        let request_id = host.request_header("x-request-id").unwrap_or_default();
        let Some(attempts) = lookup(&request_id) else {
            // Not a fallback request of this VM: nothing to rewrite, and no key
            // is added (the provider refuses it).
            host.log(
                LogLevel::Warn,
                &format!("provider attempt: request_id={request_id} has no registered tries"),
            );
            return Flow::Continue;
        };
        let cluster = host.upstream_cluster();
        // Whatever an earlier try set: no provider gets another one's key.
        for attempt in attempts.iter() {
            host.set_request_header(&attempt.auth_header, None);
        }
        let target = cluster
            .as_deref()
            .and_then(|cluster| attempts.iter().find(|a| a.cluster == cluster));
        let Some(target) = target else {
            host.log(
                LogLevel::Error,
                &format!(
                    "provider attempt: request_id={request_id}: no try for cluster {cluster:?} \
                     (endpoint metadata tollgate.cluster missing?)"
                ),
            );
            let error = ApiError::new(
                "server_error",
                "provider_unavailable",
                "The provider route is misconfigured.",
            );
            host.send_reply(&LocalReply::error(502, &error));
            return Flow::Pause;
        };
        point_at(host, target);
        self.provider = Some(target.provider.clone());
        host.log(
            LogLevel::Debug,
            &format!(
                "request_id={request_id} provider attempt: trying provider={}",
                target.provider
            ),
        );
        match &target.upstream_model {
            Some(model) if !end_of_stream => {
                self.rename = Some(model.clone());
                Flow::Pause
            }
            _ => Flow::Continue,
        }
    }

    pub fn on_request_body(
        &mut self,
        host: &mut dyn AttemptHost,
        body_size: usize,
        end_of_stream: bool,
    ) -> Flow {
        let Some(model) = &self.rename else {
            return Flow::Continue;
        };
        if !end_of_stream {
            return Flow::Pause;
        }
        let body = host.request_body(body_size).unwrap_or_default();
        if let Some(renamed) = set_model(&body, model) {
            host.rewrite_request_body(body_size, &renamed);
        }
        self.rename = None;
        Flow::Continue
    }

    pub fn on_response_headers(&mut self, host: &mut dyn AttemptHost) -> Flow {
        if let Some(provider) = &self.provider {
            host.set_response_header(PROVIDER_HEADER, Some(provider));
        }
        Flow::Continue
    }
}
