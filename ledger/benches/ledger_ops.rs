//! `make bench` part 2: the ledger's own throughput, in-process, on SQLite and
//! (when reachable) PostgreSQL. Authorizations/s and settlements/s through the
//! real router, each against a no-op handler on the same router stack, and
//! the batch settle call (32 per call); then the same on a ledger that
//! already holds 1 million transfers. Prints a Markdown section; with
//! LEDGER_BENCH_JSON=<file>, also writes the figures there (name, value, unit).

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::Request;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use sqlx::Row;
use tokio::sync::Semaphore;
use tollgate_ledger::catalog;
use tollgate_ledger::config::Config;
use tollgate_ledger::db::{Backend, Db};
use tollgate_ledger::http::{router, AppState};
use tollgate_ledger::money::deposits;
use tollgate_ledger::money::holds;
use tollgate_ledger::settings::Settings;
use tollgate_protocol::{
    AuthorizeRequest, AuthorizeResponse, SettleOutcome, SettleRequest, Usage, UsageSource,
};
use tower::ServiceExt;

const SECRET: &str = "bench-internal-secret-0123456789";
const KEY: &str = "tg_bench_key_0123456789abcdef";
/// Calls in flight: what a sidecar behind a 2-worker Envoy at peak sees
/// (authorizations and settlements of 16 client connections).
const CONCURRENCY: usize = 32;
const USERS: usize = 64;
const BATCH: usize = 32;

/// A number from the environment, or `default`.
fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Operations per run.
fn ops() -> usize {
    env_number("LEDGER_BENCH_OPS", 4000)
}

/// Transfers already in the ledger for the "at scale" run
/// (`LEDGER_BENCH_HISTORY` overrides it for a quicker look).
fn history() -> i64 {
    env_number("LEDGER_BENCH_HISTORY", 1_000_000)
}

async fn seeded(url: &str) -> Db {
    std::env::set_var("BENCH_KEY", KEY);
    std::env::set_var("BENCH_PROVIDER_KEY", "sk-bench");
    let cfg = Config::parse(
        r#"
        [server]
        [[paywalls]]
        id = "bench"
        key_env = "BENCH_KEY"
        [[providers]]
        id = "mock"
        cluster = "mock"
        api_key_env = "BENCH_PROVIDER_KEY"
        [[models]]
        name = "m"
        provider = "mock"
        input_per_m = "2.00"
        output_per_m = "8.00"
        "#,
    )
    .expect("bench config");
    let db = Db::connect(url).await.expect("database");
    catalog::seed(&db, &cfg).await.expect("seed");
    for u in 0..USERS {
        deposits::deposit(&db, "bench", &format!("u{u}"), 1_000_000_000_000, "bench")
            .await
            .expect("deposit");
    }
    db
}

fn app(db: &Db) -> Router {
    let settings = Settings {
        public_url: "http://bench".into(),
        hold_ttl_ms: 3_600_000,
        topup_link_ttl_ms: 3_600_000,
        hold_expiry: holds::ExpiryPolicy::Void,
        output_floor: 16,
        payments: None,
        keyring: Default::default(),
    };
    let state = Arc::new(AppState {
        db: db.clone(),
        settings,
        internal_secret: SECRET.into(),
        admin_token_hash: None,
    });
    // The no-op baseline: same router, same JSON body handling, no database.
    router(state).route(
        "/bench/noop",
        post(|body: Bytes| async move {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            axum::Json(json!({"decision": "noop", "echo": v["request_id"]}))
        }),
    )
}

/// Runs `n` calls with `CONCURRENCY` in flight; returns calls per second.
async fn run<F, Fut>(n: usize, f: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let f = Arc::new(f);
    let gate = Arc::new(Semaphore::new(CONCURRENCY));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let permit = gate.clone().acquire_owned().await.expect("semaphore");
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            f(i).await;
            drop(permit);
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn call(app: &Router, path: &str, body: Value) -> Value {
    let req = Request::post(path)
        .header("content-type", "application/json")
        .header("x-tollgate-internal-secret", SECRET)
        .body(Body::from(body.to_string()))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("call");
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    serde_json::from_slice(&bytes).expect("json")
}

fn ask(i: usize, prefix: &str) -> AuthorizeRequest {
    AuthorizeRequest {
        request_id: format!("{prefix}-{i}"),
        paywall_key: KEY.into(),
        user: format!("u{}", i % USERS),
        model: "m".into(),
        prompt_tokens: 500,
        max_output_tokens: Some(500),
        choices: 1,
        stream: false,
    }
}

fn settle_req(hold: &str, rid: &str) -> SettleRequest {
    SettleRequest {
        hold_id: hold.into(),
        request_id: rid.into(),
        usage: Usage {
            prompt_tokens: 480,
            completion_tokens: 120,
            cached_prompt_tokens: 0,
        },
        usage_source: UsageSource::Provider,
        local_completion_tokens: Some(120),
        outcome: SettleOutcome::Completed,
        upstream_status: 200,
        provider: None,
    }
}

/// Places `n` holds directly (setup for the settlement runs).
async fn holds_for(db: &Db, n: usize, prefix: &str) -> Vec<(String, String)> {
    let settings = Settings {
        public_url: "http://bench".into(),
        hold_ttl_ms: 3_600_000,
        topup_link_ttl_ms: 3_600_000,
        hold_expiry: holds::ExpiryPolicy::Void,
        output_floor: 16,
        payments: None,
        keyring: Default::default(),
    };
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let a = ask(i, prefix);
        match holds::authorize(db, &settings, &a)
            .await
            .expect("authorize")
        {
            AuthorizeResponse::Allow { hold_id, .. } => out.push((hold_id, a.request_id)),
            other => panic!("bench hold refused: {other:?}"),
        }
    }
    out
}

