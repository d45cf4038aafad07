//! The catalog as authorize reads it, from memory: what a paywall key and a
//! model resolve to (the paywall, the model's route and price, the providers
//! with their keys opened, the paywall's limits). One small read per call
//! checks `catalog_version`, which every write to the catalog's tables bumps
//! (migration 10's triggers) whoever makes it — admin API, CLI, another
//! sidecar on the same database — so a change applies on the next request.
//! Entries also expire after `MAX_AGE`: a rotated key file is read again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::access::limits::{self, Limits};
use crate::access::secrets::sha256_hex;
use crate::catalog::upstream::{upstream_plan, UpstreamPlan};
use crate::catalog::{model_route, paywall_by_key, price_rule, ModelRoute, Paywall};
use crate::db::Db;
use crate::error::LedgerResult;
use crate::money::book::Tx;
use crate::pricing::PriceRule;
use crate::settings::Settings;

/// How long a resolution is served without looking again (key files).
const MAX_AGE: Duration = Duration::from_secs(10);
/// Distinct (key, model) pairs kept; past that the cache starts over (wrong
/// keys are remembered too, so guessing cannot grow it without bound).
const MAX_ENTRIES: usize = 10_000;

/// What a (paywall key, model) pair resolves to.
pub enum Lookup {
    UnknownKey,
    UnknownModel,
    /// No provider of the model is usable for this paywall now.
    NoProvider,
    Ready(Box<Resolved>),
}

pub struct Resolved {
    pub paywall: Paywall,
    pub route: ModelRoute,
    pub plan: UpstreamPlan,
    pub limits: Limits,
}

/// The paywall key's hash, the model, and which keyring opened the paywalls'
/// provider keys (one per process, except in tests that swap it).
type EntryKey = (String, String, usize);

#[derive(Default)]
pub struct CatalogCache {
    state: Mutex<State>,
    /// Price rules by id, as settle reads them. A rule is never changed once
    /// written (a new price is a new version with its own id), so an entry
    /// cannot go stale and needs no version check.
    rules: Mutex<HashMap<String, PriceRule>>,
}

#[derive(Default)]
struct State {
    version: i64,
    entries: HashMap<EntryKey, (Instant, Arc<Lookup>)>,
}

impl CatalogCache {
    fn get(&self, version: i64, key: &EntryKey) -> Option<Arc<Lookup>> {
        let mut state = self.state.lock().ok()?;
        if state.version != version {
            state.version = version;
            state.entries.clear();
            return None;
        }
        let (at, found) = state.entries.get(key)?;
        (at.elapsed() < MAX_AGE).then(|| found.clone())
    }

    fn put(&self, version: i64, key: EntryKey, lookup: Arc<Lookup>) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if state.version != version {
            return;
        }
        if state.entries.len() >= MAX_ENTRIES {
            state.entries.clear();
        }
        state.entries.insert(key, (Instant::now(), lookup));
    }
}

impl CatalogCache {
    /// The price rule `id`, read once per process.
    pub async fn price_rule(&self, tx: &mut Tx, id: &str) -> LedgerResult<PriceRule> {
        let known = self.rules.lock().ok().and_then(|r| r.get(id).cloned());
        if let Some(rule) = known {
            return Ok(rule);
        }
        let rule = price_rule(tx, id).await?;
        if let Ok(mut rules) = self.rules.lock() {
            if rules.len() >= MAX_ENTRIES {
                rules.clear();
            }
            rules.insert(id.to_string(), rule.clone());
        }
        Ok(rule)
    }
}

async fn catalog_version(db: &Db) -> LedgerResult<i64> {
    Ok(
        sqlx::query_scalar("SELECT version FROM catalog_version WHERE id = 1")
            .fetch_one(&db.reader)
            .await?,
    )
}

/// What `paywall_key` and `model` resolve to, from memory while the catalog
/// has not changed. The key is hashed first: neither the map nor the
/// database ever holds it.
pub async fn resolve(
    db: &Db,
    settings: &Settings,
    paywall_key: &str,
    model: &str,
) -> LedgerResult<Arc<Lookup>> {
    let version = catalog_version(db).await?;
    let keyring = Arc::as_ptr(&settings.keyring) as usize;
    let key = (sha256_hex(paywall_key), model.to_string(), keyring);
    if let Some(found) = db.catalog.get(version, &key) {
        return Ok(found);
    }
    let lookup = Arc::new(load(db, settings, paywall_key, model).await?);
    db.catalog.put(version, key, lookup.clone());
    Ok(lookup)
}

async fn load(
    db: &Db,
    settings: &Settings,
    paywall_key: &str,
    model: &str,
) -> LedgerResult<Lookup> {
    let Some(paywall) = paywall_by_key(db, paywall_key).await? else {
        return Ok(Lookup::UnknownKey);
    };
    let Some(route) = model_route(db, model).await? else {
        return Ok(Lookup::UnknownModel);
    };
    let Some(plan) = upstream_plan(db, settings, &paywall, &route, model).await? else {
        return Ok(Lookup::NoProvider);
    };
    let limits = limits::load(db, &paywall.id).await?;
    Ok(Lookup::Ready(Box::new(Resolved {
        paywall,
        route,
        plan,
        limits,
    })))
}
