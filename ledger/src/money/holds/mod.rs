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
use crate::money::book::{self, ProviderShare, Resolution, Resolved, TransferMeta, Tx};

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

/// The columns of a [`HoldRow`].
const HOLD_COLUMNS: &str = "id, paywall_id, user_id, wallet_account, revenue_account, request_id, model, provider_id,
    amount, prompt_tokens_est, max_output_tokens, price_rule_id, state, expires_at, transfer_id, reserved_tokens,
    minute_window, day_window, month_window, key_source";

async fn load_hold(tx: &mut Tx, hold_id: &str) -> LedgerResult<Option<HoldRow>> {
    let sql = format!("SELECT {HOLD_COLUMNS} FROM holds WHERE id = $1");
    Ok(sqlx::query_as(&sql)
        .bind(hold_id)
        .fetch_optional(&mut **tx)
        .await?)
}

/// A settlement's claim and read in one statement: the pending, unexpired
/// hold of this request, now in `new_state`. The conditional UPDATE is the
/// idempotency point: of two concurrent settles exactly one gets the row,
/// and a settle never takes an expired hold. None when there is no such hold
/// (unknown, another request's, resolved or expired: the caller reads it
/// to tell which).
async fn claim_for_settle(
    tx: &mut Tx,
    hold_id: &str,
    request_id: &str,
    new_state: HoldState,
    now: i64,
) -> LedgerResult<Option<HoldRow>> {
    let sql = format!(
        "UPDATE holds SET state = $1, resolved_at = $2
         WHERE id = $3 AND request_id = $4 AND state = 'pending' AND expires_at >= $2
         RETURNING {HOLD_COLUMNS}"
    );
    Ok(sqlx::query_as(&sql)
        .bind(new_state.as_str())
        .bind(now)
        .bind(hold_id)
        .bind(request_id)
        .fetch_optional(&mut **tx)
        .await?)
}

/// Claims a pending hold past its `expires_at` for the expiry policy. The
/// conditional UPDATE is the idempotency point, as in [`claim_for_settle`]:
/// of a settle and the sweeper (or two sweepers), exactly one gets `true`.
async fn claim_expired(
    tx: &mut Tx,
    hold_id: &str,
    new_state: HoldState,
    now: i64,
) -> LedgerResult<bool> {
    let done = sqlx::query(
        "UPDATE holds SET state = $1, resolved_at = $2 WHERE id = $3 AND state = 'pending' AND expires_at < $2",
    )
    .bind(new_state.as_str())
    .bind(now)
    .bind(hold_id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Resolves a claimed hold's money (with the provider's share of a post)
/// and gives back what it did not use of its limits.
async fn resolve(
    tx: &mut Tx,
    hold: &HoldRow,
    resolution: Resolution,
    used_tokens: i64,
    memo: Option<&str>,
    provider_share: Option<ProviderShare<'_>>,
) -> LedgerResult<Resolved> {
    let meta = TransferMeta {
        paywall_id: Some(&hold.paywall_id),
        pending_id: Some(&hold.transfer_id),
        hold_id: Some(&hold.id),
        request_id: Some(&hold.request_id),
        memo,
    };
    let counted = hold.counted();
    let moves = book::Resolve {
        wallet: &hold.wallet,
        revenue: &hold.revenue,
        held: hold.amount,
        resolution,
        in_flight: i64::from(counted.is_some()),
        provider_share,
    };
    let resolved = book::resolve(tx, &moves, &meta).await?;
    let posted = match resolution {
        Resolution::Post(a) => a,
        Resolution::Void => 0,
    };
    limits::release(tx, &hold.wallet, counted, used_tokens, hold.amount - posted).await?;
    Ok(resolved)
}
