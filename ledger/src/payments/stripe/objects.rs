//! The parts of Stripe's objects the ledger reads (field names as in Stripe's
//! published OpenAPI description, `checkout.session`, `charge`, `event`).
//! Everything else in them is ignored.

use std::collections::HashMap;

use serde::Deserialize;

/// Metadata keys the ledger puts on each Checkout Session (and its payment).
pub const META_PAYWALL: &str = "tollgate_paywall";
pub const META_USER: &str = "tollgate_user";
pub const META_LINK: &str = "tollgate_link";

#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: EventData,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventData {
    pub object: serde_json::Value,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Session {
    pub id: String,
    /// In the currency's minor unit; what the customer was charged.
    pub amount_total: Option<i64>,
    pub currency: Option<String>,
    /// `paid`, `unpaid` or `no_payment_required`.
    pub payment_status: String,
    /// `open`, `complete` or `expired`.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub payment_intent: Option<String>,
    #[serde(default)]
    pub metadata: HashMap<String, String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub created: i64,
}

/// Whom a session of ours pays for, from its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payer {
    pub paywall_id: String,
    pub user_id: String,
    /// SHA-256 of the top-up link's token.
    pub link_hash: Option<String>,
}

impl Session {
    /// None for a session this ledger did not create (another product on
    /// the same Stripe account).
    pub fn payer(&self) -> Option<Payer> {
        Some(Payer {
            paywall_id: self.metadata.get(META_PAYWALL)?.clone(),
            user_id: self.metadata.get(META_USER)?.clone(),
            link_hash: self.metadata.get(META_LINK).cloned(),
        })
    }

    pub fn is_paid(&self) -> bool {
        self.payment_status == "paid"
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Charge {
    pub id: String,
    /// Refunded so far, in minor units (cumulative over partial refunds).
    pub amount_refunded: i64,
    pub currency: String,
    #[serde(default)]
    pub payment_intent: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SessionList {
    pub data: Vec<Session>,
    pub has_more: bool,
}

/// Stripe's error body: `{"error": {"type": …, "message": …}}`.
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ErrorDetail {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub message: Option<String>,
}
