//! Paywall API keys. A key is random, shown once at creation, and stored only
//! as its SHA-256; lookups compare digests in constant time. A paywall may
//! have several live keys (rotation: create the new one, revoke the old).
//! The key named by the TOML (`key_env`) is labelled `config`: when it
//! changes, the previous config key is revoked at the next start.

use serde::Serialize;

use crate::access::secrets::{new_id, random_hex, sha256_hex};
use crate::calendar::now_ms;
use crate::db::Db;
use crate::error::{LedgerError, LedgerResult};
use crate::money::book::Tx;

pub const CONFIG_LABEL: &str = "config";

/// Makes `key` a live config key of the paywall and revokes earlier config keys.
pub async fn seed_config_key(tx: &mut Tx, paywall_id: &str, key: &str) -> LedgerResult<()> {
    let hash = sha256_hex(key);
    let owner: Option<String> =
        sqlx::query_scalar("SELECT paywall_id FROM paywall_keys WHERE key_hash = $1")
            .bind(&hash)
            .fetch_optional(&mut **tx)
            .await?;
    match owner {
        Some(owner) if owner != paywall_id => {
            return Err(LedgerError::Invalid(format!(
                "the key of paywall {paywall_id} already belongs to another paywall"
            )));
        }
        Some(_) => {
            sqlx::query("UPDATE paywall_keys SET revoked_at = NULL WHERE key_hash = $1")
                .bind(&hash)
                .execute(&mut **tx)
                .await?;
        }
        None => {
            insert(tx, paywall_id, &hash, CONFIG_LABEL).await?;
        }
    }
    sqlx::query("UPDATE paywall_keys SET revoked_at = $1 WHERE paywall_id = $2 AND label = $3 AND key_hash <> $4 AND revoked_at IS NULL")
        .bind(now_ms())
        .bind(paywall_id)
        .bind(CONFIG_LABEL)
        .bind(&hash)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn insert(tx: &mut Tx, paywall_id: &str, hash: &str, label: &str) -> LedgerResult<String> {
    let id = new_id("key");
    sqlx::query("INSERT INTO paywall_keys (id, paywall_id, key_hash, label, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&id)
        .bind(paywall_id)
        .bind(hash)
        .bind(label)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
    Ok(id)
}

/// A freshly created key: the only time its plaintext exists outside the caller.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    pub id: String,
    pub key: String,
    pub label: String,
}

pub async fn create(db: &Db, paywall_id: &str, label: &str) -> LedgerResult<CreatedKey> {
    let key = format!("tg_{}", random_hex(24));
    let mut tx = db.pool.begin().await?;
    let exists = sqlx::query("SELECT id FROM paywalls WHERE id = $1")
        .bind(paywall_id)
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_none() {
        return Err(LedgerError::NotFound(format!("no paywall {paywall_id}")));
    }
    let id = insert(&mut tx, paywall_id, &sha256_hex(&key), label).await?;
    tx.commit().await?;
    Ok(CreatedKey {
        id,
        key,
        label: label.to_string(),
    })
}

/// Revokes a key by id; false if it was unknown or already revoked.
pub async fn revoke(db: &Db, paywall_id: &str, key_id: &str) -> LedgerResult<bool> {
    let done = sqlx::query("UPDATE paywall_keys SET revoked_at = $1 WHERE id = $2 AND paywall_id = $3 AND revoked_at IS NULL")
        .bind(now_ms())
        .bind(key_id)
        .bind(paywall_id)
        .execute(&db.pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// A key as listed: never its plaintext or its hash.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct KeyInfo {
    pub id: String,
    pub label: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

pub async fn list(db: &Db, paywall_id: &str) -> LedgerResult<Vec<KeyInfo>> {
    Ok(sqlx::query_as(
        "SELECT id, label, created_at, revoked_at FROM paywall_keys WHERE paywall_id = $1 ORDER BY created_at, id",
    )
    .bind(paywall_id)
    .fetch_all(&db.pool)
    .await?)
}
