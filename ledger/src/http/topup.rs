//! The top-up pages behind the link in the "top up" reply: the amount
//! choices, the payment (the development processor credits at once; Stripe
//! redirects to its Checkout), and the pages Stripe sends the customer back
//! to. Money moves only through `payments` (Stripe's report of the
//! payment), never from what the browser sends here.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use serde::Deserialize;
use tollgate_protocol::format_micros;

use super::pages::{escape, invalid_link, not_connected, page, page_with_head, unavailable};
use super::schemas::TopupForm;
use super::Shared;
use crate::access::links::LinkHolder;
use crate::access::secrets::sha256_hex;
use crate::error::LedgerError;
use crate::money::book::{self, Balance};
use crate::money::deposits;
use crate::money::owed;
use crate::money::wallets::{self, WalletFor};
use crate::payments::checkout::{self, state};
use crate::payments::config::OfferRefused;
use crate::payments::stripe::start;
use crate::payments::{Payments, Processor, DEV_MEMO};

/// The wallet's balance and what is owed, for a page.
async fn balance_of(state: &Shared, holder: &LinkHolder) -> Result<(Balance, i64), Response> {
    match wallets::wallet_for(&state.db, &holder.paywall_id, &holder.user_id).await {
        Ok(WalletFor::Ready(w)) => {
            let balance = book::balance(&state.db, &w)
                .await
                .map_err(|_| unavailable())?;
            let owed = book::balance(&state.db, &owed::owed_account(&w))
                .await
                .map_err(|_| unavailable())?;
            Ok((balance, (-owed.posted).max(0)))
        }
        Ok(WalletFor::NeedsConsent) => Err(not_connected(&holder.paywall_name)),
        Err(_) => Err(unavailable()),
    }
}

/// The amount buttons (and a custom amount when the range allows one).
fn choices_html(payments: &Payments, token: &str) -> String {
    let offer = &payments.offer;
    let action = format!("/pay/topup/{}", escape(token));
    let buttons: String = offer
        .presets
        .iter()
        .map(|a| {
            format!(
                "<button type=\"submit\" name=\"amount\" value=\"{}\">{}</button>",
                offer.currency.format(*a),
                offer.currency.display(*a)
            )
        })
        .collect();
    let mut html =
        format!("<form class=\"choices\" method=\"post\" action=\"{action}\">{buttons}</form>");
    if offer.allows_custom() {
        html.push_str(&format!(
            "<form method=\"post\" action=\"{action}\"><label>Other amount ({} to {}) \
             <input name=\"amount\" inputmode=\"decimal\" required></label> \
             <button type=\"submit\">Pay</button></form>",
            offer.currency.display(offer.min),
            offer.currency.display(offer.max)
        ));
    }
    if matches!(payments.processor, Processor::Dev) {
        html.push_str(
            "<p class=\"note\"><strong>Development payment processor</strong>: no real money moves. \
             Choosing an amount credits it immediately.</p>",
        );
    }
    html
}

async fn choices_page(state: &Shared, token: &str, title: &str, lead: &str) -> Response {
    let holder = match deposits::open_link(&state.db, token).await {
        Ok(Some(h)) => h,
        Ok(None) => return invalid_link(),
        Err(_) => return unavailable(),
    };
    let (balance, owed) = match balance_of(state, &holder).await {
        Ok(b) => b,
        Err(page) => return page,
    };
    let form = match &state.settings.payments {
        Some(payments) => choices_html(payments, token),
        None => "<p>No payment processor is configured on this server.</p>".to_string(),
    };
    let owed_note = if owed > 0 {
        format!(
            "<p class=\"note\">A refunded payment left <strong>{}</strong> owed; it is taken from your next top-up.</p>",
            format_micros(owed)
        )
    } else {
        String::new()
    };
    let body = format!(
        "{lead}<p>Add funds to your balance for <strong>{app}</strong>.</p>\
         <p>Account: <code>{user}</code><br>Current balance: <strong>{bal}</strong></p>{owed_note}{form}",
        app = escape(&holder.paywall_name),
        user = escape(&holder.user_id),
        bal = format_micros(balance.available),
    );
    page(StatusCode::OK, title, &body)
}

