//! Authorize: may this user spend on this request? Checks the key, the model
//! and every limit, then reserves the maximum cost, all in one transaction.

use std::sync::Arc;

use serde_json::json;
use tollgate_protocol::{format_micros, Action, ApiError, AuthorizeRequest, AuthorizeResponse};

use crate::access::consent;
use crate::access::limits::{self, Counted, Refusal};
use crate::access::secrets::new_id;
use crate::calendar::now_ms;
use crate::catalog::cache::{self, Lookup, Resolved};
use crate::catalog::upstream::UpstreamPlan;
use crate::catalog::{ModelRoute, Paywall};
use crate::db::group_commit::Verdict;
use crate::db::Db;
use crate::error::{LedgerError, LedgerResult};
use crate::money::book::{self, revenue_account, Balance, TransferMeta, Tx};
use crate::money::deposits::create_topup_link;
use crate::money::owed;
use crate::money::wallets::{self, WalletFor};
use crate::outbox::events;
use crate::settings::Settings;

fn reject(status: u16, error: ApiError, retry_after_secs: Option<u32>) -> AuthorizeResponse {
    AuthorizeResponse::Reject {
        status,
        error,
        retry_after_secs,
    }
}

pub async fn authorize(
    db: &Db,
    settings: &Settings,
    req: &AuthorizeRequest,
) -> LedgerResult<AuthorizeResponse> {
    match check(db, settings, req).await? {
        Ok(checked) => place_hold(db, settings, req, checked).await,
        Err(refused) => Ok(refused),
    }
}

/// What authorize knows before it touches money.
struct Checked {
    /// Always `Lookup::Ready` (see [`Checked::resolved`]).
    lookup: Arc<Lookup>,
    ask: Ask,
}

impl Checked {
    fn resolved(&self) -> LedgerResult<&Resolved> {
        match &*self.lookup {
            Lookup::Ready(r) => Ok(r),
            _ => Err(LedgerError::Internal(
                "authorize checked an unresolved request".into(),
            )),
        }
    }
}

/// The most a request may use: output, tokens and cost at its maximum.
#[derive(Debug, Clone, Copy)]
struct Ask {
    choices: i64,
    /// Output tokens asked per choice (`max_tokens`, or the model's default).
    per_choice: i64,
    /// Output tokens of all choices.
    max_output: i64,
    tokens: i64,
    amount: i64,
}

impl Ask {
    fn new(req: &AuthorizeRequest, route: &ModelRoute) -> Ask {
        let per_choice = req
            .max_output_tokens
            .map(i64::from)
            .unwrap_or(route.default_max_output_tokens);
        Ask::with_output(req, route, per_choice)
    }

    fn with_output(req: &AuthorizeRequest, route: &ModelRoute, per_choice: i64) -> Ask {
        let choices = i64::from(req.choices.max(1));
        let max_output = per_choice.saturating_mul(choices);
        Ask {
            choices,
            per_choice,
            max_output,
            tokens: i64::from(req.prompt_tokens).saturating_add(max_output),
            amount: route.price.max_cost(
                u64::from(req.prompt_tokens),
                u64::try_from(max_output).unwrap_or(0),
            ),
        }
    }
}

