//! Limits, on both backends: each is exact under concurrency, a refused
//! request changes nothing, and settle gives back what a request did not use.

mod common;

use std::sync::Arc;

use sqlx::Row;
use tollgate_ledger::access::limits::Limits;
use tollgate_ledger::db::Db;
use tollgate_ledger::money::deposits;
use tollgate_ledger::money::holds;
use tollgate_protocol::{
    Action, AuthorizeRequest, AuthorizeResponse, SettleOutcome, SettleRequest, Usage, UsageSource,
};

use common::{set_limits, settings, KEY};

fn ask(user: &str, rid: &str, prompt: u32, max_out: u32) -> AuthorizeRequest {
    AuthorizeRequest {
        request_id: rid.into(),
        paywall_key: KEY.into(),
        user: user.into(),
        model: "m".into(),
        prompt_tokens: prompt,
        max_output_tokens: Some(max_out),
        choices: 1,
        stream: false,
    }
}

async fn authorize(db: &Db, a: &AuthorizeRequest) -> AuthorizeResponse {
    holds::authorize(db, &settings(), a).await.unwrap()
}

fn hold_id(r: &AuthorizeResponse) -> String {
    match r {
        AuthorizeResponse::Allow { hold_id, .. } => hold_id.clone(),
        other => panic!("expected allow, got {other:?}"),
    }
}

fn rejected(r: &AuthorizeResponse) -> (u16, String, Option<u32>) {
    match r {
        AuthorizeResponse::Reject {
            status,
            error,
            retry_after_secs,
        } => (
            *status,
            error.code.clone().unwrap_or_default(),
            *retry_after_secs,
        ),
        other => panic!("expected reject, got {other:?}"),
    }
}

async fn settle(db: &Db, hold: &str, rid: &str, prompt: u32, completion: u32) -> i64 {
    let req = SettleRequest {
        hold_id: hold.into(),
        request_id: rid.into(),
        usage: Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cached_prompt_tokens: 0,
        },
        usage_source: UsageSource::Provider,
        local_completion_tokens: None,
        outcome: SettleOutcome::Completed,
        upstream_status: 200,
        provider: None,
    };
    holds::settle(db, &req, holds::ExpiryPolicy::Void)
        .await
        .unwrap()
        .amount_micros
}

async fn table_counts(db: &Db) -> Vec<i64> {
    let mut out = Vec::new();
    for t in ["holds", "transfers", "charges", "events"] {
        let sql = format!("SELECT CAST(COUNT(*) AS BIGINT) FROM {t}");
        out.push(
            sqlx::query(&sql)
                .fetch_one(&db.pool)
                .await
                .unwrap()
                .get::<i64, _>(0),
        );
    }
    let open: i64 =
        sqlx::query("SELECT CAST(COALESCE(SUM(open_holds), 0) AS BIGINT) FROM accounts")
            .fetch_one(&db.pool)
            .await
            .unwrap()
            .get(0);
    out.push(open);
    out
}

backend_tests!(
    token_cap_refuses_before_anything_moves,
    requests_per_minute_is_exact_under_concurrency,
    tokens_per_minute_gives_back_what_was_not_used,
    requests_in_flight_are_capped,
    spend_caps_answer_with_a_message_and_count_posted_amounts,
);

async fn token_cap_refuses_before_anything_moves(db: &Db) {
    set_limits(
        db,
        Limits {
            max_tokens_per_request: Some(100),
            ..Default::default()
        },
    )
    .await;
    deposits::deposit(db, "app", "u", 1_000_000, "test")
        .await
        .unwrap();
    let before = table_counts(db).await;
    let (status, code, _) = rejected(&authorize(db, &ask("u", "big", 60, 50)).await);
    assert_eq!((status, code.as_str()), (400, "max_tokens_exceeded"));
    assert_eq!(table_counts(db).await, before);
    hold_id(&authorize(db, &ask("u", "fits", 50, 50)).await);
}

