//! Envoy resources for the configured providers: one cluster per provider
//! (TLS with SNI and the system's CA bundle for `https://` base URLs) and one
//! route that sends a request there when the filter names it in its route
//! header. `tollgate-ledger envoy-providers` prints them as JSON (which is
//! YAML too) for an operator's Envoy configuration; `make run` and the tests
//! render theirs from it, so adding a provider is a TOML entry, not code.
//!
//! A model with fallbacks also gets an aggregate cluster per ordered sub-chain
//! of its providers (the ledger leaves out those a paywall cannot use, so any
//! sub-chain may be asked for), a route with Envoy's retry policy (429, 5xx,
//! reset, connect failure; each retry on the next provider), and on that
//! cluster the filter's provider-attempt role as an upstream filter, which
//! rewrites each try for its provider. Endpoints carry their cluster's name in
//! metadata so that role can tell which provider a try goes to.

use serde_json::{json, Value};
use tollgate_protocol::fallback_cluster;

use crate::catalog::provider_kinds::BaseUrl;
use crate::config::Config;

/// Where Debian, Ubuntu and Alpine keep the CA bundle Envoy verifies providers with.
pub const DEFAULT_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Endpoint metadata namespace and key naming a provider cluster (read by the
/// filter's provider-attempt role).
pub const METADATA_NAMESPACE: &str = "tollgate";

/// How the generated config loads the filter for fallback routes: the same
/// `.wasm` and `vm_id` as the listener's filter, so both share one VM.
#[derive(Debug, Clone)]
pub struct AttemptFilter {
    pub wasm_path: String,
    pub vm_id: String,
}

/// `{"clusters": [...], "routes": [...]}` for `cfg`'s providers.
/// `route_header` is the filter's `route_header` setting; `attempt_filter` is
/// required when a model has fallbacks.
pub fn resources(
    cfg: &Config,
    route_header: &str,
    ca_bundle: &str,
    attempt_filter: Option<&AttemptFilter>,
) -> anyhow::Result<Value> {
    let mut clusters = Vec::new();
    let mut routes = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for p in &cfg.providers {
        // Providers may share a cluster (two entries, one endpoint).
        if !seen.insert(p.cluster.clone()) {
            continue;
        }
        let resolved = p.resolve()?;
        let base = BaseUrl::parse(&resolved.base_url)?;
        clusters.push(cluster(&p.cluster, &base, ca_bundle));
        routes.push(json!({
            "match": {"prefix": "/", "headers": [
                {"name": route_header, "string_match": {"exact": p.cluster}}
            ]},
            // Long: a streamed completion can run for minutes.
            "route": {"cluster": p.cluster, "timeout": "300s"},
            "request_headers_to_remove": [route_header],
        }));
    }
    for chain in fallback_chains(cfg)? {
        let Some(filter) = attempt_filter else {
            anyhow::bail!("models with fallbacks need the filter's .wasm path (--wasm)");
        };
        let names: Vec<&str> = chain.iter().map(String::as_str).collect();
        let name = fallback_cluster(&names);
        clusters.push(aggregate_cluster(&name, &names, filter));
        routes.push(json!({
            "match": {"prefix": "/", "headers": [
                {"name": route_header, "string_match": {"exact": name}}
            ]},
            "route": {"cluster": name, "timeout": "300s", "retry_policy": retry_next_provider(names.len())},
            "request_headers_to_remove": [route_header],
        }));
    }
    Ok(json!({"clusters": clusters, "routes": routes}))
}

/// Every ordered sub-chain (two providers or more) of every model's chain of
/// clusters, each once.
fn fallback_chains(cfg: &Config) -> anyhow::Result<Vec<Vec<String>>> {
    let cluster_of = |provider: &str| {
        cfg.providers
            .iter()
            .find(|p| p.id == provider)
            .map(|p| p.cluster.clone())
            .ok_or_else(|| anyhow::anyhow!("unknown provider {provider}"))
    };
    let mut chains = std::collections::BTreeSet::new();
    for m in cfg.models.iter().filter(|m| !m.fallbacks.is_empty()) {
        let full = std::iter::once(&m.provider)
            .chain(m.fallbacks.iter().map(|f| &f.provider))
            .map(|p| cluster_of(p))
            .collect::<anyhow::Result<Vec<String>>>()?;
        for mask in 1u32..(1 << full.len()) {
            let sub: Vec<String> = (0..full.len())
                .filter(|i| mask & (1 << i) != 0)
                .filter_map(|i| full.get(i).cloned())
                .collect();
            if sub.len() >= 2 {
                chains.insert(sub);
            }
        }
    }
    Ok(chains.into_iter().collect())
}

/// Tries the next provider (the next priority of the aggregate cluster) when
/// one answers 429 or 5xx, resets or refuses the connection. Envoy retries
/// only before the response starts, so a client never sees two answers.
fn retry_next_provider(providers: usize) -> Value {
    json!({
        "retry_on": "5xx,reset,connect-failure,retriable-status-codes",
        "retriable_status_codes": [429],
        "num_retries": providers.saturating_sub(1),
        "retry_back_off": {"base_interval": "0.01s", "max_interval": "0.05s"},
        "retry_priority": {
            "name": "envoy.retry_priorities.previous_priorities",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
                "update_frequency": 1
            }
        }
    })
}

