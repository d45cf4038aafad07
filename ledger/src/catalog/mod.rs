//! What can be sold, to whom, through which provider: paywalls, models and
//! their versioned price rules, the provider kinds and registry, and the
//! provider keys paywalls bring (sealed with the operator's master key).
//! Seeded from the TOML at start, changed through the admin API and CLI,
//! read by authorize. Nothing here moves money.

pub mod cache;
pub mod master_key;
pub mod provider_keys;
pub mod provider_kinds;
pub mod provider_registry;
mod routes;
mod seed;
pub mod upstream;

pub use routes::{
    glob_matches, list_models, model_route, paywall_by_key, price_rule, ModelRoute, Paywall,
};
pub(crate) use routes::{PriceRow, PRICE_COLUMNS};
pub use seed::{put_model, seed, seed_limits, MAX_FALLBACKS};
