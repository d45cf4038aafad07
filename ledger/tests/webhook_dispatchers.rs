//! Several sidecars on one PostgreSQL share the webhook work: with two
//! dispatchers racing over 200 due deliveries, each delivery is sent exactly
//! once per attempt (a receiver that fails every first attempt sees each
//! delivery exactly twice) and none is lost or enqueued twice.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use tollgate_ledger::config::WebhookSeed;
use tollgate_ledger::money::deposits;
use tollgate_ledger::outbox::webhooks;

use common::process::spawn_sidecar_with;
use common::{config_text, count};

const DELIVERIES: usize = 200;
const SECRET_ENV: &str = "DISPATCH_TEST_WEBHOOK_SECRET";

/// Receipts per delivery id; the first of each is answered 500.
type Receipts = Arc<Mutex<HashMap<String, usize>>>;

async fn receive(State(seen): State<Receipts>, headers: HeaderMap) -> StatusCode {
    let id = headers
        .get("tollgate-delivery-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut seen = seen.lock().unwrap();
    let n = seen.entry(id).or_default();
    *n += 1;
    if *n == 1 {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sidecars_send_each_delivery_once_per_attempt() {
    let Some(t) = common::open("postgres").await else {
        return;
    };
    let seen: Receipts = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/hooks", post(receive))
        .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The endpoint exists before the events, so all 200 are due at once.
    std::env::set_var(SECRET_ENV, "whsec_dispatch_0123456789abcdef");
    let hook = WebhookSeed {
        id: "shared".into(),
        url: url.clone(),
        secret_env: SECRET_ENV.into(),
        paywall: Some("app".into()),
        events: Some(vec!["balance.deposited".into()]),
    };
    webhooks::seed(&t.db, &[hook]).await.unwrap();
    for i in 0..DELIVERIES {
        deposits::deposit(&t.db, "app", &format!("u{i}"), 1_000, "test")
            .await
            .unwrap();
    }

    let toml = config_text("8.00").replacen(
        "[server]",
        &format!(
            "[server]\nwebhook_poll_ms = 20\nwebhook_retry_base_ms = 200\n\
             [[webhooks]]\nid = \"shared\"\nurl = \"{url}\"\nsecret_env = \"{SECRET_ENV}\"\n\
             paywall = \"app\"\nevents = [\"balance.deposited\"]\n"
        ),
        1,
    );
    let secret = std::env::var(SECRET_ENV).unwrap();
    let env = [(SECRET_ENV, secret.as_str())];
    let (a, b) = tokio::join!(
        spawn_sidecar_with(&t.url, &toml, &env),
        spawn_sidecar_with(&t.url, &toml, &env)
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let delivered = count(
            &t.db,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM webhook_deliveries WHERE state = 'delivered'",
        )
        .await;
        if delivered == DELIVERIES as i64 {
            break;
        }
        assert!(Instant::now() < deadline, "only {delivered} delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Give a duplicate time to show up, then stop both.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop((a, b));

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), DELIVERIES, "each delivery reached the receiver");
    let wrong: Vec<_> = seen.iter().filter(|(_, n)| **n != 2).collect();
    assert!(
        wrong.is_empty(),
        "sent other than once per attempt: {wrong:?}"
    );
    let rows = count(
        &t.db,
        "SELECT CAST(COUNT(*) AS BIGINT) FROM webhook_deliveries",
    )
    .await;
    assert_eq!(rows, DELIVERIES as i64, "enqueued once each");
    let twice = count(
        &t.db,
        "SELECT CAST(COUNT(*) AS BIGINT) FROM webhook_deliveries WHERE attempts = 2",
    )
    .await;
    assert_eq!(twice, DELIVERIES as i64);
}
