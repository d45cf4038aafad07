//! Money a user owes: a refund larger than the wallet holds takes what the
//! wallet has, and the rest is owed, booked on an account of its own
//! (`owed:<wallet>`, kind `owed`) so that no wallet ever goes negative. The
//! owed account's posted debits exceed its credits by what is owed. While
//! anything is owed, authorize answers with the top-up message; the next
//! deposit pays it back first (a `repay` transfer, wallet → owed account).

use crate::error::LedgerResult;
use crate::money::book::{self, Balance, TransferMeta, Tx, EXTERNAL_CASH};

pub fn owed_account(wallet: &str) -> String {
    format!("owed:{wallet}")
}

/// A wallet as authorize reads it before reserving.
#[derive(Debug, Clone, Copy, Default)]
pub struct WalletState {
    /// None: the wallet has no account yet.
    pub balance: Option<Balance>,
    /// Holds open on it (requests in flight).
    pub in_flight: i64,
    /// What its owner owes.
    pub owed: i64,
}

/// The wallet's balance and in-flight count, and what its owner owes, in one
/// query: the hot path gains no round trip for the rare owed account.
pub async fn wallet_state(tx: &mut Tx, wallet: &str) -> LedgerResult<WalletState> {
    let owed_id = owed_account(wallet);
    let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT id, debits_pending, debits_posted, credits_posted, open_holds FROM accounts WHERE id IN ($1, $2)",
    )
    .bind(wallet)
    .bind(&owed_id)
    .fetch_all(&mut **tx)
    .await?;
    let mut state = WalletState::default();
    for (id, debits_pending, debits_posted, credits_posted, open_holds) in rows {
        let sums = Balance::from_sums(debits_pending, debits_posted, credits_posted);
        if id == owed_id {
            state.owed = (-sums.posted).max(0);
        } else {
            state.balance = Some(sums);
            state.in_flight = open_holds;
        }
    }
    Ok(state)
}

/// Records `amount` as owed: it left through a refund the wallet could not cover.
pub async fn record(
    tx: &mut Tx,
    wallet: &str,
    paywall_id: &str,
    user_id: &str,
    amount: i64,
    meta: &TransferMeta<'_>,
) -> LedgerResult<String> {
    let account = owed_account(wallet);
    book::ensure_account(tx, &account, "owed", Some(paywall_id), Some(user_id)).await?;
    book::ensure_account(tx, EXTERNAL_CASH, "external", None, None).await?;
    book::post(tx, "refund", &account, EXTERNAL_CASH, amount, meta).await
}

/// After money came into `wallet`: pays back what is owed, as far as the
/// wallet's available balance goes. Returns the amount repaid.
pub async fn repay(tx: &mut Tx, wallet: &str, meta: &TransferMeta<'_>) -> LedgerResult<i64> {
    let state = wallet_state(tx, wallet).await?;
    let pay = state.owed.min(state.balance.unwrap_or_default().available);
    if pay <= 0 {
        return Ok(0);
    }
    let account = owed_account(wallet);
    match book::post_if_covered(tx, "repay", wallet, &account, pay, meta).await? {
        Some(_) => Ok(pay),
        None => Ok(0),
    }
}
