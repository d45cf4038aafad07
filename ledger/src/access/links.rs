//! Links shown to end users in assistant messages and API answers: a top-up
//! checkout or a shared-mode consent page. A link carries an unguessable
//! token (256 random bits; only its SHA-256 is stored), expires, works once,
//! and is bound to one paywall and one user: a used, expired or foreign token
//! opens nothing and changes nothing. Issuing one records its event
//! (`topup_link.created` or `authorization.requested`).

use crate::access::secrets::{new_token, sha256_hex};
use crate::calendar::now_ms;
use crate::db::Db;
use crate::error::LedgerResult;
use crate::money::book::Tx;
use crate::outbox::events;
use crate::settings::Settings;
use tollgate_protocol::LinkPurpose;

/// The event recorded when a link is issued.
fn created_event(purpose: LinkPurpose) -> &'static str {
    match purpose {
        LinkPurpose::Topup => events::TOPUP_LINK_CREATED,
        LinkPurpose::Consent => events::AUTHORIZATION_REQUESTED,
    }
}

/// The page under `/pay/` that opens it.
fn page(purpose: LinkPurpose) -> &'static str {
    match purpose {
        LinkPurpose::Topup => "topup",
        LinkPurpose::Consent => "connect",
    }
}

pub struct Link {
    pub url: String,
    pub expires_at: i64,
}

/// Who a valid link was issued for.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LinkHolder {
    pub paywall_id: String,
    pub paywall_name: String,
    pub user_id: String,
}

pub async fn create(
    tx: &mut Tx,
    settings: &Settings,
    purpose: LinkPurpose,
    paywall_id: &str,
    user_id: &str,
) -> LedgerResult<Link> {
    let token = new_token();
    let now = now_ms();
    let expires_at = now.saturating_add(settings.topup_link_ttl_ms);
    sqlx::query(
        "INSERT INTO links (token_hash, purpose, paywall_id, user_id, expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(sha256_hex(&token))
    .bind(purpose.as_str())
    .bind(paywall_id)
    .bind(user_id)
    .bind(expires_at)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    let payload = serde_json::json!({"expires_at": expires_at});
    events::record(
        tx,
        created_event(purpose),
        None,
        paywall_id,
        user_id,
        payload,
    )
    .await?;
    Ok(Link {
        url: format!("{}/pay/{}/{token}", settings.public_url, page(purpose)),
        expires_at,
    })
}

/// The holder of a known, unexpired, unused link of this purpose.
pub async fn open(db: &Db, purpose: LinkPurpose, token: &str) -> LedgerResult<Option<LinkHolder>> {
    Ok(sqlx::query_as(
        "SELECT l.paywall_id, l.user_id, p.name AS paywall_name FROM links l JOIN paywalls p ON p.id = l.paywall_id
         WHERE l.token_hash = $1 AND l.purpose = $2 AND l.used_at IS NULL AND l.expires_at > $3",
    )
    .bind(sha256_hex(token))
    .bind(purpose.as_str())
    .bind(now_ms())
    .fetch_optional(&db.pool)
    .await?)
}

/// Spends a link inside `tx`; false if it was already used (or is not of this purpose).
pub async fn claim(tx: &mut Tx, purpose: LinkPurpose, token: &str) -> LedgerResult<bool> {
    let done = sqlx::query(
        "UPDATE links SET used_at = $1 WHERE token_hash = $2 AND purpose = $3 AND used_at IS NULL",
    )
    .bind(now_ms())
    .bind(sha256_hex(token))
    .bind(purpose.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}
