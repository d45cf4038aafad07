//! Admin API (`/admin/v1/…`) for operators, with its own bearer token
//! (`TOLLGATE_ADMIN_TOKEN`, distinct from paywall keys; see
//! [`super::auth::AdminAuth`]). Never routed from the public listener. Keys
//! are shown once, when created.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::AdminAuth;
use super::errors::{bad_request, not_found, parse_json, Answer};
use super::schemas::{ErrorBody, List};
use super::Shared;
use crate::access::paywall_keys::{self, CreatedKey, KeyInfo};
use crate::admin::{self, PaywallInfo};
use crate::catalog::provider_keys::{self, ProviderKeyInfo};
use crate::catalog::provider_registry::{self, ProviderInfo};
use crate::config::{LimitsSeed, ModelSeed, ProviderSeed};
use crate::outbox::webhooks::{self, DeliveryInfo, EndpointInfo};
use crate::pricing::PriceRule;

/// List paywalls.
#[utoipa::path(get, path = "/admin/v1/paywalls", tag = "admin", security(("adminToken" = [])),
    responses(
        (status = 200, description = "Paywalls", body = List<PaywallInfo>),
        (status = 401, description = "Invalid admin token", body = ErrorBody),
    ))]
pub async fn list_paywalls(_: AdminAuth, State(state): State<Shared>) -> Answer {
    let list = admin::list_paywalls(&state.db).await?;
    Ok(Json(List::of(list)).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPaywall {
    id: String,
    name: Option<String>,
    /// `isolated` (default) or `shared`.
    mode: Option<String>,
}

/// A new paywall with its first key (shown only this once).
#[derive(Serialize, ToSchema)]
pub struct CreatedPaywall {
    #[schema(value_type = String, example = "paywall")]
    object: &'static str,
    id: String,
    name: String,
    mode: tollgate_protocol::PaywallMode,
    /// The first key (shown only this once).
    key: CreatedKey,
}

/// Create a paywall and its first key (shown once).
#[utoipa::path(post, path = "/admin/v1/paywalls", tag = "admin", security(("adminToken" = [])),
    request_body = NewPaywall,
    responses(
        (status = 201, description = "Created", body = CreatedPaywall),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "Invalid admin token", body = ErrorBody),
        (status = 409, description = "A paywall with this id exists", body = ErrorBody),
    ))]
pub async fn create_paywall(_: AdminAuth, State(state): State<Shared>, raw: Bytes) -> Answer {
    let body: NewPaywall = parse_json(&raw)?;
    let name = body.name.clone().unwrap_or_else(|| body.id.clone());
    let mode = body.mode.as_deref().unwrap_or("isolated");
    let (p, key) = admin::create_paywall(&state.db, &body.id, &name, mode).await?;
    let created = CreatedPaywall {
        object: "paywall",
        id: p.id,
        name: p.name,
        mode: p.mode,
        key,
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaywallPatch {
    name: Option<String>,
    mode: Option<String>,
}

/// Change a paywall's name or mode.
#[utoipa::path(patch, path = "/admin/v1/paywalls/{id}", tag = "admin", security(("adminToken" = [])),
    params(("id" = String, Path, description = "Paywall id")),
    request_body = PaywallPatch,
    responses(
        (status = 200, description = "The paywall", body = PaywallInfo),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "Invalid admin token", body = ErrorBody),
        (status = 404, description = "No such paywall", body = ErrorBody),
    ))]
pub async fn update_paywall(
    _: AdminAuth,
    State(state): State<Shared>,
    Path(id): Path<String>,
    raw: Bytes,
) -> Answer {
    let body: PaywallPatch = parse_json(&raw)?;
    let p =
        admin::update_paywall(&state.db, &id, body.name.as_deref(), body.mode.as_deref()).await?;
    Ok(Json(p).into_response())
}

/// List a paywall's keys (never the keys themselves).
#[utoipa::path(get, path = "/admin/v1/paywalls/{id}/keys", tag = "admin", security(("adminToken" = [])),
    params(("id" = String, Path, description = "Paywall id")),
    responses(
        (status = 200, description = "Keys", body = List<KeyInfo>),
        (status = 401, description = "Invalid admin token", body = ErrorBody),
    ))]
