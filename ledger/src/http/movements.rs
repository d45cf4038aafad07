//! Money the app moves for its user: deposits and manual charges. Both are
//! idempotent with `Idempotency-Key` (see [`super::idempotent`]).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::{json, Value};
use tollgate_protocol::{parse_amount, ApiError};

use super::auth::PaywallAuth;
use super::errors::ledger_error_parts;
use super::idempotent::{run_once, IdempotencyKey};
use super::public::{amount, balance_of, require_user};
use super::schemas::{Balance, Charge, ErrorBody, Movement as MovementDoc};
use super::Shared;
use crate::error::LedgerError;
use crate::money::book::Tx;
use crate::money::deposits;
use crate::money::manual_charges;

const MAX_METADATA_BYTES: usize = 8 * 1024;

#[derive(Deserialize)]
struct MovementBody {
    user: Option<String>,
    amount: Option<Value>,
    #[serde(default)]
    metadata: Option<Value>,
}

/// A validated `{user, amount, metadata}` body.
struct Movement {
    user: String,
    amount: i64,
    metadata: Value,
}

type Answer = (StatusCode, String);

fn bad(code: &str, param: &str, msg: impl Into<String>) -> Answer {
    (
        StatusCode::BAD_REQUEST,
        ApiError::invalid_request(code, msg)
            .with_param(param)
            .to_body(),
    )
}

/// A refused movement (a shared-mode user who has not authorized this
/// paywall is 403) or the ledger's own failure (503, not stored for replay).
fn failed(e: LedgerError) -> Answer {
    let (status, error) = ledger_error_parts(e);
    (status, error.to_body())
}

fn parse_movement(body: &[u8]) -> Result<Movement, Answer> {
    let parsed: MovementBody = serde_json::from_slice(body).map_err(|e| {
        bad(
            "invalid_json",
            "body",
            format!("We could not parse the JSON body: {e}"),
        )
    })?;
    let user = require_user(parsed.user.as_deref())
        .map_err(|_| bad("missing_user", "user", "A valid `user` is required."))?;
    let amount = match parsed.amount {
        Some(Value::String(s)) => {
            parse_amount(&s).map_err(|e| bad("invalid_amount", "amount", e.to_string()))?
        }
        _ => {
            return Err(bad(
                "invalid_amount",
                "amount",
                "`amount` must be a decimal string such as \"10.00\".",
            ))
        }
    };
    let metadata = match parsed.metadata {
        None | Some(Value::Null) => json!({}),
        Some(m @ Value::Object(_)) if m.to_string().len() <= MAX_METADATA_BYTES => m,
        Some(Value::Object(_)) => {
            return Err(bad(
                "metadata_too_large",
                "metadata",
                "`metadata` is limited to 8 KiB.",
            ))
        }
        Some(_) => {
            return Err(bad(
                "invalid_type",
                "metadata",
                "`metadata` must be an object.",
            ))
        }
    };
    Ok(Movement {
        user,
        amount,
        metadata,
    })
}

/// The body an answer of these calls carries, as stored for replays.
fn json_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Credit a user.
#[utoipa::path(post, path = "/v1/user/balance/deposit", tag = "public",
    security(("paywallKey" = [])), params(IdempotencyKey),
    request_body = MovementDoc,
    responses(
        (status = 200, description = "New balance", body = Balance),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "Missing or unknown key", body = ErrorBody),
        (status = 403, description = "A shared-mode user who has not authorized this paywall", body = ErrorBody),
        (status = 409, description = "Idempotency key left in flight by an older version", body = ErrorBody),
        (status = 422, description = "Idempotency key reused with another body", body = ErrorBody),
        (status = 503, description = "Temporarily unavailable", body = ErrorBody),
    ))]
pub async fn deposit(
    PaywallAuth(paywall): PaywallAuth,
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run_once(
        &state,
        &paywall.id,
        &headers,
        "/v1/user/balance/deposit",
        &body,
        {
            let (paywall_id, body) = (paywall.id.clone(), body.clone());
            move |tx: &mut Tx| -> BoxFuture<'_, Answer> { Box::pin(credit(tx, paywall_id, body)) }
        },
    )
    .await
}

/// Manual charge: bill the user for something other than a completion.
#[utoipa::path(post, path = "/v1/user/charge", tag = "public",
    security(("paywallKey" = [])), params(IdempotencyKey),
    request_body = MovementDoc,
    responses(
        (status = 200, description = "The charge and the new balance", body = Charge),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "Missing or unknown key", body = ErrorBody),
        (status = 402, description = "The balance does not cover the charge", body = ErrorBody),
        (status = 403, description = "A shared-mode user who has not authorized this paywall", body = ErrorBody),
        (status = 409, description = "Idempotency key left in flight by an older version", body = ErrorBody),
        (status = 422, description = "Idempotency key reused with another body", body = ErrorBody),
        (status = 503, description = "Temporarily unavailable", body = ErrorBody),
    ))]
pub async fn charge(
    PaywallAuth(paywall): PaywallAuth,
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run_once(&state, &paywall.id, &headers, "/v1/user/charge", &body, {
        let (paywall_id, body) = (paywall.id.clone(), body.clone());
        move |tx: &mut Tx| -> BoxFuture<'_, Answer> { Box::pin(bill(tx, paywall_id, body)) }
    })
    .await
}

/// The deposit, in the transaction `run_once` gives it.
async fn credit(tx: &mut Tx, paywall_id: String, body: Bytes) -> Answer {
    let m = match parse_movement(&body) {
        Ok(m) => m,
        Err(answer) => return answer,
    };
    match deposits::deposit_in(tx, &paywall_id, &m.user, m.amount, "api_deposit").await {
        Ok(b) => (StatusCode::OK, json_text(&balance_of(&m.user, b))),
        Err(e) => failed(e),
    }
}

/// The manual charge, in the transaction `run_once` gives it.
async fn bill(tx: &mut Tx, paywall_id: String, body: Bytes) -> Answer {
    let m = match parse_movement(&body) {
        Ok(m) => m,
        Err(answer) => return answer,
    };
    match manual_charges::charge_in(tx, &paywall_id, &m.user, m.amount, &m.metadata).await {
        Ok(Some(c)) => {
            let b = balance_of(&m.user, c.balance);
            let doc = Charge {
                object: "charge",
                id: c.transfer_id,
                user: b.user,
                amount: amount(m.amount),
                balance: b.balance,
                held: b.held,
                available: b.available,
                metadata: m.metadata,
            };
            (StatusCode::OK, json_text(&doc))
        }
        Ok(None) => (
            StatusCode::PAYMENT_REQUIRED,
            ApiError::invalid_request(
                "insufficient_balance",
                "The user's balance does not cover this charge.",
            )
            .with_param("amount")
            .to_body(),
        ),
        Err(e) => failed(e),
    }
}