fn aggregate_cluster(name: &str, members: &[&str], filter: &AttemptFilter) -> Value {
    json!({
        "name": name,
        "connect_timeout": "5s",
        "lb_policy": "CLUSTER_PROVIDED",
        "cluster_type": {
            "name": "envoy.clusters.aggregate",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig",
                "clusters": members
            }
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http_protocol_options": {}},
                "http_filters": [
                    {
                        "name": "envoy.filters.http.wasm",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                            "config": {
                                "name": "tollgate_attempt",
                                "root_id": "tollgate_attempt",
                                "allow_on_headers_stop_iteration": true,
                                "vm_config": {
                                    "vm_id": filter.vm_id,
                                    "runtime": "envoy.wasm.runtime.v8",
                                    "code": {"local": {"filename": filter.wasm_path}}
                                },
                                "configuration": {
                                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                                    "value": "{\"role\": \"provider_attempt\"}"
                                }
                            }
                        }
                    },
                    {
                        "name": "envoy.filters.http.upstream_codec",
                        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"}
                    }
                ]
            }
        }
    })
}

fn cluster(name: &str, base: &BaseUrl, ca_bundle: &str) -> Value {
    let is_ip = base.host.parse::<std::net::IpAddr>().is_ok();
    let mut c = json!({
        "name": name,
        "type": if is_ip { "STATIC" } else { "LOGICAL_DNS" },
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": "5s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{
            "endpoint": {"address": {"socket_address": {"address": base.host, "port_value": base.port}}},
            "metadata": {"filter_metadata": {METADATA_NAMESPACE: {"cluster": name}}}
        }]}]},
    });
    if base.tls {
        c["transport_socket"] = json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": base.host,
                "common_tls_context": {"validation_context": {
                    "trusted_ca": {"filename": ca_bundle},
                    "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": base.host}}]
                }}
            }
        });
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_providers_get_tls_with_sni_and_local_ones_plain_tcp() {
        std::env::set_var("EP_KEY", "k");
        let cfg = Config::parse(
            r#"
            [server]
            [[providers]]
            id = "openai"
            kind = "openai"
            cluster = "openai"
            api_key_env = "EP_KEY"
            [[providers]]
            id = "local"
            kind = "ollama"
            cluster = "local"
            base_url = "http://127.0.0.1:11434/v1"
            [[providers]]
            id = "openai-2"
            kind = "openai"
            cluster = "openai"
            api_key_env = "EP_KEY"
            "#,
        )
        .unwrap();
        let r = resources(&cfg, "x-tollgate-route", DEFAULT_CA_BUNDLE, None).unwrap();
        let clusters = r["clusters"].as_array().unwrap();
        assert_eq!(clusters.len(), 2, "a shared cluster is emitted once");
        let openai = &clusters[0];
        assert_eq!(openai["type"], "LOGICAL_DNS");
        assert_eq!(
            openai["transport_socket"]["typed_config"]["sni"],
            "api.openai.com"
        );
        let address =
            &openai["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"];
        assert_eq!(address["socket_address"]["port_value"], 443);
        let local = &clusters[1];
        assert_eq!(local["type"], "STATIC");
        assert!(local.get("transport_socket").is_none());
        let routes = r["routes"].as_array().unwrap();
        assert_eq!(
            routes[1]["match"]["headers"][0]["string_match"]["exact"],
            "local"
        );
        assert_eq!(routes[1]["route"]["cluster"], "local");
    }
}
