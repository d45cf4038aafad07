//! The ledger's money rules, run against every storage backend: SQLite (a
//! fresh file per test) and PostgreSQL (a fresh database per test on
//! TOLLGATE_TEST_POSTGRES_URL). PostgreSQL tests skip when the server is not
//! reachable, unless TOLLGATE_REQUIRE_POSTGRES=1 (CI), where they fail.

use std::sync::Arc;

use sqlx::Row;
use tollgate_ledger::db::Db;
use tollgate_ledger::money::book;
use tollgate_ledger::money::deposits;
use tollgate_ledger::money::holds;
use tollgate_ledger::money::idempotency::{self, KeyClaim, Stored};
use tollgate_ledger::money::wallets::isolated_wallet as wallet_account;
use tollgate_protocol::{Action, AuthorizeResponse, HoldState, SettleOutcome, UsageSource};

mod common;

use common::{ask, assert_books_balance, balance, count, hold_for, settings, settle_req};

backend_tests!(
    deposit_credits_and_balance_reports_it,
    unfunded_user_gets_a_topup_link_and_no_hold,
    unknown_key_and_unknown_model_are_rejected,
    hold_then_settle_charges_exactly_the_price,
    settle_is_idempotent_by_hold,
    upstream_failure_voids_the_hold,
    charge_never_exceeds_the_hold,
    concurrent_authorizations_never_overspend,
    concurrent_settles_post_once,
    idempotency_keys_replay_reject_and_block,
    topup_links_pay_once_and_only_for_their_user,
    paywalls_do_not_share_wallets,
    concurrent_uneven_holds_never_overspend,
    settle_refuses_the_sidecars_own_words,
);

async fn deposit_credits_and_balance_reports_it(db: &Db) {
    assert_eq!(balance(db, "u").await, book::Balance::default());
    let b = deposits::deposit(db, "app", "u", 5_000_000, "test")
        .await
        .unwrap();
    assert_eq!(b.posted, 5_000_000);
    deposits::deposit(db, "app", "u", 1, "test").await.unwrap();
    assert_eq!(balance(db, "u").await.available, 5_000_001);
}

async fn unfunded_user_gets_a_topup_link_and_no_hold(db: &Db) {
    let r = holds::authorize(db, &settings(), &ask("broke", "r1", 10, Some(10)))
        .await
        .unwrap();
    let AuthorizeResponse::Action {
        action,
        link,
        message,
    } = r
    else {
        panic!("{r:?}")
    };
    assert_eq!(action, Action::Topup);
    assert!(message.contains("Test app"));
    let token = link
        .strip_prefix("http://pay.test/pay/topup/")
        .expect("link under public url");
    let holder = deposits::open_link(db, token)
        .await
        .unwrap()
        .expect("link valid");
    assert_eq!(
        (holder.paywall_id.as_str(), holder.user_id.as_str()),
        ("app", "broke")
    );
    assert_eq!(
        count(db, "SELECT CAST(COUNT(*) AS BIGINT) FROM holds").await,
        0
    );
    assert_eq!(
        count(
            db,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM events WHERE kind = 'request.blocked'"
        )
        .await,
        1
    );
}

async fn unknown_key_and_unknown_model_are_rejected(db: &Db) {
    let mut a = ask("u", "r", 1, None);
    a.paywall_key = "nope-nope-nope-nope".into();
    let r = holds::authorize(db, &settings(), &a).await.unwrap();
    assert!(
        matches!(r, AuthorizeResponse::Reject { status: 401, .. }),
        "{r:?}"
    );
    let mut a = ask("u", "r", 1, None);
    a.model = "gpt-unknown".into();
    let r = holds::authorize(db, &settings(), &a).await.unwrap();
    let AuthorizeResponse::Reject { status, error, .. } = r else {
        panic!()
    };
    assert_eq!(status, 404);
    assert_eq!(error.code.as_deref(), Some("model_not_found"));
}

