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

/// How the request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SettleOutcome {
    /// Response completed; post the charge.
    Completed,
    /// Client went away mid-response; post what was used.
    ClientAborted,
    /// The provider failed before producing output; void the hold.
    UpstreamFailed,
    /// No settlement came: the sweeper resolved the hold at its expiry. Never
    /// sent by the filter (settle refuses it).
    Expired,
}

words!(SettleOutcome {
    Completed => "completed",
    ClientAborted => "client_aborted",
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
