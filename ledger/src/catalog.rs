//! Paywalls, providers, models and price rules: what can be sold, to whom,
//! through which provider. Seeded from the TOML configuration at start.

use sqlx::{Any, Row, Transaction};

use crate::config::{Config, LimitsSeed, ModelSeed};
use crate::db::Db;
use crate::error::{LedgerError, LedgerResult};
use crate::keys::{constant_time_eq, now_ms, sha256_hex};
use crate::limits::{self, Limits};
use crate::paywall_keys;
use crate::pricing::PriceRule;
use crate::providers;
use tollgate_protocol::parse_decimal;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paywall {
    pub id: String,
    pub name: String,
    pub mode: String,
}

/// A model as a paywall can use it: where it goes and what it costs now.
#[derive(Debug, Clone)]
pub struct ModelRoute {
    pub model: String,
    pub provider_id: String,
    pub cluster: String,
    pub auth_header: String,
    pub auth_scheme: String,
    /// Both empty: the operator has no key for the provider.
    pub api_key_env: String,
    pub api_key_file: String,
    pub kind: String,
    pub base_url: Option<String>,
    pub api_version: Option<String>,
    pub upstream_model: Option<String>,
    pub default_max_output_tokens: i64,
    pub price: PriceRule,
    /// Providers to try after this one, in order (same model and price; the
    /// provider fields and `upstream_model` are the fallback's).
    pub fallbacks: Vec<ModelRoute>,
}

/// Looks a paywall up by its key. The key is hashed first, so the database
/// never sees it, and the stored hash is compared in constant time.
pub async fn paywall_by_key(db: &Db, key: &str) -> LedgerResult<Option<Paywall>> {
    let hash = sha256_hex(key);
    let row = sqlx::query(
        "SELECT p.id, p.name, p.mode, k.key_hash FROM paywall_keys k JOIN paywalls p ON p.id = k.paywall_id
         WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
    )
    .bind(&hash)
        .fetch_optional(&db.pool)
        .await?;
    Ok(row.and_then(|r| {
        let stored: String = r.get("key_hash");
        constant_time_eq(&stored, &hash).then(|| Paywall {
            id: r.get("id"),
            name: r.get("name"),
            mode: r.get("mode"),
        })
    }))
}

const PRICE_COLUMNS: &str =
    "p.id AS price_id, p.model AS price_model, p.version, p.input_per_m, p.cached_input_per_m, p.output_per_m, p.markup_bps, p.min_charge";

fn price_from_row(r: &sqlx::any::AnyRow) -> PriceRule {
    PriceRule {
        id: r.get("price_id"),
        model: r.get("price_model"),
        version: r.get("version"),
        input_per_m: r.get("input_per_m"),
        cached_input_per_m: r.get("cached_input_per_m"),
        output_per_m: r.get("output_per_m"),
        markup_bps: r.get("markup_bps"),
        min_charge: r.get("min_charge"),
    }
}

/// The route and current price of a model, or None if the model is not sold.
/// An exact entry wins; otherwise the most specific glob entry (`gpt-4o*`,
/// `*-mini`, `?`), i.e. the one with the most literal characters.
pub async fn model_route(db: &Db, model: &str) -> LedgerResult<Option<ModelRoute>> {
    if let Some(route) = model_route_exact(db, model).await? {
        return Ok(Some(route));
    }
    let patterns: Vec<String> =
        sqlx::query("SELECT name FROM models WHERE name LIKE '%*%' OR name LIKE '%?%'")
            .fetch_all(&db.pool)
            .await?
            .iter()
            .map(|r| r.get("name"))
            .collect();
    let best = patterns
        .into_iter()
        .filter(|p| glob_matches(p, model))
        .max_by_key(|p| {
            (
                p.chars().filter(|c| *c != '*' && *c != '?').count(),
                std::cmp::Reverse(p.clone()),
            )
        });
    let Some(pattern) = best else { return Ok(None) };
    // The charge names the model asked for; the price rule names the pattern.
    Ok(model_route_exact(db, &pattern).await?.map(|r| ModelRoute {
        model: model.to_string(),
        ..r
    }))
}

