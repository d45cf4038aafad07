//! Where an allowed request goes: the model's provider and its fallbacks, each
//! with the key this paywall uses for it (its own before the operator's).

use tollgate_protocol::{fallback_cluster, FallbackRoute, ProviderRoute};

use crate::catalog::provider_keys;
use crate::catalog::provider_kinds::{
    chat_path, choose_key, BaseUrl, BuiltInKeyRef, KeySource, ProviderKind,
};
use crate::catalog::{ModelRoute, Paywall};
use crate::db::Db;
use crate::error::LedgerResult;
use crate::settings::Settings;

/// Where an allowed request goes: the first usable provider of the model's
/// chain, and the usable ones after it (fallbacks).
pub struct UpstreamPlan {
    pub first: ProviderRoute,
    pub key_source: KeySource,
    pub fallbacks: Vec<(ProviderRoute, KeySource)>,
}

impl UpstreamPlan {
    pub fn fallback_route(&self) -> Option<FallbackRoute> {
        if self.fallbacks.is_empty() {
            return None;
        }
        let attempts: Vec<ProviderRoute> = std::iter::once(&self.first)
            .chain(self.fallbacks.iter().map(|(r, _)| r))
            .cloned()
            .collect();
        let clusters: Vec<&str> = attempts.iter().map(|a| a.cluster.as_str()).collect();
        Some(FallbackRoute {
            cluster: fallback_cluster(&clusters),
            attempts,
        })
    }
}

/// The model's provider and its fallbacks, in order, leaving out those this
/// paywall cannot use now (no key, broken URL). None when none is usable.
pub async fn upstream_plan(
    db: &Db,
    settings: &Settings,
    paywall: &Paywall,
    route: &ModelRoute,
    requested_model: &str,
) -> LedgerResult<Option<UpstreamPlan>> {
    let mut usable = Vec::new();
    for candidate in std::iter::once(route).chain(&route.fallbacks) {
        if let Some(found) =
            upstream_request(db, settings, paywall, candidate, requested_model).await?
        {
            usable.push(found);
        }
    }
    if usable.is_empty() {
        tracing::warn!(model = %route.model, paywall = %paywall.id, "no provider of the model is usable for this paywall");
    }
    let mut usable = usable.into_iter();
    Ok(usable.next().map(|(first, key_source)| UpstreamPlan {
        first,
        key_source,
        fallbacks: usable.collect(),
    }))
}

/// Where and how the filter sends an allowed request: the provider's cluster,
/// path, host and key header (the paywall's own key before the operator's),
/// and the model name the provider knows. None when the provider cannot be
/// used now (no usable key, a broken URL); the reason is logged, never the key.
async fn upstream_request(
    db: &Db,
    settings: &Settings,
    paywall: &Paywall,
    route: &ModelRoute,
    requested_model: &str,
) -> LedgerResult<Option<(ProviderRoute, KeySource)>> {
    // Kind and URL were checked when the configuration was loaded; a stored
    // row that no longer parses is logged, not guessed at.
    let kind = ProviderKind::parse(&route.kind);
    let base_url = route
        .base_url
        .clone()
        .or_else(|| kind.and_then(|k| k.default_base_url()).map(str::to_string));
    let (Some(kind), Some(Ok(base))) = (kind, base_url.as_deref().map(BaseUrl::parse)) else {
        tracing::error!(provider = %route.provider_id, kind = %route.kind, "provider kind or base_url unusable");
        return Ok(None);
    };
    let byok =
        provider_keys::lookup(db, &settings.keyring, &paywall.id, &route.provider_id).await?;
    let built_in = BuiltInKeyRef {
        env: &route.api_key_env,
        file: &route.api_key_file,
    };
    let (key, source) = match choose_key(kind, byok, built_in) {
        Ok(Some(chosen)) => chosen,
        Ok(None) => {
            tracing::debug!(provider = %route.provider_id, paywall = %paywall.id, "no key for this paywall");
            return Ok(None);
        }
        Err(e) => {
            tracing::error!(provider = %route.provider_id, paywall = %paywall.id, "provider key unavailable: {e}");
            return Ok(None);
        }
    };
    let model = route.upstream_model.as_deref().unwrap_or(requested_model);
    let upstream = ProviderRoute {
        provider: route.provider_id.clone(),
        cluster: route.cluster.clone(),
        auth_header: route.auth_header.clone(),
        auth_value: key
            .map(|k| format!("{}{k}", route.auth_scheme))
            .unwrap_or_default(),
        upstream_model: route.upstream_model.clone(),
        path: chat_path(kind, &base, route.api_version.as_deref(), model),
        host: Some(base.authority()),
    };
    Ok(Some((upstream, source)))
}
