//! Shared mode on both backends: one wallet per user across shared paywalls,
//! usable by a paywall only after the user authorized it through a link;
//! revocable; and a paywall sees only its own entries on the shared wallet.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tollgate_ledger::access::consent;
use tollgate_ledger::db::Db;
use tollgate_ledger::error::LedgerError;
use tollgate_ledger::http::{router, AppState};
use tollgate_ledger::money::book;
use tollgate_ledger::money::deposits;
use tollgate_ledger::money::holds;
use tollgate_ledger::money::wallets::shared_wallet;
use tollgate_protocol::{Action, AuthorizeRequest, AuthorizeResponse};
use tower::ServiceExt;

use common::{settings, KEY, MALL2_KEY, MALL_KEY};

fn ask(key: &str, user: &str, rid: &str) -> AuthorizeRequest {
    AuthorizeRequest {
        request_id: rid.into(),
        paywall_key: key.into(),
        user: user.into(),
        model: "m".into(),
        prompt_tokens: 100,
        max_output_tokens: Some(50),
        choices: 1,
        stream: false,
    }
}

async fn decide(db: &Db, key: &str, user: &str, rid: &str) -> AuthorizeResponse {
    holds::authorize(db, &settings(), &ask(key, user, rid))
        .await
        .unwrap()
}

/// The token of an authorization-link answer.
fn consent_token(r: &AuthorizeResponse) -> String {
    match r {
        AuthorizeResponse::Action {
            action: Action::Authorize,
            link,
            message,
        } => {
            assert!(message.contains("Authorize"), "{message}");
            link.strip_prefix("http://pay.test/pay/connect/")
                .expect("consent link")
                .to_string()
        }
        other => panic!("expected an authorization request, got {other:?}"),
    }
}

async fn get(db: &Db, uri: &str, key: &str) -> (StatusCode, Value) {
    let app = router(Arc::new(AppState {
        db: db.clone(),
        settings: settings(),
        internal_secret: "s".repeat(20),
        admin_token_hash: None,
    }));
    let req = Request::builder()
        .uri(uri)
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .unwrap();
    let resp = app.oneshot(req).await.unwrap();
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
    a_shared_paywall_needs_consent_then_spends_the_shared_wallet,
    consent_is_per_paywall_and_revocable,
    consent_links_work_once_and_only_as_issued,
    connect_and_disconnect_over_http,
);

async fn a_shared_paywall_needs_consent_then_spends_the_shared_wallet(db: &Db) {
    let token = consent_token(&decide(db, MALL_KEY, "ann", "r1").await);
    assert!(
        deposits::deposit(db, "mall", "ann", 1_000_000, "test")
            .await
            .is_err(),
        "deposit before consent"
    );
    let holder = consent::accept(db, &token)
        .await
        .unwrap()
        .expect("valid link");
    assert_eq!(
        (holder.paywall_id.as_str(), holder.user_id.as_str()),
        ("mall", "ann")
    );
    // Connected but empty: a top-up link, then funds make it pass.
    assert!(matches!(
        decide(db, MALL_KEY, "ann", "r2").await,
        AuthorizeResponse::Action {
            action: Action::Topup,
            ..
        }
    ));
    deposits::deposit(db, "mall", "ann", 1_000_000, "test")
        .await
        .unwrap();
    assert!(matches!(
        decide(db, MALL_KEY, "ann", "r3").await,
        AuthorizeResponse::Allow { .. }
    ));
    let shared = book::balance(db, &shared_wallet("ann")).await.unwrap();
    assert_eq!((shared.posted, shared.held), (1_000_000, 600));
    // The same user id on an isolated paywall is a different wallet.
    assert!(matches!(
        decide(db, KEY, "ann", "r4").await,
        AuthorizeResponse::Action {
            action: Action::Topup,
            ..
        }
    ));
}