/// Key, user, model, provider and the per-request token cap: a refusal
/// here answers without a transaction. The catalog comes from memory.
async fn check(
    db: &Db,
    settings: &Settings,
    req: &AuthorizeRequest,
) -> LedgerResult<Result<Checked, AuthorizeResponse>> {
    let lookup = cache::resolve(db, settings, &req.paywall_key, &req.model).await?;
    if matches!(*lookup, Lookup::UnknownKey) {
        let err = ApiError::authentication("Incorrect API key provided.");
        return Ok(Err(reject(401, err, None)));
    }
    if req.user.trim().is_empty() {
        let err =
            ApiError::invalid_request("missing_user", "A user id is required.").with_param("user");
        return Ok(Err(reject(400, err, None)));
    }
    let resolved = match &*lookup {
        Lookup::Ready(resolved) => resolved,
        Lookup::UnknownKey | Lookup::UnknownModel => {
            let msg = format!(
                "The model `{}` does not exist or you do not have access to it.",
                req.model
            );
            let err = ApiError::invalid_request("model_not_found", msg).with_param("model");
            return Ok(Err(reject(404, err, None)));
        }
        Lookup::NoProvider => {
            let err = ApiError::new(
                "server_error",
                "provider_unavailable",
                "The provider for this model is not configured.",
            );
            return Ok(Err(reject(503, err, None)));
        }
    };
    let ask = Ask::new(req, &resolved.route);
    if let Some(cap) = resolved
        .limits
        .max_tokens_per_request
        .filter(|cap| ask.tokens > *cap)
    {
        let msg = format!(
            "This request may use up to {} tokens (prompt estimate plus maximum output), above this app's \
             limit of {cap} per request. Lower max_tokens or shorten the conversation.",
            ask.tokens
        );
        let err = ApiError::invalid_request("max_tokens_exceeded", msg).with_param("max_tokens");
        return Ok(Err(reject(400, err, None)));
    }
    Ok(Ok(Checked { lookup, ask }))
}

/// Affordability: a balance that cannot cover the requested output still
/// gets the most output it can pay for, if that reaches the floor. Returns
/// the ask to hold and the clamped output per choice (None: as asked), or
/// None when not even the floor fits.
fn fit_to_balance(
    output_floor: u32,
    req: &AuthorizeRequest,
    route: &ModelRoute,
    ask: Ask,
    available: i64,
) -> Option<(Ask, Option<i64>)> {
    if ask.amount <= available {
        return Some((ask, None));
    }
    let fit = route.price.affordable_output(
        u64::from(req.prompt_tokens),
        ask.choices.unsigned_abs(),
        u64::try_from(ask.per_choice).unwrap_or(0),
        available,
    )?;
    if fit < u64::from(output_floor) {
        return None;
    }
    let per_choice = i64::try_from(fit).unwrap_or(0);
    Some((Ask::with_output(req, route, per_choice), Some(per_choice)))
}

/// The settings a reservation reads, copied into its job.
#[derive(Clone, Copy)]
struct Terms {
    hold_ttl_ms: i64,
    output_floor: u32,
}

/// What the reservation decided inside its batch. Only `Held` keeps writes;
/// the others are answered after, each in its own transaction.
enum Placed {
    Held(Box<AuthorizeResponse>),
    NeedsConsent,
    Owed(i64),
    FundsReserved,
    TopupNeeded(i64),
    Refused(Refusal),
}

/// The wallet, affordability, every limit, the reservation and the hold
/// row: one job of a group commit, so the hold is durable when answered.
async fn place_hold(
    db: &Db,
    settings: &Settings,
    req: &AuthorizeRequest,
    c: Checked,
) -> LedgerResult<AuthorizeResponse> {
    let terms = Terms {
        hold_ttl_ms: settings.hold_ttl_ms,
        output_floor: settings.output_floor,
    };
    let lookup = c.lookup.clone();
    let job_req = req.clone();
    let placed = db
        .writes
        .run(None, move |tx| Box::pin(reserve_in(tx, terms, job_req, c)))
        .await?;
    let Lookup::Ready(r) = &*lookup else {
        return Err(LedgerError::Internal(
            "authorize checked an unresolved request".into(),
        ));
    };
    match placed {
        Placed::Held(allowed) => {
            if let AuthorizeResponse::Allow {
                hold_id,
                held_micros,
                max_output_tokens,
                route,
                ..
            } = &*allowed
            {
                tracing::info!(request_id = %req.request_id, hold = %hold_id, amount = held_micros,
                               clamped = ?max_output_tokens, provider = %route.provider,
                               key_source = r.plan.key_source.as_str(), "hold placed");
            }
            Ok(*allowed)
        }
        Placed::NeedsConsent => consent_needed(db, settings, &r.paywall, req).await,
        Placed::Owed(owed) => owed_topup(db, settings, &r.paywall, req, owed).await,
        Placed::FundsReserved => Ok(funds_reserved()),
        Placed::TopupNeeded(needed) => topup_needed(db, settings, &r.paywall, req, needed).await,
        Placed::Refused(refused) => refusal(db, &r.paywall, req, refused).await,
    }
}

