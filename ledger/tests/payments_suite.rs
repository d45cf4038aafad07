//! Stripe payments in the ledger, run against SQLite and PostgreSQL: events
//! credit a session exactly once whatever their number, order or
//! concurrency; delayed payments, failures and foreign currencies credit
//! nothing; refunds debit the wallet and record the rest as owed, which
//! blocks requests until a top-up pays it back; the webhook endpoint refuses
//! anything not signed with the endpoint's secret.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use tollgate_ledger::db::Db;
use tollgate_ledger::http::{router, AppState};
use tollgate_ledger::money::{deposits, holds, manual_charges};
use tollgate_ledger::outbox::webhooks::signature;
use tollgate_ledger::payments::config::PaymentsConfig;
use tollgate_ledger::payments::stripe::objects::Event;
use tollgate_ledger::payments::stripe::webhook::{self, Outcome};
use tollgate_ledger::payments::Payments;
use tollgate_protocol::{Action, AuthorizeResponse};
use tower::ServiceExt;

mod common;

use common::{ask, assert_books_balance, balance, count, settings};

backend_tests!(
    a_paid_session_is_credited_once_whatever_the_deliveries,
    concurrent_deliveries_credit_once,
    delayed_payments_failures_and_other_currencies_credit_nothing,
    refunds_debit_the_wallet_and_the_rest_is_owed_until_repaid,
    partial_refunds_debit_each_part_once,
    foreign_sessions_and_other_event_types_are_ignored,
    an_unmatched_refund_is_not_recorded_while_stripe_is_unreachable,
    the_webhook_endpoint_accepts_only_the_endpoint_secret,
);

const WEBHOOK_SECRET: &str = "whsec_suite_0123456789abcdef";

/// Stripe at an address nothing listens on: calls to it fail.
fn stripe_payments() -> Payments {
    std::env::set_var("SUITE_STRIPE_KEY", "sk_test_suite_0123456789");
    std::env::set_var("SUITE_STRIPE_WEBHOOK", WEBHOOK_SECRET);
    let cfg: PaymentsConfig = toml::from_str(
        "processor = \"stripe\"\nsecret_key_env = \"SUITE_STRIPE_KEY\"\nwebhook_secret_env = \"SUITE_STRIPE_WEBHOOK\"\n\
         api_base = \"http://127.0.0.1:9\"\ncurrency = \"usd\"",
    )
    .unwrap();
    Payments::from_config(&cfg).unwrap()
}

fn session(id: &str, user: &str, cents: i64, payment_status: &str) -> Value {
    json!({
        "id": id, "object": "checkout.session", "mode": "payment", "status": "complete",
        "payment_status": payment_status, "amount_total": cents, "currency": "usd",
        "payment_intent": format!("pi_{id}"), "created": 1_796_083_200,
        "metadata": {"tollgate_paywall": "app", "tollgate_user": user},
    })
}

fn event(id: &str, kind: &str, object: Value) -> Event {
    serde_json::from_value(
        json!({"id": id, "object": "event", "type": kind, "data": {"object": object}}),
    )
    .unwrap()
}

fn refund_of(session_id: &str, refunded_cents: i64) -> Value {
    json!({"id": format!("ch_{session_id}"), "object": "charge", "amount_refunded": refunded_cents,
           "currency": "usd", "payment_intent": format!("pi_{session_id}")})
}

async fn handle(db: &Db, p: &Payments, e: &Event) -> Outcome {
    webhook::handle(db, p, e).await.unwrap()
}

