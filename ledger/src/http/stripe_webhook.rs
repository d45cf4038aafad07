//! `POST /webhooks/stripe`: Stripe's events, the one path of the sidecar
//! besides `/v1/…` and `/pay/…` that Envoy's public listener routes (Stripe
//! must reach it). The signature is checked over the raw body before
//! anything is read from it; a missing, tampered or stale one is a 400 that
//! changes nothing.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::Shared;
use crate::calendar::now_ms;
use crate::metrics;
use crate::outbox::webhooks::signature;
use crate::payments::stripe::objects::Event;
use crate::payments::stripe::webhook;

/// Stripe's default tolerance for a signature's timestamp.
const TOLERANCE_SECS: i64 = 300;

fn refused(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": {"message": message}}))).into_response()
}

/// Receive a Stripe event (signed with the endpoint's secret).
#[utoipa::path(post, path = "/webhooks/stripe", tag = "payments",
    security(("stripeSignature" = [])),
    request_body(content = String, content_type = "application/json", description = "A Stripe event"),
    responses(
        (status = 200, description = "Handled (or recorded as ignored or a duplicate)"),
        (status = 400, description = "Unsigned, tampered or stale; nothing changed"),
        (status = 404, description = "The Stripe processor is not configured"),
        (status = 503, description = "Not handled now; Stripe delivers it again"),
    ))]
pub async fn stripe_webhook(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(payments) = &state.settings.payments else {
        return refused(StatusCode::NOT_FOUND, "Stripe payments are not configured.");
    };
    let Some(stripe) = payments.stripe() else {
        return refused(StatusCode::NOT_FOUND, "Stripe payments are not configured.");
    };
    let header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let now_secs = now_ms() / 1000;
    if let Err(why) = signature::check(
        &stripe.webhook_secret,
        header,
        &body,
        now_secs,
        Some(TOLERANCE_SECS),
    ) {
        metrics::count(metrics::STRIPE_SIGNATURES_REFUSED, &[]);
        tracing::warn!(reason = %why, "Stripe webhook refused");
        return refused(
            StatusCode::BAD_REQUEST,
            &format!("Invalid signature: {why}."),
        );
    }
    let event: Event = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => return refused(StatusCode::BAD_REQUEST, &format!("Not a Stripe event: {e}")),
    };
    match webhook::handle(&state.db, payments, &event).await {
        Ok(outcome) => Json(json!({"received": true, "outcome": outcome.as_str()})).into_response(),
        Err(e) => {
            tracing::error!(error = %e, event = %event.id, kind = %event.kind, "Stripe event not handled");
            refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "Not handled now; deliver it again.",
            )
        }
    }
}
