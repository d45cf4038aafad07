//! Authorize and settle: the two-phase life of a metered request.
//! Authorize reserves the most the request can cost (and its share of every
//! limit); settle posts what it did cost (never more than reserved), releases
//! the rest and gives back unused limit shares, exactly once per hold.

mod authorize;
mod settle;

pub use authorize::authorize;
pub use settle::{expire_holds, settle, settle_batch, ExpiryPolicy};

use sqlx::Row;
use tollgate_protocol::{HoldState, KeySource};

use crate::access::limits::{self, Counted};
use crate::calendar::now_ms;
use crate::error::{LedgerError, LedgerResult};
use crate::money::book::{self, Resolution, TransferMeta, Tx};

/// A hold as settle needs it.
struct HoldRow {
    id: String,
    paywall_id: String,
    user_id: String,
    wallet: String,
    revenue: String,
    request_id: String,
    model: String,
    provider_id: String,
    amount: i64,
    prompt_tokens_est: u32,
    max_output_tokens: u32,
    price_rule_id: String,
    state: HoldState,
    transfer_id: String,
    counted: Option<Counted>,
    /// None on holds from before key sources were kept.
    key_source: Option<KeySource>,
}

async fn load_hold(tx: &mut Tx, hold_id: &str) -> LedgerResult<Option<HoldRow>> {
    let row = sqlx::query(
        "SELECT id, paywall_id, user_id, wallet_account, revenue_account, request_id, model, provider_id, amount,
                prompt_tokens_est, max_output_tokens,
                price_rule_id, state, transfer_id, reserved_tokens, minute_window, day_window, month_window,
                key_source
         FROM holds WHERE id = $1",
    )
    .bind(hold_id)
    .fetch_optional(&mut **tx)
    .await?;
    row.map(|r| -> LedgerResult<HoldRow> {
        Ok(HoldRow {
            id: r.get("id"),
            paywall_id: r.get("paywall_id"),
            user_id: r.get("user_id"),
            wallet: r.get("wallet_account"),
            revenue: r.get("revenue_account"),
            request_id: r.get("request_id"),
            model: r.get("model"),
            provider_id: r.get("provider_id"),
            amount: r.get("amount"),
            prompt_tokens_est: u32::try_from(r.get::<i64, _>("prompt_tokens_est"))
                .unwrap_or(u32::MAX),
            max_output_tokens: u32::try_from(r.get::<i64, _>("max_output_tokens"))
                .unwrap_or(u32::MAX),
            price_rule_id: r.get("price_rule_id"),
            state: HoldState::parse(r.get("state")).ok_or_else(|| {
                LedgerError::Internal(format!("hold {hold_id} has an unknown state"))
            })?,
            transfer_id: r.get("transfer_id"),
            counted: limits::counted_from_row(&r),
            key_source: r
                .try_get::<Option<&str>, _>("key_source")
                .ok()
                .flatten()
                .and_then(KeySource::parse),
        })
    })
    .transpose()
}

/// Claims a pending hold for resolution. The conditional UPDATE is the
/// idempotency point: of two concurrent settles, exactly one gets `true`.
async fn claim(tx: &mut Tx, hold_id: &str, new_state: HoldState) -> LedgerResult<bool> {
    let done = sqlx::query(
        "UPDATE holds SET state = $1, resolved_at = $2 WHERE id = $3 AND state = 'pending'",
    )
    .bind(new_state.as_str())
    .bind(now_ms())
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
        hold.counted,
        used_tokens,
        hold.amount - posted,
    )
    .await?;
    Ok(transfer)
}
