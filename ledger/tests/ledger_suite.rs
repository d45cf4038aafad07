//! The ledger's money rules, run against every storage backend: SQLite (a
//! fresh file per test) and PostgreSQL (a fresh database per test on
//! TOLLGATE_TEST_POSTGRES_URL). PostgreSQL tests skip when the server is not
//! reachable, unless TOLLGATE_REQUIRE_POSTGRES=1 (CI), where they fail.

use std::sync::Arc;

use sqlx::Row;
use tollgate_ledger::book;
use tollgate_ledger::catalog;
use tollgate_ledger::db::Db;
use tollgate_ledger::deposits;
use tollgate_ledger::holds;
use tollgate_ledger::idempotency::{self, Begin};
use tollgate_ledger::verify;
use tollgate_ledger::wallets::isolated_wallet as wallet_account;
use tollgate_protocol::{
    Action, AuthorizeRequest, AuthorizeResponse, SettleOutcome, SettleRequest, Usage, UsageSource,
};

mod common;

use common::{assert_books_balance, config, settings, KEY};

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
    price_change_is_a_new_version_and_holds_keep_theirs,
    idempotency_keys_replay_reject_and_block,
    expired_holds_are_voided,
    topup_links_pay_once_and_only_for_their_user,
    paywalls_do_not_share_wallets,
    holds_cover_every_choice,
    verify_reports_tampering,
    concurrent_uneven_holds_never_overspend,
    expiry_policies_charge_nothing_the_prompt_or_the_hold,
    a_settlement_batch_commits_once_and_replays_like_single_settles,
    glob_prices_cover_model_families_and_exact_names_win,
    a_short_balance_gets_a_shorter_answer_down_to_the_floor,
    free_requests_post_zero_and_verify_clean,
);

async fn verify_reports_tampering(db: &Db) {
    deposits::deposit(db, "app", "u", 1_000_000, "test")
        .await
        .unwrap();
    let (hold, _) = hold_for(db, "u", "t1", 100, 50).await;
    let now = tollgate_ledger::keys::now_ms();
    assert!(verify::verify(db, now, 0).await.unwrap().is_clean());
    // Overdue open hold.
    let report = verify::verify(db, now + 700_000, 0).await.unwrap();
    let checks: Vec<_> = report.violations.iter().map(|v| v.check).collect();
    assert_eq!(checks, ["no_expired_hold_open"]);
    assert!(report.violations[0].detail.contains(&hold));
    // Money created out of nothing.
    sqlx::query("UPDATE accounts SET credits_posted = credits_posted + 5 WHERE kind = 'wallet'")
        .execute(&db.pool)
        .await
        .unwrap();
    let checks: Vec<_> = verify::verify(db, now, 0)
        .await
        .unwrap()
        .violations
        .iter()
        .map(|v| v.check)
        .collect();
    assert!(checks.contains(&"posted_sums_balance"), "{checks:?}");
    assert!(
        checks.contains(&"account_credits_match_transfers"),
        "{checks:?}"
    );
    sqlx::query("UPDATE accounts SET credits_posted = credits_posted - 5 WHERE kind = 'wallet'")
        .execute(&db.pool)
        .await
        .unwrap();
    // A hold marked posted without its post transfer and charge.
    sqlx::query("UPDATE holds SET state = 'posted' WHERE id = $1")
        .bind(&hold)
        .execute(&db.pool)
        .await
        .unwrap();
    let checks: Vec<_> = verify::verify(db, now, 0)
        .await
        .unwrap()
        .violations
        .iter()
        .map(|v| v.check)
        .collect();
    assert!(
        checks.contains(&"hold_state_matches_transfers"),
        "{checks:?}"
    );
    assert!(checks.contains(&"posted_hold_has_charge"), "{checks:?}");
    assert!(checks.contains(&"pending_matches_open_holds"), "{checks:?}");
    sqlx::query("UPDATE holds SET state = 'pending' WHERE id = $1")
        .bind(&hold)
        .execute(&db.pool)
        .await
        .unwrap();
}

async fn free_requests_post_zero_and_verify_clean(db: &Db) {
    // A zero-priced usage still posts (amount 0) and the hold ends `posted`.
    deposits::deposit(db, "app", "u", 1_000, "test")
        .await
        .unwrap();
    let (hold, _) = hold_for(db, "u", "free", 10, 10).await;
    let res = holds::settle(
        db,
        &settle_req(&hold, "free", 0, 0, SettleOutcome::Completed),
    )
    .await
    .unwrap();
    assert_eq!((res.state.as_str(), res.amount_micros), ("posted", 0));
    assert!(res.charge_id.is_some());
}

