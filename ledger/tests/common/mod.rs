//! Shared by the ledger test files: seeded databases of every backend and a
//! macro that runs one test body against each.
#![allow(dead_code)]

pub mod process;

use tollgate_ledger::catalog;
use tollgate_ledger::config::Config;
use tollgate_ledger::db::Db;
use tollgate_ledger::money::verify;
use tollgate_ledger::payments::config::PaymentsConfig;
use tollgate_ledger::payments::Payments;
use tollgate_ledger::settings::Settings;

pub const KEY: &str = "tg_test_key_0123456789abcdef";
pub const OTHER_KEY: &str = "tg_other_key_0123456789abcdef";
/// Two shared-mode paywalls (one wallet per user across them, after consent).
pub const MALL_KEY: &str = "tg_mall_key_0123456789abcdef";
pub const MALL2_KEY: &str = "tg_mall2_key_0123456789abcdef";

/// The seed configuration the tests use, as TOML (for spawned sidecars too).
pub fn config_text(output_per_m: &str) -> String {
    std::env::set_var("SUITE_KEY", KEY);
    std::env::set_var("SUITE_OTHER_KEY", OTHER_KEY);
    std::env::set_var("SUITE_PROVIDER_KEY", "sk-suite");
    std::env::set_var("SUITE_MALL_KEY", MALL_KEY);
    std::env::set_var("SUITE_MALL2_KEY", MALL2_KEY);
    format!(
        r#"
        [server]
        [[paywalls]]
        id = "app"
        name = "Test app"
        key_env = "SUITE_KEY"
        [[paywalls]]
        id = "other"
        key_env = "SUITE_OTHER_KEY"
        [[paywalls]]
        id = "mall"
        name = "Mall app"
        mode = "shared"
        key_env = "SUITE_MALL_KEY"
        [[paywalls]]
        id = "mall2"
        name = "Second mall app"
        mode = "shared"
        key_env = "SUITE_MALL2_KEY"
        [[providers]]
        id = "mock"
        cluster = "mock"
        api_key_env = "SUITE_PROVIDER_KEY"
        [[models]]
        name = "m"
        provider = "mock"
        default_max_output_tokens = 1000
        input_per_m = "2.00"
        cached_input_per_m = "1.00"
        output_per_m = "{output_per_m}"
        "#
    )
}

pub fn config(output_per_m: &str) -> Config {
    Config::parse(&config_text(output_per_m)).unwrap()
}

/// The development processor with the demo's offer (5, 10, 20; 1 to 500 USD).
pub fn dev_payments() -> Payments {
    let cfg: PaymentsConfig = toml::from_str(
        "processor = \"dev\"\namounts = [\"5.00\", \"10.00\", \"20.00\"]\nmin_amount = \"1.00\"\nmax_amount = \"500.00\"",
    )
    .unwrap();
    Payments::from_config(&cfg).unwrap()
}

pub fn settings() -> Settings {
    Settings {
        public_url: "http://pay.test".into(),
        hold_ttl_ms: 600_000,
        topup_link_ttl_ms: 3_600_000,
        hold_expiry: tollgate_ledger::money::holds::ExpiryPolicy::Void,
        output_floor: 16,
        payments: Some(std::sync::Arc::new(dev_payments())),
        keyring: std::sync::Arc::new(
            tollgate_ledger::catalog::master_key::Keyring::new(TEST_MASTER_KEY, "").unwrap(),
        ),
    }
}

/// The master key the tests' settings seal provider keys with.
pub const TEST_MASTER_KEY: &str =
    "5f0c2d1e9a8b7c6d5e4f30211203f4e5d6c7b8a99a8b7c6d5e4f302112030405";

/// A database of the given backend, seeded, dropped when the handle goes.
pub struct TestDb {
    pub db: Db,
    pub url: String,
    pg_cleanup: Option<(String, String)>,
    _dir: Option<tempdir::Dir>,
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    pub fn new() -> Dir {
        let p = std::env::temp_dir().join(format!(
            "tollgate-test-{}",
            tollgate_ledger::access::secrets::random_hex(8)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin_url, name)) = self.pg_cleanup.take() {
            // Best effort: a leftover test database is harmless.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(admin) = Db::connect_raw(&admin_url).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&admin)
                                .await;
                    }
                });
            })
            .join();
        }
    }
}

pub async fn open(backend: &str) -> Option<TestDb> {
    let cfg = config("8.00");
    match backend {
        "sqlite" => {
            let dir = tempdir::new();
            let url = format!("sqlite://{}/ledger.db", dir.0.display());
            let db = Db::connect(&url).await.unwrap();
            catalog::seed(&db, &cfg).await.unwrap();
            Some(TestDb {
                db,
                url,
                pg_cleanup: None,
                _dir: Some(dir),
            })
        }
        _ => {
            let (url, cleanup) = empty_postgres().await?;
            let db = Db::connect(&url).await.unwrap();
            catalog::seed(&db, &cfg).await.unwrap();
            Some(TestDb {
                db,
                url,
                pg_cleanup: Some(cleanup),
                _dir: None,
            })
        }
    }
}

