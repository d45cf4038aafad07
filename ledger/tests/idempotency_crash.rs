//! A deposit and a manual charge killed by SIGKILL inside their transaction
//! (key and response recorded, not committed) or after the commit but before
//! the answer: the retry with the same Idempotency-Key against a restarted
//! sidecar runs once or replays, never a 409 and never a second movement.

mod common;

use std::time::Duration;

use serde_json::{json, Value};
use tollgate_ledger::db::Db;
use tollgate_ledger::faults;
use tollgate_ledger::money::deposits;

use common::process::{post_as, spawn_sidecar};
use common::{balance, count, KEY};

backend_tests!(movements_killed_mid_flight_move_money_once);

const DEPOSIT: &str = "/v1/user/balance/deposit";
const CHARGE: &str = "/v1/user/charge";

fn movements() -> [(&'static str, Value); 2] {
    [
        (DEPOSIT, json!({"user": "u", "amount": "2.00"})),
        (
            CHARGE,
            json!({"user": "u", "amount": "0.50", "metadata": {"sku": "x"}}),
        ),
    ]
}

async fn moved(db: &Db) -> (i64, i64) {
    (
        count(db, "SELECT CAST(COUNT(*) AS BIGINT) FROM transfers WHERE kind = 'deposit' AND memo = 'api_deposit'").await,
        count(db, "SELECT CAST(COUNT(*) AS BIGINT) FROM transfers WHERE kind = 'charge'").await,
    )
}

async fn movements_killed_mid_flight_move_money_once(db: &Db) {
    let url = common::url_of(db);
    deposits::deposit(db, "app", "u", 1_000_000, "test")
        .await
        .unwrap();
    for (n, point) in [
        faults::MOVEMENT_BEFORE_COMMIT,
        faults::MOVEMENT_AFTER_COMMIT,
    ]
    .into_iter()
    .enumerate()
    {
        let done_before = n as i64;
        let mut doomed = spawn_sidecar(&url, Some(&format!("{point}=30000"))).await;
        let mut in_flight = Vec::new();
        for (path, body) in movements() {
            let (port, key) = (doomed.port, format!("idempotency-key: {point}-{path}"));
            in_flight.push(tokio::spawn(async move {
                post_as(port, path, KEY, &[&key], &body).await
            }));
        }
        tokio::time::sleep(Duration::from_millis(1500)).await; // both paused at `point`
        doomed.child.kill().unwrap(); // SIGKILL
        doomed.child.wait().unwrap();
        for call in in_flight {
            assert!(
                call.await.unwrap().is_err(),
                "{point}: the killed sidecar answered"
            );
        }
        let committed_before_kill = point == faults::MOVEMENT_AFTER_COMMIT;
        let expected = done_before + i64::from(committed_before_kill);
        assert_eq!(
            moved(db).await,
            (expected, expected),
            "{point}: before the retry"
        );

        // The app retries with the same keys against a restarted sidecar.
        let revived = spawn_sidecar(&url, None).await;
        let mut answers = Vec::new();
        for (path, body) in movements() {
            let key = format!("idempotency-key: {point}-{path}");
            let (status, answer) = post_as(revived.port, path, KEY, &[&key], &body)
                .await
                .unwrap();
            assert_eq!(status, 200, "{point} {path}: {answer}");
            // And again: the same answer, nothing more moves.
            let again = post_as(revived.port, path, KEY, &[&key], &body)
                .await
                .unwrap();
            assert_eq!(again, (status, answer.clone()), "{point} {path}");
            answers.push(answer);
        }
        assert_eq!(
            moved(db).await,
            (done_before + 1, done_before + 1),
            "{point}"
        );
        let expected_balance = 1_000_000 + (done_before + 1) * 1_500_000;
        assert_eq!(balance(db, "u").await.posted, expected_balance, "{point}");
        if !committed_before_kill {
            // The retry ran: its answer shows the balance after both movements.
            assert_eq!(
                answers[1]["balance"],
                tollgate_protocol::format_micros(expected_balance)
            );
        }
    }
}