fn ask(user: &str, request_id: &str, prompt: u32, max_out: Option<u32>) -> AuthorizeRequest {
    AuthorizeRequest {
        request_id: request_id.into(),
        paywall_key: KEY.into(),
        user: user.into(),
        model: "m".into(),
        prompt_tokens: prompt,
        max_output_tokens: max_out,
        choices: 1,
        stream: false,
    }
}

fn settle_req(
    hold: &str,
    request_id: &str,
    prompt: u32,
    completion: u32,
    outcome: SettleOutcome,
) -> SettleRequest {
    SettleRequest {
        hold_id: hold.into(),
        request_id: request_id.into(),
        usage: Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cached_prompt_tokens: 0,
        },
        usage_source: UsageSource::Provider,
        local_completion_tokens: Some(completion),
        outcome,
        upstream_status: 200,
    }
}

async fn balance(db: &Db, user: &str) -> book::Balance {
    book::balance(db, &wallet_account("app", user))
        .await
        .unwrap()
}

async fn hold_for(db: &Db, user: &str, rid: &str, prompt: u32, max_out: u32) -> (String, i64) {
    match holds::authorize(db, &settings(), &ask(user, rid, prompt, Some(max_out)))
        .await
        .unwrap()
    {
        AuthorizeResponse::Allow {
            hold_id,
            held_micros,
            route,
            ..
        } => {
            assert_eq!(route.auth_value, "Bearer sk-suite");
            assert_eq!(route.cluster, "mock");
            (hold_id, held_micros)
        }
        other => panic!("expected allow, got {other:?}"),
    }
}

