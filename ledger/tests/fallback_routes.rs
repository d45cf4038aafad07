//! Fallback providers, on both backends: authorize answers with every usable
//! provider of a model's chain (in order, each with its own key and model
//! name) and the aggregate cluster that tries them; settle charges the
//! provider that answered, with that provider's key source.

mod common;

use tollgate_ledger::catalog;
use tollgate_ledger::catalog::provider_keys;
use tollgate_ledger::config::{Config, FallbackSeed, ModelSeed, ProviderSeed};
use tollgate_ledger::db::Db;
use tollgate_ledger::envoy_config::{resources, AttemptFilter, DEFAULT_CA_BUNDLE};
use tollgate_ledger::money::deposits;
use tollgate_ledger::money::holds;
use tollgate_protocol::{AuthorizeResponse, FallbackRoute, ProviderRoute, SettleOutcome};

use common::{ask, config, count, settings, settle_req};

backend_tests!(
    authorize_offers_the_usable_chain_in_order,
    settle_charges_the_provider_that_answered,
);

fn provider(id: &str, kind: &str, key_env: Option<&str>) -> ProviderSeed {
    ProviderSeed {
        id: id.into(),
        cluster: format!("{id}-cluster"),
        kind: kind.into(),
        base_url: None,
        api_version: None,
        auth_header: None,
        auth_scheme: None,
        api_key_env: key_env.map(str::to_string),
        api_key_file: None,
    }
}

fn chain_model(name: &str, primary: &str, fallbacks: &[(&str, &str)]) -> ModelSeed {
    ModelSeed {
        name: name.into(),
        provider: primary.into(),
        upstream_model: Some("gpt-4o".into()),
        default_max_output_tokens: 100,
        input_per_m: "1.00".into(),
        cached_input_per_m: None,
        output_per_m: "2.00".into(),
        markup_bps: 0,
        min_charge: None,
        fallbacks: fallbacks
            .iter()
            .map(|(p, m)| FallbackSeed {
                provider: p.to_string(),
                upstream_model: Some(m.to_string()),
            })
            .collect(),
    }
}

fn fallback_config() -> Config {
    std::env::set_var("FB_OPENAI_KEY", "sk-openai");
    std::env::set_var("FB_GROQ_KEY", "sk-groq");
    let mut cfg = config("2.00");
    cfg.providers
        .push(provider("openai", "openai", Some("FB_OPENAI_KEY")));
    cfg.providers
        .push(provider("groq", "groq", Some("FB_GROQ_KEY")));
    // Only paywalls with their own key can use it.
    cfg.providers
        .push(provider("openrouter", "openrouter", None));
    cfg.models.push(chain_model(
        "chain",
        "openai",
        &[("openrouter", "openai/gpt-4o"), ("groq", "llama-70b")],
    ));
    cfg
}

async fn allow(db: &Db, model: &str, rid: &str) -> (String, ProviderRoute, Option<FallbackRoute>) {
    let mut req = ask("u", rid, 100, Some(10));
    req.model = model.into();
    match holds::authorize(db, &settings(), &req).await.unwrap() {
        AuthorizeResponse::Allow {
            hold_id,
            route,
            fallback,
            ..
        } => (hold_id, route, fallback),
        other => panic!("expected allow, got {other:?}"),
    }
}

