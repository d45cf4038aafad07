//! The admin API and key management on both backends: its own token, keys
//! shown once and stored hashed, rotation, limits, models and price versions.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use sqlx::Row;
use tollgate_ledger::access::secrets::sha256_hex;
use tollgate_ledger::catalog;
use tollgate_ledger::db::Db;
use tollgate_ledger::http::{router, AppState};
use tower::ServiceExt;

use common::{config, settings, KEY};

const ADMIN: &str = "admin-token-for-tests-0123456789";

async fn call(
    db: &Db,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    call_with(db, Some(sha256_hex(ADMIN)), method, uri, token, body).await
}

async fn call_with(
    db: &Db,
    admin_hash: Option<String>,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let state = AppState {
        db: db.clone(),
        settings: settings(),
        internal_secret: "x".repeat(20),
        admin_token_hash: admin_hash,
    };
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = body
        .map(|b| Body::from(b.to_string()))
        .unwrap_or_else(Body::empty);
    let resp = router(Arc::new(state))
        .oneshot(req.body(body).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

backend_tests!(
    admin_needs_its_own_token,
    paywalls_and_keys_are_created_shown_once_and_rotated,
    limits_models_and_prices_are_managed,
    a_changed_config_key_replaces_the_old_one,
    provider_keys_are_set_listed_rotated_and_deleted,
    providers_are_listed_and_changed,
);

async fn admin_needs_its_own_token(db: &Db) {
    assert_eq!(
        call(db, "GET", "/admin/v1/paywalls", None, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(db, "GET", "/admin/v1/paywalls", Some(KEY), None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let (status, list) = call(db, "GET", "/admin/v1/paywalls", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(list["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["id"] == "app"));
    // Without a configured token the admin API does not exist.
    let (status, _) = call_with(db, None, "GET", "/admin/v1/paywalls", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn paywalls_and_keys_are_created_shown_once_and_rotated(db: &Db) {
    let (status, created) = call(
        db,
        "POST",
        "/admin/v1/paywalls",
        Some(ADMIN),
        Some(json!({"id": "newapp", "name": "New"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let first = created["key"]["key"].as_str().unwrap().to_string();
    let first_id = created["key"]["id"].as_str().unwrap().to_string();
    assert_eq!(created["mode"], "isolated");
    assert_eq!(
        call(db, "GET", "/v1/models", Some(&first), None).await.0,
        StatusCode::OK
    );
    // Stored hashed: the plaintext is nowhere in the database.
    let stored: Vec<String> =
        sqlx::query("SELECT key_hash FROM paywall_keys WHERE paywall_id = 'newapp'")
            .fetch_all(&db.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get("key_hash"))
            .collect();
    assert_eq!(stored, [sha256_hex(&first)]);
    let (_, listed) = call(
        db,
        "GET",
        "/admin/v1/paywalls/newapp/keys",
        Some(ADMIN),
        None,
    )
    .await;
    assert!(
        !listed.to_string().contains(&first),
        "a listing revealed a key"
    );
    assert_eq!(
        call(
            db,
            "POST",
            "/admin/v1/paywalls",
            Some(ADMIN),
            Some(json!({"id": "newapp"}))
        )
        .await
        .0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        call(
            db,
            "POST",
            "/admin/v1/paywalls",
            Some(ADMIN),
            Some(json!({"id": "Bad Id"}))
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );

    // Rotation: a second key, then the first revoked.
    let (status, second) = call(
        db,
        "POST",
        "/admin/v1/paywalls/newapp/keys",
        Some(ADMIN),
        Some(json!({"label": "rotated"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let second = second["key"].as_str().unwrap().to_string();
    let uri = format!("/admin/v1/paywalls/newapp/keys/{first_id}");
    assert_eq!(
        call(db, "DELETE", &uri, Some(ADMIN), None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(db, "DELETE", &uri, Some(ADMIN), None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(db, "GET", "/v1/models", Some(&first), None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(db, "GET", "/v1/models", Some(&second), None).await.0,
        StatusCode::OK
    );

    let (status, p) = call(
        db,
        "PATCH",
        "/admin/v1/paywalls/newapp",
        Some(ADMIN),
        Some(json!({"mode": "shared"})),
    )
    .await;
    assert_eq!(
        (status, p["mode"].as_str()),
        (StatusCode::OK, Some("shared"))
    );
    assert_eq!(
        call(
            db,
            "PATCH",
            "/admin/v1/paywalls/newapp",
            Some(ADMIN),
            Some(json!({"mode": "weird"}))
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        call(
            db,
            "PATCH",
            "/admin/v1/paywalls/nope",
            Some(ADMIN),
            Some(json!({"name": "x"}))
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
}

async fn limits_models_and_prices_are_managed(db: &Db) {
    let body = json!({"requests_per_minute": 5, "daily_spend_cap": "2.50"});
    let (status, _) = call(
        db,
        "PUT",
        "/admin/v1/paywalls/app/limits",
        Some(ADMIN),
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let l = tollgate_ledger::access::limits::load(db, "app")
        .await
        .unwrap();
    assert_eq!(
        (
            l.requests_per_minute,
            l.daily_spend_cap,
            l.tokens_per_minute
        ),
        (Some(5), Some(2_500_000), None)
    );
    let bad = json!({"requests_per_minute": "five"});
    assert_eq!(
        call(
            db,
            "PUT",
            "/admin/v1/paywalls/app/limits",
            Some(ADMIN),
            Some(bad)
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );
    let bad = json!({"daily_spend_cap": "-1"});
    assert_eq!(
        call(
            db,
            "PUT",
            "/admin/v1/paywalls/app/limits",
            Some(ADMIN),
            Some(bad)
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );

    // A new price for an existing model is version 2; a new model starts at 1.
    let price = json!({"provider": "mock", "input_per_m": "3.00", "output_per_m": "9.00", "markup_bps": 100});
    let (status, r) = call(
        db,
        "PUT",
        "/admin/v1/models/m",
        Some(ADMIN),
        Some(price.clone()),
    )
    .await;
    assert_eq!(
        (status, r["price"]["version"].as_i64()),
        (StatusCode::OK, Some(2)),
        "{r}"
    );
    let (_, r) = call(db, "PUT", "/admin/v1/models/m2", Some(ADMIN), Some(price)).await;
    assert_eq!(r["price"]["version"], 1);
    let (_, history) = call(db, "GET", "/admin/v1/models/m/prices", Some(ADMIN), None).await;
    let versions: Vec<i64> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [2, 1]);
    let orphan = json!({"provider": "nobody", "input_per_m": "1", "output_per_m": "1"});
    assert_eq!(
        call(db, "PUT", "/admin/v1/models/x", Some(ADMIN), Some(orphan))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        call(db, "GET", "/admin/v1/models/none/prices", Some(ADMIN), None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

async fn a_changed_config_key_replaces_the_old_one(db: &Db) {
    assert_eq!(
        call(db, "GET", "/v1/models", Some(KEY), None).await.0,
        StatusCode::OK
    );
    std::env::set_var("SUITE_KEY_ROTATED", "tg_rotated_config_key_0123456789");
    let original = config("8.00");
    let mut rotated = original.clone();
    for p in &mut rotated.paywalls {
        if p.id == "app" {
            p.key_env = "SUITE_KEY_ROTATED".into();
        }
    }
    catalog::seed(db, &rotated).await.unwrap();
    assert_eq!(
        call(db, "GET", "/v1/models", Some(KEY), None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(
            db,
            "GET",
            "/v1/models",
            Some("tg_rotated_config_key_0123456789"),
            None
        )
        .await
        .0,
        StatusCode::OK
    );
    // Restoring the old config key brings it back.
    catalog::seed(db, &original).await.unwrap();
    assert_eq!(
        call(db, "GET", "/v1/models", Some(KEY), None).await.0,
        StatusCode::OK
    );
}

async fn provider_keys_are_set_listed_rotated_and_deleted(db: &Db) {
    catalog::seed(db, &config("2.00")).await.unwrap();
    let base = "/admin/v1/paywalls/app/provider-keys";
    const SECRET: &str = "sk-admin-api-canary-55aa";
    let put = |key: Value| {
        call(
            db,
            "PUT",
            "/admin/v1/paywalls/app/provider-keys/mock",
            Some(ADMIN),
            Some(key),
        )
    };
    let (status, body) = put(json!({"key": SECRET})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["provider"].as_str(), body["version"].as_i64()),
        (Some("mock"), Some(1))
    );
    assert!(!body.to_string().contains(SECRET));
    let (status, body) = put(json!({"key": SECRET})).await;
    assert_eq!(
        (status, body["version"].as_i64()),
        (StatusCode::OK, Some(2))
    );

    let (status, listed) = call(db, "GET", base, Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["data"][0]["version"], 2);
    assert!(!listed.to_string().contains(SECRET));

    // Refusals: another token, a bad key, unknown names, extra fields.
    let (status, _) = call(db, "GET", base, Some(KEY), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = put(json!({"key": "two words"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = put(json!({"key": SECRET, "label": "x"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(
        db,
        "PUT",
        "/admin/v1/paywalls/app/provider-keys/nope",
        Some(ADMIN),
        Some(json!({"key": SECRET})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(
        db,
        "PUT",
        "/admin/v1/paywalls/nope/provider-keys/mock",
        Some(ADMIN),
        Some(json!({"key": SECRET})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let del = "/admin/v1/paywalls/app/provider-keys/mock";
    let (status, _) = call(db, "DELETE", del, Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(db, "DELETE", del, Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (_, listed) = call(db, "GET", base, Some(ADMIN), None).await;
    assert_eq!(listed["data"], json!([]));
}

async fn providers_are_listed_and_changed(db: &Db) {
    catalog::seed(db, &config("2.00")).await.unwrap();
    let (status, listed) = call(db, "GET", "/admin/v1/providers", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::OK);
    let mock = &listed["data"][0];
    assert_eq!(
        (mock["id"].as_str(), mock["operator_key"].as_str()),
        (Some("mock"), Some("env:SUITE_PROVIDER_KEY"))
    );
    assert_eq!(mock["operator_key_available"], true);
    assert!(!listed.to_string().contains("sk-suite"), "a key was listed");

    let body = json!({"kind": "azure", "cluster": "az", "base_url": "https://contoso.openai.azure.com",
                      "api_key_file": "/run/secrets/azure-key"});
    let (status, az) = call(
        db,
        "PUT",
        "/admin/v1/providers/azure-east",
        Some(ADMIN),
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{az}");
    assert_eq!(
        (az["auth_header"].as_str(), az["operator_key"].as_str()),
        (Some("api-key"), Some("file:/run/secrets/azure-key"))
    );
    assert_eq!(
        az["operator_key_available"], false,
        "the file does not exist here"
    );

    // A model can now use it.
    let model = json!({"provider": "azure-east", "upstream_model": "prod", "input_per_m": "1", "output_per_m": "2"});
    let (status, _) = call(
        db,
        "PUT",
        "/admin/v1/models/az-model",
        Some(ADMIN),
        Some(model),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // Invalid entries change nothing.
    for bad in [
        json!({"kind": "bedrock", "cluster": "x"}),
        json!({"kind": "azure", "cluster": "x"}),
        json!({"cluster": "x", "api_key_env": "A", "api_key_file": "/b"}),
        json!({"cluster": "x", "surprise": 1}),
    ] {
        let (status, body) =
            call(db, "PUT", "/admin/v1/providers/bad", Some(ADMIN), Some(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
    let (_, listed) = call(db, "GET", "/admin/v1/providers", Some(ADMIN), None).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);
    let (status, _) = call(db, "GET", "/admin/v1/providers", Some(KEY), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