struct Figures {
    backend: &'static str,
    durability: String,
    noop: f64,
    authorize: f64,
    settle_http: f64,
    settle_batched: f64,
}

/// `count` deposits of one micro-unit into a wallet of their own, booked as
/// deposits are (so `verify` still balances): a ledger with history.
async fn add_history(db: &Db, count: i64) {
    deposits::deposit(db, "bench", "history", 1, "bench")
        .await
        .expect("history wallet");
    let (cash, wallet): (String, String) = sqlx::query_as(
        "SELECT debit_account, credit_account FROM transfers WHERE kind = 'deposit' AND credit_account IN
           (SELECT id FROM accounts WHERE user_id = 'history')",
    )
    .fetch_one(&db.pool)
    .await
    .expect("history accounts");
    let mut tx = db.pool.begin().await.expect("begin");
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT CAST(1 AS BIGINT) UNION ALL SELECT i + 1 FROM n WHERE i < $1)
         INSERT INTO transfers (id, kind, debit_account, credit_account, amount, request_id, created_at, paywall_id)
         SELECT 'tr_history_' || CAST(i AS TEXT), 'deposit', $2, $3, 1, 'history-' || CAST(i AS TEXT), $4, 'bench' FROM n",
    )
    .bind(count)
    .bind(&cash)
    .bind(&wallet)
    .bind(tollgate_ledger::calendar::now_ms())
    .execute(&mut *tx)
    .await
    .expect("history");
    for (account, column) in [(&cash, "debits_posted"), (&wallet, "credits_posted")] {
        sqlx::query(&format!(
            "UPDATE accounts SET {column} = {column} + $1 WHERE id = $2"
        ))
        .bind(count)
        .bind(account)
        .execute(&mut *tx)
        .await
        .expect("history sums");
    }
    tx.commit().await.expect("commit");
}

async fn measure(backend: &'static str, url: &str, history: i64) -> Figures {
    let db = seeded(url).await;
    if history > 0 {
        add_history(&db, history).await;
    }
    let durability = match db.backend {
        Backend::Sqlite => "WAL, synchronous=FULL".to_string(),
        Backend::Postgres => {
            let v: String = sqlx::query("SHOW synchronous_commit")
                .fetch_one(&db.pool)
                .await
                .expect("show")
                .get(0);
            format!("synchronous_commit={v}")
        }
    };
    let app = Arc::new(app(&db));
    let n = ops();

    let a = app.clone();
    let noop = run(n, move |i| {
        let a = a.clone();
        async move {
            call(&a, "/bench/noop", json!({"request_id": format!("n{i}")})).await;
        }
    })
    .await;

    let a = app.clone();
    let held = Arc::new(tokio::sync::Mutex::new(Vec::with_capacity(n)));
    let sink = held.clone();
    let authorize = run(n, move |i| {
        let (a, sink) = (a.clone(), sink.clone());
        async move {
            let r = ask(i, "http");
            let v = call(
                &a,
                tollgate_protocol::AUTHORIZE_PATH,
                serde_json::to_value(&r).expect("json"),
            )
            .await;
            assert_eq!(v["decision"], "allow", "{v}");
            sink.lock().await.push((
                v["hold_id"].as_str().expect("hold").to_string(),
                r.request_id,
            ));
        }
    })
    .await;

    let held: Arc<Vec<(String, String)>> = Arc::new(std::mem::take(&mut *held.lock().await));
    let a = app.clone();
    let h = held.clone();
    let settle_http = run(h.len(), move |i| {
        let (a, h) = (a.clone(), h.clone());
        async move {
            let (hold, rid) = &h[i];
            let v = call(
                &a,
                tollgate_protocol::SETTLE_PATH,
                serde_json::to_value(settle_req(hold, rid)).expect("json"),
            )
            .await;
            assert_eq!(v["state"], "posted", "{v}");
        }
    })
    .await;

    let batched = Arc::new(holds_for(&db, n, "batch").await);
    let d = db.clone();
    let b = batched.clone();
    let batches = b.len().div_ceil(BATCH);
    let batch_rate = run(batches, move |i| {
        let (d, b) = (d.clone(), b.clone());
        async move {
            let reqs: Vec<SettleRequest> = b[i * BATCH..((i + 1) * BATCH).min(b.len())]
                .iter()
                .map(|(h, r)| settle_req(h, r))
                .collect();
            holds::settle_batch(&d, &reqs, holds::ExpiryPolicy::Void)
                .await
                .expect("batch");
        }
    })
    .await;
    let report =
        tollgate_ledger::money::verify::verify(&db, tollgate_ledger::calendar::now_ms(), 0)
            .await
            .expect("verify");
    assert!(
        report.is_clean(),
        "books not clean after the bench: {:?}",
        report.violations
    );
    Figures {
        backend,
        durability,
        noop,
        authorize,
        settle_http,
        settle_batched: batch_rate * BATCH as f64,
    }
}

