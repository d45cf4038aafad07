//! Webhooks: the events outbox delivered to operator-configured endpoints.
//! Each event an endpoint wants becomes one delivery row; a dispatcher sends
//! due deliveries (HMAC-signed, see `signature`), retries failures with
//! exponential backoff, and keeps the log (attempts, last status, last
//! error). Several sidecars may run dispatchers on one database: a delivery
//! is claimed with a conditional update before it is sent.

pub mod signature;

use std::sync::OnceLock;
use std::time::Duration;

use futures_util::{stream, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use tollgate_protocol::backoff;

use crate::access::secrets::new_id;
use crate::calendar::now_ms;
use crate::config::WebhookSeed;
use crate::db::Db;
use crate::error::LedgerResult;

/// Attempts before a delivery is given up (`failed`; an admin can replay it).
pub const MAX_ATTEMPTS: i64 = 10;
/// How long a claimed delivery is reserved for the dispatcher sending it.
const LEASE_MS: i64 = 30_000;
/// Longest wait between two attempts.
const MAX_BACKOFF_MS: i64 = 3_600_000;

/// The longest wait after `attempts` failed ones: base × 2^(n−1), capped.
pub fn backoff_ms(base_ms: i64, attempts: i64) -> i64 {
    let base = u64::try_from(base_ms).unwrap_or(0);
    let n = u32::try_from(attempts.clamp(0, 64)).unwrap_or(64);
    let cap = u64::try_from(MAX_BACKOFF_MS).unwrap_or(u64::MAX);
    i64::try_from(backoff::backoff_ms(base, cap, n)).unwrap_or(MAX_BACKOFF_MS)
}

/// The wait before a delivery's next attempt: [`backoff_ms`] with jitter by
/// delivery id, so deliveries that failed together (an endpoint outage) do
/// not all come back at once.
fn retry_wait_ms(base_ms: i64, attempts: i64, delivery_id: &str) -> i64 {
    let ceiling = u64::try_from(backoff_ms(base_ms, attempts)).unwrap_or(0);
    let n = u32::try_from(attempts.clamp(0, 64)).unwrap_or(64);
    let wait = backoff::with_jitter(ceiling, backoff::jitter_seed(delivery_id), n);
    i64::try_from(wait).unwrap_or(MAX_BACKOFF_MS)
}

/// Creates or updates the configured endpoints. A new endpoint starts after
/// the newest event (no flood of history); an existing one keeps its place.
pub async fn seed(db: &Db, hooks: &[WebhookSeed]) -> anyhow::Result<()> {
    let mut tx = db.pool.begin().await?;
    let newest: i64 =
        sqlx::query_scalar("SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) FROM events")
            .fetch_one(&mut *tx)
            .await?;
    for h in hooks {
        h.check()?;
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, url, secret_env, paywall_id, event_kinds, cursor_seq, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (id) DO UPDATE SET url = excluded.url, secret_env = excluded.secret_env,
                paywall_id = excluded.paywall_id, event_kinds = excluded.event_kinds",
        )
        .bind(&h.id)
        .bind(&h.url)
        .bind(&h.secret_env)
        .bind(&h.paywall)
        .bind(h.events.as_ref().map(|e| e.join(",")))
        .bind(newest)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Turns new events into deliveries for every endpoint that wants them.
/// Returns how many deliveries were created.
/// An endpoint as the enqueuer reads it.
#[derive(sqlx::FromRow)]
struct EndpointCursor {
    id: String,
    paywall_id: Option<String>,
    /// Comma-separated event names; None: every event.
    event_kinds: Option<String>,
    cursor_seq: i64,
}

impl EndpointCursor {
    fn wants(&self, ev: &EventRef) -> bool {
        let kind_ok = self
            .event_kinds
            .as_deref()
            .is_none_or(|k| k.split(',').any(|w| w == ev.kind));
        let paywall_ok = self
            .paywall_id
            .as_ref()
            .is_none_or(|p| Some(p) == ev.paywall_id.as_ref());
        kind_ok && paywall_ok
    }
}

/// An event as the enqueuer matches it.
#[derive(sqlx::FromRow)]
struct EventRef {
    seq: i64,
    id: String,
    kind: String,
    paywall_id: Option<String>,
}

pub async fn enqueue(db: &Db) -> LedgerResult<u64> {
    let endpoints: Vec<EndpointCursor> =
        sqlx::query_as("SELECT id, paywall_id, event_kinds, cursor_seq FROM webhook_endpoints")
            .fetch_all(&db.pool)
            .await?;
    let mut created = 0;
    for e in endpoints {
        let id = &e.id;
        let mut tx = db.pool.begin().await?;
        let events: Vec<EventRef> = sqlx::query_as(
            "SELECT seq, id, kind, paywall_id FROM events WHERE seq > $1 ORDER BY seq LIMIT 500",
        )
        .bind(e.cursor_seq)
        .fetch_all(&mut *tx)
        .await?;
        let Some(last) = events.last().map(|ev| ev.seq) else {
            continue;
        };
        for ev in events.iter().filter(|ev| e.wants(ev)) {
            let done = sqlx::query(
                "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, state, attempts, next_attempt_at, created_at)
                 VALUES ($1, $2, $3, 'pending', 0, $4, $4) ON CONFLICT (endpoint_id, event_id) DO NOTHING",
            )
            .bind(new_id("whd"))
            .bind(id)
            .bind(&ev.id)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            created += done.rows_affected();
        }
        // Only forward: another sidecar may have moved it further already.
        sqlx::query(
            "UPDATE webhook_endpoints SET cursor_seq = $1 WHERE id = $2 AND cursor_seq < $1",
        )
        .bind(last)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    Ok(created)
}

/// A due delivery with its endpoint and its event.
#[derive(sqlx::FromRow)]
struct DueDelivery {
    id: String,
    attempts: i64,
    next_attempt_at: i64,
    url: String,
    secret_env: String,
    event_id: String,
    kind: String,
    request_id: Option<String>,
    paywall_id: Option<String>,
    user_id: Option<String>,
    payload: String,
    event_created_at: i64,
}

impl DueDelivery {
    /// The JSON body an endpoint receives for the event (documented in the README).
    fn envelope(&self) -> Value {
        json!({
            "id": self.event_id,
            "type": self.kind,
            "created": self.event_created_at / 1000,
            "request_id": self.request_id,
            "paywall": self.paywall_id,
            "user": self.user_id,
            "data": serde_json::from_str::<Value>(&self.payload).unwrap_or(Value::Null),
        })
    }
}

/// One HTTP POST of a delivery: the status, or why there was none.
pub type SendResult = Result<u16, SendError>;

/// Why a delivery got no HTTP answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    #[error("signing secret {0} is not set")]
    Unsigned(String),
    /// Connection, TLS or timeout, as the HTTP client words it (without the URL).
    #[error("{0}")]
    Transport(String),
}

/// Deliveries one dispatcher sends at the same time.
const PARALLEL_DELIVERIES: usize = 8;
/// Longest wait for an endpoint's answer.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// One HTTP client for every delivery, so connections to an endpoint are reused.
fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(SEND_TIMEOUT)
            .user_agent("tollgate-webhooks/0.1")
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default()
    })
}

