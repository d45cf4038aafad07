//! Checkout Sessions in the ledger. A session is recorded when the top-up
//! page creates it, and its money moves only from what Stripe reports (a
//! signed event, or the session retrieved from Stripe's API): never from a
//! figure the browser sent.
//!
//! Exactly once: crediting a session is a conditional update of its row
//! (`credited_at IS NULL`) in the same transaction as the deposit, so
//! however many times and in whatever order the events arrive, a session is
//! credited at most once; a refund moves only the part of the charge's
//! cumulative `amount_refunded` not yet debited, by the same kind of update.

use serde_json::json;

use super::config::Offer;
use super::currency::Currency;
use super::stripe::objects::{Charge, Payer, Session};
use crate::calendar::now_ms;
use crate::error::{LedgerError, LedgerResult};
use crate::money::book::{self, TransferMeta, Tx, EXTERNAL_CASH};
use crate::money::{deposits, owed, wallets};
use crate::outbox::events;

/// Where a session stands in the ledger.
pub mod state {
    /// Created, the customer has not paid (yet).
    pub const OPEN: &str = "open";
    /// Completed with a delayed payment method; waiting for the result.
    pub const PROCESSING: &str = "processing";
    pub const CREDITED: &str = "credited";
    pub const FAILED: &str = "failed";
    /// Paid in a currency other than the configured one: not credited.
    pub const WRONG_CURRENCY: &str = "wrong_currency";
}

/// Records a session the top-up page just created (a repeated creation
/// with the same idempotency key returns the same session: kept once).
pub async fn record_created(
    tx: &mut Tx,
    session: &Session,
    payer: &Payer,
    amount_minor: i64,
    currency: &Currency,
) -> LedgerResult<()> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO checkout_sessions (id, paywall_id, user_id, link_hash, amount_minor, currency, state,
            refunded_minor, last_refund_minor, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 0, 0, $8, $8) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&session.id)
    .bind(&payer.paywall_id)
    .bind(&payer.user_id)
    .bind(&payer.link_hash)
    .bind(amount_minor)
    .bind(&currency.code)
    .bind(state::OPEN)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// What crediting a session did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credit {
    Credited {
        amount: i64,
        transfer_id: String,
    },
    AlreadyCredited,
    /// `payment_status` is not `paid` (a delayed method still processing).
    NotPaid,
    WrongCurrency(String),
    /// Not created by this ledger (no Tollgate metadata).
    NotOurs,
}

/// The session's row as Stripe describes it now, created if it is missing
/// (the page's transaction may have been lost after Stripe made it).
async fn upsert(tx: &mut Tx, session: &Session, payer: &Payer, state: &str) -> LedgerResult<()> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO checkout_sessions (id, paywall_id, user_id, link_hash, amount_minor, currency, state,
            payment_intent, refunded_minor, last_refund_minor, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, 0, $9, $9)
         ON CONFLICT (id) DO UPDATE SET payment_intent = COALESCE(EXCLUDED.payment_intent, checkout_sessions.payment_intent),
            updated_at = EXCLUDED.updated_at",
    )
    .bind(&session.id)
    .bind(&payer.paywall_id)
    .bind(&payer.user_id)
    .bind(&payer.link_hash)
    .bind(session.amount_total.unwrap_or(0))
    .bind(session.currency.as_deref().unwrap_or(""))
    .bind(state)
    .bind(&session.payment_intent)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Moves the session to `state` unless it was credited.
