//! `tollgate-ledger verify`: checks every invariant of the books and reports
//! each violation. Read-only; safe to run against a live database.

use serde::Serialize;

use crate::db::Db;
use crate::error::LedgerResult;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Violation {
    pub check: &'static str,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub accounts: i64,
    pub transfers: i64,
    pub holds: i64,
    pub violations: Vec<Violation>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Each check is a query that returns one row per violation, with a `detail` column.
const CHECKS: &[(&str, &str)] = &[
    (
        "posted_sums_balance",
        "SELECT 'posted credits minus debits over all accounts = ' || CAST(SUM(credits_posted - debits_posted) AS TEXT) AS detail
         FROM accounts HAVING SUM(credits_posted - debits_posted) <> 0",
    ),
    (
        "pending_sums_balance",
        "SELECT 'pending credits minus debits over all accounts = ' || CAST(SUM(credits_pending - debits_pending) AS TEXT) AS detail
         FROM accounts HAVING SUM(credits_pending - debits_pending) <> 0",
    ),
    (
        "wallet_not_negative",
        "SELECT id || ' available ' || CAST(credits_posted - debits_posted - debits_pending AS TEXT) AS detail
         FROM accounts WHERE kind = 'wallet' AND credits_posted - debits_posted - debits_pending < 0",
    ),
    (
        "account_sums_match_transfers",
        "SELECT a.id || ' posted debits ' || CAST(a.debits_posted AS TEXT) || ' but transfers say ' || CAST(COALESCE(t.d, 0) AS TEXT) AS detail
         FROM accounts a LEFT JOIN (
             SELECT debit_account AS id, SUM(amount) AS d FROM transfers WHERE kind IN ('deposit', 'post', 'charge', 'provider_cost', 'refund', 'repay')
             GROUP BY debit_account) t ON t.id = a.id
         WHERE a.debits_posted <> COALESCE(t.d, 0)",
    ),
    (
        "account_credits_match_transfers",
        "SELECT a.id || ' posted credits ' || CAST(a.credits_posted AS TEXT) || ' but transfers say ' || CAST(COALESCE(t.c, 0) AS TEXT) AS detail
         FROM accounts a LEFT JOIN (
             SELECT credit_account AS id, SUM(amount) AS c FROM transfers WHERE kind IN ('deposit', 'post', 'charge', 'provider_cost', 'refund', 'repay')
             GROUP BY credit_account) t ON t.id = a.id
         WHERE a.credits_posted <> COALESCE(t.c, 0)",
    ),
    (
        "pending_matches_open_holds",
        "SELECT a.id || ' holds ' || CAST(a.debits_pending AS TEXT) || ' pending but open holds sum to ' || CAST(COALESCE(h.s, 0) AS TEXT) AS detail
         FROM accounts a LEFT JOIN (
             SELECT wallet_account AS id, SUM(amount) AS s FROM holds WHERE state = 'pending' GROUP BY wallet_account) h ON h.id = a.id
         WHERE a.kind = 'wallet' AND a.debits_pending <> COALESCE(h.s, 0)",
    ),
    (
        "open_holds_match_pending",
        "SELECT a.id || ' counts ' || CAST(a.open_holds AS TEXT) || ' requests in flight but has ' || CAST(COALESCE(h.n, 0) AS TEXT) AS detail
         FROM accounts a LEFT JOIN (
             SELECT wallet_account AS id, COUNT(*) AS n FROM holds
             WHERE state = 'pending' AND reserved_tokens IS NOT NULL GROUP BY wallet_account) h ON h.id = a.id
         WHERE a.kind = 'wallet' AND a.open_holds <> COALESCE(h.n, 0)",
    ),
    (
        "hold_resolved_once",
        "SELECT hold_id || ' resolved by ' || CAST(COUNT(*) AS TEXT) || ' transfers' AS detail
         FROM transfers WHERE kind IN ('post', 'void') GROUP BY hold_id HAVING COUNT(*) > 1",
    ),
    (
        "hold_state_matches_transfers",
        // The resolutions are gathered first: joined directly, transfers
        // (not indexed by hold) would be scanned once per hold.
        "WITH resolutions AS MATERIALIZED (SELECT hold_id, kind FROM transfers WHERE kind IN ('post', 'void'))
         SELECT h.id || ' is ' || h.state || ' but its resolution is ' || COALESCE(t.kind, 'missing') AS detail
         FROM holds h LEFT JOIN resolutions t ON t.hold_id = h.id
         WHERE (h.state = 'pending' AND t.kind IS NOT NULL)
            OR (h.state = 'posted' AND (t.kind IS NULL OR t.kind <> 'post'))
            OR (h.state = 'voided' AND (t.kind IS NULL OR t.kind <> 'void'))",
    ),
    (
        "charge_within_hold",
        "SELECT c.id || ' posts ' || CAST(c.amount AS TEXT) || ' above its hold of ' || CAST(h.amount AS TEXT) AS detail
         FROM charges c JOIN holds h ON h.id = c.hold_id WHERE c.amount > h.amount OR c.amount < 0",
    ),
    (
        "provider_cost_matches_charge",
        "SELECT c.id || ' records a provider cost of ' || CAST(COALESCE(c.provider_cost, 0) AS TEXT) || ' but transfers moved '
                || CAST(COALESCE(t.s, 0) AS TEXT) AS detail
         FROM charges c LEFT JOIN (
             SELECT hold_id, SUM(amount) AS s FROM transfers WHERE kind = 'provider_cost' GROUP BY hold_id) t ON t.hold_id = c.hold_id
         WHERE COALESCE(c.provider_cost, 0) <> COALESCE(t.s, 0) OR (c.key_source = 'byok' AND COALESCE(c.provider_cost, 0) <> 0)",
    ),
    (
        "posted_hold_has_charge",
        "SELECT h.id || ' posted without a charge' AS detail
         FROM holds h LEFT JOIN charges c ON c.hold_id = h.id WHERE h.state = 'posted' AND c.id IS NULL",
    ),
];

/// Runs every check; `now_ms` decides which open holds are overdue.
pub async fn verify(db: &Db, now_ms: i64, expiry_grace_ms: i64) -> LedgerResult<Report> {
    let mut report = Report {
        accounts: scalar(db, "SELECT CAST(COUNT(*) AS BIGINT) FROM accounts").await?,
        transfers: scalar(db, "SELECT CAST(COUNT(*) AS BIGINT) FROM transfers").await?,
        holds: scalar(db, "SELECT CAST(COUNT(*) AS BIGINT) FROM holds").await?,
        violations: Vec::new(),
    };
    for (check, sql) in CHECKS {
        let details: Vec<Option<String>> = sqlx::query_scalar(sql).fetch_all(&db.pool).await?;
        for detail in details {
            report.violations.push(Violation {
                check,
                detail: detail.unwrap_or_default(),
            });
        }
    }
    // The sweeper resolves expired holds every few seconds; one still open
    // well past its expiry means the sweeper is not doing its job.
    let overdue: Vec<String> =
        sqlx::query_scalar("SELECT id FROM holds WHERE state = 'pending' AND expires_at < $1")
            .bind(now_ms - expiry_grace_ms)
            .fetch_all(&db.pool)
            .await?;
    for id in overdue {
        report.violations.push(Violation {
            check: "no_expired_hold_open",
            detail: format!("{id} is past its expiry and still pending"),
        });
    }
    Ok(report)
}

async fn scalar(db: &Db, sql: &str) -> LedgerResult<i64> {
    Ok(sqlx::query_scalar(sql).fetch_one(&db.pool).await?)
}

#[cfg(test)]
mod tests {
    use super::CHECKS;
    use crate::db::Db;

    /// SQLite's plan of each check: a full scan may only be a query's
    /// outer loop. A scan inside a join runs once per outer row, and
    /// `verify` then takes hours on a ledger with a million transfers.
    #[tokio::test]
    async fn no_check_scans_a_table_once_per_row() {
        let path = std::env::temp_dir().join(format!("tollgate-plan-{}.db", std::process::id()));
        let db = Db::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("db");
        for (check, sql) in CHECKS {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .fetch_all(&db.pool)
                    .await
                    .expect("plan");
            let mut loops_at: std::collections::HashMap<i64, usize> = Default::default();
            for (_, parent, _, detail) in &plan {
                let is_loop = ["SCAN ", "SEARCH ", "MULTI-INDEX OR"]
                    .iter()
                    .any(|p| detail.starts_with(p));
                if !is_loop {
                    continue;
                }
                let outer = loops_at.entry(*parent).or_default();
                assert!(
                    *outer == 0 || !detail.starts_with("SCAN "),
                    "{check} scans inside a join: {plan:?}"
                );
                *outer += 1;
            }
        }
        db.pool.close().await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}