async fn authorize_offers_the_usable_chain_in_order(db: &Db) {
    catalog::seed(db, &fallback_config()).await.unwrap();
    deposits::deposit(db, "app", "u", 10_000_000, "test")
        .await
        .unwrap();

    // OpenRouter has no key for this paywall: the chain skips it.
    let (_, route, fallback) = allow(db, "chain", "r-1").await;
    assert_eq!(route.provider, "openai");
    let fallback = fallback.unwrap();
    assert_eq!(fallback.cluster, "fallback+openai-cluster+groq-cluster");
    let tries: Vec<(&str, &str, Option<&str>)> = fallback
        .attempts
        .iter()
        .map(|a| {
            (
                a.provider.as_str(),
                a.auth_value.as_str(),
                a.upstream_model.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        tries,
        vec![
            ("openai", "Bearer sk-openai", Some("gpt-4o")),
            ("groq", "Bearer sk-groq", Some("llama-70b")),
        ]
    );
    assert_eq!(fallback.attempts[1].path, "/openai/v1/chat/completions");

    // With its own OpenRouter key, the paywall gets the whole chain.
    provider_keys::set(db, &settings().keyring, "app", "openrouter", "sk-or-own")
        .await
        .unwrap();
    let (hold, _, fallback) = allow(db, "chain", "r-2").await;
    let fallback = fallback.unwrap();
    assert_eq!(
        fallback.cluster,
        "fallback+openai-cluster+openrouter-cluster+groq-cluster"
    );
    assert_eq!(fallback.attempts[1].auth_value, "Bearer sk-or-own");
    let own = count(
        db,
        &format!("SELECT CAST(COUNT(*) AS BIGINT) FROM holds WHERE id = '{hold}' AND key_source = 'built_in'"),
    )
    .await;
    assert_eq!(own, 1);
    let fallbacks: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT position, provider_id, key_source FROM hold_fallbacks WHERE hold_id = $1 ORDER BY position",
    )
    .bind(&hold)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        fallbacks,
        [
            (1, "openrouter".to_string(), "byok".to_string()),
            (2, "groq".to_string(), "built_in".to_string())
        ]
    );

    // `GET /v1/models` offers a model if any provider of its chain is usable.
    let listed = catalog::list_models(db, "app").await.unwrap();
    assert!(listed.iter().any(|(m, p, _)| m == "chain" && p == "openai"));

    // A model without fallbacks answers as before.
    let (_, route, fallback) = allow(db, "m", "r-3").await;
    assert_eq!((route.provider.as_str(), fallback), ("mock", None));
}

async fn settle_charges_the_provider_that_answered(db: &Db) {
    catalog::seed(db, &fallback_config()).await.unwrap();
    deposits::deposit(db, "app", "u", 10_000_000, "test")
        .await
        .unwrap();
    provider_keys::set(db, &settings().keyring, "app", "openrouter", "sk-or-own")
        .await
        .unwrap();
    let charged = |rid: &'static str| async move {
        sqlx::query_as::<_, (String, String, i64)>(
            "SELECT provider_id, key_source, provider_cost FROM charges WHERE request_id = $1",
        )
        .bind(rid)
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    let settle = |hold: String, rid: &'static str, provider: Option<&'static str>| async move {
        let mut req = settle_req(&hold, rid, 100, 10, SettleOutcome::Completed);
        req.provider = provider.map(str::to_string);
        holds::settle(db, &req, holds::ExpiryPolicy::Void)
            .await
            .unwrap();
    };

    // Answered by the BYOK fallback: charged under it, no provider cost.
    let (hold, _, _) = allow(db, "chain", "s-1").await;
    settle(hold, "s-1", Some("openrouter")).await;
    assert_eq!(
        charged("s-1").await,
        ("openrouter".into(), "byok".into(), 0)
    );

    // Answered by a built-in fallback: its cost is booked to it.
    let (hold, _, _) = allow(db, "chain", "s-2").await;
    settle(hold, "s-2", Some("groq")).await;
    let (provider, source, cost) = charged("s-2").await;
    assert_eq!((provider.as_str(), source.as_str()), ("groq", "built_in"));
    assert!(cost > 0);
    let groq_cost = count(
        db,
        "SELECT credits_posted FROM accounts WHERE id = 'provider_cost:groq'",
    )
    .await;
    assert_eq!(groq_cost, cost);

    // A provider the hold did not allow is not believed.
    let (hold, _, _) = allow(db, "chain", "s-3").await;
    settle(hold, "s-3", Some("mock")).await;
    assert_eq!(charged("s-3").await.0, "openai");
}

