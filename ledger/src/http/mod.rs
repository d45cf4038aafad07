//! The sidecar's HTTP surface: the internal API the filter calls (secret
//! required, never routed from the public listener), the public API apps call
//! with their paywall key, and the end-user pages behind links.

// Handlers return `Result<_, Response>` so an early error is just `?`-style
// control flow; the size of axum's Response in the Err arm is irrelevant here.
#![allow(clippy::result_large_err)]

mod admin;
mod idempotent;
mod internal;
mod movements;
mod pages;
mod public;

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use axum::Router;
use tollgate_protocol::{ApiError, AUTHORIZE_PATH, SETTLE_PATH};

use crate::catalog::{self, Paywall};
use crate::db::Db;
use crate::error::LedgerError;
use crate::settings::Settings;

pub struct AppState {
    pub db: Db,
    pub settings: Settings,
    pub internal_secret: String,
    /// SHA-256 of the admin token; None disables the admin API.
    pub admin_token_hash: Option<String>,
}

pub type Shared = Arc<AppState>;

pub fn router(state: Shared) -> Router {
    Router::new()
        .route(AUTHORIZE_PATH, post(internal::authorize))
        .route(SETTLE_PATH, post(internal::settle))
        .route("/v1/models", get(public::models))
        .route("/v1/user/balance", get(public::balance))
        .route("/v1/user/balance/deposit", post(movements::deposit))
        .route("/v1/user/charge", post(movements::charge))
        .route("/v1/user/balance/topup", get(public::topup))
        .route("/v1/user/ledger", get(public::ledger_entries))
        .route("/v1/user/connect", get(public::connect))
        .route("/v1/user/disconnect", get(public::disconnect))
        .route(
            "/pay/connect/{token}",
            get(pages::consent_page).post(pages::consent_accept),
        )
        .route(
            "/pay/topup/{token}",
            get(pages::topup_page).post(pages::topup_pay),
        )
        .route(
            "/admin/v1/paywalls",
            get(admin::list_paywalls).post(admin::create_paywall),
        )
        .route("/admin/v1/paywalls/{id}", patch(admin::update_paywall))
        .route(
            "/admin/v1/paywalls/{id}/keys",
            get(admin::list_keys).post(admin::create_key),
        )
        .route(
            "/admin/v1/paywalls/{id}/keys/{key_id}",
            delete(admin::revoke_key),
        )
        .route("/admin/v1/paywalls/{id}/limits", put(admin::put_limits))
        .route(
            "/admin/v1/paywalls/{id}/provider-keys",
            get(admin::list_provider_keys),
        )
        .route(
            "/admin/v1/paywalls/{id}/provider-keys/{provider}",
            put(admin::put_provider_key).delete(admin::delete_provider_key),
        )
        .route("/admin/v1/webhooks", get(admin::list_webhooks))
        .route(
            "/admin/v1/webhooks/{id}/deliveries",
            get(admin::webhook_deliveries),
        )
        .route(
            "/admin/v1/webhooks/{id}/deliveries/{delivery_id}/replay",
            post(admin::replay_webhook),
        )
        .route("/admin/v1/providers", get(admin::list_providers))
        .route("/admin/v1/providers/{id}", put(admin::put_provider))
        .route("/admin/v1/models/{name}", put(admin::put_model))
        .route("/admin/v1/models/{name}/prices", get(admin::price_history))
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async {
            api_error(
                StatusCode::NOT_FOUND,
                ApiError::invalid_request("not_found", "Unknown endpoint."),
            )
        })
        .with_state(state)
}

