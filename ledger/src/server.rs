//! Starting the service: database, seed, background sweeper, HTTP listener,
//! graceful shutdown on SIGINT/SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use crate::catalog;
use crate::config::Config;
use crate::db::Db;
use crate::http::{router, AppState};
use crate::money::holds;
use crate::money::idempotency;
use crate::settings::Settings;

pub const SWEEP_EVERY: Duration = Duration::from_secs(15);

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let allow_dev = std::env::var("TOLLGATE_ALLOW_DEV_PAYMENTS").is_ok_and(|v| v == "1");
    cfg.check_dev_payments(allow_dev)?;
    let payments = match &cfg.payments {
        Some(p) => Some(Arc::new(crate::payments::Payments::from_config(p)?)),
        None => None,
    };
    crate::metrics::init();
    let secret = std::env::var(&cfg.server.internal_secret_env).map_err(|_| {
        anyhow::anyhow!(
            "environment variable {} (internal secret) is not set",
            cfg.server.internal_secret_env
        )
    })?;
    if secret.len() < 16 {
        anyhow::bail!("the internal secret must be at least 16 characters");
    }
    if let Some(dir) = cfg
        .server
        .database_url
        .strip_prefix("sqlite://")
        .and_then(|p| std::path::Path::new(p.split('?').next().unwrap_or(p)).parent())
    {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    let db = Db::connect(&cfg.server.database_url).await?;
    catalog::seed(&db, &cfg).await?;
    let keyring = crate::catalog::master_key::Keyring::from_env()?;
    match keyring.current_id() {
        Some(id) => tracing::info!(master_key = id, "provider keys of paywalls (BYOK) enabled"),
        None => tracing::info!("no master key: paywalls cannot store provider keys (BYOK)"),
    }
    match &payments {
        Some(p) => {
            tracing::info!(processor = p.name(), currency = %p.offer.currency.code, "top-up payments enabled")
        }
        None => tracing::info!("no [payments] table: top-up pages cannot take payments"),
    }
    let settings = Settings {
        keyring: Arc::new(keyring),
        payments,
        ..Settings::from_server(&cfg.server)
    };
    let state = Arc::new(AppState {
        db: db.clone(),
        settings,
        internal_secret: secret,
        admin_token_hash: admin_token_hash(&cfg.server.admin_token_env)?,
    });
    crate::outbox::webhooks::seed(&db, &cfg.webhooks).await?;
    tokio::spawn(crate::outbox::webhooks::run(
        db.clone(),
        cfg.server.webhook_poll_ms,
        i64::try_from(cfg.server.webhook_retry_base_ms).unwrap_or(i64::MAX),
    ));
    tokio::spawn(sweep(db, state.settings.hold_expiry));
    tokio::spawn(async {
        let mut every = tokio::time::interval(crate::metrics::UPKEEP_EVERY);
        loop {
            every.tick().await;
            crate::metrics::upkeep();
        }
    });
    let listener = tokio::net::TcpListener::bind(&cfg.server.listen).await?;
    tracing::info!(listen = %cfg.server.listen, backend = ?state.db.backend, "tollgate-ledger listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("tollgate-ledger stopped");
    Ok(())
}

/// The admin token from its environment variable (at least 24 characters),
/// kept only as a digest; unset means the admin API is off.
fn admin_token_hash(env: &str) -> anyhow::Result<Option<String>> {
    match std::env::var(env) {
        Ok(token) if token.len() >= 24 => Ok(Some(crate::access::secrets::sha256_hex(&token))),
        Ok(_) => anyhow::bail!("{env} must be at least 24 characters"),
        Err(_) => {
            tracing::info!(env, "admin API disabled (no token)");
            Ok(None)
        }
    }
}

/// Resolves expired holds and forgets old idempotency keys.
async fn sweep(db: Db, policy: holds::ExpiryPolicy) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    loop {
        every.tick().await;
        let now = crate::calendar::now_ms();
        match holds::expire_holds(&db, now, policy).await {
            Ok(0) => {}
            Ok(n) => {
                let policy = policy.as_str();
                crate::metrics::count_by(
                    crate::metrics::HOLD_EXPIRIES,
                    &[policy],
                    u64::try_from(n).unwrap_or(0),
                );
                tracing::info!(expired = n, policy, "expired holds resolved");
            }
            Err(e) => {
                if e.is_transient() {
                    crate::metrics::count(crate::metrics::DATABASE_ERRORS, &["sweep"]);
                }
                tracing::warn!(error = %e, "hold sweep failed");
            }
        }
        if let Err(e) = idempotency::purge_expired(&db, now).await {
            tracing::warn!(error = %e, "idempotency purge failed");
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
