//! `make bench` part 2: the ledger's own throughput, in-process, on SQLite and
//! (when reachable) PostgreSQL. Authorizations/s and settlements/s through the
//! real router, each against a no-op handler on the same router stack; and
//! settlements with group commit (one transaction per 32) against one
//! transaction per settlement. Prints a Markdown section.

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
const CONCURRENCY: usize = 16;
const USERS: usize = 64;
const BATCH: usize = 32;

fn ops() -> usize {
    std::env::var("LEDGER_BENCH_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000)
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
    settle_single: f64,
    settle_batched: f64,
}

async fn measure(backend: &'static str, url: &str) -> Figures {
    let db = seeded(url).await;
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

    let singles = Arc::new(holds_for(&db, n, "single").await);
    let d = db.clone();
    let s = singles.clone();
    let settle_single = run(s.len(), move |i| {
        let (d, s) = (d.clone(), s.clone());
        async move {
            let (hold, rid) = &s[i];
            holds::settle(&d, &settle_req(hold, rid), holds::ExpiryPolicy::Void)
                .await
                .expect("settle");
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
        settle_single,
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

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = std::env::temp_dir().join(format!("tollgate-bench-{}", tollgate_ledger::access::secrets::random_hex(4)));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut rows = vec![measure("SQLite", &format!("sqlite://{}/ledger.db", dir.display())).await];
        match postgres_database().await {
            Some((url, name)) => {
                rows.push(measure("PostgreSQL", &url).await);
                drop_database(&name).await;
            }
            None => eprintln!("PostgreSQL not reachable: measured SQLite only"),
        }
        let _ = std::fs::remove_dir_all(&dir);
        println!("## Ledger throughput (in-process, {CONCURRENCY} in flight, {} operations per run)\n", ops());
        println!("| backend | durability | no-op handler/s | authorize/s (ratio) | settle/s via API (ratio) | settle/s, 1 tx each | settle/s, group commit of {BATCH} | group-commit gain |");
        println!("|---|---|---:|---:|---:|---:|---:|---:|");
        for r in rows {
            println!(
                "| {} | {} | {:.0} | {:.0} ({:.3}) | {:.0} ({:.3}) | {:.0} | {:.0} | {:.1}× |",
                r.backend, r.durability, r.noop, r.authorize, r.authorize / r.noop, r.settle_http, r.settle_http / r.noop,
                r.settle_single, r.settle_batched, r.settle_batched / r.settle_single
            );
        }
    });
}