/// `*` matches any run of characters, `?` any one character.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some(pi);
                mark = ti;
                pi += 1;
            }
            Some(c) if *c == '?' || Some(c) == t.get(ti) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some(s) => {
                    pi = s + 1;
                    mark += 1;
                    ti = mark;
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

const PROVIDER_COLUMNS: &str =
    "pr.cluster, pr.auth_header, pr.auth_scheme, pr.api_key_env, pr.api_key_file, pr.kind,
    pr.base_url, pr.api_version";

async fn model_route_exact(db: &Db, model: &str) -> LedgerResult<Option<ModelRoute>> {
    let sql = format!(
        "SELECT m.name, m.provider_id, m.upstream_model, m.default_max_output_tokens, {PROVIDER_COLUMNS}, {PRICE_COLUMNS}
         FROM models m
         JOIN providers pr ON pr.id = m.provider_id
         JOIN price_rules p ON p.model = m.name
         WHERE m.name = $1
         ORDER BY p.version DESC LIMIT 1"
    );
    let Some(row) = sqlx::query(&sql)
        .bind(model)
        .fetch_optional(&db.pool)
        .await?
    else {
        return Ok(None);
    };
    let route = route_from_row(&row, price_from_row(&row));
    let sql = format!(
        "SELECT f.provider_id, f.upstream_model, {PROVIDER_COLUMNS}
         FROM model_fallbacks f JOIN providers pr ON pr.id = f.provider_id
         WHERE f.model = $1 ORDER BY f.position"
    );
    let fallbacks = sqlx::query(&sql)
        .bind(model)
        .fetch_all(&db.pool)
        .await?
        .iter()
        .map(|r| ModelRoute {
            model: route.model.clone(),
            default_max_output_tokens: route.default_max_output_tokens,
            ..route_from_row(r, route.price.clone())
        })
        .collect();
    Ok(Some(ModelRoute { fallbacks, ..route }))
}

/// The provider part of a route from a row with `provider_id`, `upstream_model`
/// and [`PROVIDER_COLUMNS`]; model fields are read when the row has them.
fn route_from_row(r: &sqlx::any::AnyRow, price: PriceRule) -> ModelRoute {
    ModelRoute {
        model: r.try_get("name").unwrap_or_default(),
        provider_id: r.get("provider_id"),
        cluster: r.get("cluster"),
        auth_header: r.get("auth_header"),
        auth_scheme: r.get("auth_scheme"),
        api_key_env: r.get("api_key_env"),
        api_key_file: r
            .try_get::<Option<String>, _>("api_key_file")
            .ok()
            .flatten()
            .unwrap_or_default(),
        kind: r.get("kind"),
        base_url: r.get("base_url"),
        api_version: r.get("api_version"),
        upstream_model: r.get("upstream_model"),
        default_max_output_tokens: r.try_get("default_max_output_tokens").unwrap_or(0),
        price,
        fallbacks: Vec::new(),
    }
}

pub async fn price_rule(tx: &mut Transaction<'static, Any>, id: &str) -> LedgerResult<PriceRule> {
    let sql = format!("SELECT {PRICE_COLUMNS} FROM price_rules p WHERE p.id = $1");
    let row = sqlx::query(&sql).bind(id).fetch_optional(&mut **tx).await?;
    row.map(|r| price_from_row(&r))
        .ok_or_else(|| LedgerError::Internal(format!("price rule {id} missing")))
}

/// Every sold model with its current price, for `GET /v1/models`.
/// The models requests can use now, with their current prices: a model whose
/// provider has no key available is left out (it would answer 503).
pub async fn list_models(
    db: &Db,
    paywall_id: &str,
) -> LedgerResult<Vec<(String, String, PriceRule)>> {
    let usable = usable_providers(db, paywall_id).await?;
    let sql = format!(
        "SELECT m.name, m.provider_id, {PRICE_COLUMNS}
         FROM models m JOIN price_rules p ON p.model = m.name
         WHERE p.version = (SELECT MAX(version) FROM price_rules q WHERE q.model = m.name)
         ORDER BY m.name"
    );
    let rows = sqlx::query(&sql).fetch_all(&db.pool).await?;
    let fallbacks =
        sqlx::query("SELECT model, provider_id FROM model_fallbacks ORDER BY model, position")
            .fetch_all(&db.pool)
            .await?;
    let mut out = Vec::new();
    for r in &rows {
        let name: String = r.get("name");
        // The first provider of the model's chain this paywall can use.
        let chain = std::iter::once(r.get::<String, _>("provider_id")).chain(
            fallbacks
                .iter()
                .filter(|f| f.get::<String, _>("model") == name)
                .map(|f| f.get::<String, _>("provider_id")),
        );
        if let Some(provider) = chain.into_iter().find(|p| usable.contains(p)) {
            out.push((name, provider, price_from_row(r)));
        }
    }
    Ok(out)
}

/// The providers a paywall's requests can be sent to now (its own key, the
/// operator's, or none needed).
async fn usable_providers(db: &Db, paywall_id: &str) -> LedgerResult<Vec<String>> {
    let own_keys = crate::provider_keys::providers_with_key(db, paywall_id).await?;
    let rows = sqlx::query("SELECT id, kind, api_key_env, api_key_file FROM providers")
        .fetch_all(&db.pool)
        .await?;
    Ok(rows
        .iter()
        .filter(|r| {
            let id: String = r.get("id");
            let file: Option<String> = r.try_get("api_key_file").ok().flatten();
            let Some(kind) = providers::ProviderKind::parse(&r.get::<String, _>("kind")) else {
                return false;
            };
            let built_in = providers::BuiltInKeyRef {
                env: &r.get::<String, _>("api_key_env"),
                file: file.as_deref().unwrap_or(""),
            };
            providers::key_available(kind, own_keys.contains(&id), built_in)
        })
        .map(|r| r.get("id"))
        .collect())
}

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
        crate::provider_registry::put_provider(&mut tx, p).await?;
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
        let row = sqlx::query("SELECT cluster FROM providers WHERE id = $1")
            .bind(provider)
            .fetch_optional(&mut **tx)
            .await?;
        let Some(row) = row else {
            anyhow::bail!("model {}: unknown provider {provider}", m.name);
        };
        let cluster: String = row.get("cluster");
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
    let current = sqlx::query(&sql)
        .bind(&wanted.model)
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| price_from_row(&r));
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

#[cfg(test)]
mod tests {
    use super::glob_matches;

    #[test]
    fn globs() {
        assert!(glob_matches("gpt-4o*", "gpt-4o-mini"));
        assert!(glob_matches("gpt-4o*", "gpt-4o"));
        assert!(glob_matches("*-mini", "gpt-4o-mini"));
        assert!(glob_matches("gpt-?o", "gpt-4o"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("a*b*c", "aXXbYYc"));
        assert!(!glob_matches("gpt-4o*", "gpt-4"));
        assert!(!glob_matches("gpt-?o", "gpt-40o"));
        assert!(!glob_matches("a*b", "acbd"));
    }
}
