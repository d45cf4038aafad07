//! Authorize and settle: the two-phase life of a metered request.
//! Authorize reserves the most the request can cost; settle posts what it
//! did cost (never more than reserved) and releases the rest, exactly once.

use serde_json::json;
use sqlx::Row;
use tollgate_protocol::{
    Action, ApiError, AuthorizeRequest, AuthorizeResponse, ProviderRoute, SettleOutcome,
    SettleRequest, SettleResponse, UsageSource,
};

use crate::book::{self, revenue_account, wallet_account, Resolution, TransferMeta};
use crate::catalog::{self, ModelRoute, Paywall};
use crate::db::{opt_i64, Db};
use crate::deposits::create_topup_link;
use crate::error::{LedgerError, LedgerResult};
use crate::events;
use crate::faults;
use crate::keys::{new_id, now_ms};
use crate::settings::Settings;

fn reject(status: u16, error: ApiError) -> AuthorizeResponse {
    AuthorizeResponse::Reject {
        status,
        error,
        retry_after_secs: None,
    }
}

pub async fn authorize(
    db: &Db,
    settings: &Settings,
    req: &AuthorizeRequest,
) -> LedgerResult<AuthorizeResponse> {
    let Some(paywall) = catalog::paywall_by_key(db, &req.paywall_key).await? else {
        return Ok(reject(
            401,
            ApiError::authentication("Incorrect API key provided."),
        ));
    };
    if req.user.trim().is_empty() {
        return Ok(reject(
            400,
            ApiError::invalid_request("missing_user", "A user id is required.").with_param("user"),
        ));
    }
    let Some(route) = catalog::model_route(db, &req.model).await? else {
        let msg = format!(
            "The model `{}` does not exist or you do not have access to it.",
            req.model
        );
        return Ok(reject(
            404,
            ApiError::invalid_request("model_not_found", msg).with_param("model"),
        ));
    };
    let Ok(provider_key) = std::env::var(&route.api_key_env) else {
        tracing::error!(provider = %route.provider_id, env = %route.api_key_env, "provider key not set");
        return Ok(reject(
            503,
            ApiError::new(
                "server_error",
                "provider_unavailable",
                "The provider for this model is not configured.",
            ),
        ));
    };
    let per_choice = req
        .max_output_tokens
        .map(i64::from)
        .unwrap_or(route.default_max_output_tokens);
    let max_output = per_choice.saturating_mul(i64::from(req.choices.max(1)));
    let amount = route.price.max_cost(
        u64::from(req.prompt_tokens),
        u64::try_from(max_output).unwrap_or(0),
    );

    let wallet = wallet_account(&paywall.id, &req.user);
    let revenue = revenue_account(&paywall.id);
    let mut tx = db.pool.begin().await?;
    book::ensure_account(
        &mut tx,
        &wallet,
        "wallet",
        Some(&paywall.id),
        Some(&req.user),
    )
    .await?;
    book::ensure_account(&mut tx, &revenue, "revenue", Some(&paywall.id), None).await?;
    let hold_id = new_id("hold");
    let meta = TransferMeta {
        hold_id: Some(&hold_id),
        request_id: Some(&req.request_id),
        ..Default::default()
    };
    let Some(transfer_id) = book::reserve(&mut tx, &wallet, &revenue, amount, &meta).await? else {
        let response = topup_needed(&mut tx, settings, &paywall, req, amount).await?;
        tx.commit().await?;
        return Ok(response);
    };
    insert_hold(
        &mut tx,
        settings,
        &paywall,
        req,
        &route,
        &hold_id,
        &transfer_id,
        amount,
        max_output,
    )
    .await?;
    tx.commit().await?;
    tracing::info!(request_id = %req.request_id, hold = %hold_id, amount, "hold placed");
    Ok(AuthorizeResponse::Allow {
        hold_id,
        held_micros: amount,
        route: ProviderRoute {
            provider: route.provider_id,
            cluster: route.cluster,
            auth_header: route.auth_header,
            auth_value: format!("{}{}", route.auth_scheme, provider_key),
            upstream_model: route.upstream_model,
        },
    })
}

