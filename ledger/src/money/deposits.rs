//! Money coming in: deposits (API or the top-up page) and top-up links, plus
//! the listing of a wallet's ledger entries.

use serde::Serialize;
use serde_json::json;
use tollgate_protocol::format_micros;

use crate::access::links::{self, Link, LinkHolder};
use crate::db::Db;
use crate::error::LedgerResult;
use crate::money::book::{self, Balance, TransferMeta, Tx, EXTERNAL_CASH};
use crate::money::owed;
use crate::money::wallets;
use crate::outbox::events;
use crate::settings::Settings;
use tollgate_protocol::LinkPurpose;

/// Credits a user's wallet from outside money. Returns the new balance.
pub async fn deposit(
    db: &Db,
    paywall_id: &str,
    user_id: &str,
    amount: i64,
    memo: &str,
) -> LedgerResult<Balance> {
    let mut tx = db.pool.begin().await?;
    let balance = deposit_in(&mut tx, paywall_id, user_id, amount, memo).await?;
    tx.commit().await?;
    Ok(balance)
}

/// The deposit movement (external cash → wallet) and its event, in `tx`.
pub async fn deposit_in(
    tx: &mut Tx,
    paywall_id: &str,
    user_id: &str,
    amount: i64,
    memo: &str,
) -> LedgerResult<Balance> {
    let wallet = wallets::require_wallet(tx, paywall_id, user_id).await?;
    let deposited = deposit_to(tx, &wallet, paywall_id, user_id, amount, memo).await?;
    Ok(deposited.balance)
}

/// What a deposit did.
#[derive(Debug, Clone)]
pub struct Deposited {
    pub transfer_id: String,
    /// Taken back at once to pay what the user owed (see [`owed`]).
    pub repaid: i64,
    pub balance: Balance,
}

/// Credits `wallet` (already opened in `tx`), pays back anything owed from
/// it, and records `balance.deposited`.
pub async fn deposit_to(
    tx: &mut Tx,
    wallet: &str,
    paywall_id: &str,
    user_id: &str,
    amount: i64,
    memo: &str,
) -> LedgerResult<Deposited> {
    book::ensure_account(tx, EXTERNAL_CASH, "external", None, None).await?;
    let meta = TransferMeta {
        paywall_id: Some(paywall_id),
        memo: Some(memo),
        ..Default::default()
    };
    let transfer_id = book::post(tx, "deposit", EXTERNAL_CASH, wallet, amount, &meta).await?;
    let repaid = owed::repay(tx, wallet, &meta).await?;
    let mut payload =
        json!({"amount": format_micros(amount), "transfer_id": transfer_id, "source": memo});
    if repaid > 0 {
        payload["repaid"] = json!(format_micros(repaid));
    }
    events::record(
        tx,
        events::BALANCE_DEPOSITED,
        None,
        paywall_id,
        user_id,
        payload,
    )
    .await?;
    let balance = book::balance_in(tx, wallet).await?;
    Ok(Deposited {
        transfer_id,
        repaid,
        balance,
    })
}

/// A top-up link for the user (see [`crate::access::links`]).
pub async fn create_topup_link(
    tx: &mut Tx,
    settings: &Settings,
    paywall_id: &str,
    user_id: &str,
) -> LedgerResult<Link> {
    links::create(tx, settings, LinkPurpose::Topup, paywall_id, user_id).await
}

pub async fn open_link(db: &Db, token: &str) -> LedgerResult<Option<LinkHolder>> {
    links::open(db, LinkPurpose::Topup, token).await
}

/// Pays through a link: spends it and credits the wallet in one transaction,
/// so a link can never pay twice.
pub async fn redeem_link(
    db: &Db,
    token: &str,
    amount: i64,
    memo: &str,
) -> LedgerResult<Option<(LinkHolder, Balance)>> {
    let Some(holder) = open_link(db, token).await? else {
        return Ok(None);
    };
    let mut tx = db.pool.begin().await?;
    if !links::claim(&mut tx, LinkPurpose::Topup, token).await? {
        return Ok(None);
    }
    let balance = deposit_in(&mut tx, &holder.paywall_id, &holder.user_id, amount, memo).await?;
    tx.commit().await?;
    Ok(Some((holder, balance)))
}

/// One ledger entry as the wallet's owner sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Entry {
    pub seq: i64,
    pub id: String,
    pub kind: String,
    /// Signed effect on the wallet, decimal string; holds show the reserved amount.
    pub amount: String,
    pub amount_micros: i64,
    pub direction: &'static str,
    pub request_id: Option<String>,
    pub hold_id: Option<String>,
    pub memo: Option<String>,
    pub created_at: i64,
}

/// A wallet's entries made on behalf of `paywall_id` (a shared wallet also has
/// other paywalls' entries, which this paywall does not see).
pub async fn entries(
    db: &Db,
    wallet: &str,
    paywall_id: &str,
    after: i64,
    limit: i64,
) -> LedgerResult<Vec<Entry>> {
    #[derive(sqlx::FromRow)]
    struct TransferRow {
        seq: i64,
        id: String,
        kind: String,
        debit_account: String,
        amount: i64,
        request_id: Option<String>,
        hold_id: Option<String>,
        memo: Option<String>,
        created_at: i64,
    }
    let rows: Vec<TransferRow> = sqlx::query_as(
        "SELECT seq, id, kind, debit_account, amount, request_id, hold_id, memo, created_at FROM transfers
         WHERE (debit_account = $1 OR credit_account = $1) AND seq > $2 AND (paywall_id = $4 OR paywall_id IS NULL)
         ORDER BY seq LIMIT $3",
    )
    .bind(wallet)
    .bind(after)
    .bind(limit)
    .bind(paywall_id)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let outgoing = r.debit_account == wallet;
            let signed = if outgoing { -r.amount } else { r.amount };
            Entry {
                seq: r.seq,
                id: r.id,
                kind: r.kind,
                amount: format_micros(signed),
                amount_micros: signed,
                direction: if outgoing { "debit" } else { "credit" },
                request_id: r.request_id,
                hold_id: r.hold_id,
                memo: r.memo,
                created_at: r.created_at,
            }
        })
        .collect())
}