async fn hold_then_settle_charges_exactly_the_price(db: &Db) {
    deposits::deposit(db, "app", "u", 1_000_000, "test")
        .await
        .unwrap();
    // 100 prompt × 2.00 + 50 out × 8.00 per M = 200 + 400 = 600 micro-units held
    let (hold, held) = hold_for(db, "u", "req-1", 100, 50).await;
    assert_eq!(held, 600);
    let b = balance(db, "u").await;
    assert_eq!((b.posted, b.held, b.available), (1_000_000, 600, 999_400));
    // Actual: 90 prompt, 20 completion → 180 + 160 = 340
    let res = holds::settle(
        db,
        &settle_req(&hold, "req-1", 90, 20, SettleOutcome::Completed),
        holds::ExpiryPolicy::Void,
    )
    .await
    .unwrap();
    assert_eq!(
        (res.amount_micros, res.replayed, res.state.as_str()),
        (340, false, "posted")
    );
    let b = balance(db, "u").await;
    assert_eq!((b.posted, b.held, b.available), (999_660, 0, 999_660));
    let row = sqlx::query("SELECT request_id, model, prompt_tokens, completion_tokens, price_rule_id, price_version, amount, usage_source FROM charges WHERE hold_id = $1")
        .bind(&hold)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("request_id"), "req-1");
    assert_eq!(row.get::<String, _>("model"), "m");
    assert_eq!(row.get::<i64, _>("prompt_tokens"), 90);
    assert_eq!(row.get::<i64, _>("completion_tokens"), 20);
    assert_eq!(row.get::<String, _>("price_rule_id"), "m@v1");
    assert_eq!(row.get::<i64, _>("price_version"), 1);
    assert_eq!(row.get::<i64, _>("amount"), 340);
    assert_eq!(row.get::<String, _>("usage_source"), "provider");
    // The wallet's entries: deposit, hold, post, all tagged with the request.
    let entries = deposits::entries(db, &wallet_account("app", "u"), "app", 0, 10)
        .await
        .unwrap();
    let kinds: Vec<_> = entries.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["deposit", "hold", "post"]);
    assert_eq!(entries[2].request_id.as_deref(), Some("req-1"));
    let payload: String = sqlx::query(
        "SELECT payload FROM events WHERE kind = 'charge.created' AND request_id = 'req-1'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap()
    .get("payload");
    let payload: serde_json::Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(
        (
            payload["local_completion_tokens"].as_i64(),
            payload["count_difference"].as_i64()
        ),
        (Some(20), Some(0))
    );
    assert_eq!(entries[2].amount_micros, -340);
}

async fn settle_is_idempotent_by_hold(db: &Db) {
    deposits::deposit(db, "app", "u", 1_000_000, "test")
        .await
        .unwrap();
    let (hold, _) = hold_for(db, "u", "req-2", 100, 50).await;
    let first = holds::settle(
        db,
        &settle_req(&hold, "req-2", 100, 10, SettleOutcome::Completed),
        holds::ExpiryPolicy::Void,
    )
    .await
    .unwrap();
    let again = holds::settle(
        db,
        &settle_req(&hold, "req-2", 100, 10, SettleOutcome::Completed),
        holds::ExpiryPolicy::Void,
    )
    .await
    .unwrap();
    assert!(again.replayed);
    assert_eq!(again.charge_id, first.charge_id);
    assert_eq!(again.amount_micros, first.amount_micros);
    assert_eq!(
        balance(db, "u").await.posted,
        1_000_000 - first.amount_micros
    );
    assert_eq!(
        count(db, "SELECT CAST(COUNT(*) AS BIGINT) FROM charges").await,
        1
    );
    // A settle for another request id is refused, not applied.
    let err = holds::settle(
        db,
        &settle_req(&hold, "other", 1, 1, SettleOutcome::Completed),
        holds::ExpiryPolicy::Void,
    )
    .await;
    assert!(err.is_err());
    let missing = holds::settle(
        db,
        &settle_req("hold_nope", "x", 1, 1, SettleOutcome::Completed),
        holds::ExpiryPolicy::Void,
    )
    .await;
    assert!(matches!(
        missing,
        Err(tollgate_ledger::error::LedgerError::NotFound(_))
    ));
}

async fn upstream_failure_voids_the_hold(db: &Db) {
    deposits::deposit(db, "app", "u", 1_000_000, "test")
        .await
        .unwrap();
    let (hold, _) = hold_for(db, "u", "req-3", 100, 50).await;
    let res = holds::settle(
        db,
        &settle_req(&hold, "req-3", 0, 0, SettleOutcome::UpstreamFailed),
        holds::ExpiryPolicy::Void,
    )
    .await
    .unwrap();
    assert_eq!(
        (res.state.as_str(), res.amount_micros, res.charge_id),
        ("voided", 0, None)
    );
    let b = balance(db, "u").await;
    assert_eq!((b.posted, b.held), (1_000_000, 0));
}

