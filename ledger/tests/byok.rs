//! Bring-your-own-key and the provider's cost, on both backends: a paywall's
//! own key is sealed at rest, used before the operator's, rotated and
//! deleted; a charge made with the operator's key books the provider's share
//! to `provider_cost:{provider}`, one made with the paywall's key does not.

mod common;

use std::sync::Arc;

use tollgate_ledger::catalog;
use tollgate_ledger::catalog::master_key::Keyring;
use tollgate_ledger::catalog::provider_keys;
use tollgate_ledger::config::{Config, ModelSeed, ProviderSeed};
use tollgate_ledger::db::Db;
use tollgate_ledger::money::book;
use tollgate_ledger::money::deposits;
use tollgate_ledger::money::holds;
use tollgate_ledger::settings::Settings;
use tollgate_protocol::{AuthorizeResponse, ProviderRoute, SettleOutcome};

use common::{ask, config, count, settings, settle_req, TEST_MASTER_KEY};

backend_tests!(
    paywall_key_is_sealed_used_rotated_and_deleted,
    byok_only_provider_needs_the_paywall_key,
    provider_cost_follows_whose_key_was_used,
    master_key_rotation_reseals_every_key,
);

const BYOK: &str = "sk-byok-canary-7f3a9c1e5b";
const ROTATED: &str = "sk-byok-rotated-2d8e4f6a1c";

fn model(name: &str, provider: &str) -> ModelSeed {
    ModelSeed {
        name: name.into(),
        provider: provider.into(),
        upstream_model: None,
        default_max_output_tokens: 100,
        input_per_m: "1.00".into(),
        cached_input_per_m: None,
        output_per_m: "4.00".into(),
        markup_bps: 2_500, // +25 %
        min_charge: None,
        fallbacks: vec![],
    }
}

/// The suite's config plus a provider only paywalls' own keys can use.
async fn seeded(db: &Db) -> Config {
    let mut cfg = config("2.00");
    cfg.providers.push(ProviderSeed {
        id: "byok_only".into(),
        cluster: "byok_only".into(),
        kind: "openai".into(),
        base_url: None,
        api_version: None,
        auth_header: None,
        auth_scheme: None,
        api_key_env: None,
        api_key_file: None,
    });
    cfg.models.push(model("bm", "byok_only"));
    cfg.models.push(model("mk", "mock"));
    catalog::seed(db, &cfg).await.unwrap();
    deposits::deposit(db, "app", "u", 100_000_000, "test")
        .await
        .unwrap();
    cfg
}

fn with_keyring(keyring: Keyring) -> Settings {
    Settings {
        keyring: Arc::new(keyring),
        ..settings()
    }
}

async fn allow(
    db: &Db,
    s: &Settings,
    model: &str,
    rid: &str,
) -> Result<(String, ProviderRoute), (u16, Option<String>)> {
    let mut req = ask("u", rid, 1000, Some(100));
    req.model = model.into();
    match holds::authorize(db, s, &req).await.unwrap() {
        AuthorizeResponse::Allow { hold_id, route, .. } => Ok((hold_id, route)),
        AuthorizeResponse::Reject { status, error, .. } => Err((status, error.code)),
        other => panic!("unexpected {other:?}"),
    }
}

async fn scalar_text(db: &Db, sql: &str) -> String {
    use sqlx::Row;
    sqlx::query(sql)
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .get::<String, _>(0)
}

/// Every text column of every table, concatenated: where a leaked key would be.
async fn whole_database_text(db: &Db) -> String {
    use sqlx::Row;
    let mut all = String::new();
    for table in [
        "provider_keys",
        "providers",
        "holds",
        "charges",
        "transfers",
        "events",
        "paywall_keys",
    ] {
        for row in sqlx::query(&format!("SELECT * FROM {table}"))
            .fetch_all(&db.pool)
            .await
            .unwrap()
        {
            for i in 0..row.len() {
                if let Ok(Some(v)) = row.try_get::<Option<String>, _>(i) {
                    all.push_str(&v);
                    all.push('\n');
                }
            }
        }
    }
    all
}

