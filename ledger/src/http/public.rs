//! Public API for apps (server-side, with their paywall key). A paywall only
//! ever sees its own users: wallets are keyed by (paywall, user).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tollgate_protocol::{format_micros, ApiError, PaywallMode};

use super::auth::PaywallAuth;
use super::errors::{api_error, bad_request, Answer};
use super::schemas::{
    Amount, Balance, Connection, EntriesQuery, EntryList, ErrorBody, Model, ModelList, Pricing,
    TopupLink, UserQuery,
};
use super::Shared;
use crate::access::consent;
use crate::catalog;
use crate::error::LedgerError;
use crate::money::book;
use crate::money::deposits;
use crate::money::wallets::{self, WalletFor};

const MAX_USER_LEN: usize = 256;

pub(super) fn require_user(user: Option<&str>) -> Result<String, Response> {
    match user.map(str::trim) {
        Some(u) if !u.is_empty() && u.len() <= MAX_USER_LEN && !u.chars().any(char::is_control) => {
            Ok(u.to_string())
        }
        _ => Err(api_error(
            StatusCode::BAD_REQUEST,
            ApiError::invalid_request("missing_user", "A valid `user` is required.")
                .with_param("user"),
        )),
    }
}

pub(super) fn amount(micros: i64) -> Amount {
    Amount(format_micros(micros))
}

pub(super) fn balance_of(user: &str, b: book::Balance) -> Balance {
    Balance {
        object: "balance",
        user: user.to_string(),
        balance: amount(b.posted),
        held: amount(b.held),
        available: amount(b.available),
    }
}

/// A user's balance.
#[utoipa::path(get, path = "/v1/user/balance", tag = "public",
    security(("paywallKey" = [])), params(UserQuery),
    responses(
        (status = 200, description = "Balance", body = Balance),
        (status = 400, description = "Missing user", body = ErrorBody),
        (status = 401, description = "Missing or unknown key", body = ErrorBody),
        (status = 404, description = "Unknown user", body = ErrorBody),
    ))]
pub async fn balance(
    PaywallAuth(paywall): PaywallAuth,
    State(state): State<Shared>,
    Query(q): Query<UserQuery>,
) -> Answer {
    let user = require_user(q.user.as_deref())?;
    let wallet = wallet_of(&state, &paywall.id, &user).await?;
    match book::find_balance(&state.db, &wallet).await? {
        Some(b) => Ok(Json(balance_of(&user, b)).into_response()),
        None => Err(unknown_user()),
    }
}

/// The wallet this paywall may read for `user`; a shared-mode user who has not
/// authorized the paywall is as unknown to it as another paywall's user.
async fn wallet_of(state: &Shared, paywall_id: &str, user: &str) -> Result<String, Response> {
    match wallets::wallet_for(&state.db, paywall_id, user).await? {
        WalletFor::Ready(w) => Ok(w),
        WalletFor::NeedsConsent => Err(unknown_user()),
    }
}

/// A user this paywall has never seen. Another paywall's users look the same:
/// a paywall key sees only its own users.
fn unknown_user() -> Response {
    api_error(
        StatusCode::NOT_FOUND,
        ApiError::invalid_request("user_not_found", "No such user for this paywall.")
            .with_param("user"),
    )
}

/// A single-use, expiring top-up link.
#[utoipa::path(get, path = "/v1/user/balance/topup", tag = "public",
    security(("paywallKey" = [])), params(UserQuery),
    responses(
        (status = 200, description = "Link", body = TopupLink),
        (status = 400, description = "Missing user", body = ErrorBody),
        (status = 401, description = "Missing or unknown key", body = ErrorBody),
    ))]
pub async fn topup(
    PaywallAuth(paywall): PaywallAuth,
    State(state): State<Shared>,
    Query(q): Query<UserQuery>,
) -> Answer {
    let user = require_user(q.user.as_deref())?;
    let mut tx = state.db.pool.begin().await.map_err(LedgerError::from)?;
    let link = deposits::create_topup_link(&mut tx, &state.settings, &paywall.id, &user).await?;
    tx.commit().await.map_err(LedgerError::from)?;
    Ok(Json(TopupLink {
        object: "topup_link",
        user,
        url: link.url,
        expires_at: link.expires_at / 1000,
    })
    .into_response())
}

/// Models this paywall can use, with current prices.
#[utoipa::path(get, path = "/v1/models", tag = "public",
    security(("paywallKey" = [])),
    responses(
        (status = 200, description = "Models", body = ModelList),
        (status = 401, description = "Missing or unknown key", body = ErrorBody),
    ))]
