//! The sidecar's HTTP surface: the internal API the filter calls (secret
//! required, never routed from the public listener), the public API apps call
//! with their paywall key, the admin API, the end-user pages behind links, and
//! the Stripe webhook.
//!
//! Every route is registered through `utoipa_axum::routes!` from a handler's
//! `#[utoipa::path]`: the router and the OpenAPI document served at
//! `/openapi.json` come from the same annotations, so a route cannot exist
//! undocumented (`tests/openapi.rs` checks both directions).

// Handlers return `Result<_, Response>` so an early error is just `?`-style
// control flow; the size of axum's Response in the Err arm is irrelevant here.
#![allow(clippy::result_large_err)]

mod admin;
mod auth;
mod docs;
mod errors;
mod idempotent;
mod internal;
mod meta;
mod movements;
mod pages;
mod public;
pub mod schemas;
mod stripe_webhook;
mod topup;

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::Router;
use tollgate_protocol::ApiError;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use errors::api_error;

use crate::db::Db;
use crate::settings::Settings;

pub struct AppState {
    pub db: Db,
    pub settings: Settings,
    pub internal_secret: String,
    /// SHA-256 of the admin token; None disables the admin API.
    pub admin_token_hash: Option<String>,
}

pub type Shared = Arc<AppState>;

/// Every route with its documentation; nothing is routed any other way.
fn documented_routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::with_openapi(docs::ApiDoc::openapi())
        .routes(routes!(internal::authorize))
        .routes(routes!(internal::settle))
        .routes(routes!(internal::settle_batch))
        .routes(routes!(public::models))
        .routes(routes!(public::balance))
        .routes(routes!(movements::deposit))
        .routes(routes!(movements::charge))
        .routes(routes!(public::topup))
        .routes(routes!(public::ledger_entries))
        .routes(routes!(public::connect))
        .routes(routes!(public::disconnect))
        .routes(routes!(pages::consent_page, pages::consent_accept))
        .routes(routes!(topup::topup_page, topup::topup_pay))
        .routes(routes!(topup::topup_success))
        .routes(routes!(topup::topup_cancel))
        .routes(routes!(stripe_webhook::stripe_webhook))
        .routes(routes!(admin::list_paywalls, admin::create_paywall))
        .routes(routes!(admin::update_paywall))
        .routes(routes!(admin::list_keys, admin::create_key))
        .routes(routes!(admin::revoke_key))
        .routes(routes!(admin::put_limits))
        .routes(routes!(admin::list_provider_keys))
        .routes(routes!(admin::put_provider_key, admin::delete_provider_key))
        .routes(routes!(admin::list_webhooks))
        .routes(routes!(admin::webhook_deliveries))
        .routes(routes!(admin::replay_webhook))
        .routes(routes!(admin::list_providers))
        .routes(routes!(admin::put_provider))
        .routes(routes!(admin::put_model))
        .routes(routes!(admin::price_history))
        .routes(routes!(meta::openapi_json))
        .routes(routes!(meta::metrics))
        .routes(routes!(meta::healthz))
}

/// The OpenAPI document of every API the sidecar serves, plus the operations
/// Envoy's filter answers on the same public paths (marked `x-served-by`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes_and_document().1
}

/// The router and its whole document, from the one set of annotations.
fn routes_and_document() -> (Router<Shared>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = documented_routes().split_for_parts();
    doc.merge(docs::envoy_served());
    (router, doc)
}

pub fn router(state: Shared) -> Router {
    let (router, doc) = routes_and_document();
    let document = Bytes::from(doc.to_json().unwrap_or_else(|_| "{}".to_string()));
    router
        .layer(axum::Extension(meta::Document(document)))
        .fallback(|| async {
            api_error(
                StatusCode::NOT_FOUND,
                ApiError::invalid_request("not_found", "Unknown endpoint."),
            )
        })
        .layer(axum::middleware::from_fn(meta::count_request))
        .with_state(state)
}