/// Sends a signed body; any HTTP status is an answer, not an error.
pub async fn post(url: &str, headers: Vec<(&'static str, String)>, body: Vec<u8>) -> SendResult {
    let mut req = client().post(url).body(body);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    req.send()
        .await
        .map(|resp| resp.status().as_u16())
        .map_err(|e| SendError::Transport(e.without_url().to_string()))
}

/// Sends every due delivery (at most `limit`, up to [`PARALLEL_DELIVERIES`]
/// at once) and records each outcome. Returns how many were attempted.
pub async fn deliver_due(
    db: &Db,
    now: i64,
    base_backoff_ms: i64,
    limit: i64,
) -> LedgerResult<usize> {
    let due: Vec<DueDelivery> = sqlx::query_as(
        "SELECT d.id, d.attempts, d.next_attempt_at, d.event_id, w.url, w.secret_env,
            e.kind, e.request_id, e.paywall_id, e.user_id, e.payload, e.created_at AS event_created_at
         FROM webhook_deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id
         JOIN events e ON e.id = d.event_id
         WHERE d.state = 'pending' AND d.next_attempt_at <= $1 ORDER BY d.next_attempt_at LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    let outcomes: Vec<LedgerResult<bool>> = stream::iter(due)
        .map(|d| deliver_one(db, d, now, base_backoff_ms))
        .buffer_unordered(PARALLEL_DELIVERIES)
        .collect()
        .await;
    let mut attempted = 0;
    for outcome in outcomes {
        attempted += usize::from(outcome?);
    }
    Ok(attempted)
}

/// Claims one due delivery, sends it and records the attempt. False when
/// another dispatcher claimed it first.
async fn deliver_one(
    db: &Db,
    d: DueDelivery,
    now: i64,
    base_backoff_ms: i64,
) -> LedgerResult<bool> {
    let id = &d.id;
    // Claim it: of several dispatchers, one sends it.
    let claimed = sqlx::query(
        "UPDATE webhook_deliveries SET next_attempt_at = $1 WHERE id = $2 AND state = 'pending' AND next_attempt_at = $3",
    )
    .bind(now.saturating_add(LEASE_MS))
    .bind(id)
    .bind(d.next_attempt_at)
    .execute(&db.pool)
    .await?;
    if claimed.rows_affected() != 1 {
        return Ok(false);
    }
    let body = d.envelope().to_string().into_bytes();
    let secret_env = &d.secret_env;
    let result = match std::env::var(secret_env) {
        Ok(secret) if !secret.is_empty() => {
            let headers = vec![
                ("content-type", "application/json".to_string()),
                ("tollgate-event-id", d.event_id.clone()),
                ("tollgate-delivery-id", id.clone()),
                (
                    signature::SIGNATURE_HEADER,
                    signature::sign(&secret, now / 1000, &body),
                ),
            ];
            post(&d.url, headers, body).await
        }
        _ => Err(SendError::Unsigned(secret_env.clone())),
    };
    record_attempt(db, id, d.attempts, result, now, base_backoff_ms).await?;
    Ok(true)
}

async fn record_attempt(
    db: &Db,
    id: &str,
    previous_attempts: i64,
    result: SendResult,
    now: i64,
    base_backoff_ms: i64,
) -> LedgerResult<()> {
    let attempts = previous_attempts + 1;
    let (status, error) = match &result {
        Ok(s) => (
            Some(i64::from(*s)),
            (!(200..300).contains(s)).then(|| format!("HTTP {s}")),
        ),
        Err(e) => (None, Some(e.to_string())),
    };
    let (state, next, delivered) = match (&error, attempts >= MAX_ATTEMPTS) {
        (None, _) => ("delivered", now, Some(now)),
        (Some(_), true) => ("failed", now, None),
        (Some(_), false) => (
            "pending",
            now.saturating_add(retry_wait_ms(base_backoff_ms, attempts, id)),
            None,
        ),
    };
    if let Some(e) = &error {
        tracing::warn!(delivery = id, attempts, error = %e, state, "webhook delivery failed");
    }
    sqlx::query(
        "UPDATE webhook_deliveries SET state = $1, attempts = $2, next_attempt_at = $3, last_status = $4,
            last_error = $5, delivered_at = $6 WHERE id = $7",
    )
    .bind(state)
    .bind(attempts)
    .bind(next)
    .bind(status)
    .bind(error)
    .bind(delivered)
    .bind(id)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// An endpoint as the admin API lists it (never its secret).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EndpointInfo {
    pub id: String,
    pub url: String,
    pub secret_env: String,
    pub paywall: Option<String>,
    pub events: Option<Vec<String>>,
    pub pending: i64,
    pub delivered: i64,
    pub failed: i64,
}

/// An endpoint row with its delivery counts.
#[derive(sqlx::FromRow)]
struct EndpointRow {
    id: String,
    url: String,
    secret_env: String,
    paywall_id: Option<String>,
    event_kinds: Option<String>,
    pending: i64,
    delivered: i64,
    failed: i64,
}

pub async fn list_endpoints(db: &Db) -> LedgerResult<Vec<EndpointInfo>> {
    let rows: Vec<EndpointRow> = sqlx::query_as(
        "SELECT w.id, w.url, w.secret_env, w.paywall_id, w.event_kinds,
            CAST((SELECT COUNT(*) FROM webhook_deliveries d WHERE d.endpoint_id = w.id AND d.state = 'pending') AS BIGINT) AS pending,
            CAST((SELECT COUNT(*) FROM webhook_deliveries d WHERE d.endpoint_id = w.id AND d.state = 'delivered') AS BIGINT) AS delivered,
            CAST((SELECT COUNT(*) FROM webhook_deliveries d WHERE d.endpoint_id = w.id AND d.state = 'failed') AS BIGINT) AS failed
         FROM webhook_endpoints w ORDER BY w.id",
    )
    .fetch_all(&db.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| EndpointInfo {
            id: r.id,
            url: r.url,
            secret_env: r.secret_env,
            paywall: r.paywall_id,
            events: r
                .event_kinds
                .map(|k| k.split(',').map(str::to_string).collect()),
            pending: r.pending,
            delivered: r.delivered,
            failed: r.failed,
        })
        .collect())
}

/// A delivery in the log.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct DeliveryInfo {
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    pub request_id: Option<String>,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
}

