//! Settle: post what a request cost (never more than its hold) or void it,
//! exactly once per hold; and the sweeper that resolves expired holds.

use serde_json::json;
use sqlx::Row;
use tollgate_protocol::{format_micros, SettleOutcome, SettleRequest, SettleResponse, UsageSource};

use super::{claim, load_hold, resolve, HoldRow};
use crate::book::{self, Resolution, Tx};
use crate::catalog;
use crate::db::{opt_i64, Db};
use crate::error::{LedgerError, LedgerResult};
use crate::events;
use crate::faults;
use crate::keys::{new_id, now_ms};

async fn replay(tx: &mut Tx, hold_id: &str, state: String) -> LedgerResult<SettleResponse> {
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
    let u = req.usage;
    if void {
        resolve(&mut tx, &hold, Resolution::Void, 0, None).await?;
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
    let cost = rule.cost(
        u64::from(u.prompt_tokens),
        u64::from(u.cached_prompt_tokens),
        u64::from(u.completion_tokens),
    );
    // Never post more than was reserved; the difference is recorded, not charged.
    let amount = cost.min(hold.amount);
    let used_tokens = i64::from(u.prompt_tokens) + i64::from(u.completion_tokens);
    let transfer_id = resolve(&mut tx, &hold, Resolution::Post(amount), used_tokens, None).await?;
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
    tx: &mut Tx,
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
        "amount": format_micros(amount), "usage_source": source,
        "prompt_tokens": req.usage.prompt_tokens, "completion_tokens": req.usage.completion_tokens,
    });
    events::record(tx, events::CHARGE_CREATED, rid, pw, user, payload).await?;
    if cost > amount {
        let payload = json!({"charge_id": charge_id, "cost": format_micros(cost), "held": format_micros(hold.amount)});
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
        let payload = json!({"available": format_micros(after.available)});
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
        resolve(&mut tx, &hold, Resolution::Void, 0, Some("expired")).await?;
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
