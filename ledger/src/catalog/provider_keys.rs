//! Provider keys a paywall brings (BYOK). Stored only sealed with the master
//! key (see `master_key`), shown never again after they are set: listings give
//! the provider, a version, a fingerprint and dates. Setting a key again
//! rotates it (the version goes up; the old ciphertext is overwritten).

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::calendar::now_ms;
use crate::catalog::master_key::{KeyError, Keyring, Sealed};
use crate::db::Db;
use crate::error::{LedgerError, LedgerResult};

/// The longest key accepted; real provider keys are far shorter.
const MAX_KEY_LEN: usize = 4096;

/// Binds a ciphertext to its row: a copy on another paywall or provider fails to open.
fn associated_data(paywall_id: &str, provider_id: &str) -> String {
    format!("tollgate/provider-key/v1|{paywall_id}|{provider_id}")
}

/// Tells keys apart without revealing them: 48 bits of a SHA-256.
fn fingerprint(key: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"tollgate provider key fingerprint v1\0")
        .chain_update(key.as_bytes())
        .finalize();
    format!("fp_{}", hex::encode(&digest[..6]))
}

/// A stored key as listed: never the key.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema, sqlx::FromRow)]
pub struct ProviderKeyInfo {
    #[sqlx(rename = "paywall_id")]
    pub paywall: String,
    #[sqlx(rename = "provider_id")]
    pub provider: String,
    pub version: i64,
    pub fingerprint: String,
    pub master_key_id: String,
    pub created_at: i64,
    pub updated_at: i64,
}

const INFO_COLUMNS: &str =
    "paywall_id, provider_id, version, fingerprint, master_key_id, created_at, updated_at";

fn check_key(key: &str) -> LedgerResult<()> {
    // Printable ASCII without spaces: what provider keys are, and nothing that
    // could break out of the header the key travels in.
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(LedgerError::Invalid(format!(
            "a provider key is 1 to {MAX_KEY_LEN} printable ASCII characters without spaces"
        )));
    }
    Ok(())
}

async fn require_paywall_and_provider(db: &Db, paywall: &str, provider: &str) -> LedgerResult<()> {
    let (paywalls, providers): (i64, i64) = sqlx::query_as(
        "SELECT CAST((SELECT COUNT(*) FROM paywalls WHERE id = $1) AS BIGINT),
                CAST((SELECT COUNT(*) FROM providers WHERE id = $2) AS BIGINT)",
    )
    .bind(paywall)
    .bind(provider)
    .fetch_one(&db.pool)
    .await?;
    if paywalls == 0 {
        return Err(LedgerError::NotFound(format!("no paywall {paywall}")));
    }
    if providers == 0 {
        return Err(LedgerError::NotFound(format!("no provider {provider}")));
    }
    Ok(())
}

/// Stores (or rotates) a paywall's key for a provider.
pub async fn set(
    db: &Db,
    keyring: &Keyring,
    paywall: &str,
    provider: &str,
    key: &str,
) -> LedgerResult<ProviderKeyInfo> {
    check_key(key)?;
    require_paywall_and_provider(db, paywall, provider).await?;
    let sealed = keyring
        .seal(key, &associated_data(paywall, provider))
        .map_err(|e| LedgerError::Invalid(e.to_string()))?;
    let now = now_ms();
    let mut tx = db.pool.begin().await?;
    sqlx::query(
        "INSERT INTO provider_keys (paywall_id, provider_id, master_key_id, nonce, ciphertext, fingerprint, version,
            created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7)
         ON CONFLICT (paywall_id, provider_id) DO UPDATE SET master_key_id = excluded.master_key_id,
            nonce = excluded.nonce, ciphertext = excluded.ciphertext, fingerprint = excluded.fingerprint,
            version = provider_keys.version + 1, updated_at = excluded.updated_at",
    )
    .bind(paywall)
    .bind(provider)
    .bind(&sealed.key_id)
    .bind(&sealed.nonce)
    .bind(&sealed.ciphertext)
    .bind(fingerprint(key))
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let sql = format!(
        "SELECT {INFO_COLUMNS} FROM provider_keys WHERE paywall_id = $1 AND provider_id = $2"
    );
    let info: ProviderKeyInfo = sqlx::query_as(&sql)
        .bind(paywall)
        .bind(provider)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(paywall, provider, version = info.version, fingerprint = %info.fingerprint, "provider key stored");
    Ok(info)
}

