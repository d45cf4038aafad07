//! Starting a payment: the Checkout Session the top-up page redirects to.
//! The amount is the one the page offered, in the currency's minor unit;
//! what gets credited later is what Stripe reports as paid.

use super::client::Form;
use super::objects::{Payer, META_LINK, META_PAYWALL, META_USER};
use crate::access::links::LinkHolder;
use crate::access::secrets::sha256_hex;
use crate::db::Db;
use crate::error::{LedgerError, LedgerResult};
use crate::payments::checkout;
use crate::payments::{Payments, StripeProcessor};

/// The page Stripe sends the customer back to; Stripe fills in the session id.
pub fn success_url(public_url: &str, token: &str) -> String {
    format!("{public_url}/pay/topup/{token}/success?session_id={{CHECKOUT_SESSION_ID}}")
}

pub fn cancel_url(public_url: &str, token: &str) -> String {
    format!("{public_url}/pay/topup/{token}/cancel")
}

/// The creation parameters, form-encoded as Stripe documents them.
fn session_form(
    payments: &Payments,
    public_url: &str,
    token: &str,
    holder: &LinkHolder,
    amount_minor: i64,
) -> Form {
    let link_hash = sha256_hex(token);
    let p = |k: &str, v: &str| (k.to_string(), v.to_string());
    let mut form = vec![
        p("mode", "payment"),
        p("line_items[0][quantity]", "1"),
        p(
            "line_items[0][price_data][currency]",
            &payments.offer.currency.code,
        ),
        p(
            "line_items[0][price_data][unit_amount]",
            &amount_minor.to_string(),
        ),
        p(
            "line_items[0][price_data][product_data][name]",
            &format!("Balance top-up: {}", holder.paywall_name),
        ),
        p("success_url", &success_url(public_url, token)),
        p("cancel_url", &cancel_url(public_url, token)),
        p("client_reference_id", &link_hash),
    ];
    // On the session and on its payment, so a refund names them too.
    for scope in ["metadata", "payment_intent_data[metadata]"] {
        form.push(p(&format!("{scope}[{META_PAYWALL}]"), &holder.paywall_id));
        form.push(p(&format!("{scope}[{META_USER}]"), &holder.user_id));
        form.push(p(&format!("{scope}[{META_LINK}]"), &link_hash));
    }
    form
}

/// Creates the session for `amount` (micro-units, already checked against
/// the offer) and records it; returns the URL to send the customer to.
/// The idempotency key is the link and the amount: a retry, or the same
/// choice made again after a cancel, gets the same session back.
pub async fn start(
    db: &Db,
    payments: &Payments,
    stripe: &StripeProcessor,
    public_url: &str,
    token: &str,
    holder: &LinkHolder,
    amount: i64,
) -> LedgerResult<String> {
    let currency = &payments.offer.currency;
    let minor = currency
        .to_minor(amount)
        .map_err(|e| LedgerError::Invalid(e.to_string()))?;
    let form = session_form(payments, public_url, token, holder, minor);
    let key = format!(
        "tollgate-topup-{}",
        sha256_hex(&format!("{}:{minor}:{}", sha256_hex(token), currency.code))
    );
    let session = stripe
        .api
        .create_session(&form, &key)
        .await
        .map_err(|e| LedgerError::Unavailable(e.to_string()))?;
    let url = session
        .url
        .clone()
        .ok_or_else(|| LedgerError::Unavailable(format!("session {} has no url", session.id)))?;
    let payer = Payer {
        paywall_id: holder.paywall_id.clone(),
        user_id: holder.user_id.clone(),
        link_hash: Some(sha256_hex(token)),
    };
    let mut tx = db.pool.begin().await?;
    checkout::record_created(&mut tx, &session, &payer, minor, currency).await?;
    tx.commit().await?;
    tracing::info!(session = %session.id, paywall = %holder.paywall_id, amount_minor = minor, "checkout session created");
    Ok(url)
}
