//! Per-paywall limits, enforced in the authorize transaction so they hold
//! under concurrency and across sidecars sharing one PostgreSQL: every check
//! is a conditional UPDATE that either takes its share or changes nothing.
//!
//! - `max_tokens_per_request`: prompt estimate + maximum output, checked first.
//! - `requests_per_minute`, `tokens_per_minute`: fixed UTC-minute windows per
//!   wallet; tokens count the reservation and settle gives back the unused part.
//! - `max_open_holds`: requests in flight per wallet, counted on the wallet
//!   row (`accounts.open_holds`) by the reservation itself (`book::reserve`)
//!   and given back when the hold resolves (`book::resolve`).
//! - `daily_spend_cap`, `monthly_spend_cap`: UTC day / month windows; a hold
//!   counts its full amount until settle corrects it to the posted amount.

use crate::calendar;
use crate::db::Db;
use crate::error::LedgerResult;
use crate::money::book::Tx;

#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Limits {
    pub max_tokens_per_request: Option<i64>,
    pub requests_per_minute: Option<i64>,
    pub tokens_per_minute: Option<i64>,
    pub max_open_holds: Option<i64>,
    pub daily_spend_cap: Option<i64>,
    pub monthly_spend_cap: Option<i64>,
}

pub async fn load(db: &Db, paywall_id: &str) -> LedgerResult<Limits> {
    let row: Option<Limits> = sqlx::query_as(
        "SELECT max_tokens_per_request, requests_per_minute, tokens_per_minute, max_open_holds,
                daily_spend_cap, monthly_spend_cap FROM limits WHERE paywall_id = $1",
    )
    .bind(paywall_id)
    .fetch_optional(&db.pool)
    .await?;
    Ok(row.unwrap_or_default())
}

/// Replaces a paywall's limits (all `None` removes them).
pub async fn store(tx: &mut Tx, paywall_id: &str, limits: &Limits) -> LedgerResult<()> {
    sqlx::query("DELETE FROM limits WHERE paywall_id = $1")
        .bind(paywall_id)
        .execute(&mut **tx)
        .await?;
    if *limits == Limits::default() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO limits (paywall_id, max_tokens_per_request, requests_per_minute, tokens_per_minute, max_open_holds,
            daily_spend_cap, monthly_spend_cap) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(paywall_id)
    .bind(limits.max_tokens_per_request)
    .bind(limits.requests_per_minute)
    .bind(limits.tokens_per_minute)
    .bind(limits.max_open_holds)
    .bind(limits.daily_spend_cap)
    .bind(limits.monthly_spend_cap)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Where an admitted hold was counted, stored on the hold for settle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counted {
    pub reserved_tokens: i64,
    pub minute_window: Option<i64>,
    pub day_window: Option<i64>,
    pub month_window: Option<i64>,
}

/// Why a limit refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    RateLimited {
        what: &'static str,
        retry_after_secs: u32,
    },
    TooManyInFlight,
    SpendCap {
        period: &'static str,
        cap: i64,
        resets_at: i64,
    },
}

fn secs_until(now: i64, at: i64) -> u32 {
    u32::try_from(((at - now).max(0) + 999) / 1000)
        .unwrap_or(u32::MAX)
        .max(1)
}

/// Takes this request's share of the rate and spend limits, or reports the
/// first one it would break (requests in flight are the reservation's own
/// check). On a refusal the caller must roll `tx` back.
pub async fn admit(
    tx: &mut Tx,
    limits: &Limits,
    wallet: &str,
    tokens: i64,
    amount: i64,
    now: i64,
) -> LedgerResult<Result<Counted, Refusal>> {
    let minute_window = match take_rate(tx, limits, wallet, tokens, now).await? {
        Ok(window) => window,
        Err(refused) => return Ok(Err(refused)),
    };
    let mut counted = Counted {
        reserved_tokens: tokens,
        minute_window,
        ..Default::default()
    };
    for period in [Period::Day, Period::Month] {
        let Some(cap) = period.cap(limits) else {
            continue;
        };
        let start = period.start(now);
        let args = [amount, cap];
        let set = "spent = spent + $4";
        if !take(
            tx,
            wallet,
            period.kind(),
            start,
            set,
            "spent + $4 <= $5",
            &args,
        )
        .await?
        {
            return Ok(Err(Refusal::SpendCap {
                period: period.name(),
                cap,
                resets_at: period.next(now),
            }));
        }
        match period {
            Period::Day => counted.day_window = Some(start),
            Period::Month => counted.month_window = Some(start),
        }
    }
    Ok(Ok(counted))
}

/// A spend-cap period (UTC calendar day or month).
#[derive(Clone, Copy)]
enum Period {
    Day,
    Month,
}