pub async fn list(db: &Db, paywall: &str) -> LedgerResult<Vec<ProviderKeyInfo>> {
    let sql = format!(
        "SELECT {INFO_COLUMNS} FROM provider_keys WHERE paywall_id = $1 ORDER BY provider_id"
    );
    Ok(sqlx::query_as(&sql)
        .bind(paywall)
        .fetch_all(&db.pool)
        .await?)
}

/// Removes a paywall's key; false if there was none. Requests then use the
/// operator's key for that provider, if there is one.
pub async fn delete(db: &Db, paywall: &str, provider: &str) -> LedgerResult<bool> {
    let done = sqlx::query("DELETE FROM provider_keys WHERE paywall_id = $1 AND provider_id = $2")
        .bind(paywall)
        .bind(provider)
        .execute(&db.pool)
        .await?;
    let deleted = done.rows_affected() == 1;
    if deleted {
        tracing::info!(paywall, provider, "provider key deleted");
    }
    Ok(deleted)
}

/// The providers a paywall has its own key for.
pub async fn providers_with_key(db: &Db, paywall: &str) -> LedgerResult<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT provider_id FROM provider_keys WHERE paywall_id = $1 ORDER BY provider_id",
    )
    .bind(paywall)
    .fetch_all(&db.pool)
    .await?)
}

/// A paywall's key for a provider: None when it brought none, an error when
/// one is stored but cannot be opened (its master key is not configured).
pub async fn lookup(
    db: &Db,
    keyring: &Keyring,
    paywall: &str,
    provider: &str,
) -> LedgerResult<Option<Result<String, KeyError>>> {
    let sealed: Option<Sealed> = sqlx::query_as(
        "SELECT master_key_id, nonce, ciphertext FROM provider_keys WHERE paywall_id = $1 AND provider_id = $2",
    )
    .bind(paywall)
    .bind(provider)
    .fetch_optional(&db.pool)
    .await?;
    Ok(sealed.map(|s| keyring.open(&s, &associated_data(paywall, provider))))
}

/// Re-seals every stored key with the current master key (after a master key
/// rotation). Returns how many rows were re-sealed; a row no configured key
/// opens is an error that names it, and nothing is changed.
pub async fn rewrap(db: &Db, keyring: &Keyring) -> LedgerResult<usize> {
    let Some(current) = keyring.current_id().map(str::to_string) else {
        return Err(LedgerError::Invalid(
            "no master key configured to re-seal with".into(),
        ));
    };
    let mut tx = db.pool.begin().await?;
    #[derive(sqlx::FromRow)]
    struct Stored {
        paywall_id: String,
        provider_id: String,
        #[sqlx(flatten)]
        sealed: Sealed,
    }
    let rows: Vec<Stored> = sqlx::query_as(
        "SELECT paywall_id, provider_id, master_key_id, nonce, ciphertext FROM provider_keys WHERE master_key_id <> $1",
    )
    .bind(&current)
    .fetch_all(&mut *tx)
    .await?;
    for r in &rows {
        let (paywall, provider) = (&r.paywall_id, &r.provider_id);
        let aad = associated_data(paywall, provider);
        let plain = keyring.open(&r.sealed, &aad).map_err(|e| {
            LedgerError::Invalid(format!("paywall {paywall}, provider {provider}: {e}"))
        })?;
        let resealed = keyring
            .seal(&plain, &aad)
            .map_err(|e| LedgerError::Invalid(e.to_string()))?;
        sqlx::query(
            "UPDATE provider_keys SET master_key_id = $1, nonce = $2, ciphertext = $3 WHERE paywall_id = $4 AND provider_id = $5",
        )
        .bind(&resealed.key_id)
        .bind(&resealed.nonce)
        .bind(&resealed.ciphertext)
        .bind(paywall)
        .bind(provider)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(rows.len())
}
