//! Envoy resources for the configured providers: one cluster per provider
//! (TLS with SNI and the system's CA bundle for `https://` base URLs) and one
//! route that sends a request there when the filter names it in its route
//! header. `tollgate-ledger envoy-providers` prints them as JSON (which is
//! YAML too) for an operator's Envoy configuration; `make run` and the tests
//! render theirs from it, so adding a provider is a TOML entry, not code.

use serde_json::{json, Value};

use crate::config::Config;
use crate::providers::BaseUrl;

/// Where Debian, Ubuntu and Alpine keep the CA bundle Envoy verifies providers with.
pub const DEFAULT_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// `{"clusters": [...], "routes": [...]}` for `cfg`'s providers.
/// `route_header` is the filter's `route_header` setting.
pub fn resources(cfg: &Config, route_header: &str, ca_bundle: &str) -> anyhow::Result<Value> {
    let mut clusters = Vec::new();
    let mut routes = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for p in &cfg.providers {
        // Providers may share a cluster (two entries, one endpoint).
        if !seen.insert(p.cluster.clone()) {
            continue;
        }
        let resolved = p.resolve()?;
        let base = BaseUrl::parse(&resolved.base_url).map_err(anyhow::Error::msg)?;
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
    Ok(json!({"clusters": clusters, "routes": routes}))
}

fn cluster(name: &str, base: &BaseUrl, ca_bundle: &str) -> Value {
    let is_ip = base.host.parse::<std::net::IpAddr>().is_ok();
    let mut c = json!({
        "name": name,
        "type": if is_ip { "STATIC" } else { "LOGICAL_DNS" },
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": "5s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": base.host, "port_value": base.port}}
        }}]}]},
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
        let r = resources(&cfg, "x-tollgate-route", DEFAULT_CA_BUNDLE).unwrap();
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