async fn charge_never_exceeds_the_hold(db: &Db) {
    deposits::deposit(db, "app", "u", 1_000_000, "test")
        .await
        .unwrap();
    let (hold, held) = hold_for(db, "u", "req-4", 10, 10).await;
    let res = holds::settle(
        db,
        &settle_req(&hold, "req-4", 10, 5000, SettleOutcome::Completed),
        holds::ExpiryPolicy::Void,
    )
    .await
    .unwrap();
    assert_eq!(res.amount_micros, held);
    assert_eq!(
        count(
            db,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM events WHERE kind = 'charge.overage'"
        )
        .await,
        1
    );
    let cost: i64 = sqlx::query("SELECT cost FROM charges")
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .get("cost");
    assert!(cost > held);
}

/// Tiny deterministic generator so each seed replays the same schedule.
fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

async fn concurrent_authorizations_never_overspend(db: &Db) {
    for seed in [7u64, 42, 1_000_003] {
        let user = format!("u{seed}");
        // Each hold is 600; the wallet covers exactly 30 of them; 200 race for it,
        // started in a seed-dependent order with seed-dependent jitter.
        deposits::deposit(db, "app", &user, 30 * 600, "test")
            .await
            .unwrap();
        let mut rng = seed;
        let db_arc = Arc::new(db.clone());
        let mut tasks = Vec::new();
        for i in 0..200 {
            let (db, user) = (db_arc.clone(), user.clone());
            let jitter = lcg(&mut rng) % 3;
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(jitter)).await;
                holds::authorize(
                    &db,
                    &settings(),
                    &ask(&user, &format!("c{seed}-{i}"), 100, Some(50)),
                )
                .await
                .unwrap()
            }));
        }
        let mut allowed = 0;
        for t in tasks {
            if matches!(t.await.unwrap(), AuthorizeResponse::Allow { .. }) {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 30, "seed {seed}");
        let b = balance(db, &user).await;
        assert_eq!((b.held, b.available), (30 * 600, 0), "seed {seed}");
        assert_books_balance(db).await;
    }
}

async fn concurrent_uneven_holds_never_overspend(db: &Db) {
    for seed in [3u64, 99] {
        let user = format!("v{seed}");
        let funds = 50_000;
        deposits::deposit(db, "app", &user, funds, "test")
            .await
            .unwrap();
        let mut rng = seed;
        let db_arc = Arc::new(db.clone());
        let mut tasks = Vec::new();
        for i in 0..200 {
            let (db, user) = (db_arc.clone(), user.clone());
            let out = 10 + (lcg(&mut rng) % 200) as u32; // holds of 80..1672 micro-units
            tasks.push(tokio::spawn(async move {
                let r = holds::authorize(
                    &db,
                    &settings(),
                    &ask(&user, &format!("v{seed}-{i}"), 0, Some(out)),
                )
                .await
                .unwrap();
                (i64::from(out) * 8, r)
            }));
        }
        let (mut held, mut rejected) = (0, Vec::new());
        for t in tasks {
            match t.await.unwrap() {
                (_, AuthorizeResponse::Allow { held_micros, .. }) => held += held_micros,
                (amount, _) => rejected.push(amount),
            }
        }
        let b = balance(db, &user).await;
        assert!(held <= funds, "seed {seed}: overspent {held} of {funds}");
        assert_eq!((b.held, b.available), (held, funds - held));
        // Availability only shrinks, so every refusal was for more than is left now.
        assert!(
            rejected.iter().all(|&a| a > b.available),
            "seed {seed}: refused a hold that fits"
        );
    }
}

async fn concurrent_settles_post_once(db: &Db) {
    deposits::deposit(db, "app", "u", 1_000_000, "test")
        .await
        .unwrap();
    let (hold, _) = hold_for(db, "u", "req-5", 100, 50).await;
    let db = Arc::new(db.clone());
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (db, hold) = (db.clone(), hold.clone());
        tasks.push(tokio::spawn(async move {
            holds::settle(
                &db,
                &settle_req(&hold, "req-5", 100, 10, SettleOutcome::Completed),
                holds::ExpiryPolicy::Void,
            )
            .await
            .unwrap()
        }));
    }
    let mut fresh = 0;
    for t in tasks {
        if !t.await.unwrap().replayed {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 1);
    assert_eq!(
        count(&db, "SELECT CAST(COUNT(*) AS BIGINT) FROM charges").await,
        1
    );
    assert_eq!(
        count(
            &db,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM transfers WHERE kind = 'post'"
        )
        .await,
        1
    );
}

