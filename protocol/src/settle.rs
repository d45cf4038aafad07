//! The settle call: what a request actually used, posted once per hold.

use serde::{Deserialize, Serialize};

use crate::states::{words, HoldState};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Prompt tokens served from the provider's cache (billed at the cached-input price).
    #[serde(default)]
    pub cached_prompt_tokens: u32,
}

/// Who counted the tokens that are billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum UsageSource {
    /// The provider's `usage` object.
    Provider,
    /// The filter's own count (provider gave none); marked as estimated on the charge.
    Local,
    /// The hold's own estimate, charged by the sweeper when a hold expired
    /// under a charging policy. Never sent by the filter (settle refuses it).
    Estimate,
}

words!(UsageSource { Provider => "provider", Local => "local", Estimate => "estimate" });

/// How the request ended (the README's outcomes table says what each charges).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SettleOutcome {
    /// The response ended as it should (a finish reason or `[DONE]`); post the charge.
    Completed,
    /// The client went away mid-response; post what was used.
    ClientAborted,
    /// The provider's stream ended (or its connection dropped) without a
    /// finish reason or `[DONE]`; post what was streamed.
    ProviderCut,
    /// The provider answered an error status (nothing is charged: the hold is
    /// voided) or sent an error event mid-stream (what was streamed before it
    /// is posted).
    ProviderError,
    /// Older filters' name for an error status: void the hold.
    UpstreamFailed,
    /// No settlement came: the sweeper resolved the hold at its expiry. Never
    /// sent by the filter (settle refuses it).
    Expired,
}

words!(SettleOutcome {
    Completed => "completed",
    ClientAborted => "client_aborted",
    ProviderCut => "provider_cut",
    ProviderError => "provider_error",
    UpstreamFailed => "upstream_failed",
    Expired => "expired",
});

impl SettleOutcome {
    /// Whether the filter may report it (the rest are the sidecar's own).
    pub fn from_filter(self) -> bool {
        !matches!(self, SettleOutcome::Expired)
    }
}

impl UsageSource {
    /// Whether the filter may report it (the rest are the sidecar's own).
    pub fn from_filter(self) -> bool {
        !matches!(self, UsageSource::Estimate)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SettleRequest {
    pub hold_id: String,
    pub request_id: String,
    pub usage: Usage,
    pub usage_source: UsageSource,
    /// The filter's own completion-token count, kept beside the provider's for audit.
    pub local_completion_tokens: Option<u32>,
    pub outcome: SettleOutcome,
    /// HTTP status the provider answered with (0 when none arrived).
    pub upstream_status: u16,
    /// The provider that answered, when the route had fallbacks (from the
    /// provider-attempt filter); None means the route's own provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SettleResponse {
    pub hold_id: String,
    /// `posted` or `voided`.
    pub state: HoldState,
    pub charge_id: Option<String>,
    pub amount_micros: i64,
    /// True when this hold had already been settled and nothing moved now.
    pub replayed: bool,
}

/// Many settlements in one call (the filter's queue sends what is due on a
/// tick together); the sidecar commits them in one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SettleBatchRequest {
    /// At most [`MAX_SETTLE_BATCH`].
    pub settlements: Vec<SettleRequest>,
}

/// Settlements per batch, at most.
pub const MAX_SETTLE_BATCH: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SettleBatchResponse {
    /// One per settlement, in the request's order.
    pub results: Vec<SettleBatchResult>,
}

/// What became of one settlement of a batch: the status a single settle call
/// would have answered (200 settled or replayed; 400 or 404 refused, for good).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SettleBatchResult {
    pub hold_id: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled: Option<SettleResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl SettleRequest {
    /// Whether this settlement voids its hold (charges nothing): the provider
    /// answered an error status, so it produced nothing to bill.
    pub fn voids(&self) -> bool {
        match self.outcome {
            SettleOutcome::UpstreamFailed => true,
            SettleOutcome::ProviderError => !(200..300).contains(&self.upstream_status),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(outcome: SettleOutcome, upstream_status: u16) -> SettleRequest {
        SettleRequest {
            hold_id: "h".into(),
            request_id: "r".into(),
            usage: Usage::default(),
            usage_source: UsageSource::Local,
            local_completion_tokens: None,
            outcome,
            upstream_status,
            provider: None,
        }
    }

    #[test]
    fn only_an_error_status_voids() {
        assert!(with(SettleOutcome::ProviderError, 503).voids());
        assert!(with(SettleOutcome::ProviderError, 0).voids());
        assert!(with(SettleOutcome::UpstreamFailed, 500).voids());
        // An error event after a 200: what was streamed is charged.
        assert!(!with(SettleOutcome::ProviderError, 200).voids());
        for o in [
            SettleOutcome::Completed,
            SettleOutcome::ClientAborted,
            SettleOutcome::ProviderCut,
        ] {
            assert!(!with(o, 200).voids(), "{o}");
        }
    }
}