/// Top-up page (HTML) for the user a link was issued to.
#[utoipa::path(get, path = "/pay/topup/{token}", tag = "pages",
    params(("token" = String, Path, description = "The link's token")),
    responses(
        (status = 200, description = "Page", content_type = "text/html"),
        (status = 404, description = "Unknown, expired or used link", content_type = "text/html"),
    ))]
pub async fn topup_page(State(state): State<Shared>, Path(token): Path<String>) -> Response {
    choices_page(&state, &token, "Top up your balance", "").await
}

/// Pay the chosen amount: Stripe Checkout (a 303 to the session's page), or
/// the development processor (credited at once).
#[utoipa::path(post, path = "/pay/topup/{token}", tag = "pages",
    params(("token" = String, Path, description = "The link's token")),
    request_body(content = TopupForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Paid (development processor)", content_type = "text/html"),
        (status = 303, description = "To Stripe Checkout"),
        (status = 400, description = "Amount not accepted", content_type = "text/html"),
        (status = 404, description = "Link not valid", content_type = "text/html"),
        (status = 503, description = "The payment service is unavailable", content_type = "text/html"),
    ))]
pub async fn topup_pay(
    State(state): State<Shared>,
    Path(token): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let Some(payments) = &state.settings.payments else {
        return invalid_link();
    };
    let chosen = form
        .get("amount")
        .ok_or(OfferRefused::NoAmount)
        .and_then(|a| payments.offer.choose(a));
    let amount = match chosen {
        Ok(a) => a,
        Err(refused) => {
            let body = format!(
                "<p>{}</p><p><a href=\"/pay/topup/{}\">Back</a></p>",
                escape(&refused.to_string()),
                escape(&token)
            );
            return page(StatusCode::BAD_REQUEST, "Amount not accepted", &body);
        }
    };
    match &payments.processor {
        Processor::Dev => dev_pay(&state, payments, &token, amount).await,
        Processor::Stripe(stripe) => {
            let holder = match deposits::open_link(&state.db, &token).await {
                Ok(Some(h)) => h,
                Ok(None) => return invalid_link(),
                Err(_) => return unavailable(),
            };
            // A shared paywall the user has not authorized cannot be paid for yet.
            match wallets::wallet_for(&state.db, &holder.paywall_id, &holder.user_id).await {
                Ok(WalletFor::Ready(_)) => {}
                Ok(WalletFor::NeedsConsent) => return not_connected(&holder.paywall_name),
                Err(_) => return unavailable(),
            }
            let url = state.settings.public_url.as_str();
            match start::start(&state.db, payments, stripe, url, &token, &holder, amount).await {
                Ok(checkout_url) => {
                    (StatusCode::SEE_OTHER, [(header::LOCATION, checkout_url)]).into_response()
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not start a Stripe Checkout session");
                    unavailable()
                }
            }
        }
    }
}

async fn dev_pay(state: &Shared, payments: &Payments, token: &str, amount: i64) -> Response {
    match deposits::redeem_link(&state.db, token, amount, DEV_MEMO).await {
        Ok(Some((holder, balance))) => {
            let body = format!(
                "<p>{amt} was added for <code>{user}</code> on <strong>{app}</strong>.</p>\
                 <p>New balance: <strong>{bal}</strong>. You can go back to the app and send your message again.</p>",
                amt = payments.offer.currency.display(amount),
                user = escape(&holder.user_id),
                app = escape(&holder.paywall_name),
                bal = format_micros(balance.available),
            );
            page(StatusCode::OK, "Payment received", &body)
        }
        Ok(None) => invalid_link(),
        Err(LedgerError::NotConnected(_)) => not_connected("this app"),
        Err(_) => unavailable(),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct SuccessQuery {
    /// The Checkout Session, filled in by Stripe.
    pub session_id: String,
}

/// Where Stripe sends the customer after paying: "payment received" with the
/// new balance once credited, "processing" until then.
#[utoipa::path(get, path = "/pay/topup/{token}/success", tag = "pages",
    params(("token" = String, Path, description = "The link's token"), SuccessQuery),
    responses(
        (status = 200, description = "Page", content_type = "text/html"),
        (status = 404, description = "No such session for this link", content_type = "text/html"),
    ))]
