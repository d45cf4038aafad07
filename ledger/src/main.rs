//! `tollgate-ledger`: the Tollgate sidecar, its book checker and its operator CLI.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde_json::json;
use tollgate_ledger::access::paywall_keys;
use tollgate_ledger::admin;
use tollgate_ledger::catalog::master_key::Keyring;
use tollgate_ledger::catalog::provider_keys;
use tollgate_ledger::catalog::provider_registry;
use tollgate_ledger::config::{Config, LimitsSeed, ModelSeed};
use tollgate_ledger::db::Db;
use tollgate_ledger::envoy_config::AttemptFilter;
use tollgate_ledger::outbox::webhooks;

#[derive(Parser)]
#[command(
    name = "tollgate-ledger",
    about = "Tollgate ledger and decision sidecar"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the database is: the config's `server.database_url`, or an override.
#[derive(Args)]
struct Store {
    /// TOML configuration (server settings and seed data).
    #[arg(long, env = "TOLLGATE_LEDGER_CONFIG")]
    config: PathBuf,
    /// Overrides `server.database_url`.
    #[arg(long, env = "TOLLGATE_DATABASE_URL")]
    database_url: Option<String>,
}

impl Store {
    fn config(&self) -> anyhow::Result<Config> {
        let mut cfg = Config::load(&self.config)?;
        if let Some(url) = &self.database_url {
            cfg.server.database_url = url.clone();
        }
        Ok(cfg)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve {
        #[command(flatten)]
        store: Store,
        /// Overrides `server.listen`.
        #[arg(long, env = "TOLLGATE_LEDGER_LISTEN")]
        listen: Option<String>,
        /// Overrides `server.public_url`.
        #[arg(long, env = "TOLLGATE_PUBLIC_URL")]
        public_url: Option<String>,
        /// Log as JSON lines.
        #[arg(long, env = "TOLLGATE_LOG_JSON")]
        log_json: bool,
    },
    /// Check every invariant of the books; prints a JSON report and exits 1 on any violation.
    Verify {
        #[command(flatten)]
        store: Store,
    },
    /// Print the OpenAPI document of the sidecar's APIs (as served at /openapi.json).
    Openapi,
    /// Print the Envoy clusters and routes for the configured providers (JSON,
    /// which is also YAML): paste them into `clusters:` and the virtual host's
    /// `routes:`, before any catch-all route.
    EnvoyProviders {
        /// TOML configuration.
        #[arg(long, env = "TOLLGATE_LEDGER_CONFIG")]
        config: PathBuf,
        /// The filter's `route_header` setting.
        #[arg(long, default_value = "x-tollgate-route")]
        route_header: String,
        /// CA bundle Envoy verifies providers' certificates with.
        #[arg(long, default_value = tollgate_ledger::envoy_config::DEFAULT_CA_BUNDLE)]
        ca_bundle: String,
        /// The filter's .wasm as Envoy loads it (needed when models have fallbacks).
        #[arg(long)]
        wasm: Option<String>,
        /// The listener filter's `vm_id`, so fallback routes share its VM.
        #[arg(long, default_value = "tollgate")]
        vm_id: String,
    },
    /// Payments: credit completed Stripe Checkout Sessions whose webhook never arrived.
    Payments {
        #[command(subcommand)]
        op: PaymentsOp,
    },
    /// Operator commands on the database (the same operations as the admin API).
    Admin {
        #[command(flatten)]
        store: Store,
        #[command(subcommand)]
        op: AdminOp,
    },
}

#[derive(Subcommand)]
enum PaymentsOp {
    /// List the sessions Stripe completed since a time and credit those never
    /// credited, exactly once (the webhook's own path). Prints one JSON line each.
    Reconcile {
        #[command(flatten)]
        store: Store,
        /// Unix seconds, a UTC date (2026-12-01), date and time (2026-12-01T12:00:00Z) or a span back (36h, 7d).
        #[arg(long)]
        since: String,
    },
}

#[derive(Subcommand)]
enum AdminOp {
    /// List paywalls.
    PaywallList,
    /// Create a paywall; prints its first key (shown only this once).
    PaywallCreate {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value = "isolated")]
        mode: String,
    },
    /// Change a paywall's name or mode (isolated | shared).
    PaywallSet {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        mode: Option<String>,
    },
    /// Create a key for a paywall; prints it (shown only this once).
    KeyCreate {
        paywall: String,
        #[arg(long, default_value = "cli")]
        label: String,
    },
    /// List a paywall's keys (ids and labels, never the keys).
    KeyList { paywall: String },
    /// Revoke a key by id.
    KeyRevoke { paywall: String, key_id: String },
    /// Replace a paywall's limits, given as JSON (fields of `[paywalls.limits]`).
    LimitsSet { paywall: String, json: String },
    /// Create or update a model and its price, given as JSON (fields of `[[models]]`).
    ModelPut { name: String, json: String },
    /// List webhook endpoints and their delivery counts.
    WebhookList,
    /// An endpoint's delivery log, newest first.
    WebhookDeliveries {
        endpoint: String,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Send a delivery again (it becomes pending and due now).
    WebhookReplay { endpoint: String, delivery: String },
    /// List providers (where their operator key comes from, never the key).
    ProviderList,
    /// Create or update a provider, given as JSON (fields of `[[providers]]`).
    ProviderPut { id: String, json: String },
    /// Store or rotate a paywall's own key for a provider (BYOK), sealed with
    /// TOLLGATE_MASTER_KEY. The key is read from standard input (never from
    /// the command line, where other users could see it) or from --key-env.
    ProviderKeySet {
        paywall: String,
        provider: String,
        /// Environment variable to read the key from instead of standard input.
        #[arg(long)]
        key_env: Option<String>,
    },
    /// List the provider keys a paywall brought (fingerprints, never the keys).
    ProviderKeyList { paywall: String },
    /// Delete a paywall's key for a provider.
    ProviderKeyDelete { paywall: String, provider: String },
    /// Re-seal every stored provider key with the current master key, after
    /// moving the old one to TOLLGATE_MASTER_KEY_PREVIOUS.
    ProviderKeyRewrap,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            store,
            listen,
            public_url,
            log_json,
        } => {
            init_logs(log_json);
            let mut cfg = store.config()?;
            if let Some(v) = listen {
                cfg.server.listen = v;
            }
            if let Some(v) = public_url {
                cfg.server.public_url = v;
            }
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(cfg.server.worker_threads.get())
                .enable_all()
                .build()?
                .block_on(tollgate_ledger::server::run(cfg))
        }
        Command::Verify { store } => verify(store),
        Command::Openapi => {
            println!("{}", tollgate_ledger::http::openapi().to_pretty_json()?);
            Ok(())
        }
        Command::EnvoyProviders {
            config,
            route_header,
            ca_bundle,
            wasm,
            vm_id,
        } => {
            let cfg = Config::load(&config)?;
            let filter = wasm.map(|wasm_path| AttemptFilter { wasm_path, vm_id });
            let out = tollgate_ledger::envoy_config::resources(
                &cfg,
                &route_header,
                &ca_bundle,
                filter.as_ref(),
            )?;
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        Command::Payments {
            op: PaymentsOp::Reconcile { store, since },
        } => {
            init_logs(false);
            let cfg = store.config()?;
            let now = tollgate_ledger::calendar::now_ms() / 1000;
            let since = tollgate_ledger::calendar::parse_since(&since, now).ok_or_else(|| {
                anyhow::anyhow!(
                    "--since {since:?}: not a time (try 2026-12-01, 36h or Unix seconds)"
                )
            })?;
            let payments_cfg = cfg
                .payments
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("the configuration has no [payments] table"))?;
            let payments = tollgate_ledger::payments::Payments::from_config(payments_cfg)?;
            let done = runtime()?.block_on(async {
                let db = Db::connect(&cfg.server.database_url).await?;
                Ok::<_, anyhow::Error>(
                    tollgate_ledger::payments::reconcile::reconcile(&db, &payments, since).await?,
                )
            })?;
            for r in &done {
                println!(
                    "{}",
                    json!({"session": r.session, "paywall": r.paywall_id, "user": r.user_id,
                           "amount": r.amount, "outcome": r.outcome})
                );
            }
            let credited = done.iter().filter(|r| r.outcome == "credited").count();
            eprintln!(
                "{} session(s) of ours since {since}: {credited} credited now",
                done.len()
            );
            Ok(())
        }
        Command::Admin { store, op } => {
            init_logs(false);
            let cfg = store.config()?;
            let out = runtime()?.block_on(async {
                let db = Db::connect(&cfg.server.database_url).await?;
                run_admin(&db, op).await
            })?;
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
    }
}

