//! Settle: post what a request cost (never more than its hold) or void it,
//! exactly once per hold; and the sweeper that resolves expired holds by the
//! configured policy.

use serde::Deserialize;
use serde_json::json;
use tollgate_protocol::{
    format_micros, HoldState, KeySource, SettleOutcome, SettleRequest, SettleResponse, Usage,
    UsageSource,
};

use super::{claim_expired, claim_for_settle, load_hold, resolve, HoldRow};
use crate::access::secrets::new_id;
use crate::calendar::now_ms;
use crate::catalog::cache::CatalogCache;
use crate::db::group_commit::{CommitPoints, Verdict};
use crate::db::Db;
use crate::error::{LedgerError, LedgerResult};
use crate::faults;
use crate::money::book::{self, Balance, ProviderShare, Resolution, TransferMeta, Tx};
use crate::outbox::events;
use crate::pricing::PriceRule;

async fn replay(tx: &mut Tx, hold_id: &str, state: HoldState) -> LedgerResult<SettleResponse> {
    let charge: Option<(String, i64)> =
        sqlx::query_as("SELECT id, amount FROM charges WHERE hold_id = $1")
            .bind(hold_id)
            .fetch_optional(&mut **tx)
            .await?;
    let (charge_id, amount_micros) = charge.unzip();
    Ok(SettleResponse {
        hold_id: hold_id.to_string(),
        state,
        charge_id,
        amount_micros: amount_micros.unwrap_or(0),
        replayed: true,
    })
}

/// Where the settle crash tests pause, around the commit of the batch a
/// settlement rides in.
const SETTLE_POINTS: CommitPoints = CommitPoints {
    before: faults::SETTLE_BEFORE_COMMIT,
    after: faults::SETTLE_AFTER_COMMIT,
};

/// Settles one hold, in the next group commit. A hold already past its TTL
/// is resolved by `expiry` instead, as the sweeper would have: the late
/// settlement moves nothing.
pub async fn settle(
    db: &Db,
    req: &SettleRequest,
    expiry: ExpiryPolicy,
) -> LedgerResult<SettleResponse> {
    let job_req = req.clone();
    let rules = db.catalog.clone();
    let response = db
        .writes
        .run(Some(SETTLE_POINTS), move |tx| {
            Box::pin(async move {
                settle_in(tx, &rules, &job_req, expiry)
                    .await
                    .map(Verdict::Keep)
            })
        })
        .await?;
    if let Some(charge) = &response.charge_id {
        tracing::info!(request_id = %req.request_id, hold = %req.hold_id, charge = %charge,
                       amount = response.amount_micros, replayed = response.replayed, "settled");
    }
    Ok(response)
}