#[allow(clippy::too_many_arguments)]
async fn insert_hold(
    tx: &mut book::Tx,
    settings: &Settings,
    paywall: &Paywall,
    req: &AuthorizeRequest,
    route: &ModelRoute,
    hold_id: &str,
    transfer_id: &str,
    amount: i64,
    max_output: i64,
) -> LedgerResult<()> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO holds (id, paywall_id, user_id, wallet_account, revenue_account, request_id, model, provider_id,
            prompt_tokens_est, max_output_tokens, amount, price_rule_id, state, transfer_id, expires_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'pending', $13, $14, $15)",
    )
    .bind(hold_id)
    .bind(&paywall.id)
    .bind(&req.user)
    .bind(wallet_account(&paywall.id, &req.user))
    .bind(revenue_account(&paywall.id))
    .bind(&req.request_id)
    .bind(&route.model)
    .bind(&route.provider_id)
    .bind(i64::from(req.prompt_tokens))
    .bind(max_output)
    .bind(amount)
    .bind(&route.price.id)
    .bind(transfer_id)
    .bind(now.saturating_add(settings.hold_ttl_ms))
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn topup_needed(
    tx: &mut book::Tx,
    settings: &Settings,
    paywall: &Paywall,
    req: &AuthorizeRequest,
    needed: i64,
) -> LedgerResult<AuthorizeResponse> {
    let link = create_topup_link(tx, settings, &paywall.id, &req.user).await?;
    let payload = json!({"model": req.model, "needed": tollgate_protocol::format_micros(needed), "reason": "insufficient_balance"});
    events::record(
        tx,
        events::REQUEST_BLOCKED,
        Some(&req.request_id),
        &paywall.id,
        &req.user,
        payload,
    )
    .await?;
    tracing::info!(request_id = %req.request_id, paywall = %paywall.id, "insufficient balance: top-up link issued");
    Ok(AuthorizeResponse::Action {
        action: Action::Topup,
        message: format!(
            "Your balance is too low for this request on {}. Add funds to continue, then send your message again:",
            paywall.name
        ),
        link: link.url,
    })
}

struct HoldRow {
    paywall_id: String,
    user_id: String,
    wallet: String,
    revenue: String,
    request_id: String,
    model: String,
    provider_id: String,
    amount: i64,
    price_rule_id: String,
    state: String,
    transfer_id: String,
}

async fn load_hold(tx: &mut book::Tx, hold_id: &str) -> LedgerResult<Option<HoldRow>> {
    let row = sqlx::query(
        "SELECT paywall_id, user_id, wallet_account, revenue_account, request_id, model, provider_id, amount,
                price_rule_id, state, transfer_id
         FROM holds WHERE id = $1",
    )
    .bind(hold_id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(|r| HoldRow {
        paywall_id: r.get("paywall_id"),
        user_id: r.get("user_id"),
        wallet: r.get("wallet_account"),
        revenue: r.get("revenue_account"),
        request_id: r.get("request_id"),
        model: r.get("model"),
        provider_id: r.get("provider_id"),
        amount: r.get("amount"),
        price_rule_id: r.get("price_rule_id"),
        state: r.get("state"),
        transfer_id: r.get("transfer_id"),
    }))
}

