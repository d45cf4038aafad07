//! Wire types shared by the Tollgate filter and the ledger sidecar.
//!
//! Everything here is plain serde data and integer arithmetic (prices): no
//! proxy-wasm, no tokio, so both the
//! wasm32 filter and the native sidecar compile it unchanged.

pub mod api_error;
pub mod authorize;
pub mod backoff;
pub mod credentials;
pub mod money;
pub mod pricing;
pub mod settle;
pub mod states;

pub use api_error::ApiError;
pub use authorize::{
    fallback_cluster, Action, AuthorizeRequest, AuthorizeResponse, FallbackRoute, ProviderRoute,
};
pub use credentials::bearer_token;
pub use money::{format_micros, parse_amount, parse_decimal, AmountError, MICROS_PER_UNIT};
pub use settle::{
    SettleBatchRequest, SettleBatchResponse, SettleBatchResult, SettleOutcome, SettleRequest,
    SettleResponse, Usage, UsageSource, MAX_SETTLE_BATCH,
};
pub use states::{HoldState, KeySource, LinkPurpose, PaywallMode};

/// Path of the internal authorize call (filter → sidecar). Never routed from the public listener.
pub const AUTHORIZE_PATH: &str = "/internal/v1/authorize";
/// Path of the internal settle call (filter root context → sidecar).
pub const SETTLE_PATH: &str = "/internal/v1/settle";
/// Path of the internal batch settle call (the root context's queue → sidecar).
pub const SETTLE_BATCH_PATH: &str = "/internal/v1/settle-batch";
/// Header carrying the shared secret that proves a call comes from the filter.
pub const INTERNAL_SECRET_HEADER: &str = "x-tollgate-internal-secret";