/// Settles many holds as one job of a group commit. Per-item refusals
/// (unknown hold, wrong request) are reported in place; a database error
/// rolls the whole batch back, and it can then be retried.
pub async fn settle_batch(
    db: &Db,
    reqs: &[SettleRequest],
    expiry: ExpiryPolicy,
) -> LedgerResult<Vec<LedgerResult<SettleResponse>>> {
    let reqs = reqs.to_vec();
    let rules = db.catalog.clone();
    db.writes
        .run(Some(SETTLE_POINTS), move |tx| {
            Box::pin(async move {
                let mut out = Vec::with_capacity(reqs.len());
                for req in &reqs {
                    match settle_in(tx, &rules, req, expiry).await {
                        Ok(r) => out.push(Ok(r)),
                        Err(e @ (LedgerError::NotFound(_) | LedgerError::Invalid(_))) => {
                            out.push(Err(e))
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(Verdict::Keep(out))
            })
        })
        .await
}

/// One settlement inside the caller's transaction. Refusals return before
/// anything is written.
async fn settle_in(
    tx: &mut Tx,
    rules: &CatalogCache,
    req: &SettleRequest,
    expiry: ExpiryPolicy,
) -> LedgerResult<SettleResponse> {
    if !req.outcome.from_filter() || !req.usage_source.from_filter() {
        return Err(LedgerError::Invalid(format!(
            "outcome {} with usage source {} is the sidecar's own, not a settlement's",
            req.outcome, req.usage_source
        )));
    }
    let void = req.voids();
    let new_state = if void {
        HoldState::Voided
    } else {
        HoldState::Posted
    };
    let now = now_ms();
    let claimed = claim_for_settle(tx, &req.hold_id, &req.request_id, new_state, now).await?;
    let Some(hold) = claimed else {
        return unclaimed(tx, rules, req, expiry, now).await;
    };
    if void {
        void_claimed(
            tx,
            &hold,
            None,
            json!({"hold_id": req.hold_id, "outcome": req.outcome, "upstream_status": req.upstream_status}),
        )
        .await?;
        return Ok(SettleResponse {
            hold_id: req.hold_id.clone(),
            state: new_state,
            charge_id: None,
            amount_micros: 0,
            replayed: false,
        });
    }
    let used = Used {
        usage: req.usage,
        source: req.usage_source,
        outcome: req.outcome,
        local_completion: req.local_completion_tokens,
        provider: req.provider.as_deref(),
    };
    let (charge_id, amount) = post_claimed(tx, rules, &hold, &used).await?;
    Ok(SettleResponse {
        hold_id: req.hold_id.clone(),
        state: new_state,
        charge_id: Some(charge_id),
        amount_micros: amount,
        replayed: false,
    })
}

/// A settlement that found no pending, unexpired hold of its request: the
/// hold is unknown, another request's, already resolved (a replay), or
/// expired (then resolved by the expiry policy now, as the sweeper would).
async fn unclaimed(
    tx: &mut Tx,
    rules: &CatalogCache,
    req: &SettleRequest,
    expiry: ExpiryPolicy,
    now: i64,
) -> LedgerResult<SettleResponse> {
    let Some(hold) = load_hold(tx, &req.hold_id).await? else {
        return Err(LedgerError::NotFound(format!("no hold {}", req.hold_id)));
    };
    if hold.request_id != req.request_id {
        return Err(LedgerError::Invalid(format!(
            "hold {} belongs to another request",
            req.hold_id
        )));
    }
    if hold.state == HoldState::Pending
        && hold.expires_at < now
        && expire_claimed(tx, rules, &hold, expiry, now).await?
    {
        tracing::info!(request_id = %req.request_id, hold = %req.hold_id, policy = expiry.as_str(),
                       "settlement arrived after the hold expired: resolved by the expiry policy");
        crate::metrics::count(crate::metrics::HOLD_EXPIRIES, &[expiry.as_str()]);
    }
    let current = load_hold(tx, &req.hold_id)
        .await?
        .map(|h| h.state)
        .unwrap_or(hold.state);
    replay(tx, &req.hold_id, current).await
}

/// What a claimed hold is charged for.
struct Used<'a> {
    usage: Usage,
    source: UsageSource,
    outcome: SettleOutcome,
    local_completion: Option<u32>,
    /// The provider that answered, as the filter saw it (fallback routes).
    provider: Option<&'a str>,
}

/// Who answered a request and with whose key: the provider the filter
/// reports if it is one this hold allowed (its own or a fallback), else the
/// hold's own.
async fn answered_by<'h>(
    tx: &mut Tx,
    hold: &'h HoldRow,
    reported: Option<&'h str>,
) -> LedgerResult<(&'h str, Option<KeySource>)> {
    let own = (hold.provider_id.as_str(), hold.key_source());
    let Some(reported) = reported.filter(|p| *p != hold.provider_id) else {
        return Ok(own);
    };
    let fallback: Option<String> = sqlx::query_scalar(
        "SELECT key_source FROM hold_fallbacks WHERE hold_id = $1 AND provider_id = $2",
    )
    .bind(&hold.id)
    .bind(reported)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(match fallback {
        Some(source) => (reported, KeySource::parse(&source)),
        None => {
            tracing::warn!(hold = %hold.id, reported, "settlement names a provider the hold did not allow; charging the hold's own");
            own
        }
    })
}

/// Posts the charge of a claimed hold (at most the hold) with its charge row
/// and events. Returns the charge id and the amount posted.
async fn post_claimed(
    tx: &mut Tx,
    rules: &CatalogCache,
    hold: &HoldRow,
    used: &Used<'_>,
) -> LedgerResult<(String, i64)> {
    let u = used.usage;
    let rule = rules.price_rule(tx, &hold.price_rule_id).await?;
    let cost = rule.cost(
        u64::from(u.prompt_tokens),
        u64::from(u.cached_prompt_tokens),
        u64::from(u.completion_tokens),
    );
    // Never post more than was reserved; the difference is recorded, not charged.
    let amount = cost.min(hold.amount);
    let used_tokens = i64::from(u.prompt_tokens) + i64::from(u.completion_tokens);
    let memo = (used.source == UsageSource::Estimate).then_some("expired");
    let (provider, key_source) = answered_by(tx, hold, used.provider).await?;
    let provider_cost = provider_share(key_source, &rule, &u);
    let cost_account = book::provider_cost_account(provider);
    let share = (provider_cost > 0).then(|| ProviderShare {
        account: &cost_account,
        amount: provider_cost,
        meta: TransferMeta {
            paywall_id: Some(&hold.paywall_id),
            hold_id: Some(&hold.id),
            request_id: Some(&hold.request_id),
            memo: Some(&rule.id),
            ..Default::default()
        },
    });
    let resolved = resolve(tx, hold, Resolution::Post(amount), used_tokens, memo, share).await?;
    let transfer_id = resolved.transfer_id;
    let charge_id = new_id("ch");
    sqlx::query(
        "INSERT INTO charges (id, hold_id, request_id, paywall_id, user_id, model, provider_id, prompt_tokens,
            cached_prompt_tokens, completion_tokens, local_completion_tokens, usage_source, outcome, price_rule_id,
            price_version, cost, amount, transfer_id, created_at, key_source, provider_cost)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)",
    )
    .bind(&charge_id)
    .bind(&hold.id)
    .bind(&hold.request_id)
    .bind(&hold.paywall_id)
    .bind(&hold.user_id)
    .bind(&hold.model)
    .bind(provider)
    .bind(i64::from(u.prompt_tokens))
    .bind(i64::from(u.cached_prompt_tokens))
    .bind(i64::from(u.completion_tokens))
    .bind(used.local_completion.map(i64::from))
    .bind(used.source.as_str())
    .bind(used.outcome.as_str())
    .bind(&rule.id)
    .bind(rule.version)
    .bind(cost)
    .bind(amount)
    .bind(&transfer_id)
    .bind(now_ms())
    .bind(key_source.map(KeySource::as_str))
    .bind(provider_cost)
    .execute(&mut **tx)
    .await?;
    let who = (provider, key_source);
    let charged = Charged {
        id: &charge_id,
        cost,
        amount,
        wallet_after: resolved.wallet,
    };
    record_charge_events(tx, hold, used, who, &charged).await?;
    Ok((charge_id, amount))
}

