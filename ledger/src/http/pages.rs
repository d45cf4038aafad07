//! End-user pages opened from links in assistant messages. A link carries an
//! unguessable, expiring, single-use token bound to one paywall and one user;
//! a used, expired or unknown token shows an error and changes nothing.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::Form;

use tollgate_protocol::format_micros;

use super::schemas::TopupForm;
use super::Shared;
use crate::access::consent;
use crate::error::LedgerError;
use crate::money::book;
use crate::money::deposits;
use crate::money::wallets::{self, WalletFor};

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{t} · Tollgate</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#222}}\
         .note{{background:#fff4ce;border:1px solid #e6c300;padding:.5rem .75rem;border-radius:4px}}\
         input,button{{font-size:1rem;padding:.4rem .6rem}}</style></head>\
         <body><h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    );
    (status, Html(html)).into_response()
}

fn invalid_link() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Link not valid",
        "<p>This link is unknown, has expired or was already used. Ask the app for a new one.</p>",
    )
}

fn unavailable() -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Try again shortly",
        "<p>The payment service is temporarily unavailable.</p>",
    )
}

/// Top-up page (HTML) for the user a link was issued to.
#[utoipa::path(get, path = "/pay/topup/{token}", tag = "pages",
    params(("token" = String, Path, description = "The link's token")),
    responses(
        (status = 200, description = "Page", content_type = "text/html"),
        (status = 404, description = "Unknown, expired or used link", content_type = "text/html"),
    ))]
pub async fn topup_page(State(state): State<Shared>, Path(token): Path<String>) -> Response {
    let holder = match deposits::open_link(&state.db, &token).await {
        Ok(Some(h)) => h,
        Ok(None) => return invalid_link(),
        Err(_) => return unavailable(),
    };
    let balance = match wallets::wallet_for(&state.db, &holder.paywall_id, &holder.user_id).await {
        Ok(WalletFor::Ready(w)) => match book::balance(&state.db, &w).await {
            Ok(b) => b,
            Err(_) => return unavailable(),
        },
        Ok(WalletFor::NeedsConsent) => return not_connected(&holder.paywall_name),
        Err(_) => return unavailable(),
    };
    let form = match &state.settings.payments {
        Some(processor) => processor.checkout_html(&escape(&token)),
        None => "<p>No payment processor is configured on this server.</p>".to_string(),
    };
    let body = format!(
        "<p>Add funds to your balance for <strong>{app}</strong>.</p>\
         <p>Account: <code>{user}</code><br>Current balance: <strong>{bal}</strong></p>{form}",
        app = escape(&holder.paywall_name),
        user = escape(&holder.user_id),
        bal = format_micros(balance.available),
    );
    page(StatusCode::OK, "Top up your balance", &body)
}

/// Pay for a top-up through the configured processor.
#[utoipa::path(post, path = "/pay/topup/{token}", tag = "pages",
    params(("token" = String, Path, description = "The link's token")),
    request_body(content = TopupForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Paid", content_type = "text/html"),
        (status = 400, description = "Payment not accepted", content_type = "text/html"),
        (status = 404, description = "Link not valid", content_type = "text/html"),
    ))]
pub async fn topup_pay(
    State(state): State<Shared>,
    Path(token): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let Some(processor) = &state.settings.payments else {
        return invalid_link();
    };
    let amount = match processor.confirm(&form) {
        Ok(a) => a,
        Err(refused) => {
            let body = format!(
                "<p>{}</p><p><a href=\"/pay/topup/{}\">Back</a></p>",
                escape(&refused.to_string()),
                escape(&token)
            );
            return page(StatusCode::BAD_REQUEST, "Payment not accepted", &body);
        }
    };
    match deposits::redeem_link(&state.db, &token, amount, processor.name()).await {
        Ok(Some((holder, balance))) => {
            let body = format!(
                "<p>{amt} was added for <code>{user}</code> on <strong>{app}</strong>.</p>\
                 <p>New balance: <strong>{bal}</strong>. You can go back to the app and send your message again.</p>",
                amt = format_micros(amount),
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

fn not_connected(app: &str) -> Response {
    let body = format!(
        "<p>Authorize {} to use your Tollgate balance first, then top up.</p>",
        escape(app)
    );
    page(StatusCode::FORBIDDEN, "Authorization needed", &body)
}

/// Authorization (consent) page for shared mode.
#[utoipa::path(get, path = "/pay/connect/{token}", tag = "pages",
    params(("token" = String, Path, description = "The link's token")),
    responses(
        (status = 200, description = "Page", content_type = "text/html"),
        (status = 404, description = "Unknown, expired or used link", content_type = "text/html"),
    ))]
pub async fn consent_page(Path(token): Path<String>, State(state): State<Shared>) -> Response {
    match consent::open_link(&state.db, &token).await {
        Ok(Some(h)) => {
            let body = format!(
                "<p><strong>{app}</strong> asks to charge its AI usage to your shared Tollgate balance.</p>\
                 <p>Account: <code>{user}</code></p>\
                 <form method=\"post\" action=\"/pay/connect/{token}\"><button type=\"submit\">Authorize {app}</button></form>\
                 <p>You can revoke this at any time from the app.</p>",
                app = escape(&h.paywall_name),
                user = escape(&h.user_id),
                token = escape(&token),
            );
            page(StatusCode::OK, "Authorize this app", &body)
        }
        Ok(None) => invalid_link(),
        Err(_) => unavailable(),
    }
}

/// Confirm the authorization.
#[utoipa::path(post, path = "/pay/connect/{token}", tag = "pages",
    params(("token" = String, Path, description = "The link's token")),
    responses(
        (status = 200, description = "Authorized", content_type = "text/html"),
        (status = 404, description = "Unknown, expired or used link", content_type = "text/html"),
    ))]
pub async fn consent_accept(Path(token): Path<String>, State(state): State<Shared>) -> Response {
    match consent::accept(&state.db, &token).await {
        Ok(Some(h)) => {
            let body = format!(
                "<p><strong>{}</strong> can now charge your shared balance for <code>{}</code>. \
                 Go back to the app and send your message again.</p>",
                escape(&h.paywall_name),
                escape(&h.user_id),
            );
            page(StatusCode::OK, "Authorized", &body)
        }
        Ok(None) => invalid_link(),
        Err(_) => unavailable(),
    }
}
