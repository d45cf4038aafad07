//! Currencies as Stripe counts them: amounts go to Stripe in the currency's
//! smallest unit ("minor units": cents for `usd`, yen for `jpy`), while the
//! ledger keeps micro-units (10⁻⁶ of the major unit). The conversion is exact
//! integer arithmetic in both directions; an amount that does not fit the
//! currency's minor unit is refused, never rounded.

use tollgate_protocol::{format_micros, parse_amount, AmountError, MICROS_PER_UNIT};

/// Stripe's zero-decimal currencies (its "Zero-decimal currencies" list).
const ZERO_DECIMAL: &[&str] = &[
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];
/// Stripe's three-decimal currencies.
const THREE_DECIMAL: &[&str] = &["bhd", "jod", "kwd", "omr", "tnd"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Currency {
    /// Lower-case ISO 4217 code, as Stripe writes it.
    pub code: String,
    /// Digits after the decimal point in the minor unit.
    pub decimals: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CurrencyError {
    #[error("currency must be a three-letter ISO code such as \"usd\", got {0:?}")]
    Code(String),
}

impl Currency {
    pub fn parse(code: &str) -> Result<Currency, CurrencyError> {
        let code = code.trim().to_ascii_lowercase();
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(CurrencyError::Code(code));
        }
        let decimals = if ZERO_DECIMAL.contains(&code.as_str()) {
            0
        } else if THREE_DECIMAL.contains(&code.as_str()) {
            3
        } else {
            2
        };
        Ok(Currency { code, decimals })
    }

    /// Micro-units in one minor unit (10 000 for cents).
    fn micros_per_minor(&self) -> i64 {
        MICROS_PER_UNIT / 10i64.pow(self.decimals)
    }

    /// A decimal amount typed by a person or written in the configuration
    /// ("10.00", "500") in micro-units, if the currency can express it.
    pub fn parse_amount(&self, text: &str) -> Result<i64, AmountRefused> {
        let micros = parse_amount(text)?;
        self.to_minor(micros).map(|_| micros)
    }

    /// Micro-units in minor units; refused when not a whole number of them.
    pub fn to_minor(&self, micros: i64) -> Result<i64, AmountRefused> {
        let per = self.micros_per_minor();
        if micros % per != 0 {
            return Err(AmountRefused::TooPrecise(self.decimals));
        }
        Ok(micros / per)
    }

    /// Minor units (as Stripe reports them) in micro-units; None on overflow.
    pub fn from_minor(&self, minor: i64) -> Option<i64> {
        minor.checked_mul(self.micros_per_minor())
    }

    /// "10.00": the amount with the currency's own decimals (truncated).
    pub fn format(&self, micros: i64) -> String {
        let full = format_micros(micros);
        let cut = 6 - self.decimals as usize;
        full[..full.len() - cut].trim_end_matches('.').to_string()
    }

    /// "10.00 USD".
    pub fn display(&self, micros: i64) -> String {
        format!("{} {}", self.format(micros), self.code.to_ascii_uppercase())
    }
}

/// Why an amount is not accepted; the text is shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountRefused {
    #[error("{0}")]
    Amount(#[from] AmountError),
    #[error("The amount can have at most {0} digits after the decimal point.")]
    TooPrecise(u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_units_follow_the_currency() {
        let usd = Currency::parse("USD").unwrap();
        assert_eq!((usd.code.as_str(), usd.decimals), ("usd", 2));
        assert_eq!(usd.to_minor(10_000_000), Ok(1000));
        assert_eq!(usd.from_minor(1000), Some(10_000_000));
        assert_eq!(usd.to_minor(10_005_000), Err(AmountRefused::TooPrecise(2)));
        assert_eq!(usd.display(12_500_000), "12.50 USD");
        assert_eq!(usd.parse_amount("5.00"), Ok(5_000_000));
        assert!(usd.parse_amount("5.001").is_err());
        assert!(usd.parse_amount("0").is_err());

        let jpy = Currency::parse("jpy").unwrap();
        assert_eq!(jpy.decimals, 0);
        assert_eq!(jpy.to_minor(500_000_000), Ok(500));
        assert_eq!(jpy.from_minor(500), Some(500_000_000));
        assert_eq!(jpy.parse_amount("500.5"), Err(AmountRefused::TooPrecise(0)));
        assert_eq!(jpy.parse_amount("500.00"), Ok(500_000_000));
        assert_eq!(jpy.display(500_000_000), "500 JPY");

        assert_eq!(Currency::parse("kwd").unwrap().decimals, 3);
        assert!(Currency::parse("dollars").is_err());
        assert!(Currency::parse("u5d").is_err());
        assert_eq!(usd.from_minor(i64::MAX), None);
    }
}
