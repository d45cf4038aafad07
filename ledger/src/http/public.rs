//! Public API for apps (server-side, with their paywall key). A paywall only
//! ever sees its own users: wallets are keyed by (paywall, user).

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use tollgate_protocol::{format_micros, parse_amount, ApiError};

use super::{api_error, ledger_failure, paywall_from, Shared};
use crate::book::{self, wallet_account, Balance};
use crate::catalog::{self, Paywall};
use crate::deposits;
use crate::idempotency::{self, Begin};

const MAX_USER_LEN: usize = 256;

#[derive(Deserialize)]
pub struct UserQuery {
    user: Option<String>,
}

fn require_user(user: Option<&str>) -> Result<String, Response> {
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

fn balance_json(user: &str, b: Balance) -> serde_json::Value {
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
    match book::balance(&state.db, &wallet_account(&paywall.id, &user)).await {
        Ok(b) => Json(balance_json(&user, b)).into_response(),
        Err(e) => ledger_failure(e),
    }
}

#[derive(Deserialize)]
struct DepositBody {
    user: Option<String>,
    amount: Option<serde_json::Value>,
}

pub async fn deposit(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let paywall = match paywall_from(&state, &headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let idem_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(key) = &idem_key {
        if key.is_empty() || key.len() > 255 {
            return api_error(
                StatusCode::BAD_REQUEST,
                ApiError::invalid_request(
                    "invalid_idempotency_key",
                    "Idempotency-Key must be 1 to 255 characters.",
                ),
            );
        }
        let fp = idempotency::request_fingerprint("POST", "/v1/user/balance/deposit", &body);
        match idempotency::begin(&state.db, &paywall.id, key, &fp).await {
            Ok(Begin::Fresh) => {}
            Ok(Begin::Replay { status, body }) => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                return (
                    status,
                    [
                        ("content-type", "application/json"),
                        ("idempotent-replayed", "true"),
                    ],
                    body,
                )
                    .into_response();
            }
            Ok(Begin::Mismatch) => {
                return api_error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ApiError::invalid_request(
                        "idempotency_key_reused",
                        "This Idempotency-Key was used with a different request.",
                    ),
                )
            }
            Ok(Begin::InFlight) => {
                return api_error(
                    StatusCode::CONFLICT,
                    ApiError::invalid_request(
                        "idempotency_key_in_use",
                        "A request with this Idempotency-Key is still being processed.",
                    ),
                )
            }
            Err(e) => return ledger_failure(e),
        }
    }
    let (status, response_body) = run_deposit(&state, &paywall.id, &body).await;
    if let Some(key) = &idem_key {
        // 5xx are not stored: the client may retry the same key.
        let stored = if status.is_server_error() {
            idempotency::abandon(&state.db, &paywall.id, key).await
        } else {
            idempotency::complete(&state.db, &paywall.id, key, status.as_u16(), &response_body)
                .await
        };
        if let Err(e) = stored {
            tracing::error!(error = %e, "could not record idempotency key");
        }
    }
    (
        status,
        [("content-type", "application/json")],
        response_body,
    )
        .into_response()
}

async fn run_deposit(state: &Shared, paywall_id: &str, body: &[u8]) -> (StatusCode, String) {
    let bad = |code: &str, param: &str, msg: String| {
        (
            StatusCode::BAD_REQUEST,
            ApiError::invalid_request(code, msg)
                .with_param(param)
                .to_body(),
        )
    };
    let parsed: DepositBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => {
            return bad(
                "invalid_json",
                "body",
                format!("We could not parse the JSON body: {e}"),
            )
        }
    };
    let user = match require_user(parsed.user.as_deref()) {
        Ok(u) => u,
        Err(_) => return bad("missing_user", "user", "A valid `user` is required.".into()),
    };
    let amount = match parsed.amount {
        Some(serde_json::Value::String(s)) => match parse_amount(&s) {
            Ok(a) => a,
            Err(e) => return bad("invalid_amount", "amount", e.to_string()),
        },
        _ => {
            return bad(
                "invalid_amount",
                "amount",
                "`amount` must be a decimal string such as \"10.00\".".into(),
            )
        }
    };
    match deposits::deposit(&state.db, paywall_id, &user, amount, "api_deposit").await {
        Ok(b) => (StatusCode::OK, balance_json(&user, b).to_string()),
        Err(e) => {
            tracing::error!(error = %e, "deposit failed");
            let err = ApiError::new(
                "server_error",
                "ledger_unavailable",
                "The ledger is temporarily unavailable.",
            );
            (StatusCode::SERVICE_UNAVAILABLE, err.to_body())
        }
    }
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
    if let Err(r) = paywall_from(&state, &headers).await {
        return r;
    }
    match catalog::list_models(&state.db).await {
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
    match deposits::entries(
        &state.db,
        &paywall.id,
        &user,
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
