//! Idempotency-Key handling for side-effecting public calls (Stripe / IETF
//! draft semantics): the same key and body replays the stored response byte
//! for byte, the same key with another body is 422, the same key while the
//! first call still runs is 409. Keys are scoped to the paywall. Server errors
//! are not stored, so the client can retry them with the same key.

use std::future::Future;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tollgate_protocol::ApiError;

use super::errors::api_error;
use super::Shared;
use crate::money::idempotency::{self, Begin};

const MAX_KEY_LEN: usize = 255;

/// The `Idempotency-Key` header, as the OpenAPI document describes it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // documentation only; `run_once` reads the header
pub struct IdempotencyKey {
    /// Same key + same body replays the stored response (header
    /// `idempotent-replayed: true`); another body is 422; still running is
    /// 409. Scoped to the paywall, kept 48 h.
    #[param(rename = "Idempotency-Key", max_length = 255)]
    idempotency_key: Option<String>,
}

/// Runs `op` at most once per (paywall, Idempotency-Key); without a key, runs it.
/// `op` returns the status and JSON body to send (and to store).
pub async fn run_once<F, Fut>(
    state: &Shared,
    paywall_id: &str,
    headers: &HeaderMap,
    route: &str,
    body: &[u8],
    op: F,
) -> Response
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = (StatusCode, String)>,
{
    let Some(key) = headers.get("idempotency-key") else {
        let (status, body) = op().await;
        return json_response(status, body, false);
    };
    let key = match key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= MAX_KEY_LEN => k,
        _ => {
            return api_error(
                StatusCode::BAD_REQUEST,
                ApiError::invalid_request(
                    "invalid_idempotency_key",
                    "Idempotency-Key must be 1 to 255 visible ASCII characters.",
                ),
            )
        }
    };
    let fingerprint = idempotency::request_fingerprint("POST", route, body);
    match idempotency::begin(&state.db, paywall_id, key, &fingerprint).await {
        Ok(Begin::Fresh) => {}
        Ok(Begin::Replay { status, body }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            return json_response(status, body, true);
        }
        Ok(Begin::Mismatch) => {
            return api_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                ApiError::invalid_request(
                    "idempotency_key_reused",
                    "This Idempotency-Key was used with a different request.",
                ),
            )
        }
        Ok(Begin::InFlight) => {
            return api_error(
                StatusCode::CONFLICT,
                ApiError::invalid_request(
                    "idempotency_key_in_use",
                    "A request with this Idempotency-Key is still being processed.",
                ),
            )
        }
        Err(e) => return e.into(),
    }
    let (status, response_body) = op().await;
    let stored = if status.is_server_error() {
        idempotency::abandon(&state.db, paywall_id, key).await
    } else {
        idempotency::complete(&state.db, paywall_id, key, status.as_u16(), &response_body).await
    };
    if let Err(e) = stored {
        tracing::error!(error = %e, "could not record idempotency key");
    }
    json_response(status, response_body, false)
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
