//! Idempotency-Key handling for side-effecting public calls (Stripe / IETF
//! draft semantics): the same key and body replays the stored response byte
//! for byte, the same key with another body is 422, the same key while the
//! first call still runs waits for it and replays it. Keys are scoped to the
//! paywall. The operation runs in one transaction with its key and stored
//! response (see [`crate::money::idempotency`]); server errors are not stored,
//! so the client can retry them with the same key.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use tollgate_protocol::ApiError;

use super::errors::api_error;
use super::Shared;
use crate::error::LedgerResult;
use crate::faults;
use crate::money::book::Tx;
use crate::money::idempotency::{self, KeyClaim, Stored};

const MAX_KEY_LEN: usize = 255;

/// The `Idempotency-Key` header, as the OpenAPI document describes it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // documentation only; `run_once` reads the header
pub struct IdempotencyKey {
    /// Same key + same body replays the stored response (header
    /// `idempotent-replayed: true`); another body is 422; a call made while
    /// the first still runs waits for it and replays it. Scoped to the
    /// paywall, kept 48 h.
    #[param(rename = "Idempotency-Key", max_length = 255)]
    idempotency_key: Option<String>,
}

/// Runs `op` at most once per (paywall, Idempotency-Key); without a key, runs
/// it. `op` works in the transaction it is given and returns the status and
/// JSON body to send (and to store); a success commits, anything else rolls
/// back.
pub async fn run_once(
    state: &Shared,
    paywall_id: &str,
    headers: &HeaderMap,
    route: &str,
    body: &[u8],
    op: impl for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, (StatusCode, String)> + Send,
) -> Response {
    let claim = match key_claim(paywall_id, headers, route, body) {
        Ok(claim) => claim,
        Err(refused) => return refused,
    };
    if let Some(claim) = &claim {
        if let Some(earlier) = stored_answer(state, claim).await {
            return earlier;
        }
    }
    match run_in_transaction(state, claim.as_ref(), op).await {
        Ok(Ran::Answered(status, body)) => json_response(status, body, false),
        Ok(Ran::KeyTaken) => match &claim {
            Some(claim) => stored_answer(state, claim).await.unwrap_or_else(in_use),
            None => in_use(),
        },
        Err(e) => e.into(),
    }
}

/// The request's key, if it sent one; a malformed key is refused.
fn key_claim(
    paywall_id: &str,
    headers: &HeaderMap,
    route: &str,
    body: &[u8],
) -> Result<Option<KeyClaim>, Response> {
    let Some(key) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= MAX_KEY_LEN => Ok(Some(KeyClaim {
            paywall_id: paywall_id.to_string(),
            key: k.to_string(),
            fingerprint: idempotency::request_fingerprint("POST", route, body),
        })),
        _ => Err(api_error(
            StatusCode::BAD_REQUEST,
            ApiError::invalid_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 255 visible ASCII characters.",
            ),
        )),
    }
}

/// The answer already given under this key, if any.
async fn stored_answer(state: &Shared, claim: &KeyClaim) -> Option<Response> {
    match idempotency::lookup(&state.db, claim).await {
        Ok(Stored::Absent) => None,
        Ok(Stored::Replay { status, body }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            Some(json_response(status, body, true))
        }
        Ok(Stored::Mismatch) => Some(api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::invalid_request(
                "idempotency_key_reused",
                "This Idempotency-Key was used with a different request.",
            ),
        )),
        Ok(Stored::LegacyInFlight) => Some(in_use()),
        Err(e) => Some(e.into()),
    }
}

fn in_use() -> Response {
    api_error(
        StatusCode::CONFLICT,
        ApiError::invalid_request(
            "idempotency_key_in_use",
            "A request with this Idempotency-Key is still being processed; retry shortly.",
        ),
    )
}

enum Ran {
    Answered(StatusCode, String),
    /// Another call committed the key first.
    KeyTaken,
}

async fn run_in_transaction(
    state: &Shared,
    claim: Option<&KeyClaim>,
    op: impl for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, (StatusCode, String)> + Send,
) -> LedgerResult<Ran> {
    let mut tx = state.db.pool.begin().await?;
    if let Some(claim) = claim {
        if !idempotency::reserve(&mut tx, claim).await? {
            tx.rollback().await?;
            return Ok(Ran::KeyTaken);
        }
    }
    let (status, body) = op(&mut tx).await;
    if !status.is_success() {
        tx.rollback().await?;
        if let (Some(claim), false) = (claim, status.is_server_error()) {
            // Nothing moved: losing this record only lets the retry run again.
            if let Err(e) = idempotency::record(&state.db, claim, status.as_u16(), &body).await {
                tracing::warn!(error = %e, "could not keep a refusal under its idempotency key");
            }
        }
        return Ok(Ran::Answered(status, body));
    }
    if let Some(claim) = claim {
        idempotency::finish(&mut tx, claim, status.as_u16(), &body).await?;
    }
    faults::pause(faults::MOVEMENT_BEFORE_COMMIT).await;
    tx.commit().await?;
    faults::pause(faults::MOVEMENT_AFTER_COMMIT).await;
    Ok(Ran::Answered(status, body))
}

fn json_response(status: StatusCode, body: String, replayed: bool) -> Response {
    if replayed {
        (
            status,
            [
                ("content-type", "application/json"),
                ("idempotent-replayed", "true"),
            ],
            body,
        )
            .into_response()
    } else {
        (status, [("content-type", "application/json")], body).into_response()
    }
}
