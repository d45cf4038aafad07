//! Idempotency keys with Stripe / IETF-draft semantics: the same key and body
//! replays the stored response byte for byte; the same key with another body
//! is 422; the same key while the first call still runs is 409. Keys are
//! scoped to the paywall and kept at least 24 hours.

use crate::access::secrets::sha256_hex;
use crate::calendar::now_ms;
use crate::db::Db;
use crate::error::{LedgerError, LedgerResult};

/// Keys are kept this long before the sweeper may delete them (≥ 24 h).
pub const RETENTION_MS: i64 = 48 * 3600 * 1000;

#[derive(Debug, PartialEq, Eq)]
pub enum Begin {
    /// First use: run the operation, then [`complete`] or [`abandon`].
    Fresh,
    Replay {
        status: u16,
        body: String,
    },
    /// Same key, different request.
    Mismatch,
    InFlight,
}

pub fn request_fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let mut material = Vec::with_capacity(body.len() + path.len() + 8);
    material.extend_from_slice(method.as_bytes());
    material.push(b' ');
    material.extend_from_slice(path.as_bytes());
    material.push(b'\n');
    material.extend_from_slice(body);
    sha256_hex(&String::from_utf8_lossy(&material))
}

/// Where a key's first call is (the `state` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyState {
    InFlight,
    Done,
}

impl TryFrom<String> for KeyState {
    type Error = LedgerError;

    fn try_from(text: String) -> LedgerResult<KeyState> {
        match text.as_str() {
            "in_flight" => Ok(KeyState::InFlight),
            "done" => Ok(KeyState::Done),
            _ => Err(LedgerError::Internal(format!(
                "idempotency key state {text:?}"
            ))),
        }
    }
}

pub async fn begin(db: &Db, paywall_id: &str, key: &str, fingerprint: &str) -> LedgerResult<Begin> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (paywall_id, idem_key, request_hash, state, created_at)
         VALUES ($1, $2, $3, 'in_flight', $4) ON CONFLICT DO NOTHING",
    )
    .bind(paywall_id)
    .bind(key)
    .bind(fingerprint)
    .bind(now_ms())
    .execute(&db.pool)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Begin::Fresh);
    }
    #[derive(sqlx::FromRow)]
    struct Stored {
        request_hash: String,
        /// `in_flight` until the first call's answer is stored, then `done`.
        #[sqlx(try_from = "String")]
        state: KeyState,
        status: Option<i64>,
        body: Option<String>,
    }
    let row: Option<Stored> = sqlx::query_as(
        "SELECT request_hash, state, status, body FROM idempotency_keys WHERE paywall_id = $1 AND idem_key = $2",
    )
    .bind(paywall_id)
    .bind(key)
    .fetch_optional(&db.pool)
    .await?;
    let Some(stored) = row else {
        // Deleted between the two statements (expired): treat as in flight; the client retries.
        return Ok(Begin::InFlight);
    };
    if stored.request_hash != fingerprint {
        return Ok(Begin::Mismatch);
    }
    if stored.state == KeyState::InFlight {
        return Ok(Begin::InFlight);
    }
    Ok(Begin::Replay {
        status: stored
            .status
            .and_then(|s| u16::try_from(s).ok())
            .unwrap_or(200),
        body: stored.body.unwrap_or_default(),
    })
}

pub async fn complete(
    db: &Db,
    paywall_id: &str,
    key: &str,
    status: u16,
    body: &str,
) -> LedgerResult<()> {
    sqlx::query("UPDATE idempotency_keys SET state = 'done', status = $1, body = $2 WHERE paywall_id = $3 AND idem_key = $4")
        .bind(i64::from(status))
        .bind(body)
        .bind(paywall_id)
        .bind(key)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// Forgets a key whose operation failed transiently, so the client may retry it.
pub async fn abandon(db: &Db, paywall_id: &str, key: &str) -> LedgerResult<()> {
    sqlx::query("DELETE FROM idempotency_keys WHERE paywall_id = $1 AND idem_key = $2 AND state = 'in_flight'")
        .bind(paywall_id)
        .bind(key)
        .execute(&db.pool)
        .await?;
    Ok(())
}

pub async fn purge_expired(db: &Db, now: i64) -> LedgerResult<u64> {
    let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
        .bind(now - RETENTION_MS)
        .execute(&db.pool)
        .await?;
    Ok(done.rows_affected())
}