async fn paywall_key_is_sealed_used_rotated_and_deleted(db: &Db) {
    seeded(db).await;
    let s = settings();
    // Before: the operator's key.
    let (_, route) = allow(db, &s, "m", "r-builtin").await.unwrap();
    assert_eq!(route.auth_value, "Bearer sk-suite");

    let info = provider_keys::set(db, &s.keyring, "app", "mock", BYOK)
        .await
        .unwrap();
    assert_eq!((info.version, info.provider.as_str()), (1, "mock"));
    let shown = serde_json::to_string(&info).unwrap();
    assert!(!shown.contains(BYOK), "{shown}");

    let (hold, route) = allow(db, &s, "m", "r-byok").await.unwrap();
    assert_eq!(route.auth_value, format!("Bearer {BYOK}"));
    let source = scalar_text(
        db,
        &format!("SELECT key_source FROM holds WHERE id = '{hold}'"),
    )
    .await;
    assert_eq!(source, "byok");
    // Another paywall is not affected.
    let listed = provider_keys::list(db, "other").await.unwrap();
    assert!(listed.is_empty());

    // Rotation: a new version, a new fingerprint, the new key in use.
    let rotated = provider_keys::set(db, &s.keyring, "app", "mock", ROTATED)
        .await
        .unwrap();
    assert_eq!(rotated.version, 2);
    assert_ne!(rotated.fingerprint, info.fingerprint);
    let (_, route) = allow(db, &s, "m", "r-rotated").await.unwrap();
    assert_eq!(route.auth_value, format!("Bearer {ROTATED}"));

    let stored = whole_database_text(db).await;
    assert!(!stored.contains(BYOK) && !stored.contains(ROTATED));
    assert!(!stored.contains(&hex::encode(ROTATED)));

    // Without the master key the stored key cannot be opened: 503, and the
    // operator's key is not used in its place.
    let no_master = with_keyring(Keyring::default());
    let refused = allow(db, &no_master, "m", "r-nomaster").await.unwrap_err();
    assert_eq!(refused, (503, Some("provider_unavailable".into())));

    // Bad keys and unknown names change nothing.
    for bad in ["", "has space", "new\nline"] {
        assert!(provider_keys::set(db, &s.keyring, "app", "mock", bad)
            .await
            .is_err());
    }
    assert!(provider_keys::set(db, &s.keyring, "nope", "mock", BYOK)
        .await
        .is_err());
    assert!(provider_keys::set(db, &s.keyring, "app", "nope", BYOK)
        .await
        .is_err());
    assert_eq!(provider_keys::list(db, "app").await.unwrap()[0].version, 2);

    assert!(provider_keys::delete(db, "app", "mock").await.unwrap());
    assert!(!provider_keys::delete(db, "app", "mock").await.unwrap());
    let (_, route) = allow(db, &s, "m", "r-after").await.unwrap();
    assert_eq!(route.auth_value, "Bearer sk-suite");
}

async fn byok_only_provider_needs_the_paywall_key(db: &Db) {
    seeded(db).await;
    let s = settings();
    let listed = |list: Vec<(String, String, _)>| {
        list.into_iter()
            .map(|(name, _, _)| name)
            .collect::<Vec<String>>()
    };
    assert_eq!(
        allow(db, &s, "bm", "r-none").await.unwrap_err(),
        (503, Some("provider_unavailable".into()))
    );
    assert!(!listed(catalog::list_models(db, "app").await.unwrap()).contains(&"bm".into()));

    provider_keys::set(db, &s.keyring, "app", "byok_only", BYOK)
        .await
        .unwrap();
    let (_, route) = allow(db, &s, "bm", "r-own").await.unwrap();
    assert_eq!(route.auth_value, format!("Bearer {BYOK}"));
    assert!(listed(catalog::list_models(db, "app").await.unwrap()).contains(&"bm".into()));
    // The key is the paywall's: another paywall still cannot use the provider.
    assert!(!listed(catalog::list_models(db, "other").await.unwrap()).contains(&"bm".into()));
}

