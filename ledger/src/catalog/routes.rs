//! Lookups on the hot path: the paywall behind a key, the route and current
//! price of a model (exact names before globs), the models a paywall can use.

use sqlx::{Any, Row, Transaction};

use crate::access::secrets::{constant_time_eq, sha256_hex};
use crate::catalog::provider_kinds as providers;
use crate::db::Db;
use crate::error::{LedgerError, LedgerResult};
use crate::pricing::PriceRule;

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

pub(super) const PRICE_COLUMNS: &str =
    "p.id AS price_id, p.model AS price_model, p.version, p.input_per_m, p.cached_input_per_m, p.output_per_m, p.markup_bps, p.min_charge";

pub(super) fn price_from_row(r: &sqlx::any::AnyRow) -> PriceRule {
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
    let own_keys = crate::catalog::provider_keys::providers_with_key(db, paywall_id).await?;
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
