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

impl Balance {
    /// From a wallet row's sums.
    pub fn from_sums(debits_pending: i64, debits_posted: i64, credits_posted: i64) -> Balance {
        let posted = credits_posted - debits_posted;
        Balance {
            posted,
            held: debits_pending,
            available: posted - debits_pending,
        }
    }
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
    Ok(sums.map(|(pending, posted, credits)| Balance::from_sums(pending, posted, credits)))
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

/// One transfer row to write.
struct NewTransfer<'a> {
    kind: &'a str,
    debit: &'a str,
    credit: &'a str,
    amount: i64,
    meta: &'a TransferMeta<'a>,
}

async fn insert_transfer(
    tx: &mut Tx,
    kind: &str,
    debit: &str,
    credit: &str,
    amount: i64,
    meta: &TransferMeta<'_>,
) -> LedgerResult<String> {
    let row = NewTransfer {
        kind,
        debit,
        credit,
        amount,
        meta,
    };
    let ids = insert_transfers(tx, &[row]).await?;
    ids.into_iter()
        .next()
        .ok_or_else(|| LedgerError::Internal("no transfer written".into()))
}

/// Writes transfer rows in one statement, in this order; returns their ids.
async fn insert_transfers(tx: &mut Tx, rows: &[NewTransfer<'_>]) -> LedgerResult<Vec<String>> {
    const COLUMNS: usize = 11;
    let values: Vec<String> = (0..rows.len())
        .map(|i| {
            let params: Vec<String> = (1..=COLUMNS)
                .map(|c| format!("${}", i * COLUMNS + c))
                .collect();
            format!("({})", params.join(", "))
        })
        .collect();
    let sql = format!(
        "INSERT INTO transfers (id, kind, debit_account, credit_account, amount, pending_id, hold_id, request_id, memo,
            created_at, paywall_id)
         VALUES {}",
        values.join(", ")
    );
    let ids: Vec<String> = rows.iter().map(|_| new_id("tr")).collect();
    let now = now_ms();
    let mut q = sqlx::query(&sql);
    for (id, row) in ids.iter().zip(rows) {
        q = q
            .bind(id)
            .bind(row.kind)
            .bind(row.debit)
            .bind(row.credit)
            .bind(row.amount)
            .bind(row.meta.pending_id)
            .bind(row.meta.hold_id)
            .bind(row.meta.request_id)
            .bind(row.meta.memo)
            .bind(now)
            .bind(row.meta.paywall_id);
    }
    q.execute(&mut **tx).await?;
    Ok(ids)
}

async fn add(tx: &mut Tx, account: &str, column: &str, delta: i64) -> LedgerResult<()> {
    if !try_add(tx, account, column, delta).await? {
        return Err(LedgerError::Internal(format!("account {account} missing")));
    }
    Ok(())
}

/// Adds to one of an account's sums; false when the account does not exist.
async fn try_add(tx: &mut Tx, account: &str, column: &str, delta: i64) -> LedgerResult<bool> {
    // `column` is one of four literals chosen in this module, never input.
    let sql = format!("UPDATE accounts SET {column} = {column} + $1 WHERE id = $2");
    let done = sqlx::query(&sql)
        .bind(delta)
        .bind(account)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
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

/// Reserves `amount` on a wallet and counts one more request in flight on
/// it, if its available balance covers the amount and fewer than
/// `max_in_flight` are open: both checks and both writes are one conditional
/// UPDATE of the wallet row (see `debit_if_available`). None when either
/// check fails; the caller tells which. The paywall's revenue account is
/// opened on its first reservation.
pub async fn reserve(
    tx: &mut Tx,
    wallet: &str,
    revenue: &str,
    amount: i64,
    max_in_flight: i64,
    meta: &TransferMeta<'_>,
) -> LedgerResult<Option<String>> {
    let done = sqlx::query(
        "UPDATE accounts SET debits_pending = debits_pending + $1, open_holds = open_holds + 1
         WHERE id = $2 AND credits_posted - debits_posted - debits_pending >= $1 AND open_holds < $3",
    )
    .bind(amount)
    .bind(wallet)
    .bind(max_in_flight)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(None);
    }
    if !try_add(tx, revenue, "credits_pending", amount).await? {
        ensure_account(tx, revenue, "revenue", meta.paywall_id, None).await?;
        add(tx, revenue, "credits_pending", amount).await?;
    }
    insert_transfer(tx, "hold", wallet, revenue, amount, meta)
        .await
        .map(Some)
}

