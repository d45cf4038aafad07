//! Lookups on the hot path: the paywall behind a key, the route and current
//! price of a model (exact names before globs), the models a paywall can use.

use sqlx::{Any, Transaction};

use crate::access::secrets::{constant_time_eq, sha256_hex};
use crate::catalog::provider_kinds as providers;
use crate::db::Db;
use crate::error::{LedgerError, LedgerResult};
use crate::pricing::PriceRule;
use tollgate_protocol::PaywallMode;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Paywall {
    pub id: String,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub mode: PaywallMode,
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
    #[derive(sqlx::FromRow)]
    struct KeyedPaywall {
        #[sqlx(flatten)]
        paywall: Paywall,
        key_hash: String,
    }
    let hash = sha256_hex(key);
    let row: Option<KeyedPaywall> = sqlx::query_as(
        "SELECT p.id, p.name, p.mode, k.key_hash FROM paywall_keys k JOIN paywalls p ON p.id = k.paywall_id
         WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
    )
    .bind(&hash)
    .fetch_optional(&db.pool)
    .await?;
    Ok(row.and_then(|r| constant_time_eq(&r.key_hash, &hash).then_some(r.paywall)))
}

pub(crate) const PRICE_COLUMNS: &str =
    "p.id AS price_id, p.model AS price_model, p.version, p.input_per_m, p.cached_input_per_m, p.output_per_m, p.markup_bps, p.min_charge";

/// A price rule as [`PRICE_COLUMNS`] select it.
#[derive(sqlx::FromRow)]
pub(crate) struct PriceRow {
    price_id: String,
    price_model: String,
    version: i64,
    input_per_m: i64,
    cached_input_per_m: i64,
    output_per_m: i64,
    markup_bps: i64,
    min_charge: i64,
}

impl From<PriceRow> for PriceRule {
    fn from(r: PriceRow) -> PriceRule {
        PriceRule {
            id: r.price_id,
            model: r.price_model,
            version: r.version,
            input_per_m: r.input_per_m,
            cached_input_per_m: r.cached_input_per_m,
            output_per_m: r.output_per_m,
            markup_bps: r.markup_bps,
            min_charge: r.min_charge,
        }
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
        sqlx::query_scalar("SELECT name FROM models WHERE name LIKE '%*%' OR name LIKE '%?%'")
            .fetch_all(&db.pool)
            .await?;
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

/// A provider as [`PROVIDER_COLUMNS`] select it, with the provider id and the
/// name it knows the model by.
#[derive(sqlx::FromRow)]
struct ProviderRow {
    provider_id: String,
    upstream_model: Option<String>,
    cluster: String,
    auth_header: String,
    auth_scheme: String,
    api_key_env: String,
    api_key_file: Option<String>,
    kind: String,
    base_url: Option<String>,
    api_version: Option<String>,
}

/// A model's own route: its row, its provider and its current price.
#[derive(sqlx::FromRow)]
struct ModelRow {
    name: String,
    default_max_output_tokens: i64,
    #[sqlx(flatten)]
    provider: ProviderRow,
    #[sqlx(flatten)]
    price: PriceRow,
}

impl ProviderRow {
    fn route(self, model: &str, default_max_output_tokens: i64, price: PriceRule) -> ModelRoute {
        ModelRoute {
            model: model.to_string(),
            provider_id: self.provider_id,
            cluster: self.cluster,
            auth_header: self.auth_header,
            auth_scheme: self.auth_scheme,
            api_key_env: self.api_key_env,
            api_key_file: self.api_key_file.unwrap_or_default(),
            kind: self.kind,
            base_url: self.base_url,
            api_version: self.api_version,
            upstream_model: self.upstream_model,
            default_max_output_tokens,
            price,
            fallbacks: Vec::new(),
        }
    }
}

async fn model_route_exact(db: &Db, model: &str) -> LedgerResult<Option<ModelRoute>> {
    let sql = format!(
        "SELECT m.name, m.provider_id, m.upstream_model, m.default_max_output_tokens, {PROVIDER_COLUMNS}, {PRICE_COLUMNS}
         FROM models m
         JOIN providers pr ON pr.id = m.provider_id
         JOIN price_rules p ON p.model = m.name
         WHERE m.name = $1
         ORDER BY p.version DESC LIMIT 1"
    );
    let row: Option<ModelRow> = sqlx::query_as(&sql)
        .bind(model)
        .fetch_optional(&db.pool)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let max_output = row.default_max_output_tokens;
    let route = row.provider.route(&row.name, max_output, row.price.into());
    let sql = format!(
        "SELECT f.provider_id, f.upstream_model, {PROVIDER_COLUMNS}
         FROM model_fallbacks f JOIN providers pr ON pr.id = f.provider_id
         WHERE f.model = $1 ORDER BY f.position"
    );
    let fallbacks: Vec<ProviderRow> = sqlx::query_as(&sql).bind(model).fetch_all(&db.pool).await?;
    let fallbacks = fallbacks
        .into_iter()
        .map(|f| f.route(&route.model, max_output, route.price.clone()))
        .collect();
    Ok(Some(ModelRoute { fallbacks, ..route }))
}

pub async fn price_rule(tx: &mut Transaction<'static, Any>, id: &str) -> LedgerResult<PriceRule> {
    let sql = format!("SELECT {PRICE_COLUMNS} FROM price_rules p WHERE p.id = $1");
    let row: Option<PriceRow> = sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    row.map(PriceRule::from)
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
    #[derive(sqlx::FromRow)]
    struct Sold {
        name: String,
        provider_id: String,
        #[sqlx(flatten)]
        price: PriceRow,
    }
    let rows: Vec<Sold> = sqlx::query_as(&sql).fetch_all(&db.pool).await?;
    let fallbacks: Vec<(String, String)> =
        sqlx::query_as("SELECT model, provider_id FROM model_fallbacks ORDER BY model, position")
            .fetch_all(&db.pool)
            .await?;
    let mut out = Vec::new();
    for r in rows {
        // The first provider of the model's chain this paywall can use.
        let chain = std::iter::once(&r.provider_id).chain(
            fallbacks
                .iter()
                .filter(|(model, _)| *model == r.name)
                .map(|(_, provider)| provider),
        );
        if let Some(provider) = chain.into_iter().find(|p| usable.contains(p)) {
            out.push((r.name.clone(), provider.clone(), r.price.into()));
        }
    }
    Ok(out)
}

/// The providers a paywall's requests can be sent to now (its own key, the
/// operator's, or none needed).
async fn usable_providers(db: &Db, paywall_id: &str) -> LedgerResult<Vec<String>> {
    let own_keys = crate::catalog::provider_keys::providers_with_key(db, paywall_id).await?;
    let rows: Vec<(String, String, String, Option<String>)> =
        sqlx::query_as("SELECT id, kind, api_key_env, api_key_file FROM providers")
            .fetch_all(&db.pool)
            .await?;
    Ok(rows
        .into_iter()
        .filter(|(id, kind, env, file)| {
            let Some(kind) = providers::ProviderKind::parse(kind) else {
                return false;
            };
            let built_in = providers::BuiltInKeyRef {
                env,
                file: file.as_deref().unwrap_or(""),
            };
            providers::key_available(kind, own_keys.contains(id), built_in)
        })
        .map(|(id, ..)| id)
        .collect())
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