pub async fn list_keys(
    _: AdminAuth,
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Answer {
    let keys = paywall_keys::list(&state.db, &id).await?;
    Ok(Json(List::of(keys)).into_response())
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// Defaults to `admin`.
    label: Option<String>,
}

/// Create a key (shown once).
#[utoipa::path(post, path = "/admin/v1/paywalls/{id}/keys", tag = "admin", security(("adminToken" = [])),
    params(("id" = String, Path, description = "Paywall id")),
    request_body(content = Option<NewKey>, description = "Optional; an empty body is allowed"),
    responses(
        (status = 201, description = "Created", body = CreatedKey),
        (status = 401, description = "Invalid admin token", body = ErrorBody),
        (status = 404, description = "No such paywall", body = ErrorBody),
    ))]
pub async fn create_key(
    _: AdminAuth,
    State(state): State<Shared>,
    Path(id): Path<String>,
    raw: Bytes,
) -> Answer {
    let body: NewKey = if raw.is_empty() {
        NewKey::default()
    } else {
        parse_json(&raw)?
    };
    let label = body.label.unwrap_or_else(|| "admin".into());
    let key = paywall_keys::create(&state.db, &id, &label).await?;
    Ok((StatusCode::CREATED, Json(key)).into_response())
}

#[derive(Serialize, ToSchema)]
pub struct Revoked {
    id: String,
    revoked: bool,
}

/// Revoke a key.
#[utoipa::path(delete, path = "/admin/v1/paywalls/{id}/keys/{key_id}", tag = "admin", security(("adminToken" = [])),
    params(("id" = String, Path, description = "Paywall id"), ("key_id" = String, Path, description = "Key id")),
    responses(
        (status = 200, description = "Revoked", body = Revoked),
        (status = 401, description = "Invalid admin token", body = ErrorBody),
        (status = 404, description = "No such live key", body = ErrorBody),
    ))]
pub async fn revoke_key(
    _: AdminAuth,
    State(state): State<Shared>,
    Path((id, key_id)): Path<(String, String)>,
) -> Answer {
    if !paywall_keys::revoke(&state.db, &id, &key_id).await? {
        return Err(not_found("No such live key."));
    }
    Ok(Json(Revoked {
        id: key_id,
        revoked: true,
    })
    .into_response())
}

#[derive(Serialize, ToSchema)]
pub struct PaywallLimits {
    paywall: String,
    limits: LimitsSeed,
}

/// Replace a paywall's per-user limits.
#[utoipa::path(put, path = "/admin/v1/paywalls/{id}/limits", tag = "admin", security(("adminToken" = [])),
    params(("id" = String, Path, description = "Paywall id")),
    request_body = LimitsSeed,
    responses(
        (status = 200, description = "The limits now in force", body = PaywallLimits),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "Invalid admin token", body = ErrorBody),
        (status = 404, description = "No such paywall", body = ErrorBody),
    ))]
pub async fn put_limits(
    _: AdminAuth,
    State(state): State<Shared>,
    Path(id): Path<String>,
    raw: Bytes,
) -> Answer {
    let limits: LimitsSeed = parse_json(&raw)?;
    admin::set_limits(&state.db, &id, &limits).await?;
    Ok(Json(PaywallLimits {
        paywall: id,
        limits,
    })
    .into_response())
}

#[derive(Serialize, ToSchema)]
pub struct ModelPrice {
    model: String,
    price: PriceRule,
}

/// Create or update a model, its route and price (a changed price is a new version).
#[utoipa::path(put, path = "/admin/v1/models/{name}", tag = "admin", security(("adminToken" = [])),
    params(("name" = String, Path, description = "Model name (or glob such as `gpt-4o*`)")),
    request_body = ModelSeed,
    responses(
        (status = 200, description = "The model's current price", body = ModelPrice),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "Invalid admin token", body = ErrorBody),
    ))]
