//! The `[payments]` table of the ledger's TOML: which processor stands
//! behind the top-up page, and what it offers. Secrets are named by the
//! environment variables holding them, never written in the file.

use serde::Deserialize;

use super::currency::Currency;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessorKind {
    /// DEVELOPMENT ONLY: credits whatever is chosen, no money moves.
    Dev,
    /// Stripe Checkout, credited by signed webhooks.
    Stripe,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentsConfig {
    pub processor: ProcessorKind,
    /// Variable holding Stripe's secret key (`sk_…`).
    #[serde(default)]
    pub secret_key_env: Option<String>,
    /// Variable holding the webhook endpoint's signing secret (`whsec_…`).
    #[serde(default)]
    pub webhook_secret_env: Option<String>,
    #[serde(default = "default_api_base")]
    pub api_base: String,
    #[serde(default = "default_currency")]
    pub currency: String,
    /// Preset amounts shown as buttons, e.g. `["5.00", "10.00", "20.00"]`.
    #[serde(default = "default_amounts")]
    pub amounts: Vec<String>,
    /// Custom amounts are allowed between these (default: the presets' range).
    #[serde(default)]
    pub min_amount: Option<String>,
    #[serde(default)]
    pub max_amount: Option<String>,
}

fn default_api_base() -> String {
    "https://api.stripe.com".into()
}
fn default_currency() -> String {
    "usd".into()
}
fn default_amounts() -> Vec<String> {
    ["5.00", "10.00", "20.00"].map(String::from).to_vec()
}

/// What the top-up page offers, checked: every amount in micro-units and
/// expressible in the currency's minor unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub currency: Currency,
    pub presets: Vec<i64>,
    pub min: i64,
    pub max: i64,
}

impl Offer {
    /// A custom amount can be typed when the range holds more than the presets.
    pub fn allows_custom(&self) -> bool {
        self.min < self.max
    }

    /// The amount a submitted form asks for, if it is offered.
    pub fn choose(&self, text: &str) -> Result<i64, OfferRefused> {
        let micros = self
            .currency
            .parse_amount(text)
            .map_err(|e| OfferRefused::Amount(e.to_string()))?;
        if self.presets.contains(&micros) || (self.min..=self.max).contains(&micros) {
            return Ok(micros);
        }
        Err(OfferRefused::OutOfRange {
            min: self.currency.display(self.min),
            max: self.currency.display(self.max),
        })
    }
}

/// Why a submitted amount is not accepted; the text is for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferRefused {
    #[error("An amount is required.")]
    NoAmount,
    #[error("{0}")]
    Amount(String),
    #[error("Choose an amount between {min} and {max}.")]
    OutOfRange { min: String, max: String },
}

impl PaymentsConfig {
    pub fn offer(&self) -> anyhow::Result<Offer> {
        let currency = Currency::parse(&self.currency)?;
        let amount = |what: &str, text: &str| {
            currency
                .parse_amount(text)
                .map_err(|e| anyhow::anyhow!("[payments] {what} {text:?}: {e}"))
        };
        let presets = self
            .amounts
            .iter()
            .map(|a| amount("amounts", a))
            .collect::<anyhow::Result<Vec<i64>>>()?;
        let (lowest, highest) = match (presets.iter().min(), presets.iter().max()) {
            (Some(lo), Some(hi)) => (*lo, *hi),
            _ => anyhow::bail!("[payments] amounts must name at least one amount"),
        };
        let min = match &self.min_amount {
            Some(t) => amount("min_amount", t)?,
            None => lowest,
        };
        let max = match &self.max_amount {
            Some(t) => amount("max_amount", t)?,
            None => highest,
        };
        anyhow::ensure!(
            min <= lowest && highest <= max,
            "[payments] amounts must lie between min_amount and max_amount"
        );
        Ok(Offer {
            currency,
            presets,
            min,
            max,
        })
    }

    /// The Stripe settings, read from the environment, or why they are unusable.
    pub fn stripe_secrets(&self) -> anyhow::Result<(String, String)> {
        let read = |setting: &str, var: &Option<String>, prefix: &str| {
            let var = var
                .as_deref()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| anyhow::anyhow!("[payments] {setting} is required for Stripe"))?;
            let value = std::env::var(var).unwrap_or_default();
            anyhow::ensure!(
                value.starts_with(prefix),
                "[payments] {setting}: environment variable {var} must hold a value starting with {prefix:?}"
            );
            Ok(value)
        };
        let key = read("secret_key_env", &self.secret_key_env, "sk_")?;
        let webhook = read("webhook_secret_env", &self.webhook_secret_env, "whsec_")?;
        Ok((key, webhook))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> PaymentsConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn the_offer_is_presets_and_a_range_in_the_currency() {
        let c =
            parse("processor = \"stripe\"\namounts = [\"5.00\", \"20.00\"]\nmax_amount = \"100\"");
        let offer = c.offer().unwrap();
        assert_eq!(offer.presets, vec![5_000_000, 20_000_000]);
        assert_eq!((offer.min, offer.max), (5_000_000, 100_000_000));
        assert!(offer.allows_custom());
        assert_eq!(offer.choose("12.34"), Ok(12_340_000));
        assert!(matches!(
            offer.choose("4.99"),
            Err(OfferRefused::OutOfRange { .. })
        ));
        assert!(matches!(
            offer.choose("100.01"),
            Err(OfferRefused::OutOfRange { .. })
        ));
        assert!(matches!(
            offer.choose("1.005"),
            Err(OfferRefused::Amount(_))
        ));
        assert!(matches!(offer.choose("ten"), Err(OfferRefused::Amount(_))));

        let presets_only = parse("processor = \"dev\"").offer().unwrap();
        assert!(presets_only.allows_custom());
        assert_eq!(presets_only.choose("7.00"), Ok(7_000_000));

        let jpy =
            parse("processor = \"stripe\"\ncurrency = \"jpy\"\namounts = [\"500\", \"1000\"]");
        assert_eq!(jpy.offer().unwrap().choose("750"), Ok(750_000_000));
        let bad = parse("processor = \"stripe\"\ncurrency = \"jpy\"\namounts = [\"5.50\"]");
        assert!(bad.offer().is_err());
        let outside = parse("processor = \"stripe\"\namounts = [\"5.00\"]\nmin_amount = \"10.00\"");
        assert!(outside.offer().is_err());
        assert!(parse("processor = \"stripe\"\namounts = []")
            .offer()
            .is_err());
    }

    #[test]
    fn stripe_secrets_come_from_the_named_variables_with_their_prefixes() {
        std::env::set_var("PAYCFG_TEST_SK", "sk_test_abc");
        std::env::set_var("PAYCFG_TEST_WH", "whsec_abc");
        std::env::set_var("PAYCFG_TEST_BAD", "pk_test_abc");
        let ok = parse("processor = \"stripe\"\nsecret_key_env = \"PAYCFG_TEST_SK\"\nwebhook_secret_env = \"PAYCFG_TEST_WH\"");
        assert_eq!(
            ok.stripe_secrets().unwrap(),
            ("sk_test_abc".to_string(), "whsec_abc".to_string())
        );
        let wrong = parse("processor = \"stripe\"\nsecret_key_env = \"PAYCFG_TEST_BAD\"\nwebhook_secret_env = \"PAYCFG_TEST_WH\"");
        let err = wrong.stripe_secrets().unwrap_err().to_string();
        assert!(
            err.contains("PAYCFG_TEST_BAD") && !err.contains("pk_test_abc"),
            "{err}"
        );
        assert!(parse("processor = \"stripe\"").stripe_secrets().is_err());
    }
}