async fn requests_per_minute_is_exact_under_concurrency(db: &Db) {
    common::fresh_minute().await;
    set_limits(
        db,
        Limits {
            requests_per_minute: Some(10),
            ..Default::default()
        },
    )
    .await;
    deposits::deposit(db, "app", "u", 10_000_000, "test")
        .await
        .unwrap();
    let db_arc = Arc::new(db.clone());
    let mut tasks = Vec::new();
    for i in 0..50 {
        let db = db_arc.clone();
        tasks.push(tokio::spawn(async move {
            authorize(&db, &ask("u", &format!("r{i}"), 10, 10)).await
        }));
    }
    let (mut allowed, mut limited) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            AuthorizeResponse::Allow { .. } => allowed += 1,
            r => {
                let (status, code, retry) = rejected(&r);
                assert_eq!((status, code.as_str()), (429, "rate_limit_exceeded"));
                assert!(retry.is_some_and(|s| (1..=60).contains(&s)), "{retry:?}");
                limited += 1;
            }
        }
    }
    assert_eq!((allowed, limited), (10, 40));
    // Other users have their own window.
    deposits::deposit(db, "app", "w", 1_000_000, "test")
        .await
        .unwrap();
    hold_id(&authorize(db, &ask("w", "w1", 10, 10)).await);
}

async fn tokens_per_minute_gives_back_what_was_not_used(db: &Db) {
    common::fresh_minute().await;
    set_limits(
        db,
        Limits {
            tokens_per_minute: Some(1000),
            ..Default::default()
        },
    )
    .await;
    deposits::deposit(db, "app", "u", 10_000_000, "test")
        .await
        .unwrap();
    let a = hold_id(&authorize(db, &ask("u", "a", 100, 400)).await);
    let b = hold_id(&authorize(db, &ask("u", "b", 100, 400)).await);
    let before = table_counts(db).await;
    let (status, code, _) = rejected(&authorize(db, &ask("u", "c", 100, 400)).await);
    assert_eq!((status, code.as_str()), (429, "rate_limit_exceeded"));
    assert_eq!(
        table_counts(db).await,
        before,
        "a refused request changed the books"
    );
    // Each used 150 of its 500: 700 tokens come back.
    settle(db, &a, "a", 100, 50).await;
    settle(db, &b, "b", 100, 50).await;
    hold_id(&authorize(db, &ask("u", "c2", 100, 400)).await);
}

async fn requests_in_flight_are_capped(db: &Db) {
    set_limits(
        db,
        Limits {
            max_open_holds: Some(2),
            ..Default::default()
        },
    )
    .await;
    deposits::deposit(db, "app", "u", 10_000_000, "test")
        .await
        .unwrap();
    let a = hold_id(&authorize(db, &ask("u", "a", 10, 10)).await);
    hold_id(&authorize(db, &ask("u", "b", 10, 10)).await);
    let (status, code, retry) = rejected(&authorize(db, &ask("u", "c", 10, 10)).await);
    assert_eq!(
        (status, code.as_str(), retry),
        (429, "concurrency_limit_exceeded", Some(1))
    );
    settle(db, &a, "a", 10, 10).await;
    hold_id(&authorize(db, &ask("u", "d", 10, 10)).await);
}

async fn spend_caps_answer_with_a_message_and_count_posted_amounts(db: &Db) {
    set_limits(
        db,
        Limits {
            daily_spend_cap: Some(1000),
            ..Default::default()
        },
    )
    .await;
    deposits::deposit(db, "app", "u", 10_000_000, "test")
        .await
        .unwrap();
    // Holds of 600 (100 prompt × 2.00 + 50 out × 8.00 per M).
    let a = hold_id(&authorize(db, &ask("u", "a", 100, 50)).await);
    match authorize(db, &ask("u", "b", 100, 50)).await {
        AuthorizeResponse::Action {
            action,
            message,
            link,
        } => {
            assert_eq!(action, Action::SpendCap);
            assert!(
                message.contains("daily spending limit of 0.001000"),
                "{message}"
            );
            assert!(message.contains("UTC"));
            assert!(link.is_empty());
        }
        other => panic!("expected a spend-cap message, got {other:?}"),
    }
    // Settled at 340: the day has 660 left, enough for another 600 hold.
    assert_eq!(settle(db, &a, "a", 90, 20).await, 340);
    hold_id(&authorize(db, &ask("u", "c", 100, 50)).await);

    set_limits(
        db,
        Limits {
            monthly_spend_cap: Some(500),
            ..Default::default()
        },
    )
    .await;
    match authorize(db, &ask("u", "d", 100, 50)).await {
        AuthorizeResponse::Action {
            action: Action::SpendCap,
            message,
            ..
        } => assert!(message.contains("monthly")),
        other => panic!("expected a monthly spend-cap message, got {other:?}"),
    }
}