/// With the operator's key, the provider bills the operator: its share of the
/// usage (the prices without markup) moves from the paywall's revenue to
/// `provider_cost:{provider}`, which then holds what is owed to the provider.
/// Under BYOK the provider bills the paywall's owner and nothing moves.
/// Returns the provider's share (0 under BYOK or on holds that predate it).
fn provider_share(key_source: Option<KeySource>, rule: &PriceRule, u: &Usage) -> i64 {
    if key_source != Some(KeySource::BuiltIn) {
        return 0;
    }
    rule.provider_cost(
        u64::from(u.prompt_tokens),
        u64::from(u.cached_prompt_tokens),
        u64::from(u.completion_tokens),
    )
}

async fn void_claimed(
    tx: &mut Tx,
    hold: &HoldRow,
    memo: Option<&str>,
    payload: serde_json::Value,
) -> LedgerResult<()> {
    resolve(tx, hold, Resolution::Void, 0, memo, None).await?;
    events::record(
        tx,
        events::REQUEST_FAILED,
        Some(&hold.request_id),
        &hold.paywall_id,
        &hold.user_id,
        payload,
    )
    .await
}

/// A charge as its events describe it.
struct Charged<'a> {
    id: &'a str,
    cost: i64,
    amount: i64,
    wallet_after: Balance,
}