async fn set_state(tx: &mut Tx, id: &str, state: &str) -> LedgerResult<()> {
    sqlx::query(
        "UPDATE checkout_sessions SET state = $1, updated_at = $2 WHERE id = $3 AND credited_at IS NULL",
    )
    .bind(state)
    .bind(now_ms())
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Credits a paid session's `amount_total` to the payer's wallet, once.
/// `source` names what reported it (a Stripe event id, `reconcile`, …) and
/// goes into the deposit's memo with the session id.
pub async fn credit(
    tx: &mut Tx,
    offer: &Offer,
    session: &Session,
    source: &str,
) -> LedgerResult<Credit> {
    let Some(payer) = session.payer() else {
        return Ok(Credit::NotOurs);
    };
    if !session.is_paid() {
        upsert(tx, session, &payer, state::PROCESSING).await?;
        set_state(tx, &session.id, state::PROCESSING).await?;
        return Ok(Credit::NotPaid);
    }
    let currency = session.currency.clone().unwrap_or_default();
    if currency != offer.currency.code {
        let payload = json!({"session": session.id, "reason": "wrong_currency", "currency": currency,
                             "expected": offer.currency.code, "source": source});
        not_credited(tx, session, &payer, state::WRONG_CURRENCY, payload).await?;
        return Ok(Credit::WrongCurrency(currency));
    }
    let minor = session.amount_total.unwrap_or(0);
    let amount = offer
        .currency
        .from_minor(minor)
        .filter(|a| *a > 0)
        .ok_or_else(|| {
            LedgerError::Invalid(format!("session {} has amount_total {minor}", session.id))
        })?;
    upsert(tx, session, &payer, state::OPEN).await?;
    let now = now_ms();
    let claimed = sqlx::query(
        "UPDATE checkout_sessions SET state = $1, credited_at = $2, credit_source = $3, amount_minor = $4, updated_at = $2
         WHERE id = $5 AND credited_at IS NULL",
    )
    .bind(state::CREDITED)
    .bind(now)
    .bind(source)
    .bind(minor)
    .bind(&session.id)
    .execute(&mut **tx)
    .await?;
    if claimed.rows_affected() != 1 {
        return Ok(Credit::AlreadyCredited);
    }
    let wallet = wallets::payment_wallet(tx, &payer.paywall_id, &payer.user_id).await?;
    let memo = format!("stripe checkout {} ({source})", session.id);
    let deposited = deposits::deposit_to(
        tx,
        &wallet,
        &payer.paywall_id,
        &payer.user_id,
        amount,
        &memo,
    )
    .await?;
    sqlx::query(
        "UPDATE checkout_sessions SET wallet_account = $1, deposit_transfer_id = $2 WHERE id = $3",
    )
    .bind(&wallet)
    .bind(&deposited.transfer_id)
    .bind(&session.id)
    .execute(&mut **tx)
    .await?;
    if let Some(link) = &payer.link_hash {
        // The link's payment is done: it cannot start another one.
        sqlx::query("UPDATE links SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL")
            .bind(now)
            .bind(link)
            .execute(&mut **tx)
            .await?;
    }
    let payload = json!({"session": session.id, "amount": offer.currency.display(amount),
                         "amount_micros": amount, "currency": currency,
                         "transfer_id": deposited.transfer_id, "source": source});
    events::record(
        tx,
        events::PAYMENT_SUCCEEDED,
        None,
        &payer.paywall_id,
        &payer.user_id,
        payload,
    )
    .await?;
    Ok(Credit::Credited {
        amount,
        transfer_id: deposited.transfer_id,
    })
}

/// A delayed payment failed: nothing is credited; the session says so.
pub async fn fail(tx: &mut Tx, session: &Session, source: &str) -> LedgerResult<bool> {
    let Some(payer) = session.payer() else {
        return Ok(false);
    };
    let payload =
        json!({"session": session.id, "reason": "async_payment_failed", "source": source});
    not_credited(tx, session, &payer, state::FAILED, payload).await?;
    Ok(true)
}

/// A session that will not be credited: its state, and `payment.failed` saying why.
async fn not_credited(
    tx: &mut Tx,
    session: &Session,
    payer: &Payer,
    state: &str,
    payload: serde_json::Value,
) -> LedgerResult<()> {
    upsert(tx, session, payer, state).await?;
    set_state(tx, &session.id, state).await?;
    events::record(
        tx,
        events::PAYMENT_FAILED,
        None,
        &payer.paywall_id,
        &payer.user_id,
        payload,
    )
    .await
}

/// What a refund did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refund {
    /// `amount` left the books: `from_wallet` of it from the wallet, the
    /// rest recorded as owed.
    Debited {
        amount: i64,
        from_wallet: i64,
        owed: i64,
    },
    /// This much (or more) of the charge was refunded already.
    AlreadyRefunded,
    /// No credited session of ours has this payment.
    Unmatched,
    WrongCurrency(String),
}

