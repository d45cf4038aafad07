//! The sidecar's HTTP API in-process (the real router on a real database of
//! each backend): idempotent manual charges under concurrency, paywall
//! isolation, and the internal API's secret.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use sqlx::Row;
use tollgate_ledger::db::Db;
use tollgate_ledger::http::{router, AppState};
use tollgate_ledger::money::deposits;
use tower::ServiceExt;

use common::{settings, KEY, MALL_KEY, OTHER_KEY};

const SECRET: &str = "internal-secret-for-tests-0123";

struct Answer {
    status: StatusCode,
    replayed: bool,
    body: Value,
    raw: Vec<u8>,
}

async fn send(
    db: &Db,
    method: &str,
    uri: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Answer {
    let app = router(Arc::new(AppState {
        db: db.clone(),
        settings: settings(),
        internal_secret: SECRET.into(),
        admin_token_hash: None,
    }));
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body = body
        .map(|b| Body::from(b.to_string()))
        .unwrap_or_else(Body::empty);
    let resp = app.oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let replayed = resp.headers().get("idempotent-replayed").is_some();
    let raw = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap()
        .to_vec();
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    Answer {
        status,
        replayed,
        body,
        raw,
    }
}

async fn count(db: &Db, sql: &str) -> i64 {
    sqlx::query(sql)
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .get::<i64, _>(0)
}

backend_tests!(
    concurrent_manual_charges_with_one_key_move_money_once,
    manual_charge_needs_the_balance,
    paywalls_see_only_their_own_users,
    internal_api_requires_the_secret,
    money_for_an_unconnected_shared_user_is_refused_not_failed,
);

/// A shared-mode user who has not authorized the paywall: a deposit or a
/// manual charge is a 403 that says so (not the ledger's 503), and moves nothing.
async fn money_for_an_unconnected_shared_user_is_refused_not_failed(db: &Db) {
    let body = json!({"user": "stranger", "amount": "1.00"});
    for path in ["/v1/user/balance/deposit", "/v1/user/charge"] {
        let a = send(db, "POST", path, Some(MALL_KEY), &[], Some(body.clone())).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{path}: {:?}", a.body);
        assert_eq!(a.body["error"]["code"], "user_not_connected");
    }
    let moved = count(
        db,
        "SELECT CAST(COUNT(*) AS BIGINT) FROM transfers WHERE debit_account LIKE '%stranger%' OR credit_account LIKE '%stranger%'",
    )
    .await;
    assert_eq!(moved, 0);
}

async fn concurrent_manual_charges_with_one_key_move_money_once(db: &Db) {
    deposits::deposit(db, "app", "u", 10_000_000, "test")
        .await
        .unwrap();
    let body = json!({"user": "u", "amount": "0.25", "metadata": {"sku": "image"}});
    let db_arc = Arc::new(db.clone());
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (db, body) = (db_arc.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            send(
                &db,
                "POST",
                "/v1/user/charge",
                Some(KEY),
                &[("idempotency-key", "charge-1")],
                Some(body),
            )
            .await
        }));
    }
    let (mut fresh, mut replays, mut conflicts, mut first_raw) = (0, 0, 0, None);
    let mut replay_bodies = Vec::new();
    for t in tasks {
        let a = t.await.unwrap();
        match (a.status, a.replayed) {
            (StatusCode::OK, false) => {
                fresh += 1;
                first_raw = Some(a.raw);
            }
            (StatusCode::OK, true) => {
                replays += 1;
                replay_bodies.push(a.raw);
            }
            (StatusCode::CONFLICT, _) => {
                assert_eq!(a.body["error"]["code"], "idempotency_key_in_use");
                conflicts += 1;
            }
            other => panic!("unexpected answer {other:?}: {}", a.body),
        }
    }
    assert_eq!(fresh, 1, "replays {replays}, conflicts {conflicts}");
    assert_eq!(fresh + replays + conflicts, 100);
    let first = first_raw.unwrap();
    assert!(
        replay_bodies.iter().all(|b| *b == first),
        "a replay differed from the first response"
    );
    assert_eq!(
        count(
            db,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM transfers WHERE kind = 'charge'"
        )
        .await,
        1
    );
    let doc: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(
        (doc["amount"].as_str(), doc["balance"].as_str()),
        (Some("0.250000"), Some("9.750000"))
    );
    assert_eq!(doc["metadata"]["sku"], "image");

    // A later replay is byte for byte the same.
    let again = send(
        db,
        "POST",
        "/v1/user/charge",
        Some(KEY),
        &[("idempotency-key", "charge-1")],
        Some(body.clone()),
    )
    .await;
    assert!(again.replayed);
    assert_eq!(again.raw, first);
    // Same key, another body: 422, nothing moves.
    let changed = json!({"user": "u", "amount": "0.26"});
    let a = send(
        db,
        "POST",
        "/v1/user/charge",
        Some(KEY),
        &[("idempotency-key", "charge-1")],
        Some(changed),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(a.body["error"]["code"], "idempotency_key_reused");
    // The same key under another paywall is its own key.
    deposits::deposit(db, "other", "u", 1_000_000, "test")
        .await
        .unwrap();
    let a = send(
        db,
        "POST",
        "/v1/user/charge",
        Some(OTHER_KEY),
        &[("idempotency-key", "charge-1")],
        Some(body),
    )
    .await;
    assert_eq!((a.status, a.replayed), (StatusCode::OK, false));
    assert_eq!(a.body["balance"], "0.750000");
    assert_eq!(
        count(
            db,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM transfers WHERE kind = 'charge'"
        )
        .await,
        2
    );
}

