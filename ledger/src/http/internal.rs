//! Internal API: authorize and settle, called by the filter only (with the
//! internal secret; see [`super::auth::InternalAuth`]).

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use tollgate_protocol::{AuthorizeRequest, AuthorizeResponse, SettleRequest, SettleResponse};

use super::auth::InternalAuth;
use super::errors::{parse_json, Answer};
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
    let outcome = match &answer {
        Ok(res) if res.replayed => "replayed",
        Ok(res) => res.state.as_str(),
        Err(LedgerError::NotFound(_) | LedgerError::Invalid(_)) => "refused",
        Err(_) => "error",
    };
    metrics::count(metrics::SETTLEMENTS, &[outcome]);
    Ok(Json(answer?).into_response())
}
