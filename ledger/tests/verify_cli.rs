//! `tollgate-ledger verify` as an operator runs it: exit 0 and a JSON report
//! on clean books, exit 1 naming the violation on broken ones.

use std::process::Command;

use tollgate_ledger::db::Db;

#[tokio::test]
async fn verify_exits_nonzero_with_a_report_on_violations() {
    let dir = std::env::temp_dir().join(format!(
        "tollgate-verify-{}",
        tollgate_ledger::keys::random_hex(6)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/ledger.db", dir.display());
    let config = dir.join("ledger.toml");
    std::env::set_var("VERIFY_CLI_KEY", "tg_verify_cli_key_0123456789");
    let toml = "[server]\n[[paywalls]]\nid = \"app\"\nkey_env = \"VERIFY_CLI_KEY\"\n";
    std::fs::write(&config, toml).unwrap();
    let db = Db::connect(&url).await.unwrap();
    let cfg = tollgate_ledger::config::Config::parse(toml).unwrap();
    tollgate_ledger::catalog::seed(&db, &cfg).await.unwrap();
    tollgate_ledger::deposits::deposit(&db, "app", "u", 10, "test")
        .await
        .unwrap();

    let run = || {
        Command::new(env!("CARGO_BIN_EXE_tollgate-ledger"))
            .args(["verify", "--config"])
            .arg(&config)
            .args(["--database-url", &url])
            .output()
            .unwrap()
    };
    let ok = run();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(report["violations"], serde_json::json!([]));
    assert_eq!(report["transfers"], 1);

    sqlx::query("UPDATE accounts SET debits_posted = debits_posted + 3 WHERE id = 'cash:external'")
        .execute(&db.pool)
        .await
        .unwrap();
    let bad = run();
    assert_eq!(bad.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    let checks: Vec<&str> = report["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["check"].as_str().unwrap())
        .collect();
    assert!(checks.contains(&"posted_sums_balance"), "{checks:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("violation"));
    let _ = std::fs::remove_dir_all(&dir);
}
