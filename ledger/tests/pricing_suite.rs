//! Prices, expiry and affordability, on both backends: versioned and glob
//! price rules, hold-expiry policies, group commit, clamped output, choices,
//! and `verify` catching tampered books.

mod common;

use sqlx::Row;
use tollgate_ledger::catalog;
use tollgate_ledger::db::Db;
use tollgate_ledger::money::deposits;
use tollgate_ledger::money::holds;
use tollgate_ledger::money::verify;
use tollgate_protocol::{Action, AuthorizeResponse, SettleOutcome};

use common::{ask, balance, config, count, hold_for, settings, settle_req};

backend_tests!(
    verify_reports_tampering,
    free_requests_post_zero_and_verify_clean,
    price_change_is_a_new_version_and_holds_keep_theirs,
    expiry_policies_charge_nothing_the_prompt_or_the_hold,
    expired_holds_are_voided,
    a_settlement_after_the_ttl_resolves_by_policy_before_any_sweep,
    a_settlement_batch_commits_once_and_replays_like_single_settles,
    glob_prices_cover_model_families_and_exact_names_win,
    a_short_balance_gets_a_shorter_answer_down_to_the_floor,
    holds_cover_every_choice,
);

async fn verify_reports_tampering(db: &Db) {
    deposits::deposit(db, "app", "u", 1_000_000, "test")
        .await
        .unwrap();
    let (hold, _) = hold_for(db, "u", "t1", 100, 50).await;
    let now = tollgate_ledger::calendar::now_ms();
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
        holds::ExpiryPolicy::Void,
    )
    .await
    .unwrap();
    assert_eq!((res.state.as_str(), res.amount_micros), ("posted", 0));
    assert!(res.charge_id.is_some());
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
        holds::ExpiryPolicy::Void,
    )
    .await
    .unwrap();
    let new = holds::settle(
        db,
        &settle_req(&new_hold, "new", 0, 100, SettleOutcome::Completed),
        holds::ExpiryPolicy::Void,
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
        let later = tollgate_ledger::calendar::now_ms() + 600_001;
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
            holds::ExpiryPolicy::Void,
        )
        .await
        .unwrap();
        assert!(late.replayed);
    }
    assert_eq!(balance(db, "u").await.posted, 1_000_000 - 800);
}

async fn expired_holds_are_voided(db: &Db) {
    deposits::deposit(db, "app", "u", 1_000_000, "test")
        .await
        .unwrap();
    let (hold, _) = hold_for(db, "u", "req-6", 100, 50).await;
    let now = tollgate_ledger::calendar::now_ms();
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
        holds::ExpiryPolicy::Void,
    )
    .await
    .unwrap();
    assert!(late.replayed);
    assert_eq!(balance(db, "u").await.posted, 1_000_000);
}

/// A settlement that arrives after `expires_at` but before the sweeper has
/// run moves what the expiry policy says, never the settlement's amount.
async fn a_settlement_after_the_ttl_resolves_by_policy_before_any_sweep(db: &Db) {
    deposits::deposit(db, "app", "u", 1_000_000, "test")
        .await
        .unwrap();
    let short = tollgate_ledger::settings::Settings {
        hold_ttl_ms: 1_000, // hold_ttl_secs = 1
        ..settings()
    };
    let mut holds_by_policy = Vec::new();
    // 100 prompt × 2.00 + 50 out × 8.00 per M: held 600; prompt alone 200.
    for (policy, expected) in [
        (holds::ExpiryPolicy::Void, None),
        (
            holds::ExpiryPolicy::ChargePrompt,
            Some((200, "estimate", "expired")),
        ),
        (
            holds::ExpiryPolicy::ChargeHeld,
            Some((600, "estimate", "expired")),
        ),
    ] {
        let rid = format!("late-{policy:?}");
        let answer = holds::authorize(db, &short, &ask("u", &rid, 100, Some(50)))
            .await
            .unwrap();
        let AuthorizeResponse::Allow { hold_id, .. } = answer else {
            panic!("expected allow, got {answer:?}");
        };
        holds_by_policy.push((policy, expected, rid, hold_id));
    }
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    for (policy, expected, rid, hold) in &holds_by_policy {
        // 90 prompt + 20 out would cost 340: the settlement's own amount.
        let late = holds::settle(
            db,
            &settle_req(hold, rid, 90, 20, SettleOutcome::Completed),
            *policy,
        )
        .await
        .unwrap();
        assert!(
            late.replayed,
            "{policy:?}: a late settlement moves nothing of its own"
        );
        let charge =
            sqlx::query("SELECT amount, usage_source, outcome FROM charges WHERE hold_id = $1")
                .bind(hold)
                .fetch_optional(&db.pool)
                .await
                .unwrap()
                .map(|r| {
                    (
                        r.get::<i64, _>("amount"),
                        r.get::<String, _>("usage_source"),
                        r.get::<String, _>("outcome"),
                    )
                });
        let expected = expected.map(|(a, s, o)| (a, s.to_string(), o.to_string()));
        assert_eq!(charge, expected, "{policy:?}");
        assert_eq!(
            late.amount_micros,
            expected.map_or(0, |e| e.0),
            "{policy:?}"
        );
    }
    // Nothing is left for the sweeper; the books hold 800 posted, nothing held.
    let now = tollgate_ledger::calendar::now_ms();
    assert_eq!(
        holds::expire_holds(db, now, holds::ExpiryPolicy::ChargeHeld)
            .await
            .unwrap(),
        0
    );
    let b = balance(db, "u").await;
    assert_eq!((b.posted, b.held), (1_000_000 - 800, 0));
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
    let first = holds::settle_batch(db, &reqs, holds::ExpiryPolicy::Void)
        .await
        .unwrap();
    assert_eq!(
        first
            .iter()
            .filter(|r| matches!(r, Ok(s) if !s.replayed && s.amount_micros == 340))
            .count(),
        5
    );
    assert!(first[5]
        .as_ref()
        .is_err_and(|e| e.to_string().contains("no hold")));
    let again = holds::settle_batch(db, &reqs[..5], holds::ExpiryPolicy::Void)
        .await
        .unwrap();
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
        fallbacks: vec![],
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
        holds::ExpiryPolicy::Void,
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
    let first = match holds::authorize(db, &settings(), &ask("short", "s1", 100, Some(500)))
        .await
        .unwrap()
    {
        AuthorizeResponse::Allow {
            hold_id,
            held_micros,
            max_output_tokens,
            ..
        } => {
            assert_eq!((max_output_tokens, held_micros), (Some(100), 1000));
            hold_id
        }
        other => panic!("expected a clamped allow, got {other:?}"),
    };
    deposits::deposit(db, "app", "short", 8 * 15, "test")
        .await
        .unwrap(); // 15 tokens' worth, plus no prompt

    // The balance (1120) covers the next request; only the first one's hold
    // is in the way: a 429 to retry, never the top-up message.
    let r = holds::authorize(db, &settings(), &ask("short", "s2", 0, Some(500)))
        .await
        .unwrap();
    match &r {
        AuthorizeResponse::Reject {
            status: 429,
            error,
            retry_after_secs: Some(_),
        } => assert_eq!(error.code.as_deref(), Some("funds_reserved")),
        other => panic!("expected 429 funds_reserved, got {other:?}"),
    }
    // Once the first is settled at its whole hold, the balance really is too
    // low (below the floor of 16 tokens): the top-up link.
    holds::settle(
        db,
        &settle_req(&first, "s1", 100, 100, SettleOutcome::Completed),
        holds::ExpiryPolicy::Void,
    )
    .await
    .unwrap();
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