/// The OpenAPI document of every API the sidecar serves (kept in the repo as
/// `ledger/openapi.json`).
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// Every (method, path) the router serves, for checking the OpenAPI document
/// against the router; keep in step with [`router`].
pub const ROUTES: &[(&str, &str)] = &[
    ("post", AUTHORIZE_PATH),
    ("post", SETTLE_PATH),
    ("get", "/v1/models"),
    ("get", "/v1/user/balance"),
    ("post", "/v1/user/balance/deposit"),
    ("post", "/v1/user/charge"),
    ("get", "/v1/user/balance/topup"),
    ("get", "/v1/user/ledger"),
    ("get", "/v1/user/connect"),
    ("get", "/v1/user/disconnect"),
    ("get", "/pay/connect/{token}"),
    ("post", "/pay/connect/{token}"),
    ("get", "/pay/topup/{token}"),
    ("post", "/pay/topup/{token}"),
    ("get", "/admin/v1/paywalls"),
    ("post", "/admin/v1/paywalls"),
    ("patch", "/admin/v1/paywalls/{id}"),
    ("get", "/admin/v1/paywalls/{id}/keys"),
    ("post", "/admin/v1/paywalls/{id}/keys"),
    ("delete", "/admin/v1/paywalls/{id}/keys/{key_id}"),
    ("put", "/admin/v1/paywalls/{id}/limits"),
    ("get", "/admin/v1/paywalls/{id}/provider-keys"),
    ("put", "/admin/v1/paywalls/{id}/provider-keys/{provider}"),
    ("delete", "/admin/v1/paywalls/{id}/provider-keys/{provider}"),
    ("get", "/admin/v1/webhooks"),
    ("get", "/admin/v1/webhooks/{id}/deliveries"),
    (
        "post",
        "/admin/v1/webhooks/{id}/deliveries/{delivery_id}/replay",
    ),
    ("get", "/admin/v1/providers"),
    ("put", "/admin/v1/providers/{id}"),
    ("put", "/admin/v1/models/{name}"),
    ("get", "/admin/v1/models/{name}/prices"),
    ("get", "/openapi.json"),
    ("get", "/metrics"),
    ("get", "/healthz"),
];

/// Prometheus metrics. Served on the sidecar's own port only: Envoy's
/// public listener has no route to it.
async fn metrics() -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
        .into_response()
}

async fn openapi() -> Response {
    ([("content-type", "application/json")], OPENAPI).into_response()
}

/// An OpenAI-shaped error response.
pub fn api_error(status: StatusCode, error: ApiError) -> Response {
    (
        status,
        [("content-type", "application/json")],
        error.to_body(),
    )
        .into_response()
}

pub fn ledger_failure(e: LedgerError) -> Response {
    match e {
        LedgerError::NotFound(m) => api_error(
            StatusCode::NOT_FOUND,
            ApiError::invalid_request("not_found", m),
        ),
        LedgerError::Invalid(m) => api_error(
            StatusCode::BAD_REQUEST,
            ApiError::invalid_request("invalid_request", m),
        ),
        LedgerError::Conflict(m) => api_error(
            StatusCode::CONFLICT,
            ApiError::invalid_request("conflict", m),
        ),
        LedgerError::NotConnected(m) => api_error(
            StatusCode::FORBIDDEN,
            ApiError::new("permission_error", "user_not_connected", m),
        ),
        other => {
            if other.is_transient() {
                crate::metrics::count(crate::metrics::DATABASE_ERRORS, &["api"]);
            }
            tracing::error!(error = %other, transient = other.is_transient(), "ledger operation failed");
            api_error(
                StatusCode::SERVICE_UNAVAILABLE,
                ApiError::new(
                    "server_error",
                    "ledger_unavailable",
                    "The ledger is temporarily unavailable.",
                ),
            )
        }
    }
}

/// Parses a JSON body, answering a bad one with an OpenAI-shaped 400.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| {
        api_error(
            StatusCode::BAD_REQUEST,
            ApiError::invalid_request(
                "invalid_json",
                format!("We could not parse the JSON body: {e}"),
            ),
        )
    })
}

/// The paywall an app authenticates as with `Authorization: Bearer <paywall key>`.
pub async fn paywall_from(state: &AppState, headers: &HeaderMap) -> Result<Paywall, Response> {
    let unauthorized = |m: &str| api_error(StatusCode::UNAUTHORIZED, ApiError::authentication(m));
    let value = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unauthorized("You didn't provide an API key."))?;
    let key = value
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| unauthorized("You didn't provide an API key."))?;
    match catalog::paywall_by_key(&state.db, key).await {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(unauthorized("Incorrect API key provided.")),
        Err(e) => Err(ledger_failure(e)),
    }
}