#[test]
fn the_admin_api_leaves_fallbacks_to_the_toml() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let t = common::open("sqlite").await.unwrap();
        catalog::seed(&t.db, &fallback_config()).await.unwrap();
        // Setting fallbacks through the API is refused …
        let with = chain_model("chain", "openai", &[("groq", "x")]);
        let err = tollgate_ledger::admin::put_model(&t.db, &with)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("TOML"), "{err}");
        // … and a price change through it keeps the TOML's chain.
        let mut repriced = chain_model("chain", "openai", &[]);
        repriced.output_per_m = "3.00".into();
        tollgate_ledger::admin::put_model(&t.db, &repriced)
            .await
            .unwrap();
        let route = catalog::model_route(&t.db, "chain").await.unwrap().unwrap();
        assert_eq!(route.fallbacks.len(), 2);
        assert_eq!(route.price.version, 2);
    });
}

#[test]
fn fallback_chains_are_checked_when_stored() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let t = common::open("sqlite").await.unwrap();
        let mut cfg = fallback_config();
        cfg.models
            .push(chain_model("bad", "openai", &[("nowhere", "x")]));
        let err = catalog::seed(&t.db, &cfg).await.unwrap_err().to_string();
        assert!(err.contains("unknown provider nowhere"), "{err}");

        let mut cfg = fallback_config();
        cfg.models
            .push(chain_model("twice", "openai", &[("openai", "x")]));
        let err = catalog::seed(&t.db, &cfg).await.unwrap_err().to_string();
        assert!(err.contains("repeats cluster"), "{err}");

        let mut cfg = fallback_config();
        cfg.providers
            .push(provider("p4", "openai", Some("FB_OPENAI_KEY")));
        cfg.providers
            .push(provider("p5", "openai", Some("FB_OPENAI_KEY")));
        cfg.models.push(chain_model(
            "long",
            "openai",
            &[("groq", "a"), ("openrouter", "b"), ("p4", "c"), ("p5", "d")],
        ));
        let err = catalog::seed(&t.db, &cfg).await.unwrap_err().to_string();
        assert!(err.contains("at most"), "{err}");
    });
}

#[test]
fn envoy_gets_an_aggregate_cluster_and_a_retrying_route_per_sub_chain() {
    let cfg = fallback_config();
    assert!(resources(&cfg, "x-tollgate-route", DEFAULT_CA_BUNDLE, None).is_err());
    let filter = AttemptFilter {
        wasm_path: "/opt/tollgate.wasm".into(),
        vm_id: "tollgate".into(),
    };
    let r = resources(&cfg, "x-tollgate-route", DEFAULT_CA_BUNDLE, Some(&filter)).unwrap();
    let names: Vec<&str> = r["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .filter(|n| n.starts_with("fallback+"))
        .collect();
    // Every ordered sub-chain of openai → openrouter → groq with two or more.
    let mut expected = vec![
        "fallback+openai-cluster+openrouter-cluster",
        "fallback+openai-cluster+groq-cluster",
        "fallback+openrouter-cluster+groq-cluster",
        "fallback+openai-cluster+openrouter-cluster+groq-cluster",
    ];
    let mut got = names.clone();
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
    let routes = r["routes"].as_array().unwrap();
    let full = routes
        .iter()
        .find(|rt| {
            rt["route"]["cluster"] == "fallback+openai-cluster+openrouter-cluster+groq-cluster"
        })
        .unwrap();
    let retry = &full["route"]["retry_policy"];
    assert_eq!(retry["num_retries"], 2);
    assert_eq!(retry["retriable_status_codes"][0], 429);
    assert!(retry["retry_on"]
        .as_str()
        .unwrap()
        .contains("connect-failure"));
    let openai = r["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "openai-cluster")
        .unwrap();
    assert_eq!(
        openai["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["metadata"]["filter_metadata"]
            ["tollgate"]["cluster"],
        "openai-cluster"
    );
}
