//! How failures become answers: an OpenAI-shaped error body with its status.
//! Handlers return `Result<Response, Response>`; a [`LedgerError`] converts
//! into its answer, so `?` works on every ledger call.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tollgate_protocol::ApiError;

use crate::error::LedgerError;
use crate::metrics;

/// What a handler returns: the answer, or an error answer.
pub type Answer = Result<Response, Response>;

/// An OpenAI-shaped error response.
pub fn api_error(status: StatusCode, error: ApiError) -> Response {
    (
        status,
        [("content-type", "application/json")],
        error.to_body(),
    )
        .into_response()
}

/// 404 `not_found` with a message.
pub fn not_found(message: &str) -> Response {
    api_error(
        StatusCode::NOT_FOUND,
        ApiError::invalid_request("not_found", message),
    )
}

/// 400 with a code and a message.
pub fn bad_request(code: &str, message: impl Into<String>) -> Response {
    api_error(
        StatusCode::BAD_REQUEST,
        ApiError::invalid_request(code, message),
    )
}

/// The status and OpenAI-shaped error a ledger failure answers with. A
/// failure of the ledger itself is logged and counted, and says no more.
pub fn ledger_error_parts(e: LedgerError) -> (StatusCode, ApiError) {
    match e {
        LedgerError::NotFound(m) => (
            StatusCode::NOT_FOUND,
            ApiError::invalid_request("not_found", m),
        ),
        LedgerError::Invalid(m) => (
            StatusCode::BAD_REQUEST,
            ApiError::invalid_request("invalid_request", m),
        ),
        LedgerError::Conflict(m) => (
            StatusCode::CONFLICT,
            ApiError::invalid_request("conflict", m),
        ),
        LedgerError::NotConnected(m) => (
            StatusCode::FORBIDDEN,
            ApiError::new("permission_error", "user_not_connected", m),
        ),
        other => {
            if matches!(other, LedgerError::Db(_)) {
                metrics::count(metrics::DATABASE_ERRORS, &["api"]);
            }
            tracing::error!(error = %other, transient = other.is_transient(), "ledger operation failed");
            let err = ApiError::new(
                "server_error",
                "ledger_unavailable",
                "The ledger is temporarily unavailable.",
            );
            (StatusCode::SERVICE_UNAVAILABLE, err)
        }
    }
}

impl IntoResponse for LedgerError {
    fn into_response(self) -> Response {
        let (status, error) = ledger_error_parts(self);
        api_error(status, error)
    }
}

impl From<LedgerError> for Response {
    fn from(e: LedgerError) -> Response {
        e.into_response()
    }
}

/// Parses a JSON body, answering a bad one with an OpenAI-shaped 400.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| {
        bad_request(
            "invalid_json",
            format!("We could not parse the JSON body: {e}"),
        )
    })
}