pub async fn models(PaywallAuth(paywall): PaywallAuth, State(state): State<Shared>) -> Answer {
    let data = catalog::list_models(&state.db, &paywall.id)
        .await?
        .into_iter()
        .map(|(name, provider, p)| Model {
            id: name,
            object: "model",
            created: 0,
            owned_by: provider,
            pricing: Pricing {
                currency_unit: Amount("1.000000".into()),
                input_per_million: amount(p.input_per_m),
                cached_input_per_million: amount(p.cached_input_per_m),
                output_per_million: amount(p.output_per_m),
                markup_bps: p.markup_bps,
                min_charge: amount(p.min_charge),
                version: p.version,
            },
        })
        .collect();
    Ok(Json(ModelList {
        object: "list",
        data,
    })
    .into_response())
}

/// A user's ledger entries (this paywall's), paginated.
#[utoipa::path(get, path = "/v1/user/ledger", tag = "public",
    security(("paywallKey" = [])), params(EntriesQuery),
    responses(
        (status = 200, description = "Entries, oldest first", body = EntryList),
        (status = 400, description = "Missing user", body = ErrorBody),
        (status = 401, description = "Missing or unknown key", body = ErrorBody),
        (status = 404, description = "Unknown user", body = ErrorBody),
    ))]
pub async fn ledger_entries(
    PaywallAuth(paywall): PaywallAuth,
    State(state): State<Shared>,
    Query(q): Query<EntriesQuery>,
) -> Answer {
    let user = require_user(q.user.as_deref())?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let wallet = wallet_of(&state, &paywall.id, &user).await?;
    if book::find_balance(&state.db, &wallet).await?.is_none() {
        return Err(unknown_user());
    }
    let after = q.after.unwrap_or(0);
    let mut data = deposits::entries(&state.db, &wallet, &paywall.id, after, limit + 1).await?;
    let has_more = data.len() as i64 > limit;
    data.truncate(limit as usize);
    let next_after = has_more.then(|| data.last().map(|e| e.seq)).flatten();
    Ok(Json(EntryList {
        object: "list",
        data,
        has_more,
        next_after,
    })
    .into_response())
}

fn connection(user: String, mode: PaywallMode, connected: bool) -> Connection {
    Connection {
        object: "connection",
        user,
        mode,
        connected,
        connected_at: None,
        url: None,
        expires_at: None,
        revoked: None,
    }
}

/// Shared mode: whether the user authorized this paywall; if not, an authorization link.
#[utoipa::path(get, path = "/v1/user/connect", tag = "public",
    security(("paywallKey" = [])), params(UserQuery),
    responses(
        (status = 200, description = "Connection state", body = Connection),
        (status = 400, description = "Missing user", body = ErrorBody),
        (status = 401, description = "Missing or unknown key", body = ErrorBody),
    ))]
pub async fn connect(
    PaywallAuth(paywall): PaywallAuth,
    State(state): State<Shared>,
    Query(q): Query<UserQuery>,
) -> Answer {
    let user = require_user(q.user.as_deref())?;
    if paywall.mode != PaywallMode::Shared {
        return Ok(Json(connection(user, paywall.mode, true)).into_response());
    }
    let answer = match consent::connected_since(&state.db, &paywall.id, &user).await? {
        Some(since) => Connection {
            connected_at: Some(since / 1000),
            ..connection(user, PaywallMode::Shared, true)
        },
        None => {
            let mut tx = state.db.pool.begin().await.map_err(LedgerError::from)?;
            let link = consent::create_link(&mut tx, &state.settings, &paywall.id, &user).await?;
            tx.commit().await.map_err(LedgerError::from)?;
            Connection {
                url: Some(link.url),
                expires_at: Some(link.expires_at / 1000),
                ..connection(user, PaywallMode::Shared, false)
            }
        }
    };
    Ok(Json(answer).into_response())
}

/// Shared mode: revoke the user's authorization of this paywall.
#[utoipa::path(get, path = "/v1/user/disconnect", tag = "public",
    security(("paywallKey" = [])), params(UserQuery),
    responses(
        (status = 200, description = "Disconnected", body = Connection),
        (status = 400, description = "Missing user, or not a shared-mode paywall", body = ErrorBody),
        (status = 401, description = "Missing or unknown key", body = ErrorBody),
    ))]
pub async fn disconnect(
    PaywallAuth(paywall): PaywallAuth,
    State(state): State<Shared>,
    Query(q): Query<UserQuery>,
) -> Answer {
    let user = require_user(q.user.as_deref())?;
    if paywall.mode != PaywallMode::Shared {
        return Err(bad_request(
            "not_shared_mode",
            "This paywall keeps isolated wallets; there is nothing to disconnect.",
        ));
    }
    let revoked = consent::disconnect(&state.db, &paywall.id, &user).await?;
    Ok(Json(Connection {
        revoked: Some(revoked),
        ..connection(user, PaywallMode::Shared, false)
    })
    .into_response())
}
