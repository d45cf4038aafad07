//! Money on the wire is a decimal string; inside it is `i64` micro-units.
//! No floats anywhere: parsing and formatting are pure integer/string work.

use std::fmt;

/// One currency unit = 1,000,000 micro-units.
pub const MICROS_PER_UNIT: i64 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmountError {
    Empty,
    Invalid,
    TooPrecise,
    TooLarge,
    NotPositive,
}

impl fmt::Display for AmountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let msg = match self {
            AmountError::Empty => "amount is empty",
            AmountError::Invalid => "amount must be a decimal string such as \"10.50\"",
            AmountError::TooPrecise => "amount has more than 6 decimal places",
            AmountError::TooLarge => "amount is too large",
            AmountError::NotPositive => "amount must be greater than zero",
        };
        f.write_str(msg)
    }
}

impl std::error::Error for AmountError {}

/// Parses a positive decimal string (`"10"`, `"10.5"`, `"0.000001"`) into micro-units.
pub fn parse_amount(s: &str) -> Result<i64, AmountError> {
    match parse_decimal(s)? {
        0 => Err(AmountError::NotPositive),
        v => Ok(v),
    }
}

/// Parses a non-negative decimal string into micro-units (zero allowed, e.g. prices).
pub fn parse_decimal(s: &str) -> Result<i64, AmountError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(AmountError::Empty);
    }
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, f),
        None => (s, ""),
    };
    if whole.is_empty() && frac.is_empty() {
        return Err(AmountError::Invalid);
    }
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !digits(frac) || (s.contains('.') && frac.is_empty()) {
        return Err(AmountError::Invalid);
    }
    if frac.len() > 6 {
        return Err(AmountError::TooPrecise);
    }
    let whole_val: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| AmountError::TooLarge)?
    };
    let mut frac_val: i64 = 0;
    for b in frac.bytes().chain(std::iter::repeat(b'0')).take(6) {
        frac_val = frac_val * 10 + i64::from(b - b'0');
    }
    let total = whole_val
        .checked_mul(MICROS_PER_UNIT)
        .and_then(|w| w.checked_add(frac_val))
        .ok_or(AmountError::TooLarge)?;
    Ok(total)
}

/// Formats micro-units as a decimal string with six places: `1500000` → `"1.500000"`.
pub fn format_micros(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    let unit = MICROS_PER_UNIT.unsigned_abs();
    format!("{sign}{}.{:06}", abs / unit, abs % unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_strings() {
        assert_eq!(parse_amount("10"), Ok(10_000_000));
        assert_eq!(parse_amount("10.5"), Ok(10_500_000));
        assert_eq!(parse_amount("0.000001"), Ok(1));
        assert_eq!(parse_amount(".25"), Ok(250_000));
        assert_eq!(parse_amount(" 3.141592 "), Ok(3_141_592));
    }

    #[test]
    fn rejects_bad_amounts() {
        assert_eq!(parse_amount(""), Err(AmountError::Empty));
        assert_eq!(parse_amount("abc"), Err(AmountError::Invalid));
        assert_eq!(parse_amount("1."), Err(AmountError::Invalid));
        assert_eq!(parse_amount("-1"), Err(AmountError::Invalid));
        assert_eq!(parse_amount("1e3"), Err(AmountError::Invalid));
        assert_eq!(parse_amount("0.0000001"), Err(AmountError::TooPrecise));
        assert_eq!(parse_amount("0"), Err(AmountError::NotPositive));
        assert_eq!(
            parse_amount("99999999999999999999"),
            Err(AmountError::TooLarge)
        );
        assert_eq!(parse_amount("9223372036855"), Err(AmountError::TooLarge));
        assert_eq!(parse_decimal("0"), Ok(0));
        assert_eq!(parse_decimal("0.5"), Ok(500_000));
    }

    #[test]
    fn formats_with_six_places() {
        assert_eq!(format_micros(1_500_000), "1.500000");
        assert_eq!(format_micros(1), "0.000001");
        assert_eq!(format_micros(-2_000_001), "-2.000001");
        assert_eq!(format_micros(0), "0.000000");
    }
}