/// Claims a pending hold for resolution. The conditional UPDATE is the
/// idempotency point: of two concurrent settles, exactly one gets `true`.
async fn claim(tx: &mut book::Tx, hold_id: &str, new_state: &str) -> LedgerResult<bool> {
    let done = sqlx::query(
        "UPDATE holds SET state = $1, resolved_at = $2 WHERE id = $3 AND state = 'pending'",
    )
    .bind(new_state)
    .bind(now_ms())
    .bind(hold_id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

async fn replay(tx: &mut book::Tx, hold_id: &str, state: String) -> LedgerResult<SettleResponse> {
    let row = sqlx::query("SELECT id, amount FROM charges WHERE hold_id = $1")
        .bind(hold_id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(SettleResponse {
        hold_id: hold_id.to_string(),
        state,
        charge_id: row.as_ref().map(|r| r.get("id")),
        amount_micros: row.as_ref().and_then(|r| opt_i64(r, "amount")).unwrap_or(0),
        replayed: true,
    })
}

pub async fn settle(db: &Db, req: &SettleRequest) -> LedgerResult<SettleResponse> {
    let mut tx = db.pool.begin().await?;
    let Some(hold) = load_hold(&mut tx, &req.hold_id).await? else {
        return Err(LedgerError::NotFound(format!("no hold {}", req.hold_id)));
    };
    if hold.request_id != req.request_id {
        return Err(LedgerError::Invalid(format!(
            "hold {} belongs to another request",
            req.hold_id
        )));
    }
    let void = req.outcome == SettleOutcome::UpstreamFailed;
    let new_state = if void { "voided" } else { "posted" };
    if !claim(&mut tx, &req.hold_id, new_state).await? {
        let current = load_hold(&mut tx, &req.hold_id)
            .await?
            .map(|h| h.state)
            .unwrap_or(hold.state);
        let response = replay(&mut tx, &req.hold_id, current).await?;
        tx.commit().await?;
        return Ok(response);
    }
    let meta = TransferMeta {
        pending_id: Some(&hold.transfer_id),
        hold_id: Some(&req.hold_id),
        request_id: Some(&req.request_id),
        memo: None,
    };
    if void {
        book::resolve(
            &mut tx,
            &hold.wallet,
            &hold.revenue,
            hold.amount,
            Resolution::Void,
            &meta,
        )
        .await?;
        let payload = json!({"hold_id": req.hold_id, "upstream_status": req.upstream_status});
        events::record(
            &mut tx,
            events::REQUEST_FAILED,
            Some(&req.request_id),
            &hold.paywall_id,
            &hold.user_id,
            payload,
        )
        .await?;
        tx.commit().await?;
        return Ok(SettleResponse {
            hold_id: req.hold_id.clone(),
            state: new_state.into(),
            charge_id: None,
            amount_micros: 0,
            replayed: false,
        });
    }
    let rule = catalog::price_rule(&mut tx, &hold.price_rule_id).await?;
    let u = req.usage;
    let cost = rule.cost(
        u64::from(u.prompt_tokens),
        u64::from(u.cached_prompt_tokens),
        u64::from(u.completion_tokens),
    );
    // Never post more than was reserved; the difference is recorded, not charged.
    let amount = cost.min(hold.amount);
    let transfer_id = book::resolve(
        &mut tx,
        &hold.wallet,
        &hold.revenue,
        hold.amount,
        Resolution::Post(amount),
        &meta,
    )
    .await?;
    let charge_id = new_id("ch");
    let source = match req.usage_source {
        UsageSource::Provider => "provider",
        UsageSource::Local => "local",
    };
    sqlx::query(
        "INSERT INTO charges (id, hold_id, request_id, paywall_id, user_id, model, provider_id, prompt_tokens,
            cached_prompt_tokens, completion_tokens, local_completion_tokens, usage_source, outcome, price_rule_id,
            price_version, cost, amount, transfer_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
    )
    .bind(&charge_id)
    .bind(&req.hold_id)
    .bind(&req.request_id)
    .bind(&hold.paywall_id)
    .bind(&hold.user_id)
    .bind(&hold.model)
    .bind(&hold.provider_id)
    .bind(i64::from(u.prompt_tokens))
    .bind(i64::from(u.cached_prompt_tokens))
    .bind(i64::from(u.completion_tokens))
    .bind(req.local_completion_tokens.map(i64::from))
    .bind(source)
    .bind(req.outcome.as_str())
    .bind(&rule.id)
    .bind(rule.version)
    .bind(cost)
    .bind(amount)
    .bind(&transfer_id)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    record_charge_events(&mut tx, &hold, req, &charge_id, cost, amount, source).await?;
    faults::pause(faults::SETTLE_BEFORE_COMMIT).await;
    tx.commit().await?;
    faults::pause(faults::SETTLE_AFTER_COMMIT).await;
    tracing::info!(request_id = %req.request_id, hold = %req.hold_id, charge = %charge_id, amount, "charge posted");
    Ok(SettleResponse {
        hold_id: req.hold_id.clone(),
        state: new_state.into(),
        charge_id: Some(charge_id),
        amount_micros: amount,
        replayed: false,
    })
}

async fn record_charge_events(
    tx: &mut book::Tx,
    hold: &HoldRow,
    req: &SettleRequest,
    charge_id: &str,
    cost: i64,
    amount: i64,
    source: &str,
) -> LedgerResult<()> {
    let rid = Some(req.request_id.as_str());
    let (pw, user) = (hold.paywall_id.as_str(), hold.user_id.as_str());
    let payload = json!({
        "charge_id": charge_id, "hold_id": req.hold_id, "model": hold.model,
        "amount": tollgate_protocol::format_micros(amount), "usage_source": source,
        "prompt_tokens": req.usage.prompt_tokens, "completion_tokens": req.usage.completion_tokens,
    });
    events::record(tx, events::CHARGE_CREATED, rid, pw, user, payload).await?;
    if cost > amount {
        let payload = json!({"charge_id": charge_id, "cost": tollgate_protocol::format_micros(cost), "held": tollgate_protocol::format_micros(hold.amount)});
        events::record(tx, events::CHARGE_OVERAGE, rid, pw, user, payload).await?;
    }
    events::record(
        tx,
        events::REQUEST_COMPLETED,
        rid,
        pw,
        user,
        json!({"outcome": req.outcome.as_str()}),
    )
    .await?;
    // Depleted: another request like this one would no longer fit.
    let after = book::balance_in(tx, &hold.wallet).await?;
    if amount > 0 && after.available < amount {
        let payload = json!({"available": tollgate_protocol::format_micros(after.available)});
        events::record(tx, events::BALANCE_DEPLETED, rid, pw, user, payload).await?;
    }
    Ok(())
}

/// Resolves holds past their TTL. Policy: an expired hold is voided (the user
/// is not charged for a request whose settlement never arrived); a settlement
/// that arrives later finds the hold resolved and moves nothing.
pub async fn expire_holds(db: &Db, now: i64) -> LedgerResult<usize> {
    let ids: Vec<String> =
        sqlx::query("SELECT id FROM holds WHERE state = 'pending' AND expires_at < $1 LIMIT 500")
            .bind(now)
            .fetch_all(&db.pool)
            .await?
            .iter()
            .map(|r| r.get("id"))
            .collect();
    let mut expired = 0;
    for id in ids {
        let mut tx = db.pool.begin().await?;
        let Some(hold) = load_hold(&mut tx, &id).await? else {
            continue;
        };
        if !claim(&mut tx, &id, "voided").await? {
            continue;
        }
        let meta = TransferMeta {
            pending_id: Some(&hold.transfer_id),
            hold_id: Some(&id),
            request_id: Some(&hold.request_id),
            memo: Some("expired"),
        };
        book::resolve(
            &mut tx,
            &hold.wallet,
            &hold.revenue,
            hold.amount,
            Resolution::Void,
            &meta,
        )
        .await?;
        let payload = json!({"hold_id": id, "reason": "expired"});
        events::record(
            &mut tx,
            events::REQUEST_FAILED,
            Some(&hold.request_id),
            &hold.paywall_id,
            &hold.user_id,
            payload,
        )
        .await?;
        tx.commit().await?;
        expired += 1;
    }
    Ok(expired)
}
