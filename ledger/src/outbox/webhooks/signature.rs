//! Webhook signatures, Stripe's scheme: the header
//! `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, which we
//! send as `tollgate-signature` and Stripe sends as `Stripe-Signature`.
//! A receiver recomputes the HMAC over the timestamp and the raw body,
//! compares it in constant time with every `v1` given, and refuses old
//! timestamps (replays). [`check`] decides exactly as Stripe's own library
//! does (held to tests/fixtures/stripe-signatures.json, which the `stripe`
//! Python package checks too).

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const SIGNATURE_HEADER: &str = "tollgate-signature";

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // Any key length is valid for HMAC, so `new_from_slice` cannot fail here.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// The header value for `body` sent at `unix_secs`.
pub fn sign(secret: &str, unix_secs: i64, body: &[u8]) -> String {
    let mut signed = format!("{unix_secs}.").into_bytes();
    signed.extend_from_slice(body);
    let mac = hmac_sha256(secret.as_bytes(), &signed);
    format!("t={unix_secs},v1={}", hex::encode(mac))
}

/// Whether `header` is a valid signature of `body`, at any age.
pub fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    check(secret, header, body, 0, None).is_ok()
}

/// Why a signature header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the header has no timestamp")]
    NoTimestamp,
    #[error("the header has no v1 signature")]
    NoSignature,
    #[error("no v1 signature matches the body")]
    Mismatch,
    #[error("the timestamp is older than the tolerance")]
    Stale,
}

/// Verifies `header` for `body` as Stripe specifies: the first `t`, every
/// `v1` (other schemes ignored), any match accepted; then, when
/// `tolerance_secs` is given, a timestamp older than `now_secs` minus it is
/// refused (a later one is not, as in Stripe's library).
pub fn check(
    secret: &str,
    header: &str,
    body: &[u8],
    now_secs: i64,
    tolerance_secs: Option<i64>,
) -> Result<(), Refused> {
    let items = header.split(',').filter_map(|item| item.split_once('='));
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for (key, value) in items {
        match key {
            "t" if timestamp.is_none() => timestamp = Some(value),
            "v1" => signatures.push(value),
            _ => {}
        }
    }
    let t = timestamp
        .and_then(|t| t.trim().parse::<i64>().ok())
        .ok_or(Refused::NoTimestamp)?;
    if signatures.is_empty() {
        return Err(Refused::NoSignature);
    }
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    let expected = hex::encode(hmac_sha256(secret.as_bytes(), &signed));
    let matches = signatures
        .iter()
        .any(|s| crate::access::secrets::constant_time_eq(&expected, s));
    if !matches {
        return Err(Refused::Mismatch);
    }
    match tolerance_secs {
        Some(tolerance) if t < now_secs.saturating_sub(tolerance) => Err(Refused::Stale),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_rfc_4231_test_vectors() {
        // Test case 2: a short key.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    /// Every case of the fixture the `stripe` package checks gets the same verdict here.
    #[test]
    fn decides_every_case_as_stripes_library_does() {
        let text = include_str!("../../../../tests/fixtures/stripe-signatures.json");
        let doc: serde_json::Value = serde_json::from_str(text).unwrap();
        let secret = doc["secret"].as_str().unwrap();
        let tolerance = doc["tolerance_secs"].as_i64();
        let cases = doc["cases"].as_array().unwrap();
        assert!(cases.len() >= 10);
        for case in cases {
            let verdict = check(
                secret,
                case["header"].as_str().unwrap(),
                case["payload"].as_str().unwrap().as_bytes(),
                case["now"].as_i64().unwrap(),
                tolerance,
            );
            assert_eq!(
                verdict.is_ok(),
                case["accepted"].as_bool().unwrap(),
                "{}: {verdict:?}",
                case["name"]
            );
        }
    }

    #[test]
    fn says_why_it_refused() {
        let body = b"{}";
        let header = sign("whsec", 1_000, body);
        assert_eq!(check("whsec", &header, body, 1_300, Some(300)), Ok(()));
        assert_eq!(
            check("whsec", &header, body, 1_301, Some(300)),
            Err(Refused::Stale)
        );
        assert_eq!(
            check("whsec", &header, b"{ }", 1_000, Some(300)),
            Err(Refused::Mismatch)
        );
        assert_eq!(
            check("whsec", "t=1000", body, 1_000, None),
            Err(Refused::NoSignature)
        );
        assert_eq!(
            check("whsec", "v1=00", body, 1_000, None),
            Err(Refused::NoTimestamp)
        );
    }

    #[test]
    fn signs_and_verifies() {
        let header = sign("whsec", 1_700_000_000, b"{\"a\":1}");
        assert!(header.starts_with("t=1700000000,v1="));
        assert!(verify("whsec", &header, b"{\"a\":1}"));
        assert!(!verify("whsec", &header, b"{\"a\":2}"));
        assert!(!verify("other", &header, b"{\"a\":1}"));
        assert!(!verify("whsec", "v1=00", b"{\"a\":1}"));
    }
}
