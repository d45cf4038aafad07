//! Internal API: authorize and settle, called by the filter only (with the
//! internal secret; see [`super::auth::InternalAuth`]).

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use tollgate_protocol::{
    AuthorizeRequest, AuthorizeResponse, SettleBatchRequest, SettleBatchResponse,
    SettleBatchResult, SettleRequest, SettleResponse, MAX_SETTLE_BATCH,
};

use super::auth::InternalAuth;
use super::errors::{ledger_error_parts, parse_json, Answer};
use super::schemas::ErrorBody;
use super::Shared;
use crate::error::LedgerError;
use crate::metrics;
use crate::money::holds;

/// Filter → sidecar: may this user spend? (never routed publicly)
#[utoipa::path(post, path = "/internal/v1/authorize", tag = "internal",
    security(("internalSecret" = [])),
    request_body = AuthorizeRequest,
    responses(
        (status = 200, description = "Allow (with a hold and the provider route), an action to show the user, or a refusal", body = AuthorizeResponse),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 403, description = "Missing or wrong internal secret", body = ErrorBody),
        (status = 503, description = "Temporarily unavailable", body = ErrorBody),
    ))]
pub async fn authorize(_: InternalAuth, State(state): State<Shared>, body: Bytes) -> Answer {
    let req: AuthorizeRequest = parse_json(&body)?;
    let started = Instant::now();
    let answer = holds::authorize(&state.db, &state.settings, &req).await;
    metrics::observe(metrics::AUTHORIZE_SECONDS, started.elapsed());
    let (kind, reason) = match &answer {
        Ok(AuthorizeResponse::Allow { .. }) => ("allow", "allowed"),
        Ok(AuthorizeResponse::Action { action, .. }) => ("action", action.as_str()),
        Ok(AuthorizeResponse::Reject { error, .. }) => {
            ("reject", error.code.as_deref().unwrap_or("rejected"))
        }
        Err(_) => ("error", "ledger_unavailable"),
    };
    metrics::count(metrics::AUTHORIZATIONS, &[kind, reason]);
    Ok(Json(answer?).into_response())
}

/// Filter → sidecar: post what a request used, once per hold.
#[utoipa::path(post, path = "/internal/v1/settle", tag = "internal",
    security(("internalSecret" = [])),
    request_body = SettleRequest,
    responses(
        (status = 200, description = "The hold's final state (a repeated settlement replays it)", body = SettleResponse),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 403, description = "Missing or wrong internal secret", body = ErrorBody),
        (status = 404, description = "No such hold", body = ErrorBody),
        (status = 503, description = "Temporarily unavailable", body = ErrorBody),
    ))]
pub async fn settle(_: InternalAuth, State(state): State<Shared>, body: Bytes) -> Answer {
    let req: SettleRequest = parse_json(&body)?;
    let started = Instant::now();
    let answer = holds::settle(&state.db, &req, state.settings.hold_expiry).await;
    metrics::observe(metrics::SETTLE_SECONDS, started.elapsed());
    metrics::count(metrics::SETTLEMENTS, &[settle_outcome(&answer)]);
    Ok(Json(answer?).into_response())
}

/// A settlement's outcome as `tollgate_ledger_settlements_total` counts it.
fn settle_outcome(answer: &Result<SettleResponse, LedgerError>) -> &'static str {
    match answer {
        Ok(res) if res.replayed => "replayed",
        Ok(res) => res.state.as_str(),
        Err(LedgerError::NotFound(_) | LedgerError::Invalid(_)) => "refused",
        Err(_) => "error",
    }
}

/// Filter → sidecar: many settlements at once (the filter's queue sends what
/// is due on a tick together), committed in one transaction. Each result says
/// what a single settle call would have answered; a database error fails the
/// whole batch (503), which the filter then retries.
#[utoipa::path(post, path = "/internal/v1/settle-batch", tag = "internal",
    security(("internalSecret" = [])),
    request_body = SettleBatchRequest,
    responses(
        (status = 200, description = "One result per settlement, in order", body = SettleBatchResponse),
        (status = 400, description = "Bad input, or more than 256 settlements", body = ErrorBody),
        (status = 403, description = "Missing or wrong internal secret", body = ErrorBody),
        (status = 503, description = "Temporarily unavailable: nothing was settled", body = ErrorBody),
    ))]
pub async fn settle_batch(_: InternalAuth, State(state): State<Shared>, body: Bytes) -> Answer {
    let req: SettleBatchRequest = parse_json(&body)?;
    if req.settlements.len() > MAX_SETTLE_BATCH {
        return Err(LedgerError::Invalid(format!(
            "at most {MAX_SETTLE_BATCH} settlements per batch"
        ))
        .into());
    }
    let started = Instant::now();
    let answers =
        holds::settle_batch(&state.db, &req.settlements, state.settings.hold_expiry).await;
    metrics::observe(metrics::SETTLE_SECONDS, started.elapsed());
    let answers = match answers {
        Ok(answers) => answers,
        Err(e) => {
            metrics::count(metrics::SETTLEMENTS, &["error"]);
            return Err(e.into());
        }
    };
    let results = req
        .settlements
        .iter()
        .zip(answers)
        .map(|(asked, answer)| {
            metrics::count(metrics::SETTLEMENTS, &[settle_outcome(&answer)]);
            match answer {
                Ok(settled) => SettleBatchResult {
                    hold_id: asked.hold_id.clone(),
                    status: 200,
                    settled: Some(settled),
                    error: None,
                },
                // What a single settle call would have answered.
                Err(e) => {
                    let (status, error) = ledger_error_parts(e);
                    SettleBatchResult {
                        hold_id: asked.hold_id.clone(),
                        status: status.as_u16(),
                        settled: None,
                        error: Some(error.message),
                    }
                }
            }
        })
        .collect();
    Ok(Json(SettleBatchResponse { results }).into_response())
}
