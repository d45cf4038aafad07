//! End-user pages opened from links in assistant messages, and what they
//! share. A link carries an unguessable, expiring, single-use token bound to
//! one paywall and one user; a used, expired or unknown token shows an error
//! and changes nothing. The top-up pages are in `topup`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use super::Shared;
use crate::access::consent;

pub(super) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

pub(super) fn page(status: StatusCode, title: &str, body: &str) -> Response {
    page_with_head(status, title, "", body)
}

/// A page with extra `<head>` content (a refresh while a payment is processing).
pub(super) fn page_with_head(status: StatusCode, title: &str, head: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{t} · Tollgate</title>{head}\
         <style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#222}}\
         .note{{background:#fff4ce;border:1px solid #e6c300;padding:.5rem .75rem;border-radius:4px}}\
         input,button{{font-size:1rem;padding:.4rem .6rem}} .choices button{{margin:0 .5rem .5rem 0}}</style></head>\
         <body><h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    );
    (status, Html(html)).into_response()
}

pub(super) fn invalid_link() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Link not valid",
        "<p>This link is unknown, has expired or was already used. Ask the app for a new one.</p>",
    )
}

pub(super) fn unavailable() -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Try again shortly",
        "<p>The payment service is temporarily unavailable.</p>",
    )
}

pub(super) fn not_connected(app: &str) -> Response {
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