impl Period {
    /// As the refusal names it.
    fn name(self) -> &'static str {
        match self {
            Period::Day => "daily",
            Period::Month => "monthly",
        }
    }

    /// As `limit_windows.kind` stores it.
    fn kind(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
        }
    }

    fn cap(self, limits: &Limits) -> Option<i64> {
        match self {
            Period::Day => limits.daily_spend_cap,
            Period::Month => limits.monthly_spend_cap,
        }
    }

    fn start(self, now: i64) -> i64 {
        match self {
            Period::Day => calendar::day_start(now),
            Period::Month => calendar::month_start(now),
        }
    }

    fn next(self, now: i64) -> i64 {
        match self {
            Period::Day => calendar::next_day(now),
            Period::Month => calendar::next_month(now),
        }
    }
}

/// Takes one request and `tokens` of this minute's rate limits. Returns the
/// minute window counted in (None when the paywall sets no rate limit).
async fn take_rate(
    tx: &mut Tx,
    limits: &Limits,
    wallet: &str,
    tokens: i64,
    now: i64,
) -> LedgerResult<Result<Option<i64>, Refusal>> {
    if limits.requests_per_minute.is_none() && limits.tokens_per_minute.is_none() {
        return Ok(Ok(None));
    }
    let start = calendar::minute_start(now);
    let rpm = limits.requests_per_minute.unwrap_or(i64::MAX);
    let tpm = limits.tokens_per_minute.unwrap_or(i64::MAX);
    let set = "requests = requests + 1, tokens = tokens + $4";
    let guard = "requests + 1 <= $5 AND tokens + $4 <= $6";
    if take(tx, wallet, "minute", start, set, guard, &[tokens, rpm, tpm]).await? {
        return Ok(Ok(Some(start)));
    }
    let what = if limits.requests_per_minute.is_some()
        && requests_in(tx, wallet, start).await? + 1 > rpm
    {
        "requests"
    } else {
        "tokens"
    };
    Ok(Err(Refusal::RateLimited {
        what,
        retry_after_secs: secs_until(now, calendar::next_minute(now)),
    }))
}

/// Ensures the window row exists, then applies `set` only if `guard` holds.
/// Parameters: $1 wallet, $2 kind, $3 window start, then `args` as $4, $5, …
async fn take(
    tx: &mut Tx,
    wallet: &str,
    kind: &str,
    start: i64,
    set: &str,
    guard: &str,
    args: &[i64],
) -> LedgerResult<bool> {
    sqlx::query(
        "INSERT INTO usage_windows (wallet_account, window_kind, window_start) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(wallet)
    .bind(kind)
    .bind(start)
    .execute(&mut **tx)
    .await?;
    // `set` and `guard` are literals of this module, never input.
    let sql = format!(
        "UPDATE usage_windows SET {set} WHERE wallet_account = $1 AND window_kind = $2 AND window_start = $3 AND {guard}"
    );
    let mut q = sqlx::query(&sql).bind(wallet).bind(kind).bind(start);
    for a in args {
        q = q.bind(*a);
    }
    Ok(q.execute(&mut **tx).await?.rows_affected() == 1)
}

async fn requests_in(tx: &mut Tx, wallet: &str, start: i64) -> LedgerResult<i64> {
    let requests: Option<i64> = sqlx::query_scalar(
        "SELECT requests FROM usage_windows WHERE wallet_account = $1 AND window_kind = 'minute' AND window_start = $2",
    )
    .bind(wallet)
    .bind(start)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(requests.unwrap_or(0))
}

/// Gives back what a resolved hold did not use of its windows: its unused
/// tokens leave the minute window and its unposted amount leaves the spend
/// windows. Holds from before limits existed (`None`) counted nothing.
pub async fn release(
    tx: &mut Tx,
    wallet: &str,
    counted: Option<Counted>,
    used_tokens: i64,
    unposted: i64,
) -> LedgerResult<()> {
    let Some(c) = counted else { return Ok(()) };
    let unused_tokens = (c.reserved_tokens - used_tokens).max(0);
    let windows = [
        (
            "minute",
            c.minute_window,
            "tokens = tokens - $4",
            unused_tokens,
        ),
        ("day", c.day_window, "spent = spent - $4", unposted),
        ("month", c.month_window, "spent = spent - $4", unposted),
    ];
    for (kind, start, set, delta) in windows {
        let Some(start) = start else { continue };
        if delta == 0 {
            continue;
        }
        let sql = format!("UPDATE usage_windows SET {set} WHERE wallet_account = $1 AND window_kind = $2 AND window_start = $3");
        sqlx::query(&sql)
            .bind(wallet)
            .bind(kind)
            .bind(start)
            .bind(delta)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}
