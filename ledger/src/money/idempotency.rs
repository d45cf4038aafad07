//! Idempotency keys with Stripe / IETF-draft semantics: the same key and body
//! replays the stored response byte for byte; the same key with another body
//! is 422. Keys are scoped to the paywall and kept at least 24 hours.
//!
//! A key is recorded in the transaction of the operation it protects
//! ([`reserve`] first, [`finish`] with the response last), so a crash either
//! loses both (the retry runs once) or keeps both (the retry replays). A
//! second call with the key while the first runs waits on the key's row and
//! then replays. Answers that moved nothing (4xx) are kept with [`record`].

use sha2::{Digest, Sha256};

use crate::calendar::now_ms;
use crate::db::Db;
use crate::error::{LedgerError, LedgerResult};
use crate::money::book::Tx;

/// Keys are kept this long before the sweeper may delete them (≥ 24 h).
pub const RETENTION_MS: i64 = 48 * 3600 * 1000;

/// One call's key: its paywall, the key and the request's fingerprint.
#[derive(Debug, Clone)]
pub struct KeyClaim {
    pub paywall_id: String,
    pub key: String,
    pub fingerprint: String,
}

/// What is stored under a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    /// Nothing: run the operation.
    Absent,
    Replay {
        status: u16,
        body: String,
    },
    /// Same key, different request.
    Mismatch,
    /// Left `in_flight` by a version that recorded keys outside the
    /// operation's transaction; whether it moved money is unknown.
    LegacyInFlight,
}

/// Method, path and the raw body bytes (never a lossy text form: two
/// different non-UTF-8 bodies must not share a fingerprint).
pub fn request_fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(method.as_bytes());
    hash.update(b" ");
    hash.update(path.as_bytes());
    hash.update(b"\n");
    hash.update(body);
    hex::encode(hash.finalize())
}

/// Where a key's call is (the `state` column).
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

pub async fn lookup(db: &Db, claim: &KeyClaim) -> LedgerResult<Stored> {
    #[derive(sqlx::FromRow)]
    struct Row {
        request_hash: String,
        #[sqlx(try_from = "String")]
        state: KeyState,
        status: Option<i64>,
        body: Option<String>,
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT request_hash, state, status, body FROM idempotency_keys WHERE paywall_id = $1 AND idem_key = $2",
    )
    .bind(&claim.paywall_id)
    .bind(&claim.key)
    .fetch_optional(&db.pool)
    .await?;
    let Some(row) = row else {
        return Ok(Stored::Absent);
    };
    if row.request_hash != claim.fingerprint {
        return Ok(Stored::Mismatch);
    }
    if row.state == KeyState::InFlight {
        return Ok(Stored::LegacyInFlight);
    }
    Ok(Stored::Replay {
        status: row
            .status
            .and_then(|s| u16::try_from(s).ok())
            .unwrap_or(200),
        body: row.body.unwrap_or_default(),
    })
}

/// Takes the key inside the operation's transaction. `false`: another call
/// committed it first (this one waited for it); roll back and [`lookup`].
pub async fn reserve(tx: &mut Tx, claim: &KeyClaim) -> LedgerResult<bool> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (paywall_id, idem_key, request_hash, state, created_at)
         VALUES ($1, $2, $3, 'in_flight', $4) ON CONFLICT DO NOTHING",
    )
    .bind(&claim.paywall_id)
    .bind(&claim.key)
    .bind(&claim.fingerprint)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Stores the response of a reserved key, in the same transaction.
pub async fn finish(tx: &mut Tx, claim: &KeyClaim, status: u16, body: &str) -> LedgerResult<()> {
    let updated = sqlx::query(
        "UPDATE idempotency_keys SET state = 'done', status = $1, body = $2 WHERE paywall_id = $3 AND idem_key = $4",
    )
    .bind(i64::from(status))
    .bind(body)
    .bind(&claim.paywall_id)
    .bind(&claim.key)
    .execute(&mut **tx)
    .await?;
    if updated.rows_affected() != 1 {
        return Err(LedgerError::Internal("idempotency key vanished".into()));
    }
    Ok(())
}

/// Keeps the answer of a call that moved nothing (a refusal), on its own.
pub async fn record(db: &Db, claim: &KeyClaim, status: u16, body: &str) -> LedgerResult<()> {
    sqlx::query(
        "INSERT INTO idempotency_keys (paywall_id, idem_key, request_hash, state, status, body, created_at)
         VALUES ($1, $2, $3, 'done', $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(&claim.paywall_id)
    .bind(&claim.key)
    .bind(&claim.fingerprint)
    .bind(i64::from(status))
    .bind(body)
    .bind(now_ms())
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

#[cfg(test)]
mod tests {
    use super::request_fingerprint;

    #[test]
    fn fingerprints_hash_raw_bytes() {
        // Both bodies are invalid UTF-8; a lossy text form maps both to U+FFFD.
        let a = request_fingerprint("POST", "/x", &[0xff]);
        let b = request_fingerprint("POST", "/x", &[0xfe]);
        assert_ne!(a, b);
        // Valid UTF-8 hashes as before (keys stored by older versions still match).
        assert_eq!(
            request_fingerprint("POST", "/x", b"{}"),
            crate::access::secrets::sha256_hex("POST /x\n{}")
        );
    }
}
