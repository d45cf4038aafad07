//! The sidecar as real processes: a settle interrupted by SIGKILL (inside its
//! transaction, or after the commit but before the answer) is retried against
//! a restarted sidecar and leaves exactly one charge; two sidecars sharing one
//! PostgreSQL never overspend.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::Row;
use tollgate_ledger::db::Db;
use tollgate_ledger::faults;
use tollgate_ledger::money::deposits;

use common::process::{admin, post, spawn_sidecar, spawn_sidecar_with};
use common::{config_text, KEY};

fn authorize_body(request_id: &str) -> Value {
    json!({"request_id": request_id, "paywall_key": KEY, "user": "u", "model": "m",
           "prompt_tokens": 100, "max_output_tokens": 50, "stream": false})
}

fn settle_body(hold: &str, request_id: &str) -> Value {
    json!({"hold_id": hold, "request_id": request_id, "usage": {"prompt_tokens": 90, "completion_tokens": 20},
           "usage_source": "provider", "local_completion_tokens": 20, "outcome": "completed", "upstream_status": 200})
}

async fn charges(db: &Db) -> i64 {
    sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) FROM charges")
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .get::<i64, _>(0)
}

backend_tests!(
    settle_killed_mid_flight_is_charged_exactly_once,
    a_settlement_batch_answers_each_settlement_in_order
);