/// The runtime of a one-off command (verify, admin, reconcile).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

async fn run_admin(db: &Db, op: AdminOp) -> anyhow::Result<serde_json::Value> {
    Ok(match op {
        AdminOp::PaywallList => json!(admin::list_paywalls(db).await?),
        AdminOp::PaywallCreate { id, name, mode } => {
            let name = name.unwrap_or_else(|| id.clone());
            let (p, key) = admin::create_paywall(db, &id, &name, &mode).await?;
            json!({"id": p.id, "name": p.name, "mode": p.mode, "key": key})
        }
        AdminOp::PaywallSet { id, name, mode } => {
            json!(admin::update_paywall(db, &id, name.as_deref(), mode.as_deref()).await?)
        }
        AdminOp::KeyCreate { paywall, label } => {
            json!(paywall_keys::create(db, &paywall, &label).await?)
        }
        AdminOp::KeyList { paywall } => json!(paywall_keys::list(db, &paywall).await?),
        AdminOp::KeyRevoke { paywall, key_id } => {
            let revoked = paywall_keys::revoke(db, &paywall, &key_id).await?;
            anyhow::ensure!(revoked, "no live key {key_id} on paywall {paywall}");
            json!({"id": key_id, "revoked": true})
        }
        AdminOp::LimitsSet { paywall, json } => {
            let limits: LimitsSeed = serde_json::from_str(&json)?;
            admin::set_limits(db, &paywall, &limits).await?;
            json!({"paywall": paywall, "limits": limits})
        }
        AdminOp::ModelPut { name, json } => {
            let mut model: ModelSeed = serde_json::from_str(&json)?;
            model.name = name;
            json!({"model": model.name, "price": admin::put_model(db, &model).await?})
        }
        AdminOp::WebhookList => json!(webhooks::list_endpoints(db).await?),
        AdminOp::WebhookDeliveries { endpoint, limit } => {
            json!(webhooks::deliveries(db, &endpoint, limit).await?)
        }
        AdminOp::WebhookReplay { endpoint, delivery } => {
            let found = webhooks::replay(db, &endpoint, &delivery).await?;
            anyhow::ensure!(found, "no delivery {delivery} on endpoint {endpoint}");
            json!({"id": delivery, "state": "pending"})
        }
        AdminOp::ProviderList => json!(provider_registry::list_providers(db).await?),
        AdminOp::ProviderPut { id, json } => {
            let seed = tollgate_ledger::config::ProviderSeed::from_json_fields(
                &id,
                serde_json::from_str(&json)?,
            )?;
            json!(provider_registry::put(db, &seed).await?)
        }
        AdminOp::ProviderKeySet {
            paywall,
            provider,
            key_env,
        } => {
            let key = read_secret(key_env.as_deref())?;
            let keyring = Keyring::from_env()?;
            json!(provider_keys::set(db, &keyring, &paywall, &provider, &key).await?)
        }
        AdminOp::ProviderKeyList { paywall } => json!(provider_keys::list(db, &paywall).await?),
        AdminOp::ProviderKeyDelete { paywall, provider } => {
            let deleted = provider_keys::delete(db, &paywall, &provider).await?;
            anyhow::ensure!(deleted, "paywall {paywall} has no key for {provider}");
            json!({"paywall": paywall, "provider": provider, "deleted": true})
        }
        AdminOp::ProviderKeyRewrap => {
            let keyring = Keyring::from_env()?;
            let n = provider_keys::rewrap(db, &keyring).await?;
            json!({"resealed": n, "master_key_id": keyring.current_id()})
        }
    })
}

/// A secret from an environment variable or standard input (one line).
fn read_secret(env: Option<&str>) -> anyhow::Result<String> {
    let raw = match env {
        Some(var) => std::env::var(var).map_err(|_| anyhow::anyhow!("{var} is not set"))?,
        None => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line
        }
    };
    Ok(raw.trim().to_string())
}

fn verify(store: Store) -> anyhow::Result<()> {
    let cfg = store.config()?;
    let report = runtime()?.block_on(async {
        let db = Db::connect(&cfg.server.database_url).await?;
        // Open holds get two sweep intervals of grace past their expiry.
        let grace =
            i64::try_from(tollgate_ledger::server::SWEEP_EVERY.as_millis()).unwrap_or(i64::MAX);
        Ok::<_, anyhow::Error>(
            tollgate_ledger::money::verify::verify(
                &db,
                tollgate_ledger::calendar::now_ms(),
                grace * 2,
            )
            .await?,
        )
    })?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if report.is_clean() {
        Ok(())
    } else {
        eprintln!("{} violation(s) found", report.violations.len());
        std::process::exit(1);
    }
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
