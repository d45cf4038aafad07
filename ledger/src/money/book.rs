//! Double-entry primitives in the style of TigerBeetle: accounts carry four
//! running sums (debits/credits, pending/posted); every movement is an
//! immutable transfer row plus the matching update of both accounts, in the
//! caller's transaction. Nothing here commits.

use serde::Serialize;
use sqlx::{Any, Transaction};

use crate::access::secrets::new_id;
use crate::calendar::now_ms;
use crate::db::Db;
use crate::error::{LedgerError, LedgerResult};

pub type Tx = Transaction<'static, Any>;

/// The one account outside money enters from (deposits) in this currency.
pub const EXTERNAL_CASH: &str = "cash:external";

pub fn revenue_account(paywall_id: &str) -> String {
    format!("revenue:{paywall_id}")
}

/// What the operator owes a provider for requests sent with the operator's key.
pub fn provider_cost_account(provider_id: &str) -> String {
    format!("provider_cost:{provider_id}")
}

pub async fn ensure_account(
    tx: &mut Tx,
    id: &str,
    kind: &str,
    paywall_id: Option<&str>,
    user_id: Option<&str>,
) -> LedgerResult<()> {
    sqlx::query(
        "INSERT INTO accounts (id, kind, paywall_id, user_id, created_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(kind)
    .bind(paywall_id)
    .bind(user_id)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A wallet's balance as the user sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Balance {
    /// Credits minus debits that are final.
    pub posted: i64,
    /// Reserved by open holds.
    pub held: i64,
    /// What a new request may reserve: posted − held.
    pub available: i64,
}

/// The balance of an account; zero for one that does not exist yet.
pub async fn balance(db: &Db, account: &str) -> LedgerResult<Balance> {
    Ok(find_balance(db, account).await?.unwrap_or_default())
}

/// The balance of an account, or None if it does not exist.
pub async fn find_balance(db: &Db, account: &str) -> LedgerResult<Option<Balance>> {
    balance_with(&db.pool, account).await
}

/// The balance as seen inside a transaction (after its own movements).
pub async fn balance_in(tx: &mut Tx, account: &str) -> LedgerResult<Balance> {
    Ok(balance_with(&mut **tx, account).await?.unwrap_or_default())
}

async fn balance_with<'e, E>(executor: E, account: &str) -> LedgerResult<Option<Balance>>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let sums: Option<(i64, i64, i64)> = sqlx::query_as(
        "SELECT debits_pending, debits_posted, credits_posted FROM accounts WHERE id = $1",
    )
    .bind(account)
    .fetch_optional(executor)
    .await?;
    Ok(sums.map(|(debits_pending, debits_posted, credits_posted)| {
        let posted = credits_posted - debits_posted;
        Balance {
            posted,
            held: debits_pending,
            available: posted - debits_pending,
        }
    }))
}

/// Fields of a transfer row beyond the two accounts and the amount.
#[derive(Debug, Default, Clone)]
pub struct TransferMeta<'a> {
    /// The paywall on whose behalf the money moves.
    pub paywall_id: Option<&'a str>,
    pub pending_id: Option<&'a str>,
    pub hold_id: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub memo: Option<&'a str>,
}