async fn record_charge_events(
    tx: &mut Tx,
    hold: &HoldRow,
    used: &Used<'_>,
    (provider, key_source): (&str, Option<KeySource>),
    charge: &Charged<'_>,
) -> LedgerResult<()> {
    let (charge_id, cost, amount) = (charge.id, charge.cost, charge.amount);
    let mut recorded = vec![(
        events::CHARGE_CREATED,
        json!({
            "charge_id": charge_id, "hold_id": hold.id, "model": hold.model,
            "amount": format_micros(amount), "usage_source": used.source, "outcome": used.outcome,
            "provider": provider, "key_source": key_source,
            "prompt_tokens": used.usage.prompt_tokens, "completion_tokens": used.usage.completion_tokens,
            // The filter's own count beside the billed one, and how far apart they are.
            "local_completion_tokens": used.local_completion,
            "count_difference": used.local_completion.map(|l| i64::from(used.usage.completion_tokens) - i64::from(l)),
        }),
    )];
    if cost > amount {
        let payload = json!({"charge_id": charge_id, "cost": format_micros(cost), "held": format_micros(hold.amount)});
        recorded.push((events::CHARGE_OVERAGE, payload));
    }
    recorded.push((events::REQUEST_COMPLETED, json!({"outcome": used.outcome})));
    // Depleted: another request like this one would no longer fit.
    let available = charge.wallet_after.available;
    if amount > 0 && available < amount {
        let payload = json!({"available": format_micros(available)});
        recorded.push((events::BALANCE_DEPLETED, payload));
        crate::metrics::count(crate::metrics::BALANCES_DEPLETED, &[]);
    }
    let rid = Some(hold.request_id.as_str());
    events::record_all(tx, rid, &hold.paywall_id, &hold.user_id, &recorded).await
}

/// What happens to a hold whose settlement never arrived before its TTL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpiryPolicy {
    /// Release everything: the user is not charged (the operator carries the risk).
    #[default]
    Void,
    /// Charge the prompt estimate (the provider most likely ran the prompt) and
    /// release the rest; the charge is marked `estimate`.
    ChargePrompt,
    /// Charge the whole hold (the most the request could have cost).
    ChargeHeld,
}

impl ExpiryPolicy {
    /// The name used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            ExpiryPolicy::Void => "void",
            ExpiryPolicy::ChargePrompt => "charge_prompt",
            ExpiryPolicy::ChargeHeld => "charge_held",
        }
    }
}

/// Resolves holds past their TTL by `policy`. A settlement that arrives
/// later finds the hold resolved and moves nothing.
pub async fn expire_holds(db: &Db, now: i64, policy: ExpiryPolicy) -> LedgerResult<usize> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM holds WHERE state = 'pending' AND expires_at < $1 LIMIT 500",
    )
    .bind(now)
    .fetch_all(&db.pool)
    .await?;
    let mut expired = 0;
    for id in ids {
        let mut tx = db.pool.begin().await?;
        let Some(hold) = load_hold(&mut tx, &id).await? else {
            continue;
        };
        if expire_claimed(&mut tx, &db.catalog, &hold, policy, now).await? {
            tx.commit().await?;
            expired += 1;
        }
    }
    Ok(expired)
}

/// Claims an expired hold and resolves it by `policy`; false when it was not
/// pending and expired at `now` (someone else resolved it).
async fn expire_claimed(
    tx: &mut Tx,
    rules: &CatalogCache,
    hold: &HoldRow,
    policy: ExpiryPolicy,
    now: i64,
) -> LedgerResult<bool> {
    let new_state = if policy == ExpiryPolicy::Void {
        HoldState::Voided
    } else {
        HoldState::Posted
    };
    if !claim_expired(tx, &hold.id, new_state, now).await? {
        return Ok(false);
    }
    let completion = match policy {
        ExpiryPolicy::ChargeHeld => hold.max_output_tokens,
        _ => 0,
    };
    let usage = Usage {
        prompt_tokens: hold.prompt_tokens_est,
        completion_tokens: completion,
        cached_prompt_tokens: 0,
    };
    match policy {
        ExpiryPolicy::Void => {
            let payload = json!({"hold_id": hold.id, "reason": "expired"});
            void_claimed(tx, hold, Some("expired"), payload).await?
        }
        ExpiryPolicy::ChargePrompt | ExpiryPolicy::ChargeHeld => {
            let used = Used {
                usage,
                source: UsageSource::Estimate,
                outcome: SettleOutcome::Expired,
                local_completion: None,
                provider: None,
            };
            post_claimed(tx, rules, hold, &used).await?;
        }
    }
    Ok(true)
}
