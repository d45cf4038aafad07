//! Provider kinds, on both backends: an allowed request comes back with the
//! path, host, key header and model name its provider needs (Azure's
//! deployment and api-version, OpenRouter's model id, a keyless Ollama).

mod common;

use tollgate_ledger::catalog;
use tollgate_ledger::config::{Config, ModelSeed, ProviderSeed};
use tollgate_ledger::db::Db;
use tollgate_ledger::money::deposits;
use tollgate_ledger::money::holds;
use tollgate_protocol::{AuthorizeResponse, ProviderRoute};

use common::{ask, config, settings};

backend_tests!(each_kind_gets_its_path_host_and_key_header);

fn provider(id: &str, kind: &str, base_url: Option<&str>, key_env: Option<&str>) -> ProviderSeed {
    ProviderSeed {
        id: id.into(),
        cluster: format!("{id}_cluster"),
        kind: kind.into(),
        base_url: base_url.map(str::to_string),
        api_version: None,
        auth_header: None,
        auth_scheme: None,
        api_key_env: key_env.map(str::to_string),
        api_key_file: None,
    }
}

fn model(name: &str, provider: &str, upstream: Option<&str>) -> ModelSeed {
    ModelSeed {
        name: name.into(),
        provider: provider.into(),
        upstream_model: upstream.map(str::to_string),
        default_max_output_tokens: 100,
        input_per_m: "1.00".into(),
        cached_input_per_m: None,
        output_per_m: "2.00".into(),
        markup_bps: 0,
        min_charge: None,
        fallbacks: vec![],
    }
}

async fn route_for(db: &Db, model: &str, rid: &str) -> ProviderRoute {
    let mut req = ask("u", rid, 10, Some(10));
    req.model = model.into();
    match holds::authorize(db, &settings(), &req).await.unwrap() {
        AuthorizeResponse::Allow { route, .. } => route,
        other => panic!("{model}: expected allow, got {other:?}"),
    }
}

async fn each_kind_gets_its_path_host_and_key_header(db: &Db) {
    std::env::set_var("ROUTES_AZURE_KEY", "az-secret");
    std::env::set_var("ROUTES_OPENROUTER_KEY", "or-secret");
    let mut cfg: Config = config("2.00");
    let mut azure = provider(
        "azure",
        "azure",
        Some("https://contoso.openai.azure.com"),
        Some("ROUTES_AZURE_KEY"),
    );
    azure.api_version = Some("2025-04-01-preview".into());
    cfg.providers.push(azure);
    cfg.providers.push(provider(
        "openrouter",
        "openrouter",
        None,
        Some("ROUTES_OPENROUTER_KEY"),
    ));
    cfg.providers.push(provider(
        "local",
        "ollama",
        Some("http://127.0.0.1:11434/v1"),
        None,
    ));
    cfg.models
        .push(model("gpt-4o", "azure", Some("gpt4o-prod")));
    cfg.models
        .push(model("or-gpt-4o", "openrouter", Some("openai/gpt-4o")));
    cfg.models.push(model("llama3", "local", None));
    // Its variable is never set (not removed either: both backends run at once).
    cfg.providers.push(provider(
        "unkeyed",
        "openai",
        None,
        Some("ROUTES_NEVER_SET_KEY"),
    ));
    cfg.models.push(model("unkeyed-model", "unkeyed", None));
    catalog::seed(db, &cfg).await.unwrap();
    deposits::deposit(db, "app", "u", 10_000_000, "test")
        .await
        .unwrap();

    let az = route_for(db, "gpt-4o", "r-az").await;
    assert_eq!(
        (az.auth_header.as_str(), az.auth_value.as_str()),
        ("api-key", "az-secret")
    );
    assert_eq!(
        az.path,
        "/openai/deployments/gpt4o-prod/chat/completions?api-version=2025-04-01-preview"
    );
    assert_eq!(az.host.as_deref(), Some("contoso.openai.azure.com"));
    assert_eq!(az.cluster, "azure_cluster");

    let or = route_for(db, "or-gpt-4o", "r-or").await;
    assert_eq!(or.auth_value, "Bearer or-secret");
    assert_eq!(or.path, "/api/v1/chat/completions");
    assert_eq!(or.host.as_deref(), Some("openrouter.ai"));
    assert_eq!(or.upstream_model.as_deref(), Some("openai/gpt-4o"));

    let local = route_for(db, "llama3", "r-local").await;
    assert_eq!(
        local.auth_value, "",
        "a keyless provider gets no key header"
    );
    assert_eq!(local.path, "/v1/chat/completions");
    assert_eq!(local.host.as_deref(), Some("127.0.0.1:11434"));
    assert_eq!(local.upstream_model, None);

    // A provider whose key is not set answers 503, never a keyless request.
    let mut req = ask("u", "r-nokey", 10, Some(10));
    req.model = "unkeyed-model".into();
    match holds::authorize(db, &settings(), &req).await.unwrap() {
        AuthorizeResponse::Reject { status, error, .. } => {
            assert_eq!(
                (status, error.code.as_deref()),
                (503, Some("provider_unavailable"))
            );
        }
        other => panic!("expected 503, got {other:?}"),
    }
    // …and `GET /v1/models` does not offer it.
    let listed: Vec<String> = catalog::list_models(db, "app")
        .await
        .unwrap()
        .into_iter()
        .map(|(name, _, _)| name)
        .collect();
    assert!(listed.contains(&"llama3".to_string()) && listed.contains(&"gpt-4o".to_string()));
    assert!(!listed.contains(&"unkeyed-model".to_string()), "{listed:?}");
}

#[test]
fn provider_entries_are_checked_at_load() {
    let base = "[server]\n[[providers]]\nid = \"p\"\ncluster = \"c\"\n";
    let bad = [
        ("kind = \"bedrock\"\napi_key_env = \"K\"\n", "unknown kind"),
        (
            "kind = \"azure\"\napi_key_env = \"K\"\n",
            "needs a base_url",
        ),
        (
            "api_key_env = \"K\"\napi_key_file = \"/run/k\"\n",
            "not both",
        ),
        (
            "kind = \"groq\"\napi_key_env = \"K\"\napi_version = \"x\"\n",
            "azure only",
        ),
        (
            "kind = \"vllm\"\nbase_url = \"ftp://h\"\n",
            "https:// or http://",
        ),
        (
            "api_key_env = \"K\"\nauth_header = \"X Key\"\n",
            "auth_header",
        ),
    ];
    for (entry, expected) in bad {
        let err = Config::parse(&format!("{base}{entry}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{entry}: {err}");
    }
    let ok = Config::parse(&format!(
        "{base}kind = \"vllm\"\nbase_url = \"http://10.0.0.5:8000/v1\"\n"
    ))
    .unwrap();
    let resolved = ok.providers[0].resolve().unwrap();
    assert_eq!(
        (resolved.auth_header.as_str(), resolved.api_key_env.as_str()),
        ("authorization", "")
    );
}
