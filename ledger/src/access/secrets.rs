//! Secrets and identifiers: keys are stored as SHA-256 digests and compared in
//! constant time; ids and link tokens come from the OS random source.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub fn sha256_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// `n` random bytes as hex.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    // getrandom only fails when the OS has no entropy source; refuse to go on.
    if getrandom::getrandom(&mut buf).is_err() {
        panic!("OS random source unavailable");
    }
    hex::encode(buf)
}

/// A new identifier such as `hold_3f9a…` (96 random bits).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_hex(12))
}

/// A new unguessable bearer token for links (256 random bits).
pub fn new_token() -> String {
    random_hex(32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_compares() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
        assert_ne!(new_token(), new_token());
        assert!(new_id("hold").starts_with("hold_"));
    }
}