async fn consent_is_per_paywall_and_revocable(db: &Db) {
    let t1 = consent_token(&decide(db, MALL_KEY, "bob", "a").await);
    consent::accept(db, &t1).await.unwrap().unwrap();
    deposits::deposit(db, "mall", "bob", 2_000_000, "test")
        .await
        .unwrap();
    // The second shared paywall needs its own consent, then sees the same money.
    let t2 = consent_token(&decide(db, MALL2_KEY, "bob", "b").await);
    consent::accept(db, &t2).await.unwrap().unwrap();
    assert!(matches!(
        decide(db, MALL2_KEY, "bob", "c").await,
        AuthorizeResponse::Allow { .. }
    ));
    let (status, bal) = get(db, "/v1/user/balance?user=bob", MALL2_KEY).await;
    assert_eq!(
        (status, bal["balance"].as_str(), bal["held"].as_str()),
        (StatusCode::OK, Some("2.000000"), Some("0.000600"))
    );
    // Each paywall lists only its own entries on the shared wallet.
    let (_, mine) = get(db, "/v1/user/ledger?user=bob", MALL_KEY).await;
    let kinds: Vec<&str> = mine["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["deposit"]);
    let (_, theirs) = get(db, "/v1/user/ledger?user=bob", MALL2_KEY).await;
    let kinds: Vec<&str> = theirs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["hold"]);
    // Revoked: asks again, reads are refused, deposits too.
    assert!(consent::disconnect(db, "mall2", "bob").await.unwrap());
    assert!(!consent::disconnect(db, "mall2", "bob").await.unwrap());
    consent_token(&decide(db, MALL2_KEY, "bob", "d").await);
    assert_eq!(
        get(db, "/v1/user/balance?user=bob", MALL2_KEY).await.0,
        StatusCode::NOT_FOUND
    );
    let err = deposits::deposit(db, "mall2", "bob", 1, "test")
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::NotConnected(_)), "{err:?}");
    // The other connection is untouched.
    assert!(matches!(
        decide(db, MALL_KEY, "bob", "e").await,
        AuthorizeResponse::Allow { .. }
    ));
}

async fn consent_links_work_once_and_only_as_issued(db: &Db) {
    let token = consent_token(&decide(db, MALL_KEY, "cy", "a").await);
    assert!(consent::accept(db, "0000").await.unwrap().is_none());
    // A top-up link for the same user is not an authorization.
    let mut tx = db.pool.begin().await.unwrap();
    let topup = deposits::create_topup_link(&mut tx, &settings(), "mall", "cy")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let topup_token = topup.url.rsplit('/').next().unwrap().to_string();
    assert!(consent::accept(db, &topup_token).await.unwrap().is_none());
    assert!(consent::accept(db, &token).await.unwrap().is_some());
    assert!(
        consent::accept(db, &token).await.unwrap().is_none(),
        "a used link worked again"
    );
    assert!(consent::open_link(db, &token).await.unwrap().is_none());
    // It connected exactly the paywall and user it was issued for.
    assert!(consent::connected_since(db, "mall", "cy")
        .await
        .unwrap()
        .is_some());
    assert!(consent::connected_since(db, "mall2", "cy")
        .await
        .unwrap()
        .is_none());
    assert!(consent::connected_since(db, "mall", "someone")
        .await
        .unwrap()
        .is_none());
}

async fn connect_and_disconnect_over_http(db: &Db) {
    let (status, c) = get(db, "/v1/user/connect?user=dee", MALL_KEY).await;
    assert_eq!(
        (status, c["connected"].as_bool()),
        (StatusCode::OK, Some(false))
    );
    let token = c["url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    consent::accept(db, &token).await.unwrap().unwrap();
    let (_, c) = get(db, "/v1/user/connect?user=dee", MALL_KEY).await;
    assert_eq!(c["connected"], true);
    let (status, d) = get(db, "/v1/user/disconnect?user=dee", MALL_KEY).await;
    assert_eq!(
        (status, d["revoked"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    let (_, c) = get(db, "/v1/user/connect?user=dee", MALL_KEY).await;
    assert_eq!(c["connected"], false);
    // Isolated paywalls are always "connected" and have nothing to disconnect.
    assert_eq!(
        get(db, "/v1/user/connect?user=dee", KEY).await.1["connected"],
        true
    );
    assert_eq!(
        get(db, "/v1/user/disconnect?user=dee", KEY).await.0,
        StatusCode::BAD_REQUEST
    );
}