#[derive(sqlx::FromRow)]
struct Refunded {
    id: String,
    paywall_id: String,
    user_id: String,
    wallet_account: String,
    last_refund_minor: i64,
}

/// Debits the part of a charge's refunds not debited yet from the wallet
/// its session credited; what the wallet cannot cover is owed.
pub async fn refund(
    tx: &mut Tx,
    offer: &Offer,
    charge: &Charge,
    source: &str,
) -> LedgerResult<Refund> {
    let Some(intent) = &charge.payment_intent else {
        return Ok(Refund::Unmatched);
    };
    if charge.currency != offer.currency.code {
        return Ok(Refund::WrongCurrency(charge.currency.clone()));
    }
    // `last_refund_minor` takes the old total in the same statement that
    // raises it: concurrent deliveries each debit only their own part.
    let row: Option<Refunded> = sqlx::query_as(
        "UPDATE checkout_sessions SET last_refund_minor = $1 - refunded_minor, refunded_minor = $1, updated_at = $2
         WHERE payment_intent = $3 AND credited_at IS NOT NULL AND wallet_account IS NOT NULL AND refunded_minor < $1
         RETURNING id, paywall_id, user_id, wallet_account, last_refund_minor",
    )
    .bind(charge.amount_refunded)
    .bind(now_ms())
    .bind(intent)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else {
        return Ok(match credited_session(&mut **tx, intent).await? {
            Some(_) => Refund::AlreadyRefunded,
            None => Refund::Unmatched,
        });
    };
    let amount = offer
        .currency
        .from_minor(row.last_refund_minor)
        .ok_or_else(|| LedgerError::Invalid(format!("charge {} refunds too much", charge.id)))?;
    let memo = format!("stripe refund of {} ({source})", row.id);
    let meta = TransferMeta {
        paywall_id: Some(&row.paywall_id),
        memo: Some(&memo),
        ..Default::default()
    };
    book::ensure_account(tx, EXTERNAL_CASH, "external", None, None).await?;
    let available = book::balance_in(tx, &row.wallet_account).await?.available;
    let mut from_wallet = amount.min(available.max(0));
    if from_wallet > 0
        && book::post_if_covered(
            tx,
            "refund",
            &row.wallet_account,
            EXTERNAL_CASH,
            from_wallet,
            &meta,
        )
        .await?
        .is_none()
    {
        from_wallet = 0;
    }
    let rest = amount - from_wallet;
    if rest > 0 {
        owed::record(
            tx,
            &row.wallet_account,
            &row.paywall_id,
            &row.user_id,
            rest,
            &meta,
        )
        .await?;
    }
    let payload = json!({"session": row.id, "charge": charge.id,
                         "amount": offer.currency.display(amount), "amount_micros": amount,
                         "from_wallet_micros": from_wallet, "owed_micros": rest, "source": source});
    events::record(
        tx,
        events::PAYMENT_REFUNDED,
        None,
        &row.paywall_id,
        &row.user_id,
        payload,
    )
    .await?;
    Ok(Refund::Debited {
        amount,
        from_wallet,
        owed: rest,
    })
}

/// The credited session whose payment is `intent`, if any.
pub async fn credited_session<'e, E>(executor: E, intent: &str) -> LedgerResult<Option<String>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    Ok(sqlx::query_scalar(
        "SELECT id FROM checkout_sessions WHERE payment_intent = $1 AND credited_at IS NOT NULL",
    )
    .bind(intent)
    .fetch_optional(executor)
    .await?)
}

/// A session as the success page shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionView {
    pub id: String,
    pub paywall_id: String,
    pub user_id: String,
    pub state: String,
    pub amount_minor: i64,
    pub wallet_account: Option<String>,
}

/// The session `id`, if it was created through the link whose token hashes to `link_hash`.
pub async fn find_for_link(
    db: &crate::db::Db,
    id: &str,
    link_hash: &str,
) -> LedgerResult<Option<SessionView>> {
    Ok(sqlx::query_as(
        "SELECT id, paywall_id, user_id, state, amount_minor, wallet_account FROM checkout_sessions
         WHERE id = $1 AND link_hash = $2",
    )
    .bind(id)
    .bind(link_hash)
    .fetch_optional(&db.pool)
    .await?)
}
