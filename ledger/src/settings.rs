//! Runtime settings the money operations need, resolved once at start.

use std::sync::Arc;

use crate::catalog::master_key::Keyring;
use crate::money::holds::ExpiryPolicy;
use crate::payments::Payments;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Base URL of links shown to end users, without a trailing slash.
    pub public_url: String,
    pub hold_ttl_ms: i64,
    pub topup_link_ttl_ms: i64,
    /// The processor behind the top-up page; None: top-up pages cannot take payments.
    pub payments: Option<Arc<Payments>>,
    pub hold_expiry: ExpiryPolicy,
    /// Least output (tokens per choice) worth clamping a request down to.
    pub output_floor: u32,
    /// Opens the provider keys paywalls bring; empty when no master key is set.
    pub keyring: Arc<Keyring>,
}

impl Settings {
    /// The settings of `s`; the keyring starts empty (see `Keyring::from_env`)
    /// and there is no payment processor (see `Payments::from_config`).
    pub fn from_server(s: &crate::config::ServerConfig) -> Self {
        let ms = |secs: u64| i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        Settings {
            public_url: s.public_url.trim_end_matches('/').to_string(),
            hold_ttl_ms: ms(s.hold_ttl_secs),
            topup_link_ttl_ms: ms(s.topup_link_ttl_secs),
            hold_expiry: s.hold_expiry_policy,
            output_floor: s.affordable_output_floor,
            payments: None,
            keyring: Arc::new(Keyring::default()),
        }
    }
}