async fn reserve_in(
    tx: &mut Tx,
    terms: Terms,
    req: AuthorizeRequest,
    c: Checked,
) -> LedgerResult<Verdict<Placed>> {
    let r = c.resolved()?;
    let revenue = revenue_account(&r.paywall.id);
    let mode = r.paywall.mode;
    let wallet = match wallets::spending_wallet(tx, &r.paywall.id, mode, &req.user).await? {
        WalletFor::Ready(w) => w,
        WalletFor::NeedsConsent => return Ok(Verdict::Discard(Placed::NeedsConsent)),
    };
    let state = owed::wallet_state(tx, &wallet).await?;
    if state.owed > 0 {
        return Ok(Verdict::Discard(Placed::Owed(state.owed)));
    }
    let balance = match state.balance {
        Some(balance) => balance,
        None => {
            // A user's first request: the wallet opens empty (a free model still fits).
            wallets::open_account(tx, &wallet, &r.paywall.id, mode, &req.user).await?;
            Balance::default()
        }
    };
    let fitted = fit_to_balance(terms.output_floor, &req, &r.route, c.ask, balance.available);
    let Some((ask, clamped)) = fitted else {
        // The balance itself would do: requests in flight have it reserved.
        let posted = fit_to_balance(terms.output_floor, &req, &r.route, c.ask, balance.posted);
        if posted.is_some() {
            return Ok(Verdict::Discard(Placed::FundsReserved));
        }
        return Ok(Verdict::Discard(Placed::TopupNeeded(c.ask.amount)));
    };
    // Checked here first, and again by the reservation's conditional UPDATE
    // (several sidecars on PostgreSQL).
    let max_in_flight = r.limits.max_open_holds.unwrap_or(i64::MAX);
    if state.in_flight >= max_in_flight {
        return Ok(Verdict::Discard(Placed::Refused(Refusal::TooManyInFlight)));
    }
    let admitted = limits::admit(tx, &r.limits, &wallet, ask.tokens, ask.amount, now_ms());
    let counted = match admitted.await? {
        Ok(counted) => counted,
        Err(refused) => return Ok(Verdict::Discard(Placed::Refused(refused))),
    };
    let hold_id = new_id("hold");
    let meta = TransferMeta {
        paywall_id: Some(&r.paywall.id),
        hold_id: Some(&hold_id),
        request_id: Some(&req.request_id),
        ..Default::default()
    };
    let reserved = book::reserve(tx, &wallet, &revenue, ask.amount, max_in_flight, &meta).await?;
    let Some(transfer_id) = reserved else {
        // A concurrent hold (another sidecar) took the rest or the last
        // in-flight place. Nothing of this attempt stays.
        if book::open_holds(tx, &wallet).await? >= max_in_flight {
            return Ok(Verdict::Discard(Placed::Refused(Refusal::TooManyInFlight)));
        }
        if ask.amount <= balance.posted {
            return Ok(Verdict::Discard(Placed::FundsReserved));
        }
        return Ok(Verdict::Discard(Placed::TopupNeeded(ask.amount)));
    };
    let hold = NewHold {
        id: &hold_id,
        wallet: &wallet,
        transfer_id: &transfer_id,
        amount: ask.amount,
        max_output: ask.max_output,
        counted,
        plan: &r.plan,
    };
    insert_hold(tx, terms.hold_ttl_ms, &r.paywall, &req, &r.route, &hold).await?;
    Ok(Verdict::Keep(Placed::Held(Box::new(
        AuthorizeResponse::Allow {
            hold_id,
            held_micros: ask.amount,
            max_output_tokens: clamped.map(|k| u32::try_from(k).unwrap_or(u32::MAX)),
            route: r.plan.first.clone(),
            fallback: r.plan.fallback_route(),
        },
    ))))
}

