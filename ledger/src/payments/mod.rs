//! Payments behind the top-up link: the `[payments]` configuration, the
//! amounts offered, and the processors — Stripe Checkout (real money,
//! credited by signed webhooks exactly once) or, for development only, a
//! processor that credits whatever is chosen.
//!
//! - [`config`]: the `[payments]` table and the checked [`config::Offer`].
//! - [`currency`]: minor units per currency, exact conversion to micro-units.
//! - [`checkout`]: Checkout Sessions in the ledger; crediting, failing and
//!   refunding them exactly once.
//! - [`stripe`]: Stripe's API client, its objects, the webhook events.
//! - [`reconcile`]: credits completed sessions whose webhook never came.

pub mod checkout;
pub mod config;
pub mod currency;
pub mod reconcile;
pub mod stripe;

use std::fmt;

use self::config::{Offer, PaymentsConfig, ProcessorKind};
use self::stripe::client::StripeApi;

/// The configured processor and what it offers, resolved once at start.
#[derive(Debug)]
pub struct Payments {
    pub offer: Offer,
    pub processor: Processor,
}

#[derive(Debug)]
pub enum Processor {
    /// DEVELOPMENT ONLY: the page credits the chosen amount, no money moves.
    Dev,
    Stripe(StripeProcessor),
}

pub struct StripeProcessor {
    pub api: StripeApi,
    /// The endpoint secret `Stripe-Signature` is checked with.
    pub webhook_secret: String,
}

// The webhook secret never reaches a log line through Debug.
impl fmt::Debug for StripeProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeProcessor")
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

/// The memo of deposits made by the development processor.
pub const DEV_MEMO: &str = "dev_processor";

impl Payments {
    pub fn from_config(cfg: &PaymentsConfig) -> anyhow::Result<Payments> {
        let offer = cfg.offer()?;
        let processor = match cfg.processor {
            ProcessorKind::Dev => Processor::Dev,
            ProcessorKind::Stripe => {
                let (key, webhook_secret) = cfg.stripe_secrets()?;
                Processor::Stripe(StripeProcessor {
                    api: StripeApi::new(&cfg.api_base, key)?,
                    webhook_secret,
                })
            }
        };
        Ok(Payments { offer, processor })
    }

    pub fn stripe(&self) -> Option<&StripeProcessor> {
        match &self.processor {
            Processor::Stripe(s) => Some(s),
            Processor::Dev => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self.processor {
            Processor::Dev => "dev",
            Processor::Stripe(_) => "stripe",
        }
    }
}
