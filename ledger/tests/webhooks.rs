//! Webhooks on both backends, against a real HTTP receiver: a charge's event
//! arrives signed, a failed attempt is retried after its backoff, the delivery
//! log says what happened, an admin replay sends it again, and an endpoint
//! that keeps failing is given up after the last attempt.

mod common;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::Value;
use tollgate_ledger::catalog;
use tollgate_ledger::config::WebhookSeed;
use tollgate_ledger::db::Db;
use tollgate_ledger::money::deposits;
use tollgate_ledger::money::holds;
use tollgate_ledger::outbox::webhooks::{self, signature, MAX_ATTEMPTS};
use tollgate_protocol::SettleOutcome;

use common::{config, hold_for, settle_req};

backend_tests!(
    a_charge_event_is_signed_retried_logged_and_replayed,
    an_endpoint_that_keeps_failing_is_given_up,
    due_deliveries_go_out_in_parallel_up_to_the_bound,
);

const SECRET_ENV: &str = "WEBHOOK_TEST_SECRET";
const SECRET: &str = "whsec_test_0123456789abcdef";
const BASE_BACKOFF_MS: i64 = 1000;

#[derive(Clone, Default)]
struct Receiver {
    /// Statuses to answer with, in order; 200 once they run out.
    answers: Arc<Mutex<VecDeque<u16>>>,
    received: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    r.received.lock().unwrap().push((headers, body));
    let status = r.answers.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(status).unwrap()
}

/// A receiver on a free local port; returns its URL.
async fn start_receiver(answers: &[u16]) -> (String, Receiver) {
    let r = Receiver::default();
    r.answers.lock().unwrap().extend(answers);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/hooks", post(receive))
        .with_state(r.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, r)
}

async fn charge(db: &Db, user: &str, rid: &str) {
    deposits::deposit(db, "app", user, 10_000_000, &format!("dep-{rid}"))
        .await
        .unwrap();
    let (hold, _) = hold_for(db, user, rid, 100, 50).await;
    holds::settle(
        db,
        &settle_req(&hold, rid, 100, 20, SettleOutcome::Completed),
        holds::ExpiryPolicy::Void,
    )
    .await
    .unwrap();
}

async fn setup(db: &Db, url: &str) {
    std::env::set_var(SECRET_ENV, SECRET);
    catalog::seed(db, &config("2.00")).await.unwrap();
    let hook = WebhookSeed {
        id: "hooks".into(),
        url: url.into(),
        secret_env: SECRET_ENV.into(),
        paywall: Some("app".into()),
        events: Some(vec!["charge.created".into()]),
    };
    webhooks::seed(db, &[hook]).await.unwrap();
}

async fn a_charge_event_is_signed_retried_logged_and_replayed(db: &Db) {
    let (url, receiver) = start_receiver(&[500]).await;
    setup(db, &url).await;
    charge(db, "u", "wh-1").await;

    // Only the charge: the deposit and request events are filtered out.
    assert_eq!(webhooks::enqueue(db).await.unwrap(), 1);
    let now = tollgate_ledger::calendar::now_ms();
    assert_eq!(webhooks::enqueue(db).await.unwrap(), 0, "enqueued once");

    // First attempt: the receiver answers 500; the retry waits its backoff.
    assert_eq!(
        webhooks::deliver_due(db, now, BASE_BACKOFF_MS, 50)
            .await
            .unwrap(),
        1
    );
    let log = webhooks::deliveries(db, "hooks", 10).await.unwrap();
    assert_eq!(
        (log[0].state.as_str(), log[0].attempts, log[0].last_status),
        ("pending", 1, Some(500))
    );
    // The backoff, less a jitter of at most a quarter (by delivery id).
    let wait = log[0].next_attempt_at - now;
    assert!(
        (BASE_BACKOFF_MS * 3 / 4..=BASE_BACKOFF_MS).contains(&wait),
        "{wait}"
    );
    assert_eq!(
        webhooks::deliver_due(db, now + 10, BASE_BACKOFF_MS, 50)
            .await
            .unwrap(),
        0
    );

    // The retry succeeds.
    assert_eq!(
        webhooks::deliver_due(db, now + BASE_BACKOFF_MS, BASE_BACKOFF_MS, 50)
            .await
            .unwrap(),
        1
    );
    let log = webhooks::deliveries(db, "hooks", 10).await.unwrap();
    assert_eq!(
        (log[0].state.as_str(), log[0].attempts, log[0].last_status),
        ("delivered", 2, Some(200))
    );
    assert_eq!(log[0].request_id.as_deref(), Some("wh-1"));

    let received = receiver.received.lock().unwrap().clone();
    assert_eq!(received.len(), 2);
    for (headers, body) in &received {
        let sig = headers[signature::SIGNATURE_HEADER].to_str().unwrap();
        assert!(signature::verify(SECRET, sig, body), "bad signature {sig}");
        assert!(!signature::verify("another secret", sig, body));
        assert_eq!(headers["tollgate-delivery-id"].to_str().unwrap(), log[0].id);
    }
    let event: Value = serde_json::from_slice(&received[1].1).unwrap();
    assert_eq!(event["type"], "charge.created");
    assert_eq!(
        (
            event["request_id"].as_str(),
            event["paywall"].as_str(),
            event["user"].as_str()
        ),
        (Some("wh-1"), Some("app"), Some("u"))
    );
    assert!(event["data"]["charge_id"]
        .as_str()
        .unwrap()
        .starts_with("ch_"));
    assert_eq!(event["id"], log[0].event_id);

    // An operator replays it: sent once more, with the same event.
    assert!(webhooks::replay(db, "hooks", &log[0].id).await.unwrap());
    assert!(!webhooks::replay(db, "hooks", "whd_unknown").await.unwrap());
    let later = tollgate_ledger::calendar::now_ms() + 1;
    assert_eq!(
        webhooks::deliver_due(db, later, BASE_BACKOFF_MS, 50)
            .await
            .unwrap(),
        1
    );
    let received = receiver.received.lock().unwrap().clone();
    assert_eq!(received.len(), 3);
    let again: Value = serde_json::from_slice(&received[2].1).unwrap();
    assert_eq!(again["id"], event["id"]);
    let listed = webhooks::list_endpoints(db).await.unwrap();
    assert_eq!(
        (listed[0].delivered, listed[0].pending, listed[0].failed),
        (1, 0, 0)
    );
}

