//! Payment processors behind the top-up page. A processor renders the
//! checkout form for a top-up link and confirms the submitted payment; the
//! page then credits the wallet through the link (single use, so a payment
//! can never be credited twice). A processor that confirms asynchronously
//! (a webhook) credits through `deposits::redeem_link` from its handler.

use std::collections::HashMap;
use std::fmt::Debug;

use tollgate_protocol::{parse_amount, AmountError};

pub trait PaymentProcessor: Send + Sync + Debug {
    /// Recorded as the deposit's memo (e.g. `dev_processor`).
    fn name(&self) -> &'static str;
    /// HTML of the checkout form; it posts back to `/pay/topup/{token}`.
    fn checkout_html(&self, token: &str) -> String;
    /// Confirms a submitted form: the amount paid in micro-units, or why
    /// not (shown to the user).
    fn confirm(&self, form: &HashMap<String, String>) -> Result<i64, PaymentRefused>;
}

/// Why a submitted payment form is not accepted; the text is for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentRefused {
    #[error("An amount is required.")]
    NoAmount,
    #[error("{0}")]
    Amount(#[from] AmountError),
    #[error("The development processor accepts at most 10000.00 at once.")]
    OverDevelopmentLimit,
}

/// DEVELOPMENT ONLY: credits whatever amount is entered, with no payment at
/// all. Enabled by `dev_payments = true`; never enable it in production.
#[derive(Debug, Default)]
pub struct DevProcessor;

/// Largest single development top-up, so a typo cannot mint a fortune.
const DEV_MAX_MICROS: i64 = 10_000 * 1_000_000;

impl PaymentProcessor for DevProcessor {
    fn name(&self) -> &'static str {
        "dev_processor"
    }

    fn checkout_html(&self, token: &str) -> String {
        format!(
            "<p class=\"note\"><strong>Development payment processor</strong>: no real money moves. \
             Confirming credits the amount immediately.</p>\
             <form method=\"post\" action=\"/pay/topup/{token}\">\
             <label>Amount <input name=\"amount\" value=\"10.00\" inputmode=\"decimal\" required></label> \
             <button type=\"submit\">Add funds</button></form>"
        )
    }

    fn confirm(&self, form: &HashMap<String, String>) -> Result<i64, PaymentRefused> {
        let amount = form.get("amount").ok_or(PaymentRefused::NoAmount)?;
        let micros = parse_amount(amount)?;
        if micros > DEV_MAX_MICROS {
            return Err(PaymentRefused::OverDevelopmentLimit);
        }
        Ok(micros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(amount: &str) -> HashMap<String, String> {
        HashMap::from([("amount".to_string(), amount.to_string())])
    }

    #[test]
    fn dev_processor_confirms_decimal_amounts_within_bounds() {
        let p = DevProcessor;
        assert_eq!(p.confirm(&form("2.50")), Ok(2_500_000));
        assert!(p.confirm(&form("0")).is_err());
        assert!(p.confirm(&form("abc")).is_err());
        assert_eq!(
            p.confirm(&form("10000.01")),
            Err(PaymentRefused::OverDevelopmentLimit)
        );
        assert_eq!(p.confirm(&HashMap::new()), Err(PaymentRefused::NoAmount));
        assert!(p.checkout_html("tok").contains("/pay/topup/tok"));
        assert!(p
            .checkout_html("tok")
            .contains("Development payment processor"));
    }
}