fn admin_url() -> String {
    std::env::var("TOLLGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh database on the test server, or None when it is not reachable.
async fn postgres_database() -> Option<(String, String)> {
    let admin = Db::connect_raw(&admin_url()).await.ok()?;
    let name = format!(
        "tollgate_bench_{}",
        tollgate_ledger::access::secrets::random_hex(4)
    );
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .ok()?;
    let url = admin_url();
    let (base, _) = url.rsplit_once('/')?;
    Some((format!("{base}/{name}"), name))
}

async fn drop_database(name: &str) {
    if let Ok(admin) = Db::connect_raw(&admin_url()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&admin)
            .await;
    }
}

/// Each backend empty, then with `history()` transfers, one after the other.
async fn measure_backend(backend: &'static str, url: impl Fn(usize) -> String) -> Vec<Figures> {
    let mut rows = Vec::new();
    for (i, history) in [0, history()].into_iter().enumerate() {
        rows.push(measure(backend, &url(i), history).await);
    }
    rows
}

fn figures_json(rows: &[Figures]) -> serde_json::Value {
    let mut out = Vec::new();
    for pair in rows.chunks(2) {
        let [empty, full] = pair else { continue };
        let b = empty.backend.to_lowercase();
        for (name, value, unit) in [
            (
                format!("ledger_{b}_authorize_per_s"),
                empty.authorize,
                "1/s",
            ),
            (format!("ledger_{b}_settle_per_s"), empty.settle_http, "1/s"),
            (
                format!("ledger_{b}_settle_batch_per_s"),
                empty.settle_batched,
                "1/s",
            ),
            (
                format!("ledger_{b}_1m_authorize_per_s"),
                full.authorize,
                "1/s",
            ),
            (
                format!("ledger_{b}_1m_settle_per_s"),
                full.settle_http,
                "1/s",
            ),
            (
                format!("ledger_{b}_1m_authorize_ratio"),
                full.authorize / empty.authorize,
                "ratio",
            ),
            (
                format!("ledger_{b}_1m_settle_ratio"),
                full.settle_http / empty.settle_http,
                "ratio",
            ),
        ] {
            out.push(
                json!({"name": name, "value": (value * 1000.0).round() / 1000.0, "unit": unit}),
            );
        }
    }
    Value::Array(out)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = std::env::temp_dir().join(format!("tollgate-bench-{}", tollgate_ledger::access::secrets::random_hex(4)));
        std::fs::create_dir_all(&dir).expect("dir");
        let sqlite = |i: usize| format!("sqlite://{}/ledger-{i}.db", dir.display());
        let mut rows = measure_backend("SQLite", sqlite).await;
        let mut created = Vec::new();
        for _ in 0..2 {
            match postgres_database().await {
                Some(db) => created.push(db),
                None => break,
            }
        }
        if created.len() == 2 {
            let urls: Vec<String> = created.iter().map(|(url, _)| url.clone()).collect();
            rows.extend(measure_backend("PostgreSQL", |i| urls[i].clone()).await);
        } else {
            eprintln!("PostgreSQL not reachable: measured SQLite only");
        }
        for (_, name) in &created {
            drop_database(name).await;
        }
        let _ = std::fs::remove_dir_all(&dir);
        println!("## Ledger throughput (in-process, {CONCURRENCY} in flight, {} operations per run)\n", ops());
        println!("| backend | durability | transfers before | no-op handler/s | authorize/s (ratio) | settle/s (ratio) | settle-batch of {BATCH}, settlements/s |");
        println!("|---|---|---:|---:|---:|---:|---:|");
        for (i, r) in rows.iter().enumerate() {
            let before = if i % 2 == 0 { "0".to_string() } else { history().to_string() };
            println!(
                "| {} | {} | {before} | {:.0} | {:.0} ({:.3}) | {:.0} ({:.3}) | {:.0} |",
                r.backend, r.durability, r.noop, r.authorize, r.authorize / r.noop, r.settle_http, r.settle_http / r.noop,
                r.settle_batched
            );
        }
        println!();
        for pair in rows.chunks(2) {
            if let [empty, full] = pair {
                println!(
                    "With {} transfers against an empty ledger, {}: authorize **{:.2}×**, settle **{:.2}×**.",
                    history(), empty.backend, full.authorize / empty.authorize, full.settle_http / empty.settle_http
                );
            }
        }
        println!("\nAuthorize and settle go through the group committer: on SQLite concurrent calls share one\ntransaction and one fsync; on PostgreSQL each is its own transaction.");
        if let Ok(path) = std::env::var("LEDGER_BENCH_JSON") {
            std::fs::write(&path, figures_json(&rows).to_string()).expect("write figures");
        }
    });
}