async fn an_endpoint_that_keeps_failing_is_given_up(db: &Db) {
    let (url, receiver) = start_receiver(&[503; 20]).await;
    setup(db, &url).await;
    charge(db, "v", "wh-2").await;
    webhooks::enqueue(db).await.unwrap();
    let mut now = tollgate_ledger::calendar::now_ms();
    for attempt in 1..=MAX_ATTEMPTS {
        assert_eq!(
            webhooks::deliver_due(db, now, BASE_BACKOFF_MS, 50)
                .await
                .unwrap(),
            1,
            "attempt {attempt}"
        );
        now += webhooks::backoff_ms(BASE_BACKOFF_MS, attempt);
    }
    let log = webhooks::deliveries(db, "hooks", 10).await.unwrap();
    assert_eq!(
        (log[0].state.as_str(), log[0].attempts),
        ("failed", MAX_ATTEMPTS)
    );
    assert_eq!(log[0].last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(
        webhooks::deliver_due(db, now + 3_600_000, BASE_BACKOFF_MS, 50)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        receiver.received.lock().unwrap().len(),
        MAX_ATTEMPTS as usize
    );
}

#[test]
fn backoff_doubles_up_to_an_hour() {
    assert_eq!(webhooks::backoff_ms(1000, 1), 1000);
    assert_eq!(webhooks::backoff_ms(1000, 2), 2000);
    assert_eq!(webhooks::backoff_ms(1000, 5), 16000);
    assert_eq!(webhooks::backoff_ms(1000, 40), 3_600_000);
}

/// A receiver that answers slowly and remembers how many deliveries it held
/// at once.
#[derive(Clone, Default)]
struct SlowReceiver {
    in_flight: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    received: Arc<AtomicUsize>,
}

async fn receive_slowly(State(r): State<SlowReceiver>) -> StatusCode {
    let now = r.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    r.most.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    r.in_flight.fetch_sub(1, Ordering::SeqCst);
    r.received.fetch_add(1, Ordering::SeqCst);
    StatusCode::OK
}

/// One dispatcher pass sends its due deliveries side by side (not one after
/// another), never more than its bound at once, and each exactly once.
async fn due_deliveries_go_out_in_parallel_up_to_the_bound(db: &Db) {
    let r = SlowReceiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/hooks", post(receive_slowly))
        .with_state(r.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    setup(db, &url).await;
    for i in 0..20 {
        charge(db, &format!("u{i}"), &format!("par-{i}")).await;
    }
    assert_eq!(webhooks::enqueue(db).await.unwrap(), 20);
    let now = tollgate_ledger::calendar::now_ms();
    let sent = webhooks::deliver_due(db, now, BASE_BACKOFF_MS, 50)
        .await
        .unwrap();
    assert_eq!(sent, 20);
    assert_eq!(r.received.load(Ordering::SeqCst), 20);
    let most = r.most.load(Ordering::SeqCst);
    assert!((2..=8).contains(&most), "{most} deliveries at once");
    let log = webhooks::deliveries(db, "hooks", 50).await.unwrap();
    assert!(log
        .iter()
        .all(|d| d.state == "delivered" && d.attempts == 1));
}
