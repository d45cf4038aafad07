//! Authorize and settle: the two-phase life of a metered request.
//! Authorize reserves the most the request can cost (and its share of every
//! limit); settle posts what it did cost (never more than reserved), releases
//! the rest and gives back unused limit shares, exactly once per hold.

mod authorize;
mod settle;

pub use authorize::authorize;
pub use settle::{expire_holds, settle, settle_batch, ExpiryPolicy};

use tollgate_protocol::{HoldState, KeySource};

use crate::access::limits::{self, Counted};
use crate::error::LedgerResult;
use crate::money::book::{self, Resolution, TransferMeta, Tx};

/// A hold as settle needs it.
#[derive(sqlx::FromRow)]
struct HoldRow {
    id: String,
    paywall_id: String,
    user_id: String,
    #[sqlx(rename = "wallet_account")]
    wallet: String,
    #[sqlx(rename = "revenue_account")]
    revenue: String,
    request_id: String,
    model: String,
    provider_id: String,
    amount: i64,
    #[sqlx(try_from = "i64")]
    prompt_tokens_est: u32,
    #[sqlx(try_from = "i64")]
    max_output_tokens: u32,
    price_rule_id: String,
    #[sqlx(try_from = "String")]
    state: HoldState,
    expires_at: i64,
    transfer_id: String,
    reserved_tokens: Option<i64>,
    minute_window: Option<i64>,
    day_window: Option<i64>,
    month_window: Option<i64>,
    /// None on holds from before key sources were kept.
    key_source: Option<String>,
}

impl HoldRow {
    /// What the hold took of the limits (None on holds from before limits).
    fn counted(&self) -> Option<Counted> {
        Some(Counted {
            reserved_tokens: self.reserved_tokens?,
            minute_window: self.minute_window,
            day_window: self.day_window,
            month_window: self.month_window,
        })
    }

    fn key_source(&self) -> Option<KeySource> {
        self.key_source.as_deref().and_then(KeySource::parse)
    }
}

async fn load_hold(tx: &mut Tx, hold_id: &str) -> LedgerResult<Option<HoldRow>> {
    Ok(sqlx::query_as(
        "SELECT id, paywall_id, user_id, wallet_account, revenue_account, request_id, model, provider_id, amount,
                prompt_tokens_est, max_output_tokens,
                price_rule_id, state, expires_at, transfer_id, reserved_tokens, minute_window, day_window, month_window,
                key_source
         FROM holds WHERE id = $1",
    )
    .bind(hold_id)
    .fetch_optional(&mut **tx)
    .await?)
}

/// Which pending holds a claim may take, by their expiry at `now`.
#[derive(Clone, Copy)]
enum Claim {
    /// A settlement: only a hold that has not expired.
    Live,
    /// The expiry policy: only a hold past its `expires_at`.
    Expired,
}

/// Claims a pending hold for resolution. The conditional UPDATE is the
/// idempotency point: of two concurrent settles (or a settle and the
/// sweeper), exactly one gets `true`; a settle never takes an expired hold.
async fn claim(
    tx: &mut Tx,
    hold_id: &str,
    new_state: HoldState,
    which: Claim,
    now: i64,
) -> LedgerResult<bool> {
    let sql = match which {
        Claim::Live => "UPDATE holds SET state = $1, resolved_at = $2 WHERE id = $3 AND state = 'pending' AND expires_at >= $2",
        Claim::Expired => "UPDATE holds SET state = $1, resolved_at = $2 WHERE id = $3 AND state = 'pending' AND expires_at < $2",
    };
    let done = sqlx::query(sql)
        .bind(new_state.as_str())
        .bind(now)
        .bind(hold_id)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Resolves a claimed hold's money and gives back what it did not use of its
/// limits. Returns the resolving transfer's id.
async fn resolve(
    tx: &mut Tx,
    hold: &HoldRow,
    resolution: Resolution,
    used_tokens: i64,
    memo: Option<&str>,
) -> LedgerResult<String> {
    let meta = TransferMeta {
        paywall_id: Some(&hold.paywall_id),
        pending_id: Some(&hold.transfer_id),
        hold_id: Some(&hold.id),
        request_id: Some(&hold.request_id),
        memo,
    };
    let transfer = book::resolve(
        tx,
        &hold.wallet,
        &hold.revenue,
        hold.amount,
        resolution,
        &meta,
    )
    .await?;
    let posted = match resolution {
        Resolution::Post(a) => a,
        Resolution::Void => 0,
    };
    limits::release(
        tx,
        &hold.wallet,
        hold.counted(),
        used_tokens,
        hold.amount - posted,
    )
    .await?;
    Ok(transfer)
}
