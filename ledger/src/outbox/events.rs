//! The events outbox: one row per business event, written in the same
//! transaction as the money movement it describes (webhooks read from here).

use serde_json::Value;

use crate::access::secrets::new_id;
use crate::calendar::now_ms;
use crate::error::LedgerResult;
use crate::money::book::Tx;

pub const AUTHORIZATION_REQUESTED: &str = "authorization.requested";
pub const AUTHORIZATION_GRANTED: &str = "authorization.granted";
pub const AUTHORIZATION_REVOKED: &str = "authorization.revoked";
pub const TOPUP_LINK_CREATED: &str = "topup_link.created";
pub const CHARGE_CREATED: &str = "charge.created";
pub const CHARGE_OVERAGE: &str = "charge.overage";
pub const BALANCE_DEPLETED: &str = "balance.depleted";
pub const BALANCE_DEPOSITED: &str = "balance.deposited";
pub const PAYMENT_SUCCEEDED: &str = "payment.succeeded";
pub const PAYMENT_FAILED: &str = "payment.failed";
pub const PAYMENT_REFUNDED: &str = "payment.refunded";
pub const REQUEST_BLOCKED: &str = "request.blocked";
pub const REQUEST_COMPLETED: &str = "request.completed";
pub const REQUEST_FAILED: &str = "request.failed";

pub async fn record(
    tx: &mut Tx,
    kind: &str,
    request_id: Option<&str>,
    paywall_id: &str,
    user_id: &str,
    payload: Value,
) -> LedgerResult<()> {
    record_all(tx, request_id, paywall_id, user_id, &[(kind, payload)]).await
}

/// Records several events of one request in one statement, in this order
/// (their `seq` follows the list): settle's events cost one round trip.
pub async fn record_all(
    tx: &mut Tx,
    request_id: Option<&str>,
    paywall_id: &str,
    user_id: &str,
    events: &[(&str, Value)],
) -> LedgerResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let rows: Vec<String> = (0..events.len())
        .map(|i| {
            let p = i * 7;
            format!(
                "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5,
                p + 6,
                p + 7
            )
        })
        .collect();
    let sql = format!(
        "INSERT INTO events (id, kind, request_id, paywall_id, user_id, payload, created_at) VALUES {}",
        rows.join(", ")
    );
    let now = now_ms();
    let mut q = sqlx::query(&sql);
    for (kind, payload) in events {
        q = q
            .bind(new_id("evt"))
            .bind(*kind)
            .bind(request_id)
            .bind(paywall_id)
            .bind(user_id)
            .bind(payload.to_string())
            .bind(now);
    }
    q.execute(&mut **tx).await?;
    Ok(())
}
