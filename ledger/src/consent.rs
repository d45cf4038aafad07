//! Shared mode's consent: a user authorizes a paywall to charge their shared
//! wallet by opening an authorization link (single use, expiring, bound to one
//! paywall and one user; only its hash is stored) and confirming. Apps can
//! read the state (`GET /v1/user/connect`) and revoke it (`GET /v1/user/disconnect`).

use serde_json::json;
use sqlx::Row;

use crate::book::Tx;
use crate::db::Db;
use crate::error::LedgerResult;
use crate::events;
use crate::keys::{new_token, now_ms, sha256_hex};
use crate::settings::Settings;

pub struct ConsentLink {
    pub url: String,
    pub expires_at: i64,
}

pub async fn create_link(
    tx: &mut Tx,
    settings: &Settings,
    paywall_id: &str,
    user_id: &str,
) -> LedgerResult<ConsentLink> {
    let token = new_token();
    let now = now_ms();
    let expires_at = now.saturating_add(settings.topup_link_ttl_ms);
    sqlx::query("INSERT INTO consent_links (token_hash, paywall_id, user_id, expires_at, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(sha256_hex(&token))
        .bind(paywall_id)
        .bind(user_id)
        .bind(expires_at)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    events::record(
        tx,
        events::AUTHORIZATION_REQUESTED,
        None,
        paywall_id,
        user_id,
        json!({"expires_at": expires_at}),
    )
    .await?;
    Ok(ConsentLink {
        url: format!("{}/pay/connect/{token}", settings.public_url),
        expires_at,
    })
}

/// Who an authorization link is for, if it is valid.
#[derive(Debug, Clone)]
pub struct ConsentHolder {
    pub paywall_id: String,
    pub paywall_name: String,
    pub user_id: String,
}

pub async fn open_link(db: &Db, token: &str) -> LedgerResult<Option<ConsentHolder>> {
    let row = sqlx::query(
        "SELECT l.paywall_id, l.user_id, p.name FROM consent_links l JOIN paywalls p ON p.id = l.paywall_id
         WHERE l.token_hash = $1 AND l.used_at IS NULL AND l.expires_at > $2",
    )
    .bind(sha256_hex(token))
    .bind(now_ms())
    .fetch_optional(&db.pool)
    .await?;
    Ok(row.map(|r| ConsentHolder {
        paywall_id: r.get("paywall_id"),
        paywall_name: r.get("name"),
        user_id: r.get("user_id"),
    }))
}

/// The user confirmed: the link is spent and the paywall connected, in one transaction.
pub async fn accept(db: &Db, token: &str) -> LedgerResult<Option<ConsentHolder>> {
    let Some(holder) = open_link(db, token).await? else {
        return Ok(None);
    };
    let now = now_ms();
    let mut tx = db.pool.begin().await?;
    let claimed = sqlx::query(
        "UPDATE consent_links SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL",
    )
    .bind(now)
    .bind(sha256_hex(token))
    .execute(&mut *tx)
    .await?;
    if claimed.rows_affected() != 1 {
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
    let row = sqlx::query("SELECT connected_at FROM connections WHERE paywall_id = $1 AND user_id = $2 AND revoked_at IS NULL")
        .bind(paywall_id)
        .bind(user_id)
        .fetch_optional(&db.pool)
        .await?;
    Ok(row.map(|r| r.get("connected_at")))
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
