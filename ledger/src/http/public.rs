//! Public API for apps (server-side, with their paywall key). A paywall only
//! ever sees its own users: wallets are keyed by (paywall, user).

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use tollgate_protocol::{format_micros, ApiError};

use super::{api_error, ledger_failure, paywall_from, Shared};
use crate::access::consent;
use crate::catalog::{self, Paywall};
use crate::money::book::{self, Balance};
use crate::money::deposits;
use crate::money::wallets::{self, WalletFor};

const MAX_USER_LEN: usize = 256;

#[derive(Deserialize)]
pub struct UserQuery {
    user: Option<String>,
}

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

/// The calling paywall and the user a read concerns (wallets are per paywall).
async fn paywall_and_user(
    state: &Shared,
    headers: &HeaderMap,
    user: Option<&str>,
) -> Result<(Paywall, String), Response> {
    let paywall = paywall_from(state, headers).await?;
    Ok((paywall, require_user(user)?))
}

pub(super) fn balance_json(user: &str, b: Balance) -> serde_json::Value {
    json!({
        "object": "balance",
        "user": user,
        "balance": format_micros(b.posted),
        "held": format_micros(b.held),
        "available": format_micros(b.available),
    })
}

pub async fn balance(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<UserQuery>,
) -> Response {
    let (paywall, user) = match paywall_and_user(&state, &headers, q.user.as_deref()).await {
        Ok(pu) => pu,
        Err(r) => return r,
    };
    let wallet = match wallet_of(&state, &paywall.id, &user).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    match book::find_balance(&state.db, &wallet).await {
        Ok(Some(b)) => Json(balance_json(&user, b)).into_response(),
        Ok(None) => unknown_user(),
        Err(e) => ledger_failure(e),
    }
}

/// The wallet this paywall may read for `user`; a shared-mode user who has not
/// authorized the paywall is as unknown to it as another paywall's user.
async fn wallet_of(state: &Shared, paywall_id: &str, user: &str) -> Result<String, Response> {
    match wallets::wallet_for(&state.db, paywall_id, user).await {
        Ok(WalletFor::Ready(w)) => Ok(w),
        Ok(WalletFor::NeedsConsent) => Err(unknown_user()),
        Err(e) => Err(ledger_failure(e)),
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

pub async fn topup(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<UserQuery>,
) -> Response {
    let (paywall, user) = match paywall_and_user(&state, &headers, q.user.as_deref()).await {
        Ok(pu) => pu,
        Err(r) => return r,
    };
    let result = async {
        let mut tx = state.db.pool.begin().await?;
        let link =
            deposits::create_topup_link(&mut tx, &state.settings, &paywall.id, &user).await?;
        tx.commit().await?;
        Ok::<_, crate::error::LedgerError>(link)
    }
    .await;
    match result {
        Ok(link) => Json(json!({"object": "topup_link", "user": user, "url": link.url, "expires_at": link.expires_at / 1000}))
            .into_response(),
        Err(e) => ledger_failure(e),
    }
}

pub async fn models(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let paywall = match paywall_from(&state, &headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    match catalog::list_models(&state.db, &paywall.id).await {
        Ok(list) => {
            let data: Vec<_> = list
                .into_iter()
                .map(|(name, provider, p)| {
                    json!({
                        "id": name, "object": "model", "created": 0, "owned_by": provider,
                        "pricing": {
                            "currency_unit": "1.000000",
                            "input_per_million": format_micros(p.input_per_m),
                            "cached_input_per_million": format_micros(p.cached_input_per_m),
                            "output_per_million": format_micros(p.output_per_m),
                            "markup_bps": p.markup_bps,
                            "min_charge": format_micros(p.min_charge),
                            "version": p.version,
                        }
                    })
                })
                .collect();
            Json(json!({"object": "list", "data": data})).into_response()
        }
        Err(e) => ledger_failure(e),
    }
}

#[derive(Deserialize)]
pub struct EntriesQuery {
    user: Option<String>,
    after: Option<i64>,
    limit: Option<i64>,
}

pub async fn ledger_entries(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<EntriesQuery>,
) -> Response {
    let (paywall, user) = match paywall_and_user(&state, &headers, q.user.as_deref()).await {
        Ok(pu) => pu,
        Err(r) => return r,
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let wallet = match wallet_of(&state, &paywall.id, &user).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    match book::find_balance(&state.db, &wallet).await {
        Ok(Some(_)) => {}
        Ok(None) => return unknown_user(),
        Err(e) => return ledger_failure(e),
    }
    match deposits::entries(
        &state.db,
        &wallet,
        &paywall.id,
        q.after.unwrap_or(0),
        limit + 1,
    )
    .await
    {
        Ok(mut list) => {
            let has_more = list.len() as i64 > limit;
            list.truncate(limit as usize);
            let next = if has_more {
                list.last().map(|e| e.seq)
            } else {
                None
            };
            Json(json!({"object": "list", "data": list, "has_more": has_more, "next_after": next}))
                .into_response()
        }
        Err(e) => ledger_failure(e),
    }
}

/// `GET /v1/user/connect`: whether the user has authorized this paywall
/// (shared mode); if not, a fresh authorization link to show them.
pub async fn connect(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<UserQuery>,
) -> Response {
    let (paywall, user) = match paywall_and_user(&state, &headers, q.user.as_deref()).await {
        Ok(pu) => pu,
        Err(r) => return r,
    };
    if paywall.mode != "shared" {
        return Json(
            json!({"object": "connection", "user": user, "mode": paywall.mode, "connected": true}),
        )
        .into_response();
    }
    match consent::connected_since(&state.db, &paywall.id, &user).await {
        Ok(Some(since)) => Json(json!({
            "object": "connection", "user": user, "mode": "shared", "connected": true, "connected_at": since / 1000,
        }))
        .into_response(),
        Ok(None) => {
            let link = async {
                let mut tx = state.db.pool.begin().await?;
                let link = consent::create_link(&mut tx, &state.settings, &paywall.id, &user).await?;
                tx.commit().await?;
                Ok::<_, crate::error::LedgerError>(link)
            }
            .await;
            match link {
                Ok(l) => Json(json!({
                    "object": "connection", "user": user, "mode": "shared", "connected": false,
                    "url": l.url, "expires_at": l.expires_at / 1000,
                }))
                .into_response(),
                Err(e) => ledger_failure(e),
            }
        }
        Err(e) => ledger_failure(e),
    }
}

/// `GET /v1/user/disconnect`: revokes the user's authorization of this paywall.
pub async fn disconnect(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<UserQuery>,
) -> Response {
    let (paywall, user) = match paywall_and_user(&state, &headers, q.user.as_deref()).await {
        Ok(pu) => pu,
        Err(r) => return r,
    };
    if paywall.mode != "shared" {
        let err = ApiError::invalid_request(
            "not_shared_mode",
            "This paywall keeps isolated wallets; there is nothing to disconnect.",
        );
        return api_error(StatusCode::BAD_REQUEST, err);
    }
    match consent::disconnect(&state.db, &paywall.id, &user).await {
        Ok(revoked) => Json(json!({"object": "connection", "user": user, "mode": "shared", "connected": false, "revoked": revoked}))
            .into_response(),
        Err(e) => ledger_failure(e),
    }
}