/// Holds open on a wallet (its requests in flight); 0 without an account.
pub async fn open_holds(tx: &mut Tx, wallet: &str) -> LedgerResult<i64> {
    let open: Option<i64> = sqlx::query_scalar("SELECT open_holds FROM accounts WHERE id = $1")
        .bind(wallet)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(open.unwrap_or(0))
}

/// How a reservation ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Post this amount (≤ the reservation; zero is a valid price) and release the rest.
    Post(i64),
    /// Release everything.
    Void,
}

/// The provider's share of a posted amount: it moves from the paywall's
/// revenue to a provider cost account (opened on first use), as its own
/// transfer, in the same step as the post.
pub struct ProviderShare<'a> {
    pub account: &'a str,
    pub amount: i64,
    pub meta: TransferMeta<'a>,
}

/// A reservation to resolve.
pub struct Resolve<'a> {
    pub wallet: &'a str,
    pub revenue: &'a str,
    pub held: i64,
    pub resolution: Resolution,
    /// Requests in flight the hold counted on the wallet (1; 0 for holds
    /// from before they were counted), given back now.
    pub in_flight: i64,
    /// Moved only by a post; a void ignores it.
    pub provider_share: Option<ProviderShare<'a>>,
}

/// What resolving wrote.
pub struct Resolved {
    /// The post or void transfer.
    pub transfer_id: String,
    /// The wallet's balance afterwards.
    pub wallet: Balance,
}

/// Resolves a reservation: releases `held`, posts the amount (if any) and
/// the provider's share. Each account row changes once, and the transfers
/// are written together: four statements at most, whatever moves.
pub async fn resolve(
    tx: &mut Tx,
    r: &Resolve<'_>,
    meta: &TransferMeta<'_>,
) -> LedgerResult<Resolved> {
    let (kind, posted) = match r.resolution {
        Resolution::Void => ("void", 0),
        Resolution::Post(amount) => ("post", amount),
    };
    if !(0..=r.held).contains(&posted) {
        return Err(LedgerError::Internal(format!(
            "posting {posted} against a hold of {}",
            r.held
        )));
    }
    let share = r
        .provider_share
        .as_ref()
        .filter(|p| p.amount > 0 && matches!(r.resolution, Resolution::Post(_)));
    let sums: Option<(i64, i64, i64)> = sqlx::query_as(
        "UPDATE accounts SET debits_pending = debits_pending - $1, debits_posted = debits_posted + $2,
            open_holds = open_holds - $3
         WHERE id = $4 RETURNING debits_pending, debits_posted, credits_posted",
    )
    .bind(r.held)
    .bind(posted)
    .bind(r.in_flight)
    .bind(r.wallet)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((debits_pending, debits_posted, credits_posted)) = sums else {
        return Err(LedgerError::Internal(format!(
            "account {} missing",
            r.wallet
        )));
    };
    let done = sqlx::query(
        "UPDATE accounts SET credits_pending = credits_pending - $1, credits_posted = credits_posted + $2,
            debits_posted = debits_posted + $3
         WHERE id = $4",
    )
    .bind(r.held)
    .bind(posted)
    .bind(share.map_or(0, |p| p.amount))
    .bind(r.revenue)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Err(LedgerError::Internal(format!(
            "account {} missing",
            r.revenue
        )));
    }
    let mut rows = vec![NewTransfer {
        kind,
        debit: r.wallet,
        credit: r.revenue,
        amount: posted,
        meta,
    }];
    if let Some(p) = share {
        sqlx::query(
            "INSERT INTO accounts (id, kind, created_at, credits_posted) VALUES ($1, 'provider_cost', $2, $3)
             ON CONFLICT (id) DO UPDATE SET credits_posted = accounts.credits_posted + $3",
        )
        .bind(p.account)
        .bind(now_ms())
        .bind(p.amount)
        .execute(&mut **tx)
        .await?;
        rows.push(NewTransfer {
            kind: "provider_cost",
            debit: r.revenue,
            credit: p.account,
            amount: p.amount,
            meta: &p.meta,
        });
    }
    let ids = insert_transfers(tx, &rows).await?;
    let transfer_id = ids
        .into_iter()
        .next()
        .ok_or_else(|| LedgerError::Internal("no transfer written".into()))?;
    Ok(Resolved {
        transfer_id,
        wallet: Balance::from_sums(debits_pending, debits_posted, credits_posted),
    })
}
