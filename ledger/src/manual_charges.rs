//! Manual charges (`POST /v1/user/charge`): an app bills its user for
//! something other than a completion. Posted at once, only if the wallet's
//! available balance covers it.

use serde_json::{json, Value};
use tollgate_protocol::format_micros;

use crate::book::{self, revenue_account, wallet_account, Balance, TransferMeta};
use crate::db::Db;
use crate::error::LedgerResult;
use crate::events;

pub struct ManualCharge {
    pub transfer_id: String,
    pub balance: Balance,
}

/// None when the balance does not cover `amount` (nothing moves).
pub async fn charge(
    db: &Db,
    paywall_id: &str,
    user_id: &str,
    amount: i64,
    metadata: &Value,
) -> LedgerResult<Option<ManualCharge>> {
    let wallet = wallet_account(paywall_id, user_id);
    let revenue = revenue_account(paywall_id);
    let memo = metadata.to_string();
    let mut tx = db.pool.begin().await?;
    book::ensure_account(&mut tx, &wallet, "wallet", Some(paywall_id), Some(user_id)).await?;
    book::ensure_account(&mut tx, &revenue, "revenue", Some(paywall_id), None).await?;
    let meta = TransferMeta {
        memo: Some(&memo),
        ..Default::default()
    };
    let Some(transfer_id) =
        book::post_if_covered(&mut tx, "charge", &wallet, &revenue, amount, &meta).await?
    else {
        return Ok(None);
    };
    let payload = json!({"transfer_id": transfer_id, "amount": format_micros(amount), "metadata": metadata, "manual": true});
    events::record(
        &mut tx,
        events::CHARGE_CREATED,
        None,
        paywall_id,
        user_id,
        payload,
    )
    .await?;
    let balance = book::balance_in(&mut tx, &wallet).await?;
    tx.commit().await?;
    Ok(Some(ManualCharge {
        transfer_id,
        balance,
    }))
}