async fn idempotency_keys_replay_reject_and_block(db: &Db) {
    let claim = |paywall: &str, body: &[u8]| KeyClaim {
        paywall_id: paywall.into(),
        key: "k1".into(),
        fingerprint: idempotency::request_fingerprint("POST", "/x", body),
    };
    let first = claim("app", b"{\"a\":1}");
    assert_eq!(
        idempotency::lookup(db, &first).await.unwrap(),
        Stored::Absent
    );

    // A transaction that rolls back (a crash before commit) leaves no key.
    let mut tx = db.pool.begin().await.unwrap();
    assert!(idempotency::reserve(&mut tx, &first).await.unwrap());
    tx.rollback().await.unwrap();
    assert_eq!(
        idempotency::lookup(db, &first).await.unwrap(),
        Stored::Absent
    );

    // Reserved and finished in one transaction: replayed from then on.
    let mut tx = db.pool.begin().await.unwrap();
    assert!(idempotency::reserve(&mut tx, &first).await.unwrap());
    idempotency::finish(&mut tx, &first, 200, "{\"ok\":true}")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        idempotency::lookup(db, &first).await.unwrap(),
        Stored::Replay {
            status: 200,
            body: "{\"ok\":true}".into()
        }
    );
    let mut tx = db.pool.begin().await.unwrap();
    assert!(!idempotency::reserve(&mut tx, &first).await.unwrap());
    tx.rollback().await.unwrap();

    let other = claim("app", b"{\"a\":2}");
    assert_eq!(
        idempotency::lookup(db, &other).await.unwrap(),
        Stored::Mismatch
    );
    // Scoped per paywall: another paywall's same key is fresh; a refusal is kept.
    let elsewhere = claim("other", b"{\"a\":2}");
    assert_eq!(
        idempotency::lookup(db, &elsewhere).await.unwrap(),
        Stored::Absent
    );
    idempotency::record(db, &elsewhere, 402, "{}")
        .await
        .unwrap();
    assert_eq!(
        idempotency::lookup(db, &elsewhere).await.unwrap(),
        Stored::Replay {
            status: 402,
            body: "{}".into()
        }
    );
    // Kept for the retention window, purged after.
    let now = tollgate_ledger::calendar::now_ms();
    assert_eq!(idempotency::purge_expired(db, now).await.unwrap(), 0);
    assert!(
        idempotency::purge_expired(db, now + idempotency::RETENTION_MS + 1)
            .await
            .unwrap()
            >= 2
    );
}

async fn topup_links_pay_once_and_only_for_their_user(db: &Db) {
    let mut tx = db.pool.begin().await.unwrap();
    let link = deposits::create_topup_link(&mut tx, &settings(), "app", "payer")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let token = link.url.rsplit('/').next().unwrap().to_string();
    let (holder, b) = deposits::redeem_link(db, &token, 2_000_000, "dev")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((holder.user_id.as_str(), b.posted), ("payer", 2_000_000));
    assert!(deposits::redeem_link(db, &token, 2_000_000, "dev")
        .await
        .unwrap()
        .is_none());
    assert!(deposits::open_link(db, &token).await.unwrap().is_none());
    assert!(deposits::redeem_link(db, "f00d", 1, "dev")
        .await
        .unwrap()
        .is_none());
    assert_eq!(balance(db, "payer").await.posted, 2_000_000);
}

async fn paywalls_do_not_share_wallets(db: &Db) {
    deposits::deposit(db, "other", "u", 1_000_000, "test")
        .await
        .unwrap();
    assert_eq!(balance(db, "u").await.posted, 0);
    let r = holds::authorize(db, &settings(), &ask("u", "r", 10, Some(10)))
        .await
        .unwrap();
    assert!(matches!(r, AuthorizeResponse::Action { .. }));
}

/// `expired` and `estimate` are what the sweeper records; a settlement that
/// names them is refused and moves nothing.
async fn settle_refuses_the_sidecars_own_words(db: &Db) {
    deposits::deposit(db, "app", "u", 1_000_000, "test")
        .await
        .unwrap();
    let (hold, held) = hold_for(db, "u", "r-words", 10, 10).await;
    let expired = settle_req(&hold, "r-words", 10, 1, SettleOutcome::Expired);
    let mut estimate = settle_req(&hold, "r-words", 10, 1, SettleOutcome::Completed);
    estimate.usage_source = UsageSource::Estimate;
    for req in [expired, estimate] {
        let refused = holds::settle(db, &req, holds::ExpiryPolicy::Void)
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("sidecar's own"), "{refused}");
    }
    assert_eq!(balance(db, "u").await.held, held);
    let done = holds::settle(
        db,
        &settle_req(&hold, "r-words", 10, 1, SettleOutcome::Completed),
        holds::ExpiryPolicy::Void,
    )
    .await
    .unwrap();
    assert_eq!(done.state, HoldState::Posted);
}
