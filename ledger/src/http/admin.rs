//! Admin API (`/admin/v1/…`) for operators, with its own bearer token
//! (`TOLLGATE_ADMIN_TOKEN`, distinct from paywall keys). Never routed from the
//! public listener. Keys are shown once, when created.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use tollgate_protocol::ApiError;

use super::{api_error, ledger_failure, parse_json, Shared};
use crate::access::paywall_keys;
use crate::access::secrets::{constant_time_eq, sha256_hex};
use crate::admin;
use crate::catalog::provider_keys;
use crate::catalog::provider_registry;
use crate::config::ProviderSeed;
use crate::config::{LimitsSeed, ModelSeed};
use crate::outbox::webhooks;

fn check_admin(state: &Shared, headers: &HeaderMap) -> Result<(), Response> {
    let Some(expected) = &state.admin_token_hash else {
        return Err(api_error(
            StatusCode::NOT_FOUND,
            ApiError::invalid_request("not_found", "The admin API is disabled."),
        ));
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(&sha256_hex(given), expected) {
        Ok(())
    } else {
        Err(api_error(
            StatusCode::UNAUTHORIZED,
            ApiError::authentication("Invalid admin token."),
        ))
    }
}

macro_rules! admin_only {
    ($state:expr, $headers:expr) => {
        if let Err(r) = check_admin(&$state, &$headers) {
            return r;
        }
    };
}

pub async fn list_paywalls(State(state): State<Shared>, headers: HeaderMap) -> Response {
    admin_only!(state, headers);
    match admin::list_paywalls(&state.db).await {
        Ok(list) => Json(json!({"object": "list", "data": list})).into_response(),
        Err(e) => ledger_failure(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPaywall {
    id: String,
    name: Option<String>,
    mode: Option<String>,
}

pub async fn create_paywall(
    State(state): State<Shared>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    admin_only!(state, headers);
    let body: NewPaywall = match parse_json(&raw) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let name = body.name.clone().unwrap_or_else(|| body.id.clone());
    let mode = body.mode.as_deref().unwrap_or("isolated");
    match admin::create_paywall(&state.db, &body.id, &name, mode).await {
        Ok((p, key)) => (
            StatusCode::CREATED,
            Json(json!({"object": "paywall", "id": p.id, "name": p.name, "mode": p.mode, "key": key})),
        )
            .into_response(),
        Err(e) => ledger_failure(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaywallPatch {
    name: Option<String>,
    mode: Option<String>,
}

pub async fn update_paywall(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    raw: Bytes,
) -> Response {
    admin_only!(state, headers);
    let body: PaywallPatch = match parse_json(&raw) {
        Ok(b) => b,
        Err(r) => return r,
    };
    match admin::update_paywall(&state.db, &id, body.name.as_deref(), body.mode.as_deref()).await {
        Ok(p) => Json(p).into_response(),
        Err(e) => ledger_failure(e),
    }
}

pub async fn list_keys(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    admin_only!(state, headers);
    match paywall_keys::list(&state.db, &id).await {
        Ok(keys) => Json(json!({"object": "list", "data": keys})).into_response(),
        Err(e) => ledger_failure(e),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    label: Option<String>,
}

pub async fn create_key(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    raw: Bytes,
) -> Response {
    admin_only!(state, headers);
    let body: NewKey = if raw.is_empty() {
        NewKey::default()
    } else {
        match parse_json(&raw) {
            Ok(b) => b,
            Err(r) => return r,
        }
    };
    let label = body.label.unwrap_or_else(|| "admin".into());
    match paywall_keys::create(&state.db, &id, &label).await {
        Ok(key) => (StatusCode::CREATED, Json(key)).into_response(),
        Err(e) => ledger_failure(e),
    }
}

pub async fn revoke_key(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path((id, key_id)): Path<(String, String)>,
) -> Response {
    admin_only!(state, headers);
    match paywall_keys::revoke(&state.db, &id, &key_id).await {
        Ok(true) => Json(json!({"id": key_id, "revoked": true})).into_response(),
        Ok(false) => api_error(
            StatusCode::NOT_FOUND,
            ApiError::invalid_request("not_found", "No such live key."),
        ),
        Err(e) => ledger_failure(e),
    }
}

pub async fn put_limits(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    raw: Bytes,
) -> Response {
    admin_only!(state, headers);
    let body: LimitsSeed = match parse_json(&raw) {
        Ok(b) => b,
        Err(r) => return r,
    };
    match admin::set_limits(&state.db, &id, &body).await {
        Ok(()) => Json(json!({"paywall": id, "limits": body})).into_response(),
        Err(e) => ledger_failure(e),
    }
}

pub async fn put_model(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(name): Path<String>,
    raw: Bytes,
) -> Response {
    admin_only!(state, headers);
    let mut body: ModelSeed = match parse_json(&raw) {
        Ok(b) => b,
        Err(r) => return r,
    };
    body.name = name;
    match admin::put_model(&state.db, &body).await {
        Ok(price) => Json(json!({"model": body.name, "price": price})).into_response(),
        Err(e) => ledger_failure(e),
    }
}

pub async fn price_history(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    admin_only!(state, headers);
    match admin::price_history(&state.db, &name).await {
        Ok(list) if !list.is_empty() => {
            Json(json!({"object": "list", "data": list})).into_response()
        }
        Ok(_) => api_error(
            StatusCode::NOT_FOUND,
            ApiError::invalid_request("model_not_found", "No such model."),
        ),
        Err(e) => ledger_failure(e),
    }
}

pub async fn list_provider_keys(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    admin_only!(state, headers);
    match provider_keys::list(&state.db, &id).await {
        Ok(keys) => Json(json!({"object": "list", "data": keys})).into_response(),
        Err(e) => ledger_failure(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewProviderKey {
    key: String,
}

/// Stores or rotates a paywall's own key for a provider. The answer
/// describes the stored key; the key itself is never returned.
pub async fn put_provider_key(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path((id, provider)): Path<(String, String)>,
    raw: Bytes,
) -> Response {
    admin_only!(state, headers);
    let body: NewProviderKey = match parse_json(&raw) {
        Ok(b) => b,
        Err(r) => return r,
    };
    match provider_keys::set(
        &state.db,
        &state.settings.keyring,
        &id,
        &provider,
        &body.key,
    )
    .await
    {
        Ok(info) => Json(info).into_response(),
        Err(e) => ledger_failure(e),
    }
}

pub async fn delete_provider_key(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path((id, provider)): Path<(String, String)>,
) -> Response {
    admin_only!(state, headers);
    match provider_keys::delete(&state.db, &id, &provider).await {
        Ok(true) => {
            Json(json!({"paywall": id, "provider": provider, "deleted": true})).into_response()
        }
        Ok(false) => api_error(
            StatusCode::NOT_FOUND,
            ApiError::invalid_request("not_found", "This paywall has no key for this provider."),
        ),
        Err(e) => ledger_failure(e),
    }
}

pub async fn list_providers(State(state): State<Shared>, headers: HeaderMap) -> Response {
    admin_only!(state, headers);
    match provider_registry::list_providers(&state.db).await {
        Ok(list) => Json(json!({"object": "list", "data": list})).into_response(),
        Err(e) => ledger_failure(e),
    }
}

/// Creates or updates a provider (the fields of a `[[providers]]` entry; the
/// id comes from the path). Requests need an Envoy cluster of that name: a
/// new one means regenerating Envoy's provider config.
pub async fn put_provider(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    raw: Bytes,
) -> Response {
    admin_only!(state, headers);
    let fields: serde_json::Value = match parse_json(&raw) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let seed = match ProviderSeed::from_json_fields(&id, fields) {
        Ok(s) => s,
        Err(e) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                ApiError::invalid_request("invalid_request", format!("Bad provider: {e}")),
            )
        }
    };
    match provider_registry::put(&state.db, &seed).await {
        Ok(info) => Json(info).into_response(),
        Err(e) => ledger_failure(e),
    }
}

pub async fn list_webhooks(State(state): State<Shared>, headers: HeaderMap) -> Response {
    admin_only!(state, headers);
    match webhooks::list_endpoints(&state.db).await {
        Ok(list) => Json(json!({"object": "list", "data": list})).into_response(),
        Err(e) => ledger_failure(e),
    }
}

#[derive(Deserialize)]
pub struct DeliveriesQuery {
    limit: Option<i64>,
}

/// An endpoint's delivery log, newest first.
pub async fn webhook_deliveries(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<DeliveriesQuery>,
) -> Response {
    admin_only!(state, headers);
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    match webhooks::deliveries(&state.db, &id, limit).await {
        Ok(list) => Json(json!({"object": "list", "data": list})).into_response(),
        Err(e) => ledger_failure(e),
    }
}

/// Sends a delivery again: it becomes pending and due now.
pub async fn replay_webhook(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path((id, delivery)): Path<(String, String)>,
) -> Response {
    admin_only!(state, headers);
    match webhooks::replay(&state.db, &id, &delivery).await {
        Ok(true) => Json(json!({"id": delivery, "state": "pending"})).into_response(),
        Ok(false) => api_error(
            StatusCode::NOT_FOUND,
            ApiError::invalid_request("not_found", "No such delivery on this endpoint."),
        ),
        Err(e) => ledger_failure(e),
    }
}
