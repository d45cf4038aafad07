//! The `tollgate-ledger` command line as an operator runs it: `verify` (exit
//! 0 and a JSON report on clean books, exit 1 naming the violation on broken
//! ones) and the `admin` commands.

use std::process::Command;

use tollgate_ledger::db::Db;

#[tokio::test]
async fn verify_exits_nonzero_with_a_report_on_violations() {
    let dir = std::env::temp_dir().join(format!(
        "tollgate-verify-{}",
        tollgate_ledger::access::secrets::random_hex(6)
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
    tollgate_ledger::money::deposits::deposit(&db, "app", "u", 10, "test")
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

#[tokio::test]
async fn admin_commands_manage_paywalls_keys_limits_and_prices() {
    let dir = std::env::temp_dir().join(format!(
        "tollgate-admin-cli-{}",
        tollgate_ledger::access::secrets::random_hex(6)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/ledger.db", dir.display());
    let config = dir.join("ledger.toml");
    std::fs::write(
        &config,
        "[server]\n[[providers]]\nid = \"p\"\ncluster = \"p\"\napi_key_env = \"P_KEY\"\n",
    )
    .unwrap();
    let admin = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tollgate-ledger"))
            .args(["admin", "--config"])
            .arg(&config)
            .args(["--database-url", &url])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let created = admin(&[
        "paywall-create",
        "shop",
        "--name",
        "Shop",
        "--mode",
        "shared",
    ]);
    let key = created["key"]["key"].as_str().unwrap().to_string();
    let db = Db::connect(&url).await.unwrap();
    let found = tollgate_ledger::catalog::paywall_by_key(&db, &key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((found.id.as_str(), found.mode.as_str()), ("shop", "shared"));

    let listed = admin(&["key-list", "shop"]);
    assert!(!listed.to_string().contains(&key));
    let key_id = listed[0]["id"].as_str().unwrap().to_string();
    admin(&["key-create", "shop", "--label", "second"]);
    admin(&["key-revoke", "shop", &key_id]);
    assert!(tollgate_ledger::catalog::paywall_by_key(&db, &key)
        .await
        .unwrap()
        .is_none());

    // Providers come from the TOML (the sidecar seeds them at start).
    let cfg = tollgate_ledger::config::Config::load(&config).unwrap();
    tollgate_ledger::catalog::seed(&db, &cfg).await.unwrap();
    admin(&["limits-set", "shop", r#"{"max_open_holds": 3}"#]);
    assert_eq!(
        tollgate_ledger::access::limits::load(&db, "shop")
            .await
            .unwrap()
            .max_open_holds,
        Some(3)
    );
    let price = admin(&[
        "model-put",
        "gpt-x",
        r#"{"provider": "p", "input_per_m": "1.00", "output_per_m": "2.00"}"#,
    ]);
    assert_eq!(
        (
            price["price"]["version"].as_i64(),
            price["price"]["output_per_m"].as_i64()
        ),
        (Some(1), Some(2_000_000))
    );
    let paywalls = admin(&["paywall-list"]);
    assert_eq!(paywalls[0]["id"], "shop");
    let added = admin(&[
        "provider-put",
        "groq",
        r#"{"kind": "groq", "cluster": "groq", "api_key_env": "GROQ_KEY"}"#,
    ]);
    assert_eq!(added["base_url"], "https://api.groq.com/openai/v1");
    let providers = admin(&["provider-list"]);
    assert_eq!(providers.as_array().unwrap().len(), 2);

    // A paywall's own provider key: read from standard input, sealed with the
    // master key from the environment, never printed.
    const PROVIDER_KEY: &str = "sk-cli-canary-0a1b2c3d4e";
    let set = |master: &str| {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate-ledger"))
            .args(["admin", "--config"])
            .arg(&config)
            .args(["--database-url", &url, "provider-key-set", "shop", "p"])
            .env("TOLLGATE_MASTER_KEY", master)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{PROVIDER_KEY}").unwrap();
        drop(stdin);
        child.wait_with_output().unwrap()
    };
    let refused = set("");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("master key"));
    let stored = set(&"ab".repeat(32));
    assert!(
        stored.status.success(),
        "{}",
        String::from_utf8_lossy(&stored.stderr)
    );
    let shown = String::from_utf8_lossy(&stored.stdout).to_string();
    assert!(
        shown.contains("\"version\": 1") && !shown.contains(PROVIDER_KEY),
        "{shown}"
    );
    let listed = admin(&["provider-key-list", "shop"]);
    assert_eq!(listed[0]["provider"], "p");
    assert!(!listed.to_string().contains(PROVIDER_KEY));
    admin(&["provider-key-delete", "shop", "p"]);
    assert_eq!(admin(&["provider-key-list", "shop"]), serde_json::json!([]));

    // A failing command says why and exits non-zero.
    let bad = Command::new(env!("CARGO_BIN_EXE_tollgate-ledger"))
        .args(["admin", "--config"])
        .arg(&config)
        .args(["--database-url", &url, "paywall-create", "shop"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("already exists"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `serve` refuses the development processor behind a public address: a
/// non-zero exit naming the setting, unless TOLLGATE_ALLOW_DEV_PAYMENTS=1.
#[tokio::test]
async fn serve_refuses_dev_payments_on_a_public_url() {
    let dir = std::env::temp_dir().join(format!(
        "tollgate-devpay-{}",
        tollgate_ledger::access::secrets::random_hex(6)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("ledger.toml");
    std::fs::write(
        &config,
        "[server]\npublic_url = \"https://pay.example.com\"\n[payments]\nprocessor = \"dev\"\n",
    )
    .unwrap();
    let serve = |allow: Option<&str>| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate-ledger"));
        cmd.args(["serve", "--config"])
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--database-url",
                &format!("sqlite://{}/ledger.db", dir.display()),
            ])
            .env("TOLLGATE_INTERNAL_SECRET", "devpay-test-secret-0123456789")
            .env_remove("TOLLGATE_ALLOW_DEV_PAYMENTS")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if let Some(v) = allow {
            cmd.env("TOLLGATE_ALLOW_DEV_PAYMENTS", v);
        }
        (cmd.spawn().unwrap(), port)
    };
    for allow in [None, Some("0"), Some("yes")] {
        let (child, _) = serve(allow);
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success(), "{allow:?}: it started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("processor = \"dev\"")
                && stderr.contains("TOLLGATE_ALLOW_DEV_PAYMENTS"),
            "{stderr}"
        );
    }
    // With the override it serves.
    let (mut child, port) = serve(Some("1"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "it exited with the override"
        );
        assert!(std::time::Instant::now() < deadline, "did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The old switch says where it went instead of being ignored.
    std::fs::write(&config, "[server]\ndev_payments = true\n").unwrap();
    let out = serve(Some("1")).0.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("replaced by a [payments] table"),
        "{stderr}"
    );
}