async fn a_paid_session_is_credited_once_whatever_the_deliveries(db: &Db) {
    let p = stripe_payments();
    let completed = event(
        "evt_1",
        "checkout.session.completed",
        session("cs_1", "payer", 1000, "paid"),
    );
    assert_eq!(handle(db, &p, &completed).await, Outcome::Credited);
    for _ in 0..3 {
        assert_eq!(handle(db, &p, &completed).await, Outcome::Duplicate);
    }
    // Another event about the same session (a later async success, say).
    let again = event(
        "evt_2",
        "checkout.session.async_payment_succeeded",
        session("cs_1", "payer", 1000, "paid"),
    );
    assert_eq!(handle(db, &p, &again).await, Outcome::AlreadyApplied);
    assert_eq!(balance(db, "payer").await.posted, 10_000_000);
    let memo: String = sqlx::query_scalar("SELECT memo FROM transfers WHERE kind = 'deposit'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(memo.contains("cs_1") && memo.contains("evt_1"), "{memo}");
    assert_eq!(
        count(
            db,
            "SELECT COUNT(*) FROM events WHERE kind = 'payment.succeeded'"
        )
        .await,
        1
    );
    assert_eq!(count(db, "SELECT COUNT(*) FROM stripe_events").await, 2);
    assert_books_balance(db).await;
}

async fn concurrent_deliveries_credit_once(db: &Db) {
    let p = Arc::new(stripe_payments());
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (db, p) = (db.clone(), p.clone());
        // The same event six times, and six other events about the same session.
        let id = if i % 2 == 0 {
            "evt_same".to_string()
        } else {
            format!("evt_other_{i}")
        };
        tasks.push(tokio::spawn(async move {
            let e = event(
                &id,
                "checkout.session.completed",
                session("cs_c", "racer", 2000, "paid"),
            );
            webhook::handle(&db, &p, &e).await.unwrap()
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    assert_eq!(
        outcomes.iter().filter(|o| **o == Outcome::Credited).count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == Outcome::Duplicate)
            .count(),
        5,
        "{outcomes:?}"
    );
    assert_eq!(balance(db, "racer").await.posted, 20_000_000);
    assert_eq!(
        count(db, "SELECT COUNT(*) FROM transfers WHERE kind = 'deposit'").await,
        1
    );
    assert_books_balance(db).await;
}

async fn delayed_payments_failures_and_other_currencies_credit_nothing(db: &Db) {
    let p = stripe_payments();
    let pending = event(
        "evt_p",
        "checkout.session.completed",
        session("cs_d", "slow", 500, "unpaid"),
    );
    assert_eq!(handle(db, &p, &pending).await, Outcome::Pending);
    let failed = event(
        "evt_f",
        "checkout.session.async_payment_failed",
        session("cs_d", "slow", 500, "unpaid"),
    );
    assert_eq!(handle(db, &p, &failed).await, Outcome::Failed);
    assert_eq!(balance(db, "slow").await.posted, 0);
    let state: String = sqlx::query_scalar("SELECT state FROM checkout_sessions WHERE id = 'cs_d'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(state, "failed");
    assert_eq!(
        count(
            db,
            "SELECT COUNT(*) FROM events WHERE kind = 'payment.failed'"
        )
        .await,
        1
    );

    // A delayed payment that succeeds later is credited then.
    let later = event(
        "evt_p2",
        "checkout.session.completed",
        session("cs_e", "slow", 700, "unpaid"),
    );
    assert_eq!(handle(db, &p, &later).await, Outcome::Pending);
    let ok = event(
        "evt_s2",
        "checkout.session.async_payment_succeeded",
        session("cs_e", "slow", 700, "paid"),
    );
    assert_eq!(handle(db, &p, &ok).await, Outcome::Credited);
    assert_eq!(balance(db, "slow").await.posted, 7_000_000);

    let mut euros = session("cs_eur", "slow", 900, "paid");
    euros["currency"] = json!("eur");
    let e = event("evt_eur", "checkout.session.completed", euros);
    assert_eq!(handle(db, &p, &e).await, Outcome::Error);
    assert_eq!(balance(db, "slow").await.posted, 7_000_000);
    let detail: String =
        sqlx::query_scalar("SELECT detail FROM stripe_events WHERE id = 'evt_eur'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(detail.contains("eur"), "{detail}");
    assert_eq!(
        count(
            db,
            "SELECT COUNT(*) FROM events WHERE kind = 'payment.failed'"
        )
        .await,
        2
    );
    assert_books_balance(db).await;
}

async fn refunds_debit_the_wallet_and_the_rest_is_owed_until_repaid(db: &Db) {
    let p = stripe_payments();
    let paid = event(
        "evt_r1",
        "checkout.session.completed",
        session("cs_r", "refunded", 1000, "paid"),
    );
    assert_eq!(handle(db, &p, &paid).await, Outcome::Credited);
    let spent = manual_charges::charge(db, "app", "refunded", 6_000_000, &json!({}))
        .await
        .unwrap();
    assert!(spent.is_some());
    // The whole 10.00 is refunded; the wallet holds 4.00.
    let refund = event("evt_r2", "charge.refunded", refund_of("cs_r", 1000));
    assert_eq!(handle(db, &p, &refund).await, Outcome::Refunded);
    assert_eq!(balance(db, "refunded").await.posted, 0);
    let owed: i64 = sqlx::query_scalar(
        "SELECT debits_posted - credits_posted FROM accounts WHERE id = 'owed:wallet:app:refunded'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(owed, 6_000_000);
    // Redelivered, or reported again by a later event: nothing more.
    assert_eq!(handle(db, &p, &refund).await, Outcome::Duplicate);
    let again = event("evt_r3", "charge.refunded", refund_of("cs_r", 1000));
    assert_eq!(handle(db, &p, &again).await, Outcome::AlreadyApplied);

    // New requests get the top-up message while anything is owed.
    deposits::deposit(db, "app", "refunded", 5_000_000, "test")
        .await
        .unwrap();
    assert_eq!(
        balance(db, "refunded").await.posted,
        0,
        "the deposit paid back 5.00 of the 6.00"
    );
    let r = holds::authorize(db, &settings(), &ask("refunded", "req-owed", 10, Some(10)))
        .await
        .unwrap();
    match r {
        AuthorizeResponse::Action {
            action,
            message,
            link,
        } => {
            assert_eq!(action, Action::Topup);
            assert!(message.contains("1.000000 owed"), "{message}");
            assert!(link.contains("/pay/topup/"));
        }
        other => panic!("expected the top-up message, got {other:?}"),
    }
    deposits::deposit(db, "app", "refunded", 3_000_000, "test")
        .await
        .unwrap();
    assert_eq!(balance(db, "refunded").await.posted, 2_000_000);
    let r = holds::authorize(db, &settings(), &ask("refunded", "req-ok", 10, Some(10)))
        .await
        .unwrap();
    assert!(matches!(r, AuthorizeResponse::Allow { .. }), "{r:?}");
    assert_eq!(
        count(db, "SELECT COUNT(*) FROM transfers WHERE kind = 'repay'").await,
        2
    );
    assert_eq!(
        count(
            db,
            "SELECT COUNT(*) FROM events WHERE kind = 'payment.refunded'"
        )
        .await,
        1
    );
    assert_books_balance(db).await;
}

async fn partial_refunds_debit_each_part_once(db: &Db) {
    let p = stripe_payments();
    let paid = event(
        "evt_q1",
        "checkout.session.completed",
        session("cs_q", "partial", 2000, "paid"),
    );
    assert_eq!(handle(db, &p, &paid).await, Outcome::Credited);
    // Cumulative amounts, delivered out of order: 3.00, then 8.00, then the 3.00 event late.
    let first = event("evt_q2", "charge.refunded", refund_of("cs_q", 300));
    let second = event("evt_q3", "charge.refunded", refund_of("cs_q", 800));
    assert_eq!(handle(db, &p, &second).await, Outcome::Refunded);
    assert_eq!(balance(db, "partial").await.posted, 12_000_000);
    assert_eq!(handle(db, &p, &first).await, Outcome::AlreadyApplied);
    assert_eq!(balance(db, "partial").await.posted, 12_000_000);
    let third = event("evt_q4", "charge.refunded", refund_of("cs_q", 1000));
    assert_eq!(handle(db, &p, &third).await, Outcome::Refunded);
    assert_eq!(balance(db, "partial").await.posted, 10_000_000);
    assert_books_balance(db).await;
}

async fn foreign_sessions_and_other_event_types_are_ignored(db: &Db) {
    let p = stripe_payments();
    let mut foreign = session("cs_x", "nobody", 1000, "paid");
    foreign["metadata"] = json!({});
    let e = event("evt_x", "checkout.session.completed", foreign);
    assert_eq!(handle(db, &p, &e).await, Outcome::Ignored);
    let other = event(
        "evt_y",
        "customer.created",
        json!({"id": "cus_1", "object": "customer"}),
    );
    assert_eq!(handle(db, &p, &other).await, Outcome::Ignored);
    assert_eq!(count(db, "SELECT COUNT(*) FROM transfers").await, 0);
    assert_eq!(
        count(
            db,
            "SELECT COUNT(*) FROM stripe_events WHERE outcome = 'ignored'"
        )
        .await,
        2
    );
}

/// A refund of a payment the ledger never saw makes it ask Stripe for the
/// session; when Stripe cannot answer, the event is not recorded, so its
/// redelivery is handled in full.
async fn an_unmatched_refund_is_not_recorded_while_stripe_is_unreachable(db: &Db) {
    let p = stripe_payments();
    let refund = event("evt_u", "charge.refunded", refund_of("cs_unknown", 500));
    assert!(webhook::handle(db, &p, &refund).await.is_err());
    assert_eq!(count(db, "SELECT COUNT(*) FROM stripe_events").await, 0);
    assert_eq!(count(db, "SELECT COUNT(*) FROM transfers").await, 0);
}

async fn post_webhook(db: &Db, signature_header: Option<&str>, body: &str) -> (StatusCode, Value) {
    let mut s = settings();
    s.payments = Some(Arc::new(stripe_payments()));
    let app = router(Arc::new(AppState {
        db: db.clone(),
        settings: s,
        internal_secret: "x".repeat(20),
        admin_token_hash: None,
    }));
    let mut req = Request::post("/webhooks/stripe").header("content-type", "application/json");
    if let Some(h) = signature_header {
        req = req.header("stripe-signature", h);
    }
    let resp = app
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn the_webhook_endpoint_accepts_only_the_endpoint_secret(db: &Db) {
    let body = json!({"id": "evt_h", "object": "event", "type": "checkout.session.completed",
                      "data": {"object": session("cs_h", "hooked", 1500, "paid")}})
    .to_string();
    let now = tollgate_ledger::calendar::now_ms() / 1000;
    let good = signature::sign(WEBHOOK_SECRET, now, body.as_bytes());
    let wrong = signature::sign("whsec_someone_else", now, body.as_bytes());
    let stale = signature::sign(WEBHOOK_SECRET, now - 301, body.as_bytes());
    let tampered = body.replace("1500", "150000");
    for (header, payload) in [
        (None, body.as_str()),
        (Some(wrong.as_str()), body.as_str()),
        (Some(stale.as_str()), body.as_str()),
        (Some(good.as_str()), tampered.as_str()),
        (Some("t=1,v0=abc"), body.as_str()),
    ] {
        let (status, answer) = post_webhook(db, header, payload).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{header:?}: {answer}");
        let text = answer.to_string();
        assert!(
            !text.contains(WEBHOOK_SECRET) && !text.contains("sk_test_suite"),
            "{text}"
        );
    }
    assert_eq!(count(db, "SELECT COUNT(*) FROM stripe_events").await, 0);
    assert_eq!(balance(db, "hooked").await.posted, 0);

    let (status, answer) = post_webhook(db, Some(&good), &body).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (StatusCode::OK, Some("credited"))
    );
    let (status, answer) = post_webhook(db, Some(&good), &body).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (StatusCode::OK, Some("duplicate"))
    );
    assert_eq!(balance(db, "hooked").await.posted, 15_000_000);
}
