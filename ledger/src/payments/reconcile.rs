//! `tollgate-ledger payments reconcile --since <time>`: lists the completed
//! Checkout Sessions Stripe has since then and credits those of ours that
//! were never credited (a webhook lost or never configured), through the
//! same exactly-once path as the webhook.

use super::checkout::{self, Credit};
use super::Payments;
use crate::db::Db;
use crate::error::{LedgerError, LedgerResult};

/// One session the reconciliation looked at.
#[derive(Debug, Clone)]
pub struct Reconciled {
    pub session: String,
    pub paywall_id: String,
    pub user_id: String,
    /// `credited`, `already_credited`, `not_paid` or `wrong_currency`.
    pub outcome: &'static str,
    pub amount: String,
}

/// Stripe's largest page.
const PAGE: &str = "100";

pub async fn reconcile(
    db: &Db,
    payments: &Payments,
    since_secs: i64,
) -> LedgerResult<Vec<Reconciled>> {
    let Some(stripe) = payments.stripe() else {
        return Err(LedgerError::Invalid(
            "reconcile needs [payments] processor = \"stripe\"".into(),
        ));
    };
    let mut done = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut query = vec![
            ("created[gte]".to_string(), since_secs.to_string()),
            ("status".to_string(), "complete".to_string()),
            ("limit".to_string(), PAGE.to_string()),
        ];
        if let Some(id) = &after {
            query.push(("starting_after".to_string(), id.clone()));
        }
        let page = stripe
            .api
            .list_sessions(&query)
            .await
            .map_err(|e| LedgerError::Unavailable(e.to_string()))?;
        for session in &page.data {
            let Some(payer) = session.payer() else {
                continue;
            };
            let mut tx = db.pool.begin().await?;
            let credit = checkout::credit(&mut tx, &payments.offer, session, "reconcile").await?;
            tx.commit().await?;
            let outcome = match credit {
                Credit::Credited { .. } => "credited",
                Credit::AlreadyCredited => "already_credited",
                Credit::NotPaid => "not_paid",
                Credit::WrongCurrency(_) => "wrong_currency",
                Credit::NotOurs => continue,
            };
            let amount = session
                .amount_total
                .and_then(|m| payments.offer.currency.from_minor(m))
                .map(|a| payments.offer.currency.display(a))
                .unwrap_or_default();
            done.push(Reconciled {
                session: session.id.clone(),
                paywall_id: payer.paywall_id,
                user_id: payer.user_id,
                outcome,
                amount,
            });
        }
        match page.data.last() {
            Some(last) if page.has_more => after = Some(last.id.clone()),
            _ => break,
        }
    }
    Ok(done)
}