/// The answer to a request that a limit refused.
async fn refusal(
    db: &Db,
    paywall: &Paywall,
    req: &AuthorizeRequest,
    refused: Refusal,
) -> LedgerResult<AuthorizeResponse> {
    Ok(match refused {
        Refusal::RateLimited {
            what,
            retry_after_secs,
        } => {
            let msg = format!("Rate limit reached for {what} per minute on this app. Try again in {retry_after_secs} s.");
            reject(
                429,
                ApiError::new("rate_limit_error", "rate_limit_exceeded", msg),
                Some(retry_after_secs),
            )
        }
        Refusal::TooManyInFlight => {
            let msg = "Too many requests in flight for this user; wait for one to finish.";
            reject(
                429,
                ApiError::new("rate_limit_error", "concurrency_limit_exceeded", msg),
                Some(1),
            )
        }
        Refusal::SpendCap {
            period,
            cap,
            resets_at,
        } => {
            let mut tx = db.pool.begin().await?;
            let payload = json!({"reason": "spend_cap", "period": period, "cap": format_micros(cap), "resets_at": resets_at});
            blocked(&mut tx, paywall, req, payload).await?;
            tx.commit().await?;
            AuthorizeResponse::Action {
                action: Action::SpendCap,
                message: format!(
                    "You have reached your {period} spending limit of {} on {}. It resets at {} (UTC).",
                    format_micros(cap),
                    paywall.name,
                    crate::calendar::format_utc(resets_at)
                ),
                link: String::new(),
            }
        }
    })
}

/// Records why a request was not let through (the outbox's `request.blocked`).
async fn blocked(
    tx: &mut Tx,
    paywall: &Paywall,
    req: &AuthorizeRequest,
    payload: serde_json::Value,
) -> LedgerResult<()> {
    events::record(
        tx,
        events::REQUEST_BLOCKED,
        Some(&req.request_id),
        &paywall.id,
        &req.user,
        payload,
    )
    .await
}

struct NewHold<'a> {
    id: &'a str,
    wallet: &'a str,
    transfer_id: &'a str,
    amount: i64,
    max_output: i64,
    counted: Counted,
    plan: &'a UpstreamPlan,
}