async fn insert_transfer(
    tx: &mut Tx,
    kind: &str,
    debit: &str,
    credit: &str,
    amount: i64,
    meta: &TransferMeta<'_>,
) -> LedgerResult<String> {
    let id = new_id("tr");
    sqlx::query(
        "INSERT INTO transfers (id, kind, debit_account, credit_account, amount, pending_id, hold_id, request_id, memo,
            created_at, paywall_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&id)
    .bind(kind)
    .bind(debit)
    .bind(credit)
    .bind(amount)
    .bind(meta.pending_id)
    .bind(meta.hold_id)
    .bind(meta.request_id)
    .bind(meta.memo)
    .bind(now_ms())
    .bind(meta.paywall_id)
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

async fn add(tx: &mut Tx, account: &str, column: &str, delta: i64) -> LedgerResult<()> {
    // `column` is one of four literals chosen in this module, never input.
    let sql = format!("UPDATE accounts SET {column} = {column} + $1 WHERE id = $2");
    let done = sqlx::query(&sql)
        .bind(delta)
        .bind(account)
        .execute(&mut **tx)
        .await?;
    if done.rows_affected() != 1 {
        return Err(LedgerError::Internal(format!("account {account} missing")));
    }
    Ok(())
}

/// Moves money immediately (deposits, manual charges).
pub async fn post(
    tx: &mut Tx,
    kind: &str,
    debit: &str,
    credit: &str,
    amount: i64,
    meta: &TransferMeta<'_>,
) -> LedgerResult<String> {
    add(tx, debit, "debits_posted", amount).await?;
    add(tx, credit, "credits_posted", amount).await?;
    insert_transfer(tx, kind, debit, credit, amount, meta).await
}

/// Adds `amount` to one of a wallet's debit sums only if its available
/// balance (posted credits − posted debits − pending debits) covers it. The
/// check and the write are one conditional UPDATE: concurrent callers, even
/// on several sidecars sharing PostgreSQL, can never overspend.
async fn debit_if_available(
    tx: &mut Tx,
    wallet: &str,
    column: &str,
    amount: i64,
) -> LedgerResult<bool> {
    // `column` is one of two literals chosen in this module, never input.
    let sql = format!(
        "UPDATE accounts SET {column} = {column} + $1
         WHERE id = $2 AND credits_posted - debits_posted - debits_pending >= $1"
    );
    let done = sqlx::query(&sql)
        .bind(amount)
        .bind(wallet)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Moves money out of a wallet immediately if its available balance covers
/// it (see `debit_if_available`). None when it does not.
pub async fn post_if_covered(
    tx: &mut Tx,
    kind: &str,
    wallet: &str,
    credit: &str,
    amount: i64,
    meta: &TransferMeta<'_>,
) -> LedgerResult<Option<String>> {
    if !debit_if_available(tx, wallet, "debits_posted", amount).await? {
        return Ok(None);
    }
    add(tx, credit, "credits_posted", amount).await?;
    insert_transfer(tx, kind, wallet, credit, amount, meta)
        .await
        .map(Some)
}

/// Reserves `amount` on a wallet if its available balance covers it (see
/// `debit_if_available`). Returns None when the balance is too low.
pub async fn reserve(
    tx: &mut Tx,
    wallet: &str,
    revenue: &str,
    amount: i64,
    meta: &TransferMeta<'_>,
) -> LedgerResult<Option<String>> {
    if !debit_if_available(tx, wallet, "debits_pending", amount).await? {
        return Ok(None);
    }
    add(tx, revenue, "credits_pending", amount).await?;
    insert_transfer(tx, "hold", wallet, revenue, amount, meta)
        .await
        .map(Some)
}

/// How a reservation ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Post this amount (≤ the reservation; zero is a valid price) and release the rest.
    Post(i64),
    /// Release everything.
    Void,
}

/// Resolves a reservation of `held` on a wallet.
pub async fn resolve(
    tx: &mut Tx,
    wallet: &str,
    revenue: &str,
    held: i64,
    resolution: Resolution,
    meta: &TransferMeta<'_>,
) -> LedgerResult<String> {
    add(tx, wallet, "debits_pending", -held).await?;
    add(tx, revenue, "credits_pending", -held).await?;
    match resolution {
        Resolution::Void => insert_transfer(tx, "void", wallet, revenue, 0, meta).await,
        Resolution::Post(amount) => {
            if !(0..=held).contains(&amount) {
                return Err(LedgerError::Internal(format!(
                    "posting {amount} against a hold of {held}"
                )));
            }
            add(tx, wallet, "debits_posted", amount).await?;
            add(tx, revenue, "credits_posted", amount).await?;
            insert_transfer(tx, "post", wallet, revenue, amount, meta).await
        }
    }
}