pub async fn put_model(
    _: AdminAuth,
    State(state): State<Shared>,
    Path(name): Path<String>,
    raw: Bytes,
) -> Answer {
    let mut body: ModelSeed = parse_json(&raw)?;
    body.name = name;
    let price = admin::put_model(&state.db, &body).await?;
    Ok(Json(ModelPrice {
        model: body.name,
        price,
    })
    .into_response())
}

/// Every version of a model's price.
#[utoipa::path(get, path = "/admin/v1/models/{name}/prices", tag = "admin", security(("adminToken" = [])),
    params(("name" = String, Path, description = "Model name")),
    responses(
        (status = 200, description = "Versions, newest first", body = List<PriceRule>),
        (status = 401, description = "Invalid admin token", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody),
    ))]
pub async fn price_history(
    _: AdminAuth,
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Answer {
    let list = admin::price_history(&state.db, &name).await?;
    if list.is_empty() {
        return Err(super::errors::api_error(
            StatusCode::NOT_FOUND,
            tollgate_protocol::ApiError::invalid_request("model_not_found", "No such model."),
        ));
    }
    Ok(Json(List::of(list)).into_response())
}

/// List the provider keys a paywall brought (BYOK); never the keys themselves.
#[utoipa::path(get, path = "/admin/v1/paywalls/{id}/provider-keys", tag = "admin", security(("adminToken" = [])),
    params(("id" = String, Path, description = "Paywall id")),
    responses(
        (status = 200, description = "Provider keys (fingerprints only)", body = List<ProviderKeyInfo>),
        (status = 401, description = "Invalid admin token", body = ErrorBody),
    ))]
pub async fn list_provider_keys(
    _: AdminAuth,
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Answer {
    let keys = provider_keys::list(&state.db, &id).await?;
    Ok(Json(List::of(keys)).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProviderKey {
    /// The provider's API key; sealed with the master key, never shown again.
    key: String,
}

/// Store or rotate the paywall's own key for a provider (sealed with the
/// master key; shown never again). The answer describes the stored key.
#[utoipa::path(put, path = "/admin/v1/paywalls/{id}/provider-keys/{provider}", tag = "admin", security(("adminToken" = [])),
    params(("id" = String, Path, description = "Paywall id"), ("provider" = String, Path, description = "Provider id")),
    request_body = NewProviderKey,
    responses(
        (status = 200, description = "The stored key's description", body = ProviderKeyInfo),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "Invalid admin token", body = ErrorBody),
        (status = 404, description = "No such paywall or provider", body = ErrorBody),
    ))]
pub async fn put_provider_key(
    _: AdminAuth,
    State(state): State<Shared>,
    Path((id, provider)): Path<(String, String)>,
    raw: Bytes,
) -> Answer {
    let body: NewProviderKey = parse_json(&raw)?;
    let keyring = &state.settings.keyring;
    let info = provider_keys::set(&state.db, keyring, &id, &provider, &body.key).await?;
    Ok(Json(info).into_response())
}

#[derive(Serialize, ToSchema)]
pub struct DeletedProviderKey {
    paywall: String,
    provider: String,
    deleted: bool,
}

/// Delete the paywall's key for a provider (its requests then use the operator's key, if any).
#[utoipa::path(delete, path = "/admin/v1/paywalls/{id}/provider-keys/{provider}", tag = "admin", security(("adminToken" = [])),
    params(("id" = String, Path, description = "Paywall id"), ("provider" = String, Path, description = "Provider id")),
    responses(
        (status = 200, description = "Deleted", body = DeletedProviderKey),
        (status = 401, description = "Invalid admin token", body = ErrorBody),
        (status = 404, description = "This paywall has no key for this provider", body = ErrorBody),
    ))]
pub async fn delete_provider_key(
    _: AdminAuth,
    State(state): State<Shared>,
    Path((id, provider)): Path<(String, String)>,
) -> Answer {
    if !provider_keys::delete(&state.db, &id, &provider).await? {
        return Err(not_found("This paywall has no key for this provider."));
    }
    Ok(Json(DeletedProviderKey {
        paywall: id,
        provider,
        deleted: true,
    })
    .into_response())
}