async fn manual_charge_needs_the_balance(db: &Db) {
    deposits::deposit(db, "app", "poor", 100_000, "test")
        .await
        .unwrap();
    let a = send(
        db,
        "POST",
        "/v1/user/charge",
        Some(KEY),
        &[],
        Some(json!({"user": "poor", "amount": "0.100001"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(a.body["error"]["code"], "insufficient_balance");
    let a = send(
        db,
        "POST",
        "/v1/user/charge",
        Some(KEY),
        &[],
        Some(json!({"user": "poor", "amount": "0.1"})),
    )
    .await;
    assert_eq!(
        (a.status, a.body["balance"].as_str()),
        (StatusCode::OK, Some("0.000000"))
    );
    for bad in [
        json!({"user": "poor", "amount": 1}),
        json!({"user": "poor", "amount": "1", "metadata": [1]}),
        json!({"amount": "1"}),
    ] {
        let a = send(
            db,
            "POST",
            "/v1/user/charge",
            Some(KEY),
            &[],
            Some(bad.clone()),
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(
        count(
            db,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM transfers WHERE kind = 'charge'"
        )
        .await,
        1
    );
}

async fn paywalls_see_only_their_own_users(db: &Db) {
    deposits::deposit(db, "app", "alice", 1_000_000, "test")
        .await
        .unwrap();
    let mine = send(
        db,
        "GET",
        "/v1/user/balance?user=alice",
        Some(KEY),
        &[],
        None,
    )
    .await;
    assert_eq!(
        (mine.status, mine.body["balance"].as_str()),
        (StatusCode::OK, Some("1.000000"))
    );
    for uri in ["/v1/user/balance?user=alice", "/v1/user/ledger?user=alice"] {
        let theirs = send(db, "GET", uri, Some(OTHER_KEY), &[], None).await;
        assert_eq!(theirs.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(theirs.body["error"]["code"], "user_not_found");
    }
    // Idempotent replays are per paywall too: another paywall's key never sees this response.
    let first = send(
        db,
        "POST",
        "/v1/user/balance/deposit",
        Some(KEY),
        &[("idempotency-key", "d1")],
        Some(json!({"user": "alice", "amount": "1"})),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK);
    let other = send(
        db,
        "POST",
        "/v1/user/balance/deposit",
        Some(OTHER_KEY),
        &[("idempotency-key", "d1")],
        Some(json!({"user": "alice", "amount": "1"})),
    )
    .await;
    assert!(!other.replayed);
    assert_eq!(other.body["balance"], "1.000000");
    let no_key = send(db, "GET", "/v1/user/balance?user=alice", None, &[], None).await;
    assert_eq!(no_key.status, StatusCode::UNAUTHORIZED);
}

async fn internal_api_requires_the_secret(db: &Db) {
    let ask = json!({"request_id": "r", "paywall_key": KEY, "user": "u", "model": "m", "prompt_tokens": 1, "max_output_tokens": 1, "stream": false});
    for secret in [None, Some("wrong-secret-wrong-secret")] {
        let headers: Vec<(&str, &str)> = secret
            .map(|s| vec![("x-tollgate-internal-secret", s)])
            .unwrap_or_default();
        let a = send(
            db,
            "POST",
            "/internal/v1/authorize",
            None,
            &headers,
            Some(ask.clone()),
        )
        .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN);
    }
    let a = send(
        db,
        "POST",
        "/internal/v1/authorize",
        None,
        &[("x-tollgate-internal-secret", SECRET)],
        Some(ask),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["decision"], "action");
}