/// An endpoint's deliveries, newest first.
pub async fn deliveries(db: &Db, endpoint: &str, limit: i64) -> LedgerResult<Vec<DeliveryInfo>> {
    Ok(sqlx::query_as(
        "SELECT d.id, d.event_id, e.kind AS event_type, e.request_id, d.state, d.attempts, d.next_attempt_at, d.last_status,
            d.last_error, d.delivered_at
         FROM webhook_deliveries d JOIN events e ON e.id = d.event_id
         WHERE d.endpoint_id = $1 ORDER BY d.created_at DESC, d.id DESC LIMIT $2",
    )
    .bind(endpoint)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?)
}

/// Sends a delivery again (delivered or failed ones included): it becomes
/// pending and due now. False if there is no such delivery on the endpoint.
pub async fn replay(db: &Db, endpoint: &str, delivery: &str) -> LedgerResult<bool> {
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = $1, attempts = 0
         WHERE id = $2 AND endpoint_id = $3",
    )
    .bind(now_ms())
    .bind(delivery)
    .bind(endpoint)
    .execute(&db.pool)
    .await?;
    if done.rows_affected() == 1 {
        tracing::info!(delivery, endpoint, "webhook delivery replayed");
    }
    Ok(done.rows_affected() == 1)
}

/// Runs the dispatcher until the process ends: enqueue, then deliver what is due.
pub async fn run(db: Db, poll_ms: u64, base_backoff_ms: i64) {
    let mut every = tokio::time::interval(std::time::Duration::from_millis(poll_ms.max(50)));
    loop {
        every.tick().await;
        let step = async {
            enqueue(&db).await?;
            deliver_due(&db, now_ms(), base_backoff_ms, 50).await
        };
        if let Err(e) = step.await {
            if e.is_transient() {
                crate::metrics::count(crate::metrics::DATABASE_ERRORS, &["webhooks"]);
            }
            tracing::warn!(error = %e, "webhook dispatch failed");
        }
    }
}