/// List providers (where each operator key comes from; never a key).
#[utoipa::path(get, path = "/admin/v1/providers", tag = "admin", security(("adminToken" = [])),
    responses(
        (status = 200, description = "Providers", body = List<ProviderInfo>),
        (status = 401, description = "Invalid admin token", body = ErrorBody),
    ))]
pub async fn list_providers(_: AdminAuth, State(state): State<Shared>) -> Answer {
    let list = provider_registry::list_providers(&state.db).await?;
    Ok(Json(List::of(list)).into_response())
}

/// Create or update a provider (the fields of a `[[providers]]` entry; the
/// id comes from the path). Requests need an Envoy cluster of that name: a
/// new one means regenerating Envoy's provider config.
#[utoipa::path(put, path = "/admin/v1/providers/{id}", tag = "admin", security(("adminToken" = [])),
    params(("id" = String, Path, description = "Provider id")),
    request_body(content = Object, description = "The fields of a `[[providers]]` entry of the TOML (kind, base_url, cluster, api_key_env or api_key_file, …)"),
    responses(
        (status = 200, description = "The provider", body = ProviderInfo),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "Invalid admin token", body = ErrorBody),
    ))]
pub async fn put_provider(
    _: AdminAuth,
    State(state): State<Shared>,
    Path(id): Path<String>,
    raw: Bytes,
) -> Answer {
    let fields: serde_json::Value = parse_json(&raw)?;
    let seed = ProviderSeed::from_json_fields(&id, fields)
        .map_err(|e| bad_request("invalid_request", format!("Bad provider: {e}")))?;
    let info = provider_registry::put(&state.db, &seed).await?;
    Ok(Json(info).into_response())
}

/// List webhook endpoints (configured in the TOML) with their delivery counts; never a secret.
#[utoipa::path(get, path = "/admin/v1/webhooks", tag = "admin", security(("adminToken" = [])),
    responses(
        (status = 200, description = "Endpoints", body = List<EndpointInfo>),
        (status = 401, description = "Invalid admin token", body = ErrorBody),
    ))]
pub async fn list_webhooks(_: AdminAuth, State(state): State<Shared>) -> Answer {
    let list = webhooks::list_endpoints(&state.db).await?;
    Ok(Json(List::of(list)).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// How many, newest first.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<i64>,
}

/// An endpoint's delivery log, newest first: state, attempts, next attempt, last status and error.
#[utoipa::path(get, path = "/admin/v1/webhooks/{id}/deliveries", tag = "admin", security(("adminToken" = [])),
    params(("id" = String, Path, description = "Endpoint id"), DeliveriesQuery),
    responses(
        (status = 200, description = "Deliveries", body = List<DeliveryInfo>),
        (status = 401, description = "Invalid admin token", body = ErrorBody),
    ))]
pub async fn webhook_deliveries(
    _: AdminAuth,
    State(state): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<DeliveriesQuery>,
) -> Answer {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let list = webhooks::deliveries(&state.db, &id, limit).await?;
    Ok(Json(List::of(list)).into_response())
}

#[derive(Serialize, ToSchema)]
pub struct Replayed {
    id: String,
    /// Always `pending`: due now.
    state: String,
}

/// Send a delivery again (it becomes pending and due now).
#[utoipa::path(post, path = "/admin/v1/webhooks/{id}/deliveries/{delivery_id}/replay", tag = "admin", security(("adminToken" = [])),
    params(("id" = String, Path, description = "Endpoint id"), ("delivery_id" = String, Path, description = "Delivery id")),
    responses(
        (status = 200, description = "Pending again", body = Replayed),
        (status = 401, description = "Invalid admin token", body = ErrorBody),
        (status = 404, description = "No such delivery on this endpoint", body = ErrorBody),
    ))]
pub async fn replay_webhook(
    _: AdminAuth,
    State(state): State<Shared>,
    Path((id, delivery)): Path<(String, String)>,
) -> Answer {
    if !webhooks::replay(&state.db, &id, &delivery).await? {
        return Err(not_found("No such delivery on this endpoint."));
    }
    Ok(Json(Replayed {
        id: delivery,
        state: "pending".into(),
    })
    .into_response())
}
