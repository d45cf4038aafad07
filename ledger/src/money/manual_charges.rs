//! Manual charges (`POST /v1/user/charge`): an app bills its user for
//! something other than a completion. Posted at once, only if the wallet's
//! available balance covers it.

use serde_json::{json, Value};
use tollgate_protocol::format_micros;

use crate::db::Db;
use crate::error::LedgerResult;
use crate::money::book::{self, revenue_account, Balance, TransferMeta, Tx};
use crate::money::wallets;
use crate::outbox::events;

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
    let mut tx = db.pool.begin().await?;
    let charged = charge_in(&mut tx, paywall_id, user_id, amount, metadata).await?;
    if charged.is_some() {
        tx.commit().await?;
    }
    Ok(charged)
}

/// The manual charge in `tx`; None (nothing written) when the balance does not cover it.
pub async fn charge_in(
    tx: &mut Tx,
    paywall_id: &str,
    user_id: &str,
    amount: i64,
    metadata: &Value,
) -> LedgerResult<Option<ManualCharge>> {
    let revenue = revenue_account(paywall_id);
    let memo = metadata.to_string();
    let wallet = wallets::require_wallet(tx, paywall_id, user_id).await?;
    book::ensure_account(tx, &revenue, "revenue", Some(paywall_id), None).await?;
    let meta = TransferMeta {
        paywall_id: Some(paywall_id),
        memo: Some(&memo),
        ..Default::default()
    };
    let Some(transfer_id) =
        book::post_if_covered(tx, "charge", &wallet, &revenue, amount, &meta).await?
    else {
        return Ok(None);
    };
    let payload = json!({"transfer_id": transfer_id, "amount": format_micros(amount), "metadata": metadata, "manual": true});
    events::record(
        tx,
        events::CHARGE_CREATED,
        None,
        paywall_id,
        user_id,
        payload,
    )
    .await?;
    let balance = book::balance_in(tx, &wallet).await?;
    Ok(Some(ManualCharge {
        transfer_id,
        balance,
    }))
}
