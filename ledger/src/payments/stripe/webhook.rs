//! Stripe's webhook events, after their signature was checked. Each event id
//! is handled at most once: its row in `stripe_events` is inserted first, in
//! the same transaction as the money it moves, so a redelivery (or two at
//! once, on two sidecars) finds the row and moves nothing.

use super::objects::{Charge, Event, Session};
use crate::calendar::now_ms;
use crate::db::Db;
use crate::error::{LedgerError, LedgerResult};
use crate::payments::checkout::{self, Credit, Refund};
use crate::payments::{Payments, StripeProcessor};

pub const CHECKOUT_COMPLETED: &str = "checkout.session.completed";
pub const ASYNC_SUCCEEDED: &str = "checkout.session.async_payment_succeeded";
pub const ASYNC_FAILED: &str = "checkout.session.async_payment_failed";
pub const CHARGE_REFUNDED: &str = "charge.refunded";

/// What an event did, as recorded in `stripe_events.outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Credited,
    Pending,
    Failed,
    Refunded,
    /// The money it reports was moved before (by another event or path).
    AlreadyApplied,
    /// This event id was handled before.
    Duplicate,
    /// Not an event type the ledger acts on, or not about a session of ours.
    Ignored,
    /// Reports money the ledger must not take (another currency).
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Credited => "credited",
            Outcome::Pending => "pending",
            Outcome::Failed => "failed",
            Outcome::Refunded => "refunded",
            Outcome::AlreadyApplied => "already_applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Ignored => "ignored",
            Outcome::Error => "error",
        }
    }
}

fn object<T: serde::de::DeserializeOwned>(event: &Event) -> LedgerResult<T> {
    serde_json::from_value(event.data.object.clone())
        .map_err(|e| LedgerError::Invalid(format!("event {} ({}): {e}", event.id, event.kind)))
}

/// Handles one verified event. An error means nothing was recorded and the
/// event should be delivered again (the HTTP answer is a 5xx).
pub async fn handle(db: &Db, payments: &Payments, event: &Event) -> LedgerResult<Outcome> {
    if event.kind == CHARGE_REFUNDED {
        if let Some(stripe) = payments.stripe() {
            let charge: Charge = object(event)?;
            credit_before_refund(db, payments, stripe, &charge).await?;
        }
    }
    let mut tx = db.pool.begin().await?;
    let fresh = sqlx::query(
        "INSERT INTO stripe_events (id, type, outcome, received_at) VALUES ($1, $2, 'processing', $3)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&event.id)
    .bind(&event.kind)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    if fresh.rows_affected() != 1 {
        tx.rollback().await?;
        return Ok(Outcome::Duplicate);
    }
    let (outcome, session_id, detail) = apply(&mut tx, payments, event).await?;
    sqlx::query(
        "UPDATE stripe_events SET outcome = $1, session_id = $2, detail = $3 WHERE id = $4",
    )
    .bind(outcome.as_str())
    .bind(session_id)
    .bind(detail)
    .bind(&event.id)
    .execute(&mut *tx)
    .await?;
    crate::faults::pause(crate::faults::STRIPE_EVENT_BEFORE_COMMIT).await;
    tx.commit().await?;
    crate::metrics::count(crate::metrics::STRIPE_EVENTS, &[outcome.as_str()]);
    tracing::info!(event = %event.id, kind = %event.kind, outcome = outcome.as_str(), "stripe event");
    Ok(outcome)
}

type Applied = (Outcome, Option<String>, Option<String>);

async fn apply(
    tx: &mut crate::money::book::Tx,
    payments: &Payments,
    event: &Event,
) -> LedgerResult<Applied> {
    let offer = &payments.offer;
    match event.kind.as_str() {
        CHECKOUT_COMPLETED | ASYNC_SUCCEEDED => {
            let session: Session = object(event)?;
            let credit = checkout::credit(tx, offer, &session, &event.id).await?;
            let outcome = match &credit {
                Credit::Credited { .. } => Outcome::Credited,
                Credit::AlreadyCredited => Outcome::AlreadyApplied,
                Credit::NotPaid => Outcome::Pending,
                Credit::WrongCurrency(_) => Outcome::Error,
                Credit::NotOurs => Outcome::Ignored,
            };
            let detail = match credit {
                Credit::WrongCurrency(c) => {
                    Some(format!("currency {c} is not {}", offer.currency.code))
                }
                _ => None,
            };
            Ok((outcome, Some(session.id), detail))
        }
        ASYNC_FAILED => {
            let session: Session = object(event)?;
            let ours = checkout::fail(tx, &session, &event.id).await?;
            let outcome = if ours {
                Outcome::Failed
            } else {
                Outcome::Ignored
            };
            Ok((outcome, Some(session.id), None))
        }
        CHARGE_REFUNDED => {
            let charge: Charge = object(event)?;
            let refund = checkout::refund(tx, offer, &charge, &event.id).await?;
            Ok(match refund {
                Refund::Debited { .. } => (Outcome::Refunded, None, None),
                Refund::AlreadyRefunded => (Outcome::AlreadyApplied, None, None),
                Refund::Unmatched => (
                    Outcome::Ignored,
                    None,
                    Some("no credited session has this payment".into()),
                ),
                Refund::WrongCurrency(c) => (
                    Outcome::Error,
                    None,
                    Some(format!("currency {c} is not {}", offer.currency.code)),
                ),
            })
        }
        _ => Ok((Outcome::Ignored, None, None)),
    }
}

/// A refund can arrive before the payment's own event (or after it was
/// lost): when no credited session has the charge's payment, the session is
/// looked up at Stripe and credited first, through the same path.
async fn credit_before_refund(
    db: &Db,
    payments: &Payments,
    stripe: &StripeProcessor,
    charge: &Charge,
) -> LedgerResult<()> {
    let Some(intent) = &charge.payment_intent else {
        return Ok(());
    };
    if checkout::credited_session(&db.pool, intent)
        .await?
        .is_some()
    {
        return Ok(());
    }
    let query = vec![("payment_intent".to_string(), intent.clone())];
    let found = stripe
        .api
        .list_sessions(&query)
        .await
        .map_err(|e| LedgerError::Unavailable(e.to_string()))?;
    for session in found.data.iter().filter(|s| s.is_paid()) {
        let mut tx = db.pool.begin().await?;
        checkout::credit(&mut tx, &payments.offer, session, "refund_lookup").await?;
        tx.commit().await?;
    }
    Ok(())
}