/// A new, empty PostgreSQL database: its URL and what dropping it needs
/// (admin URL, name). None when PostgreSQL is unreachable and not required.
pub async fn empty_postgres() -> Option<(String, (String, String))> {
    let admin_url = std::env::var("TOLLGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let required = std::env::var("TOLLGATE_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
    let admin = match Db::connect_raw(&admin_url).await {
        Ok(a) => a,
        Err(e) if !required => {
            eprintln!("skipping PostgreSQL test: {e}");
            report_postgres("skipped");
            return None;
        }
        Err(e) => panic!("PostgreSQL required but unreachable at {admin_url}: {e}"),
    };
    report_postgres("ran");
    let name = format!(
        "tollgate_t_{}",
        tollgate_ledger::access::secrets::random_hex(6)
    );
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let url = match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("bad TOLLGATE_TEST_POSTGRES_URL"),
    };
    Some((url, (admin_url, name)))
}

/// One line per PostgreSQL test in `$TOLLGATE_PG_REPORT_DIR/{ran,skipped}`,
/// which `make test` sums up in its last line (a skipped suite passes silently).
fn report_postgres(what: &str) {
    use std::io::Write;
    let Ok(dir) = std::env::var("TOLLGATE_PG_REPORT_DIR") else {
        return;
    };
    let _ = std::fs::create_dir_all(&dir);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(std::path::Path::new(&dir).join(what));
    if let Ok(mut file) = file {
        let _ = writeln!(file, "{}", std::thread::current().name().unwrap_or("test"));
    }
}

/// A TestDb around a database the caller prepared (dropped, or its folder
/// removed, when the handle goes).
pub fn adopt(
    db: Db,
    url: String,
    pg_cleanup: Option<(String, String)>,
    dir: Option<std::path::PathBuf>,
) -> TestDb {
    TestDb {
        db,
        url,
        pg_cleanup,
        _dir: dir.map(tempdir::Dir),
    }
}

/// A new temporary folder (not removed: hand it to [`adopt`]).
pub fn temp_folder() -> std::path::PathBuf {
    let dir = tempdir::new();
    let path = dir.0.clone();
    std::mem::forget(dir);
    path
}

/// The URL a pool was opened with, for spawning sidecar processes on it.
pub fn url_of(db: &Db) -> String {
    db.pool.connect_options().database_url.to_string()
}

/// Runs each test body against both backends.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let t = $crate::common::open("sqlite").await.unwrap();
                super::$name(&t.db).await;
                $crate::common::assert_books_balance(&t.db).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let Some(t) = $crate::common::open("postgres").await else { return };
                super::$name(&t.db).await;
                $crate::common::assert_books_balance(&t.db).await;
            })*
        }
    };
}

/// Every test ends with the books verified: sums balance, no wallet below
/// zero, pending sums match open holds, each hold resolved at most once.
pub async fn assert_books_balance(db: &Db) {
    let report = verify::verify(db, tollgate_ledger::calendar::now_ms(), 60_000)
        .await
        .unwrap();
    assert!(report.is_clean(), "{:#?}", report.violations);
}

/// Minute windows are fixed: start tests that count on one early enough in it.
pub async fn fresh_minute() {
    let ms_into = tollgate_ledger::calendar::now_ms().rem_euclid(60_000);
    if ms_into > 45_000 {
        tokio::time::sleep(std::time::Duration::from_millis(
            (60_000 - ms_into + 200) as u64,
        ))
        .await;
    }
}

/// Replaces paywall "app"'s limits.
pub async fn set_limits(db: &Db, l: tollgate_ledger::access::limits::Limits) {
    let mut tx = db.pool.begin().await.unwrap();
    tollgate_ledger::access::limits::store(&mut tx, "app", &l)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

// Helpers of the money suites.

use sqlx::Row;
use tollgate_ledger::money::book;
use tollgate_ledger::money::holds;
use tollgate_ledger::money::wallets::isolated_wallet;
use tollgate_protocol::{
    AuthorizeRequest, AuthorizeResponse, SettleOutcome, SettleRequest, Usage, UsageSource,
};

pub fn ask(user: &str, request_id: &str, prompt: u32, max_out: Option<u32>) -> AuthorizeRequest {
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

pub fn settle_req(
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
        provider: None,
    }
}

pub async fn balance(db: &Db, user: &str) -> book::Balance {
    book::balance(db, &isolated_wallet("app", user))
        .await
        .unwrap()
}

pub async fn hold_for(db: &Db, user: &str, rid: &str, prompt: u32, max_out: u32) -> (String, i64) {
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

pub async fn count(db: &Db, sql: &str) -> i64 {
    sqlx::query(sql)
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .get::<i64, _>(0)
}