pub async fn topup_success(
    State(state): State<Shared>,
    Path(token): Path<String>,
    Query(q): Query<SuccessQuery>,
) -> Response {
    let link_hash = sha256_hex(&token);
    let Some(payments) = &state.settings.payments else {
        return invalid_link();
    };
    let view = match checkout::find_for_link(&state.db, &q.session_id, &link_hash).await {
        Ok(Some(v)) => v,
        Ok(None) => return invalid_link(),
        Err(_) => return unavailable(),
    };
    let view = if view.state == state::CREDITED {
        view
    } else {
        confirm_from_stripe(&state, payments, &q.session_id).await;
        match checkout::find_for_link(&state.db, &q.session_id, &link_hash).await {
            Ok(Some(v)) => v,
            _ => view,
        }
    };
    let amount = payments
        .offer
        .currency
        .from_minor(view.amount_minor)
        .map(|a| payments.offer.currency.display(a))
        .unwrap_or_default();
    match view.state.as_str() {
        state::CREDITED => {
            let balance = match &view.wallet_account {
                Some(w) => book::balance(&state.db, w).await.ok(),
                None => None,
            };
            let body = format!(
                "<p>{amount} was added for <code>{user}</code>.</p>\
                 <p>New balance: <strong>{bal}</strong>. You can go back to the app and send your message again.</p>",
                user = escape(&view.user_id),
                bal = balance.map(|b| format_micros(b.available)).unwrap_or_default(),
            );
            page(StatusCode::OK, "Payment received", &body)
        }
        state::FAILED | state::WRONG_CURRENCY => {
            let body = format!(
                "<p>The payment of {amount} did not go through; nothing was added.</p>\
                 <p><a href=\"/pay/topup/{}\">Try again</a></p>",
                escape(&token)
            );
            page(StatusCode::OK, "Payment failed", &body)
        }
        _ => {
            let body = format!(
                "<p>Your payment of {amount} is being processed. Your balance is updated as soon as \
                 it is confirmed; this page refreshes by itself.</p>"
            );
            page_with_head(
                StatusCode::OK,
                "Processing your payment",
                "<meta http-equiv=\"refresh\" content=\"3\">",
                &body,
            )
        }
    }
}

/// Asks Stripe about a session the customer says they paid, and credits it
/// if Stripe says it is paid (the same exactly-once path as the webhook).
/// A failure leaves the page at "processing": the webhook will come.
async fn confirm_from_stripe(state: &Shared, payments: &Payments, session_id: &str) {
    let Some(stripe) = payments.stripe() else {
        return;
    };
    let session = match stripe.api.retrieve_session(session_id).await {
        Ok(s) if s.is_paid() => s,
        Ok(_) => return,
        Err(e) => {
            tracing::warn!(error = %e, session = session_id, "could not retrieve a Checkout Session");
            return;
        }
    };
    let credited = async {
        let mut tx = state.db.pool.begin().await?;
        let done = checkout::credit(&mut tx, &payments.offer, &session, "success_page").await?;
        tx.commit().await?;
        Ok::<_, LedgerError>(done)
    };
    if let Err(e) = credited.await {
        tracing::warn!(error = %e, session = session_id, "could not credit a paid session from the success page");
    }
}

/// Where Stripe sends a customer who went back: the same choices again.
#[utoipa::path(get, path = "/pay/topup/{token}/cancel", tag = "pages",
    params(("token" = String, Path, description = "The link's token")),
    responses(
        (status = 200, description = "Page", content_type = "text/html"),
        (status = 404, description = "Unknown, expired or used link", content_type = "text/html"),
    ))]
pub async fn topup_cancel(State(state): State<Shared>, Path(token): Path<String>) -> Response {
    let lead = "<p class=\"note\">The payment was cancelled; nothing was charged. You can choose again.</p>";
    choices_page(&state, &token, "Top up your balance", lead).await
}
