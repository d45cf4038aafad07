//! Writing the catalog: the TOML seed at start and the admin API's model
//! changes. A changed price becomes a new rule version; an unchanged one is
//! left alone, so seeding is safe at every start and from several sidecars.

use sqlx::{Any, Transaction};

use super::routes::{PriceRow, PRICE_COLUMNS};
use crate::access::limits::{self, Limits};
use crate::access::paywall_keys;
use crate::calendar::now_ms;
use crate::config::{Config, LimitsSeed, ModelSeed};
use crate::db::Db;
use crate::pricing::PriceRule;
use tollgate_protocol::parse_decimal;

fn price(field: &str, model: &str, value: Option<&str>) -> anyhow::Result<i64> {
    parse_decimal(value.unwrap_or("0")).map_err(|e| anyhow::anyhow!("model {model}: {field}: {e}"))
}

/// Applies the configuration's paywalls, providers, models and prices. Safe to
/// run at every start and from several sidecars: a changed price becomes a
/// new rule version, an unchanged one is left alone.
pub async fn seed(db: &Db, cfg: &Config) -> anyhow::Result<()> {
    let now = now_ms();
    let mut tx = db.pool.begin().await?;
    for p in &cfg.paywalls {
        let key = std::env::var(&p.key_env).map_err(|_| {
            anyhow::anyhow!(
                "paywall {}: environment variable {} is not set",
                p.id,
                p.key_env
            )
        })?;
        if key.len() < 16 {
            anyhow::bail!(
                "paywall {}: the key in {} must be at least 16 characters",
                p.id,
                p.key_env
            );
        }
        let name = p.name.clone().unwrap_or_else(|| p.id.clone());
        sqlx::query(
            "INSERT INTO paywalls (id, name, mode, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, mode = excluded.mode",
        )
        .bind(&p.id)
        .bind(&name)
        .bind(&p.mode)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        paywall_keys::seed_config_key(&mut tx, &p.id, &key).await?;
        seed_limits(&mut tx, &p.id, p.limits.as_ref()).await?;
    }
    for p in &cfg.providers {
        crate::catalog::provider_registry::put_provider(&mut tx, p).await?;
    }
    for m in &cfg.models {
        put_model(&mut tx, m, now).await?;
        put_fallbacks(&mut tx, m).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Creates or updates a model, its route and its price (a changed price is a
/// new rule version). Used by the TOML seed and the admin API.
pub async fn put_model(
    tx: &mut Transaction<'static, Any>,
    m: &ModelSeed,
    now: i64,
) -> anyhow::Result<()> {
    let provider = sqlx::query("SELECT id FROM providers WHERE id = $1")
        .bind(&m.provider)
        .fetch_optional(&mut **tx)
        .await?;
    if provider.is_none() {
        anyhow::bail!("model {}: unknown provider {:?}", m.name, m.provider);
    }
    sqlx::query(
        "INSERT INTO models (name, provider_id, upstream_model, default_max_output_tokens) VALUES ($1, $2, $3, $4)
         ON CONFLICT (name) DO UPDATE SET provider_id = excluded.provider_id,
            upstream_model = excluded.upstream_model, default_max_output_tokens = excluded.default_max_output_tokens",
    )
    .bind(&m.name)
    .bind(&m.provider)
    .bind(&m.upstream_model)
    .bind(i64::from(m.default_max_output_tokens))
    .execute(&mut **tx)
    .await?;
    let input = price("input_per_m", &m.name, Some(&m.input_per_m))?;
    let wanted = PriceRule {
        id: String::new(),
        model: m.name.clone(),
        version: 0,
        input_per_m: input,
        cached_input_per_m: match &m.cached_input_per_m {
            Some(v) => price("cached_input_per_m", &m.name, Some(v))?,
            None => input,
        },
        output_per_m: price("output_per_m", &m.name, Some(&m.output_per_m))?,
        markup_bps: i64::from(m.markup_bps),
        min_charge: price("min_charge", &m.name, m.min_charge.as_deref())?,
    };
    upsert_price(tx, wanted, now).await
}

/// Replaces a model's fallback providers (from the TOML only: Envoy's
/// fallback routes are generated from it). Each must exist and sit on its own
/// Envoy cluster (the cluster tells the tries apart), none twice.
async fn put_fallbacks(tx: &mut Transaction<'static, Any>, m: &ModelSeed) -> anyhow::Result<()> {
    anyhow::ensure!(
        m.fallbacks.len() <= MAX_FALLBACKS,
        "model {}: at most {MAX_FALLBACKS} fallbacks",
        m.name
    );
    let mut clusters = Vec::new();
    for provider in std::iter::once(&m.provider).chain(m.fallbacks.iter().map(|f| &f.provider)) {
        let cluster: Option<String> =
            sqlx::query_scalar("SELECT cluster FROM providers WHERE id = $1")
                .bind(provider)
                .fetch_optional(&mut **tx)
                .await?;
        let Some(cluster) = cluster else {
            anyhow::bail!("model {}: unknown provider {provider}", m.name);
        };
        anyhow::ensure!(
            !clusters.contains(&cluster),
            "model {}: provider {provider} repeats cluster {cluster} in the fallback chain",
            m.name
        );
        clusters.push(cluster);
    }
    sqlx::query("DELETE FROM model_fallbacks WHERE model = $1")
        .bind(&m.name)
        .execute(&mut **tx)
        .await?;
    for (position, f) in (1i64..).zip(&m.fallbacks) {
        sqlx::query(
            "INSERT INTO model_fallbacks (model, position, provider_id, upstream_model) VALUES ($1, $2, $3, $4)",
        )
        .bind(&m.name)
        .bind(position)
        .bind(&f.provider)
        .bind(&f.upstream_model)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Longest fallback chain after the model's own provider (Envoy generates an
/// aggregate cluster per ordered sub-chain, so this stays small).
pub const MAX_FALLBACKS: usize = 3;

/// Replaces a paywall's limits with the configured ones (none when absent).
pub async fn seed_limits(
    tx: &mut Transaction<'static, Any>,
    paywall_id: &str,
    seed: Option<&LimitsSeed>,
) -> anyhow::Result<()> {
    let cap = |field: &str, v: &Option<String>| -> anyhow::Result<Option<i64>> {
        v.as_deref()
            .map(|s| {
                parse_decimal(s)
                    .map_err(|e| anyhow::anyhow!("paywall {paywall_id}: limits.{field}: {e}"))
            })
            .transpose()
    };
    let limits = match seed {
        None => Limits::default(),
        Some(l) => Limits {
            max_tokens_per_request: l.max_tokens_per_request.map(i64::from),
            requests_per_minute: l.requests_per_minute.map(i64::from),
            tokens_per_minute: l.tokens_per_minute.map(i64::from),
            max_open_holds: l.max_open_holds.map(i64::from),
            daily_spend_cap: cap("daily_spend_cap", &l.daily_spend_cap)?,
            monthly_spend_cap: cap("monthly_spend_cap", &l.monthly_spend_cap)?,
        },
    };
    limits::store(tx, paywall_id, &limits).await?;
    Ok(())
}

/// Inserts a new version of a model's price unless the current one is equal.
async fn upsert_price(
    tx: &mut Transaction<'static, Any>,
    wanted: PriceRule,
    now: i64,
) -> anyhow::Result<()> {
    let sql = format!("SELECT {PRICE_COLUMNS} FROM price_rules p WHERE p.model = $1 ORDER BY p.version DESC LIMIT 1");
    let current: Option<PriceRow> = sqlx::query_as(&sql)
        .bind(&wanted.model)
        .fetch_optional(&mut **tx)
        .await?;
    let current = current.map(PriceRule::from);
    let same = |c: &PriceRule| {
        c.input_per_m == wanted.input_per_m
            && c.cached_input_per_m == wanted.cached_input_per_m
            && c.output_per_m == wanted.output_per_m
            && c.markup_bps == wanted.markup_bps
            && c.min_charge == wanted.min_charge
    };
    if current.as_ref().is_some_and(same) {
        return Ok(());
    }
    let version = current.map(|c| c.version + 1).unwrap_or(1);
    sqlx::query(
        "INSERT INTO price_rules (id, model, version, input_per_m, cached_input_per_m, output_per_m, markup_bps, min_charge, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
    )
    .bind(PriceRule::rule_id(&wanted.model, version))
    .bind(&wanted.model)
    .bind(version)
    .bind(wanted.input_per_m)
    .bind(wanted.cached_input_per_m)
    .bind(wanted.output_per_m)
    .bind(wanted.markup_bps)
    .bind(wanted.min_charge)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
