//! The JSON shapes of the public API, as types: handlers build their answers
//! from these, and the OpenAPI document describes them from the same types.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// A decimal string in currency units, up to 6 places (micro-units inside).
#[derive(Serialize, Deserialize, ToSchema)]
#[schema(value_type = String, pattern = r"^\d*(\.\d{1,6})?$", example = "10.00")]
pub struct Amount(pub String);

/// OpenAI's error envelope.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: tollgate_protocol::ApiError,
}

/// The end user a call concerns.
#[derive(Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct UserQuery {
    /// The app's end-user id.
    #[param(max_length = 256)]
    pub user: Option<String>,
}

/// A page of a user's ledger entries.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EntriesQuery {
    /// The app's end-user id.
    #[param(max_length = 256)]
    pub user: Option<String>,
    /// Return entries after this seq (`next_after` of the previous page).
    pub after: Option<i64>,
    /// Entries per page.
    #[param(minimum = 1, maximum = 500, default = 50)]
    pub limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct Balance {
    #[schema(value_type = String, example = "balance")]
    pub object: &'static str,
    pub user: String,
    pub balance: Amount,
    pub held: Amount,
    pub available: Amount,
}

/// Money an app moves for its user (deposit or manual charge).
#[derive(Deserialize, ToSchema)]
pub struct Movement {
    pub user: String,
    pub amount: Amount,
    /// Up to 8 KiB, stored with the entry.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct Charge {
    #[schema(value_type = String, example = "charge")]
    pub object: &'static str,
    pub id: String,
    pub user: String,
    pub amount: Amount,
    pub balance: Amount,
    pub held: Amount,
    pub available: Amount,
    #[schema(value_type = Object)]
    pub metadata: Value,
}

#[derive(Serialize, ToSchema)]
pub struct TopupLink {
    #[schema(value_type = String, example = "topup_link")]
    pub object: &'static str,
    pub user: String,
    pub url: String,
    /// Unix seconds.
    pub expires_at: i64,
}

#[derive(Serialize, ToSchema)]
pub struct Pricing {
    pub currency_unit: Amount,
    pub input_per_million: Amount,
    pub cached_input_per_million: Amount,
    pub output_per_million: Amount,
    pub markup_bps: i64,
    pub min_charge: Amount,
    /// The price rule's version, stamped on every charge.
    pub version: i64,
}

#[derive(Serialize, ToSchema)]
pub struct Model {
    pub id: String,
    #[schema(value_type = String, example = "model")]
    pub object: &'static str,
    pub created: i64,
    /// The provider serving it.
    pub owned_by: String,
    pub pricing: Pricing,
}

#[derive(Serialize, ToSchema)]
pub struct ModelList {
    #[schema(value_type = String, example = "list")]
    pub object: &'static str,
    pub data: Vec<Model>,
}

#[derive(Serialize, ToSchema)]
pub struct EntryList {
    #[schema(value_type = String, example = "list")]
    pub object: &'static str,
    pub data: Vec<crate::money::deposits::Entry>,
    pub has_more: bool,
    pub next_after: Option<i64>,
}

/// Shared mode: whether the user authorized this paywall.
#[derive(Serialize, ToSchema)]
pub struct Connection {
    #[schema(value_type = String, example = "connection")]
    pub object: &'static str,
    pub user: String,
    pub mode: tollgate_protocol::PaywallMode,
    pub connected: bool,
    /// Unix seconds, when connected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected_at: Option<i64>,
    /// An authorization link to show the user, when not connected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// On disconnect: whether there was an authorization to revoke.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked: Option<bool>,
}

/// A list answer of the admin API.
#[derive(Serialize, ToSchema)]
pub struct List<T: ToSchema> {
    #[schema(value_type = String, example = "list")]
    pub object: &'static str,
    pub data: Vec<T>,
}

impl<T: ToSchema> List<T> {
    pub fn of(data: Vec<T>) -> Self {
        List {
            object: "list",
            data,
        }
    }
}

/// The amount chosen on the top-up page.
#[derive(Deserialize, ToSchema)]
pub struct TopupForm {
    pub amount: Amount,
}