async fn insert_hold(
    tx: &mut Tx,
    hold_ttl_ms: i64,
    paywall: &Paywall,
    req: &AuthorizeRequest,
    route: &ModelRoute,
    hold: &NewHold<'_>,
) -> LedgerResult<()> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO holds (id, paywall_id, user_id, wallet_account, revenue_account, request_id, model, provider_id,
            prompt_tokens_est, max_output_tokens, amount, price_rule_id, state, transfer_id, expires_at, created_at,
            reserved_tokens, minute_window, day_window, month_window, key_source)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'pending', $13, $14, $15, $16, $17, $18, $19, $20)",
    )
    .bind(hold.id)
    .bind(&paywall.id)
    .bind(&req.user)
    .bind(hold.wallet)
    .bind(revenue_account(&paywall.id))
    .bind(&req.request_id)
    .bind(&route.model)
    .bind(&hold.plan.first.provider)
    .bind(i64::from(req.prompt_tokens))
    .bind(hold.max_output)
    .bind(hold.amount)
    .bind(&route.price.id)
    .bind(hold.transfer_id)
    .bind(now.saturating_add(hold_ttl_ms))
    .bind(now)
    .bind(hold.counted.reserved_tokens)
    .bind(hold.counted.minute_window)
    .bind(hold.counted.day_window)
    .bind(hold.counted.month_window)
    .bind(hold.plan.key_source.as_str())
    .execute(&mut **tx)
    .await?;
    for (position, (route, key_source)) in (1i64..).zip(&hold.plan.fallbacks) {
        sqlx::query(
            "INSERT INTO hold_fallbacks (hold_id, position, provider_id, key_source) VALUES ($1, $2, $3, $4)",
        )
        .bind(hold.id)
        .bind(position)
        .bind(&route.provider)
        .bind(key_source.as_str())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// A shared paywall the user has not authorized yet: the answer is an
/// assistant message with the authorization link.
async fn consent_needed(
    db: &Db,
    settings: &Settings,
    paywall: &Paywall,
    req: &AuthorizeRequest,
) -> LedgerResult<AuthorizeResponse> {
    let mut tx = db.pool.begin().await?;
    let link = consent::create_link(&mut tx, settings, &paywall.id, &req.user).await?;
    let payload = json!({"model": req.model, "reason": "authorization_required"});
    blocked(&mut tx, paywall, req, payload).await?;
    tx.commit().await?;
    Ok(AuthorizeResponse::Action {
        action: Action::Authorize,
        message: format!(
            "{} pays for AI through your Tollgate balance. Authorize it once, then send your message again:",
            paywall.name
        ),
        link: link.url,
    })
}

/// A balance that covers the request once the holds of its requests in
/// flight are settled: a 429 the OpenAI SDKs retry by themselves, never the
/// top-up message (which is for a balance that is really too low).
fn funds_reserved() -> AuthorizeResponse {
    let msg = "This user's balance is reserved by requests still in flight; retry in a moment.";
    reject(
        429,
        ApiError::new("rate_limit_error", "funds_reserved", msg),
        Some(FUNDS_RESERVED_RETRY_SECS),
    )
}

/// A hold is settled when its response ends, usually within seconds.
const FUNDS_RESERVED_RETRY_SECS: u32 = 2;

async fn topup_needed(
    db: &Db,
    settings: &Settings,
    paywall: &Paywall,
    req: &AuthorizeRequest,
    needed: i64,
) -> LedgerResult<AuthorizeResponse> {
    let message = format!(
        "Your balance is too low for this request on {}. Add funds to continue, then send your message again:",
        paywall.name
    );
    let payload = json!({"model": req.model, "needed": format_micros(needed), "reason": "insufficient_balance"});
    topup_action(db, settings, paywall, req, payload, message).await
}

/// A refund left money owed: no request until a top-up has paid it back.
async fn owed_topup(
    db: &Db,
    settings: &Settings,
    paywall: &Paywall,
    req: &AuthorizeRequest,
    owed: i64,
) -> LedgerResult<AuthorizeResponse> {
    let message = format!(
        "A refunded payment left {} owed on {}. Add funds to settle it and continue, then send your message again:",
        format_micros(owed),
        paywall.name
    );
    let payload = json!({"model": req.model, "owed": format_micros(owed), "reason": "amount_owed"});
    topup_action(db, settings, paywall, req, payload, message).await
}

/// The top-up message with a fresh link, and its `request.blocked` event.
async fn topup_action(
    db: &Db,
    settings: &Settings,
    paywall: &Paywall,
    req: &AuthorizeRequest,
    payload: serde_json::Value,
    message: String,
) -> LedgerResult<AuthorizeResponse> {
    let mut tx = db.pool.begin().await?;
    let link = create_topup_link(&mut tx, settings, &paywall.id, &req.user).await?;
    blocked(&mut tx, paywall, req, payload).await?;
    tx.commit().await?;
    tracing::info!(request_id = %req.request_id, paywall = %paywall.id, "top-up link issued");
    Ok(AuthorizeResponse::Action {
        action: Action::Topup,
        message,
        link: link.url,
    })
}