async fn count(db: &Db, sql: &str) -> i64 {
    sqlx::query(sql)
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .get::<i64, _>(0)
}

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
    )
    .await
    .unwrap();
    let again = holds::settle(
        db,
        &settle_req(&hold, "req-2", 100, 10, SettleOutcome::Completed),
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
    )
    .await;
    assert!(err.is_err());
    let missing = holds::settle(
        db,
        &settle_req("hold_nope", "x", 1, 1, SettleOutcome::Completed),
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

async fn price_change_is_a_new_version_and_holds_keep_theirs(db: &Db) {
    deposits::deposit(db, "app", "u", 1_000_000, "test")
        .await
        .unwrap();
    let (old_hold, _) = hold_for(db, "u", "old", 0, 100).await;
    catalog::seed(db, &config("16.00")).await.unwrap();
    catalog::seed(db, &config("16.00")).await.unwrap(); // unchanged: no new version
    assert_eq!(
        count(db, "SELECT CAST(COUNT(*) AS BIGINT) FROM price_rules").await,
        2
    );
    let route = catalog::model_route(db, "m").await.unwrap().unwrap();
    assert_eq!(
        (route.price.version, route.price.output_per_m),
        (2, 16_000_000)
    );
    let (new_hold, _) = hold_for(db, "u", "new", 0, 100).await;
    let old = holds::settle(
        db,
        &settle_req(&old_hold, "old", 0, 100, SettleOutcome::Completed),
    )
    .await
    .unwrap();
    let new = holds::settle(
        db,
        &settle_req(&new_hold, "new", 0, 100, SettleOutcome::Completed),
    )
    .await
    .unwrap();
    assert_eq!((old.amount_micros, new.amount_micros), (800, 1600));
    let versions: Vec<i64> =
        sqlx::query("SELECT price_version FROM charges ORDER BY request_id DESC")
            .fetch_all(&db.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get("price_version"))
            .collect();
    assert_eq!(versions, [1, 2]);
}

async fn idempotency_keys_replay_reject_and_block(db: &Db) {
    let fp = idempotency::request_fingerprint("POST", "/x", b"{\"a\":1}");
    assert_eq!(
        idempotency::begin(db, "app", "k1", &fp).await.unwrap(),
        Begin::Fresh
    );
    assert_eq!(
        idempotency::begin(db, "app", "k1", &fp).await.unwrap(),
        Begin::InFlight
    );
    idempotency::complete(db, "app", "k1", 200, "{\"ok\":true}")
        .await
        .unwrap();
    assert_eq!(
        idempotency::begin(db, "app", "k1", &fp).await.unwrap(),
        Begin::Replay {
            status: 200,
            body: "{\"ok\":true}".into()
        }
    );
    let other = idempotency::request_fingerprint("POST", "/x", b"{\"a\":2}");
    assert_eq!(
        idempotency::begin(db, "app", "k1", &other).await.unwrap(),
        Begin::Mismatch
    );
    // Scoped per paywall: another paywall's same key is fresh.
    assert_eq!(
        idempotency::begin(db, "other", "k1", &other).await.unwrap(),
        Begin::Fresh
    );
    // Abandoned keys can be reused.
    idempotency::abandon(db, "other", "k1").await.unwrap();
    assert_eq!(
        idempotency::begin(db, "other", "k1", &other).await.unwrap(),
        Begin::Fresh
    );
    // Kept for the retention window, purged after.
    let now = tollgate_ledger::keys::now_ms();
    assert_eq!(idempotency::purge_expired(db, now).await.unwrap(), 0);
    assert!(
        idempotency::purge_expired(db, now + idempotency::RETENTION_MS + 1)
            .await
            .unwrap()
            >= 2
    );
}

async fn expired_holds_are_voided(db: &Db) {
    deposits::deposit(db, "app", "u", 1_000_000, "test")
        .await
        .unwrap();
    let (hold, _) = hold_for(db, "u", "req-6", 100, 50).await;
    let now = tollgate_ledger::keys::now_ms();
    assert_eq!(
        holds::expire_holds(db, now, holds::ExpiryPolicy::Void)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        holds::expire_holds(db, now + 600_001, holds::ExpiryPolicy::Void)
            .await
            .unwrap(),
        1
    );
    assert_eq!(balance(db, "u").await.held, 0);
    // A settlement arriving after expiry moves nothing.
    let late = holds::settle(
        db,
        &settle_req(&hold, "req-6", 100, 10, SettleOutcome::Completed),
    )
    .await
    .unwrap();
    assert!(late.replayed);
    assert_eq!(balance(db, "u").await.posted, 1_000_000);
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

async fn holds_cover_every_choice(db: &Db) {
    deposits::deposit(db, "app", "u", 1_000_000, "test")
        .await
        .unwrap();
    let mut three = ask("u", "n3", 100, Some(50));
    three.choices = 3;
    let AuthorizeResponse::Allow { held_micros, .. } =
        holds::authorize(db, &settings(), &three).await.unwrap()
    else {
        panic!("expected allow")
    };
    // 100 × 2.00 + 3 × 50 × 8.00 per M
    assert_eq!(held_micros, 200 + 1200);
    let mut default_three = ask("u", "n3d", 0, None);
    default_three.choices = 3;
    let AuthorizeResponse::Allow { held_micros, .. } =
        holds::authorize(db, &settings(), &default_three)
            .await
            .unwrap()
    else {
        panic!("expected allow")
    };
    assert_eq!(held_micros, 3 * 1000 * 8);
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

async fn expiry_policies_charge_nothing_the_prompt_or_the_hold(db: &Db) {
    deposits::deposit(db, "app", "u", 1_000_000, "test")
        .await
        .unwrap();
    // 100 prompt × 2.00 + 50 out × 8.00 per M: held 600; prompt alone 200.
    for (policy, expected) in [
        (holds::ExpiryPolicy::Void, None),
        (holds::ExpiryPolicy::ChargePrompt, Some(200)),
        (holds::ExpiryPolicy::ChargeHeld, Some(600)),
    ] {
        let rid = format!("{policy:?}");
        let (hold, _) = hold_for(db, "u", &rid, 100, 50).await;
        let later = tollgate_ledger::keys::now_ms() + 600_001;
        assert_eq!(holds::expire_holds(db, later, policy).await.unwrap(), 1);
        let charge =
            sqlx::query("SELECT amount, usage_source, outcome FROM charges WHERE hold_id = $1")
                .bind(&hold)
                .fetch_optional(&db.pool)
                .await
                .unwrap();
        let got = charge.as_ref().map(|r| r.get::<i64, _>("amount"));
        assert_eq!(got, expected, "{policy:?}");
        if let Some(r) = charge {
            assert_eq!(
                (
                    r.get::<String, _>("usage_source"),
                    r.get::<String, _>("outcome")
                ),
                ("estimate".into(), "expired".into())
            );
        }
        // A late settlement moves nothing.
        let late = holds::settle(
            db,
            &settle_req(&hold, &rid, 100, 10, SettleOutcome::Completed),
        )
        .await
        .unwrap();
        assert!(late.replayed);
    }
    assert_eq!(balance(db, "u").await.posted, 1_000_000 - 800);
}

async fn a_settlement_batch_commits_once_and_replays_like_single_settles(db: &Db) {
    deposits::deposit(db, "app", "u", 1_000_000, "test")
        .await
        .unwrap();
    let mut reqs = Vec::new();
    for i in 0..5 {
        let rid = format!("batch-{i}");
        let (hold, _) = hold_for(db, "u", &rid, 100, 50).await;
        reqs.push(settle_req(&hold, &rid, 90, 20, SettleOutcome::Completed));
    }
    reqs.push(settle_req(
        "hold_unknown",
        "x",
        1,
        1,
        SettleOutcome::Completed,
    ));
    let first = holds::settle_batch(db, &reqs).await.unwrap();
    assert_eq!(
        first
            .iter()
            .filter(|r| matches!(r, Ok(s) if !s.replayed && s.amount_micros == 340))
            .count(),
        5
    );
    assert!(first[5].as_ref().is_err_and(|e| e.contains("no hold")));
    let again = holds::settle_batch(db, &reqs[..5]).await.unwrap();
    assert!(again.iter().all(|r| matches!(r, Ok(s) if s.replayed)));
    assert_eq!(balance(db, "u").await.posted, 1_000_000 - 5 * 340);
}

async fn glob_prices_cover_model_families_and_exact_names_win(db: &Db) {
    let mut cfg = config("8.00");
    let family = |name: &str, out: &str| tollgate_ledger::config::ModelSeed {
        name: name.into(),
        provider: "mock".into(),
        upstream_model: None,
        default_max_output_tokens: 100,
        input_per_m: "1.00".into(),
        cached_input_per_m: None,
        output_per_m: out.into(),
        markup_bps: 0,
        min_charge: None,
    };
    cfg.models.push(family("fam-*", "3.00"));
    cfg.models.push(family("fam-large-*", "30.00"));
    catalog::seed(db, &cfg).await.unwrap();
    let small = catalog::model_route(db, "fam-small-2025")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (small.model.as_str(), small.price.id.as_str()),
        ("fam-small-2025", "fam-*@v1")
    );
    let large = catalog::model_route(db, "fam-large-2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(large.price.id, "fam-large-*@v1");
    assert!(catalog::model_route(db, "other").await.unwrap().is_none());
    // The charge names the model asked for and the rule (pattern and version) that priced it.
    deposits::deposit(db, "app", "u", 1_000_000, "test")
        .await
        .unwrap();
    let mut a = ask("u", "glob-1", 10, Some(10));
    a.model = "fam-small-2025".into();
    let AuthorizeResponse::Allow { hold_id, .. } =
        holds::authorize(db, &settings(), &a).await.unwrap()
    else {
        panic!("expected allow")
    };
    holds::settle(
        db,
        &settle_req(&hold_id, "glob-1", 10, 10, SettleOutcome::Completed),
    )
    .await
    .unwrap();
    let row = sqlx::query("SELECT model, price_rule_id, amount FROM charges WHERE hold_id = $1")
        .bind(&hold_id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("model"), "fam-small-2025");
    assert_eq!(row.get::<String, _>("price_rule_id"), "fam-*@v1");
    assert_eq!(row.get::<i64, _>("amount"), 40); // 10 × 1.00 + 10 × 3.00 per M, rounded up
}

async fn a_short_balance_gets_a_shorter_answer_down_to_the_floor(db: &Db) {
    // 100 prompt × 2.00 = 200; each output token 8. A balance of 1000 pays for 100 output tokens.
    deposits::deposit(db, "app", "short", 1000, "test")
        .await
        .unwrap();
    match holds::authorize(db, &settings(), &ask("short", "s1", 100, Some(500)))
        .await
        .unwrap()
    {
        AuthorizeResponse::Allow {
            held_micros,
            max_output_tokens,
            ..
        } => {
            assert_eq!((max_output_tokens, held_micros), (Some(100), 1000));
        }
        other => panic!("expected a clamped allow, got {other:?}"),
    }
    // Nothing left: below the floor (16 tokens), the answer is the top-up link.
    deposits::deposit(db, "app", "short", 8 * 15, "test")
        .await
        .unwrap(); // 15 tokens' worth, plus no prompt
    let r = holds::authorize(db, &settings(), &ask("short", "s2", 0, Some(500)))
        .await
        .unwrap();
    assert!(
        matches!(
            r,
            AuthorizeResponse::Action {
                action: Action::Topup,
                ..
            }
        ),
        "{r:?}"
    );
    deposits::deposit(db, "app", "short", 8, "test")
        .await
        .unwrap(); // now 16 tokens' worth
    match holds::authorize(db, &settings(), &ask("short", "s3", 0, Some(500)))
        .await
        .unwrap()
    {
        AuthorizeResponse::Allow {
            max_output_tokens, ..
        } => assert_eq!(max_output_tokens, Some(16)),
        other => panic!("expected a clamped allow at the floor, got {other:?}"),
    }
    // A request that fits is not clamped.
    deposits::deposit(db, "app", "short", 1_000_000, "test")
        .await
        .unwrap();
    match holds::authorize(db, &settings(), &ask("short", "s4", 100, Some(50)))
        .await
        .unwrap()
    {
        AuthorizeResponse::Allow {
            max_output_tokens, ..
        } => assert_eq!(max_output_tokens, None),
        other => panic!("{other:?}"),
    }
}