async fn provider_cost_follows_whose_key_was_used(db: &Db) {
    seeded(db).await;
    let s = settings();
    // Operator's key: 1000 prompt × 1.00 + 50 completion × 4.00 = 1200 micro-units
    // to the provider; the user pays 1200 × 1.25 = 1500.
    let (hold, _) = allow(db, &s, "mk", "r-op").await.unwrap();
    let done = holds::settle(
        db,
        &settle_req(&hold, "r-op", 1000, 50, SettleOutcome::Completed),
        holds::ExpiryPolicy::Void,
    )
    .await
    .unwrap();
    assert_eq!(done.amount_micros, 1500);
    let cost_account = book::provider_cost_account("mock");
    assert_eq!(book::balance(db, &cost_account).await.unwrap().posted, 1200);
    assert_eq!(
        book::balance(db, &book::revenue_account("app"))
            .await
            .unwrap()
            .posted,
        300,
        "the paywall keeps the markup"
    );

    // The paywall's own key: the provider bills its owner; all 1500 stays.
    provider_keys::set(db, &s.keyring, "app", "mock", BYOK)
        .await
        .unwrap();
    let (hold, _) = allow(db, &s, "mk", "r-own").await.unwrap();
    holds::settle(
        db,
        &settle_req(&hold, "r-own", 1000, 50, SettleOutcome::Completed),
        holds::ExpiryPolicy::Void,
    )
    .await
    .unwrap();
    assert_eq!(book::balance(db, &cost_account).await.unwrap().posted, 1200);
    assert_eq!(
        book::balance(db, &book::revenue_account("app"))
            .await
            .unwrap()
            .posted,
        1800
    );
    let by_source = count(
        db,
        "SELECT CAST(COUNT(*) AS BIGINT) FROM charges WHERE (key_source = 'built_in' AND provider_cost = 1200)
            OR (key_source = 'byok' AND provider_cost = 0)",
    )
    .await;
    assert_eq!(by_source, 2);
    let cost_transfers = count(
        db,
        "SELECT CAST(COUNT(*) AS BIGINT) FROM transfers WHERE kind = 'provider_cost' AND request_id = 'r-op'
            AND memo = 'mk@v1'",
    )
    .await;
    assert_eq!(cost_transfers, 1);
    // A replayed settlement moves nothing more.
    holds::settle(
        db,
        &settle_req(&hold, "r-own", 1000, 50, SettleOutcome::Completed),
        holds::ExpiryPolicy::Void,
    )
    .await
    .unwrap();
    assert_eq!(book::balance(db, &cost_account).await.unwrap().posted, 1200);
}

async fn master_key_rotation_reseals_every_key(db: &Db) {
    seeded(db).await;
    let old = settings();
    provider_keys::set(db, &old.keyring, "app", "mock", BYOK)
        .await
        .unwrap();
    provider_keys::set(db, &old.keyring, "other", "mock", ROTATED)
        .await
        .unwrap();
    const NEW: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    // A keyring that does not know the old key cannot re-seal: nothing changes.
    let stranger = Keyring::new(NEW, "").unwrap();
    assert!(provider_keys::rewrap(db, &stranger).await.is_err());
    let during = Keyring::new(NEW, TEST_MASTER_KEY).unwrap();
    assert_eq!(provider_keys::rewrap(db, &during).await.unwrap(), 2);
    assert_eq!(provider_keys::rewrap(db, &during).await.unwrap(), 0);
    let ids = provider_keys::list(db, "app").await.unwrap();
    assert_eq!(ids[0].master_key_id, during.current_id().unwrap());
    // Once re-sealed, the old key can go.
    let after = with_keyring(Keyring::new(NEW, "").unwrap());
    let (_, route) = allow(db, &after, "m", "r-new-master").await.unwrap();
    assert_eq!(route.auth_value, format!("Bearer {BYOK}"));
}
