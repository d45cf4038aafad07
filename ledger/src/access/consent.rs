//! Shared mode's consent: a user authorizes a paywall to charge their shared
//! wallet by opening an authorization link (single use, expiring, bound to one
//! paywall and one user; only its hash is stored) and confirming. Apps can
//! read the state (`GET /v1/user/connect`) and revoke it (`GET /v1/user/disconnect`).

use serde_json::json;

use crate::access::links::{self, Link, LinkHolder};
use crate::calendar::now_ms;
use crate::db::Db;
use crate::error::LedgerResult;
use crate::money::book::Tx;
use crate::outbox::events;
use crate::settings::Settings;
use tollgate_protocol::LinkPurpose;

/// An authorization link for the user (see [`crate::access::links`]).
pub async fn create_link(
    tx: &mut Tx,
    settings: &Settings,
    paywall_id: &str,
    user_id: &str,
) -> LedgerResult<Link> {
    links::create(tx, settings, LinkPurpose::Consent, paywall_id, user_id).await
}

pub async fn open_link(db: &Db, token: &str) -> LedgerResult<Option<LinkHolder>> {
    links::open(db, LinkPurpose::Consent, token).await
}

/// The user confirmed: the link is spent and the paywall connected, in one transaction.
pub async fn accept(db: &Db, token: &str) -> LedgerResult<Option<LinkHolder>> {
    let Some(holder) = open_link(db, token).await? else {
        return Ok(None);
    };
    let now = now_ms();
    let mut tx = db.pool.begin().await?;
    if !links::claim(&mut tx, LinkPurpose::Consent, token).await? {
        return Ok(None);
    }
    sqlx::query(
        "INSERT INTO connections (paywall_id, user_id, connected_at) VALUES ($1, $2, $3)
         ON CONFLICT (paywall_id, user_id) DO UPDATE SET connected_at = excluded.connected_at, revoked_at = NULL",
    )
    .bind(&holder.paywall_id)
    .bind(&holder.user_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    events::record(
        &mut tx,
        events::AUTHORIZATION_GRANTED,
        None,
        &holder.paywall_id,
        &holder.user_id,
        json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(Some(holder))
}

/// When the user connected this paywall, if they have and not revoked it.
pub async fn connected_since(
    db: &Db,
    paywall_id: &str,
    user_id: &str,
) -> LedgerResult<Option<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT connected_at FROM connections WHERE paywall_id = $1 AND user_id = $2 AND revoked_at IS NULL",
    )
    .bind(paywall_id)
    .bind(user_id)
    .fetch_optional(&db.pool)
    .await?)
}

/// Revokes a connection. Holds already placed still settle; new requests need consent again.
pub async fn disconnect(db: &Db, paywall_id: &str, user_id: &str) -> LedgerResult<bool> {
    let mut tx = db.pool.begin().await?;
    let done = sqlx::query("UPDATE connections SET revoked_at = $1 WHERE paywall_id = $2 AND user_id = $3 AND revoked_at IS NULL")
        .bind(now_ms())
        .bind(paywall_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    let revoked = done.rows_affected() == 1;
    if revoked {
        events::record(
            &mut tx,
            events::AUTHORIZATION_REVOKED,
            None,
            paywall_id,
            user_id,
            json!({}),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(revoked)
}
