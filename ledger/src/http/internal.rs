//! Internal API: authorize and settle, called by the filter only.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::time::Instant;

use tollgate_protocol::{
    ApiError, AuthorizeRequest, AuthorizeResponse, SettleRequest, INTERNAL_SECRET_HEADER,
};

use super::{api_error, ledger_failure, parse_json, Shared};
use crate::access::secrets::constant_time_eq;
use crate::error::LedgerError;
use crate::metrics;
use crate::money::holds;

fn check_secret(state: &Shared, headers: &HeaderMap) -> Result<(), Response> {
    let given = headers
        .get(INTERNAL_SECRET_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if constant_time_eq(given, &state.internal_secret) {
        Ok(())
    } else {
        tracing::warn!("internal call with a missing or wrong secret");
        Err(api_error(
            StatusCode::FORBIDDEN,
            ApiError::new("permission_error", "forbidden", "Internal endpoint."),
        ))
    }
}

pub async fn authorize(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = check_secret(&state, &headers) {
        return r;
    }
    let req: AuthorizeRequest = match parse_json(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let started = Instant::now();
    let answer = holds::authorize(&state.db, &state.settings, &req).await;
    metrics::observe(metrics::AUTHORIZE_SECONDS, started.elapsed());
    match answer {
        Ok(decision) => {
            let (kind, reason) = match &decision {
                AuthorizeResponse::Allow { .. } => ("allow", "allowed"),
                AuthorizeResponse::Action { action, .. } => ("action", action.as_str()),
                AuthorizeResponse::Reject { error, .. } => {
                    ("reject", error.code.as_deref().unwrap_or("rejected"))
                }
            };
            metrics::count(metrics::AUTHORIZATIONS, &[kind, reason]);
            Json(decision).into_response()
        }
        Err(e) => {
            metrics::count(metrics::AUTHORIZATIONS, &["error", "ledger_unavailable"]);
            ledger_failure(e)
        }
    }
}

pub async fn settle(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = check_secret(&state, &headers) {
        return r;
    }
    let req: SettleRequest = match parse_json(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let started = Instant::now();
    let answer = holds::settle(&state.db, &req).await;
    metrics::observe(metrics::SETTLE_SECONDS, started.elapsed());
    let outcome = match &answer {
        Ok(res) if res.replayed => "replayed",
        Ok(res) => res.state.as_str(),
        Err(LedgerError::NotFound(_) | LedgerError::Invalid(_)) => "refused",
        Err(_) => "error",
    };
    metrics::count(metrics::SETTLEMENTS, &[outcome]);
    match answer {
        Ok(res) => Json(res).into_response(),
        Err(e) => ledger_failure(e),
    }
}
