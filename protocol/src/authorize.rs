//! The authorize call: may this user spend on this request, and where does it go?

use serde::{Deserialize, Serialize};

use crate::ApiError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuthorizeRequest {
    /// Envoy's `x-request-id`; correlates the hold, the charge and the ledger entries.
    pub request_id: String,
    /// The app's paywall key as presented by the client (the sidecar hashes it).
    pub paywall_key: String,
    pub user: String,
    pub model: String,
    /// The filter's estimate of prompt tokens (tiktoken).
    pub prompt_tokens: u32,
    /// `max_completion_tokens` / `max_tokens` from the request, if the client set one
    /// (per choice).
    pub max_output_tokens: Option<u32>,
    /// Number of choices asked for (`n`); the most output is `n` × the per-choice maximum.
    #[serde(default = "one")]
    pub choices: u32,
    pub stream: bool,
}

fn one() -> u32 {
    1
}

/// What the user has to do before the request can go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Topup,
    Authorize,
    SpendCap,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Topup => "topup",
            Action::Authorize => "authorize",
            Action::SpendCap => "spend_cap",
        }
    }
}

/// Where an allowed request goes and how the filter authenticates it upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProviderRoute {
    /// Provider id as configured in the ledger (recorded on the charge).
    pub provider: String,
    /// Value the filter writes into its route-selection header; Envoy's route table maps it to a cluster.
    pub cluster: String,
    /// Header that carries the provider credential (`authorization`, or `api-key` for Azure).
    pub auth_header: String,
    /// Full header value, e.g. `Bearer sk-…`; empty when the provider takes no
    /// key (a self-hosted server). Never logged.
    pub auth_value: String,
    /// Upstream model name when the route maps an alias; `None` keeps the client's.
    pub upstream_model: Option<String>,
    /// Path and query of the chat endpoint at the provider (Azure's carries
    /// the deployment and `api-version`).
    #[serde(default = "default_chat_path")]
    pub path: String,
    /// `:authority` the provider expects (its host), when the filter should set it.
    #[serde(default)]
    pub host: Option<String>,
}

/// A route that tries several providers in order: Envoy sends the request to
/// an aggregate cluster and retries on the next provider when one answers 429
/// or 5xx or cannot be reached, before any response byte reaches the client.
/// Each try is rewritten for its provider (key, path, host, model name) by the
/// filter's provider-attempt role, an upstream filter on that cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FallbackRoute {
    /// Route header value of the aggregate cluster (see `fallback_cluster`).
    pub cluster: String,
    /// The providers in the order they are tried; the first is the route's own.
    pub attempts: Vec<ProviderRoute>,
}

/// Name of the aggregate cluster that tries `clusters` in order. The ledger
/// names it in its answer and generates it for Envoy, so both agree.
pub fn fallback_cluster(clusters: &[&str]) -> String {
    format!("fallback+{}", clusters.join("+"))
}

fn default_chat_path() -> String {
    "/v1/chat/completions".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum AuthorizeResponse {
    /// A hold was placed; forward to the provider.
    Allow {
        hold_id: String,
        /// Micro-units reserved by the hold.
        held_micros: i64,
        route: ProviderRoute,
        /// Set when the balance covers less output than asked: the filter
        /// lowers the request's maximum (per choice) to this.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_output_tokens: Option<u32>,
        /// Set when the model has fallback providers usable for this paywall.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fallback: Option<FallbackRoute>,
    },
    /// The user must act first; the filter answers with an assistant message carrying the link.
    Action {
        action: Action,
        message: String,
        link: String,
    },
    /// The request is refused with an HTTP error (unknown key, unknown model, rate limit…).
    Reject {
        status: u16,
        error: ApiError,
        retry_after_secs: Option<u32>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_cluster_names_the_chain_in_order() {
        assert_eq!(fallback_cluster(&["a", "b", "c"]), "fallback+a+b+c");
    }

    #[test]
    fn decisions_round_trip_with_tag() {
        let allow = AuthorizeResponse::Allow {
            hold_id: "h1".into(),
            held_micros: 42,
            max_output_tokens: None,
            route: ProviderRoute {
                provider: "mock".into(),
                cluster: "mock".into(),
                auth_header: "authorization".into(),
                auth_value: "Bearer k".into(),
                upstream_model: None,
                path: "/v1/chat/completions".into(),
                host: None,
            },
            fallback: None,
        };
        let s = serde_json::to_string(&allow).unwrap();
        assert!(s.contains(r#""decision":"allow""#));
        assert!(
            !s.contains("fallback"),
            "absent unless the model has fallbacks"
        );
        assert_eq!(
            serde_json::from_str::<AuthorizeResponse>(&s).unwrap(),
            allow
        );

        let act: AuthorizeResponse = serde_json::from_str(
            r#"{"decision":"action","action":"topup","message":"m","link":"http://x"}"#,
        )
        .unwrap();
        assert!(matches!(
            act,
            AuthorizeResponse::Action {
                action: Action::Topup,
                ..
            }
        ));
    }
}