async fn settle_killed_mid_flight_is_charged_exactly_once(db: &Db) {
    let url = db_url(db);
    deposits::deposit(db, "app", "u", 1_000_000, "test")
        .await
        .unwrap();
    for (n, point) in [faults::SETTLE_BEFORE_COMMIT, faults::SETTLE_AFTER_COMMIT]
        .into_iter()
        .enumerate()
    {
        let rid = format!("kill-{n}");
        let mut doomed = spawn_sidecar(&url, Some(&format!("{point}=30000"))).await;
        let (status, decision) = post(doomed.port, "/internal/v1/authorize", &authorize_body(&rid))
            .await
            .unwrap();
        assert_eq!(
            (status, decision["decision"].as_str()),
            (200, Some("allow"))
        );
        let hold = decision["hold_id"].as_str().unwrap().to_string();

        let port = doomed.port;
        let body = settle_body(&hold, &rid);
        let in_flight = tokio::spawn(async move { post(port, "/internal/v1/settle", &body).await });
        tokio::time::sleep(Duration::from_millis(700)).await; // the sidecar is now paused at `point`
        doomed.child.kill().unwrap(); // SIGKILL
        doomed.child.wait().unwrap();
        assert!(
            in_flight.await.unwrap().is_err(),
            "the killed sidecar must not have answered"
        );

        // The filter retries against a restarted sidecar.
        let revived = spawn_sidecar(&url, None).await;
        let (status, answer) = post(
            revived.port,
            "/internal/v1/settle",
            &settle_body(&hold, &rid),
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{answer}");
        let committed_before_kill = point == faults::SETTLE_AFTER_COMMIT;
        assert_eq!(
            answer["replayed"], committed_before_kill,
            "{point}: {answer}"
        );
        assert_eq!(answer["amount_micros"], 340);
        assert_eq!(charges(db).await, n as i64 + 1, "{point}");
    }
}

/// The filter's queue sends what is due in one batch: each settlement gets
/// what a single call would have answered, all committed together.
async fn a_settlement_batch_answers_each_settlement_in_order(db: &Db) {
    deposits::deposit(db, "app", "u", 1_000_000, "test")
        .await
        .unwrap();
    let sidecar = spawn_sidecar(&db_url(db), None).await;
    let mut settlements = Vec::new();
    for i in 0..3 {
        let rid = format!("batch-{i}");
        let (_, d) = post(
            sidecar.port,
            "/internal/v1/authorize",
            &authorize_body(&rid),
        )
        .await
        .unwrap();
        settlements.push(settle_body(d["hold_id"].as_str().unwrap(), &rid));
    }
    let unknown = settle_body("hold_unknown", "batch-x");
    let repeated = settlements[0].clone();
    settlements.extend([unknown, repeated]);
    let (status, answer) = post(
        sidecar.port,
        "/internal/v1/settle-batch",
        &json!({ "settlements": settlements }),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    let statuses: Vec<u64> = results
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [200, 200, 200, 404, 200], "{answer}");
    assert_eq!(results[0]["settled"]["replayed"], false);
    assert_eq!(
        results[4]["settled"]["replayed"], true,
        "the same hold again moves nothing"
    );
    assert_eq!(results[3]["hold_id"], "hold_unknown");
    assert!(results[3]["error"]
        .as_str()
        .unwrap()
        .contains("hold_unknown"));
    assert_eq!(charges(db).await, 3);
    common::assert_books_balance(db).await;

    let too_many: Vec<Value> = (0..257).map(|_| unknown_settlement()).collect();
    let (status, _) = post(
        sidecar.port,
        "/internal/v1/settle-batch",
        &json!({ "settlements": too_many }),
    )
    .await
    .unwrap();
    assert_eq!(status, 400);
}

fn unknown_settlement() -> Value {
    settle_body("hold_unknown", "batch-x")
}

/// The URL the test database was opened with (each backend's own).
fn db_url(db: &Db) -> String {
    common::url_of(db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sidecars_on_one_postgres_never_overspend() {
    let Some(t) = common::open("postgres").await else {
        return;
    };
    // Each hold is 600: the balance covers exactly 30.
    deposits::deposit(&t.db, "app", "u", 30 * 600, "test")
        .await
        .unwrap();
    let a = spawn_sidecar(&t.url, None).await;
    let b = spawn_sidecar(&t.url, None).await;
    // Warm both sidecars' connection pools (a model that is not sold moves no
    // money), so neither starts the race seconds behind the other.
    for port in [a.port, b.port] {
        for i in 0..8 {
            let mut body = authorize_body(&format!("warm-{port}-{i}"));
            body["model"] = json!("not-sold");
            let (status, decision) = post(port, "/internal/v1/authorize", &body).await.unwrap();
            assert_eq!((status, decision["status"].as_u64()), (200, Some(404)));
        }
    }
    let ports = Arc::new([a.port, b.port]);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let ports = ports.clone();
        tasks.push(tokio::spawn(async move {
            let port = ports[i % 2];
            post(
                port,
                "/internal/v1/authorize",
                &authorize_body(&format!("two-{i}")),
            )
            .await
            .unwrap()
        }));
    }
    let mut allowed = [0, 0];
    for (i, task) in tasks.into_iter().enumerate() {
        let (status, decision) = task.await.unwrap();
        assert_eq!(status, 200);
        if decision["decision"] == "allow" {
            allowed[i % 2] += 1;
        }
    }
    assert_eq!(allowed[0] + allowed[1], 30, "admitted {allowed:?}");
    assert!(
        allowed[0] > 0 && allowed[1] > 0,
        "both sidecars should have admitted some: {allowed:?}"
    );
    common::assert_books_balance(&t.db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_hold_across_two_sidecars() {
    let Some(t) = common::open("postgres").await else {
        return;
    };
    deposits::deposit(&t.db, "app", "u", 10_000_000, "test")
        .await
        .unwrap();
    let a = spawn_sidecar(&t.url, None).await;
    let b = spawn_sidecar(&t.url, None).await;
    // After start: a sidecar's seed replaces limits with its configuration's.
    common::set_limits(
        &t.db,
        tollgate_ledger::access::limits::Limits {
            requests_per_minute: Some(10),
            ..Default::default()
        },
    )
    .await;
    common::fresh_minute().await;
    let ports = Arc::new([a.port, b.port]);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let ports = ports.clone();
        tasks.push(tokio::spawn(async move {
            post(
                ports[i % 2],
                "/internal/v1/authorize",
                &authorize_body(&format!("rl-{i}")),
            )
            .await
            .unwrap()
        }));
    }
    let (mut allowed, mut limited) = (0, 0);
    for task in tasks {
        let (status, decision) = task.await.unwrap();
        assert_eq!(status, 200);
        match decision["decision"].as_str() {
            Some("allow") => allowed += 1,
            Some("reject") if decision["status"] == 429 => limited += 1,
            _ => panic!("unexpected decision {decision}"),
        }
    }
    assert_eq!((allowed, limited), (10, 190));
    common::assert_books_balance(&t.db).await;
}

/// Each sidecar serves the catalog from memory; a price changed through the
/// admin API of one applies on the other within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_price_changed_through_one_sidecar_applies_on_the_other_within_a_second() {
    let Some(t) = common::open("postgres").await else {
        return;
    };
    deposits::deposit(&t.db, "app", "u", 10_000_000, "test")
        .await
        .unwrap();
    const TOKEN: &str = "admin-token-for-the-catalog-test";
    let env = [("TOLLGATE_ADMIN_TOKEN", TOKEN)];
    let a = spawn_sidecar_with(&t.url, &config_text("8.00"), &env).await;
    let b = spawn_sidecar_with(&t.url, &config_text("8.00"), &env).await;
    let held = |n: usize| async move {
        let (status, d) = post(
            b.port,
            "/internal/v1/authorize",
            &authorize_body(&format!("p-{n}")),
        )
        .await
        .unwrap();
        assert_eq!(
            (status, d["decision"].as_str()),
            (200, Some("allow")),
            "{d}"
        );
        d["held_micros"].as_i64().unwrap()
    };
    // 100 prompt tokens at 2.00/M and 50 output tokens at 8.00/M.
    let before = held(0).await;
    assert_eq!(before, 600);
    assert_eq!(held(1).await, before, "served from memory, unchanged");

    let price = json!({"provider": "mock", "input_per_m": "2.00", "output_per_m": "80.00"});
    let (status, answer) = admin(a.port, "PUT", "/admin/v1/models/m", TOKEN, &price)
        .await
        .unwrap();
    assert_eq!(
        (status, answer["price"]["version"].as_i64()),
        (200, Some(2)),
        "{answer}"
    );
    let changed = Instant::now();
    let mut n = 2;
    loop {
        let now = held(n).await;
        if now != before {
            assert_eq!(now, 100 * 2 + 50 * 80);
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(1),
            "sidecar B still holds at the old price"
        );
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(changed.elapsed() < Duration::from_secs(1));
}
