//! The operator's master key, which encrypts the provider keys paywalls bring
//! (BYOK) before they reach the database. XChaCha20-Poly1305 with a random
//! 192-bit nonce per secret; the associated data binds a ciphertext to its
//! paywall and provider, so a row copied onto another paywall does not decrypt.
//!
//! Keys are 32 random bytes written as 64 hex digits (`openssl rand -hex 32`).
//! Each is known by a key id (a digest of the key, never the key); rows name
//! the id they were sealed with. Rotating the master key: set the new key,
//! move the old one to the "previous" variable, run `admin provider-key-rewrap`,
//! then drop the old key.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

pub const MASTER_KEY_ENV: &str = "TOLLGATE_MASTER_KEY";
/// Comma-separated keys still accepted for decryption (during a rotation).
pub const PREVIOUS_MASTER_KEYS_ENV: &str = "TOLLGATE_MASTER_KEY_PREVIOUS";

const NONCE_BYTES: usize = 24;

/// Why a master key or a sealed secret cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("{0}: a master key must be 64 hex digits (32 bytes)")]
    Malformed(&'static str),
    #[error("no master key: set {MASTER_KEY_ENV} to store provider keys")]
    NoMasterKey,
    #[error("OS random source unavailable")]
    NoRandom,
    #[error("encryption failed")]
    Encryption,
    #[error("master key {0} is not configured")]
    UnknownMasterKey(String),
    #[error("the stored secret is malformed")]
    Malstored,
    #[error("the secret does not open with master key {0}")]
    DoesNotOpen(String),
    #[error("the secret is not UTF-8")]
    NotUtf8,
}

struct MasterKey {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl MasterKey {
    /// A hex key; `var` names where it came from, for the error.
    fn parse(hex_key: &str, var: &'static str) -> Result<Self, KeyError> {
        let bytes = hex::decode(hex_key.trim()).map_err(|_| KeyError::Malformed(var))?;
        let cipher =
            XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| KeyError::Malformed(var))?;
        let digest = Sha256::new()
            .chain_update(b"tollgate master key id v1\0")
            .chain_update(&bytes)
            .finalize();
        Ok(MasterKey {
            id: format!("mk_{}", hex::encode(&digest[..8])),
            cipher,
        })
    }
}

/// A secret as stored: which master key sealed it, the nonce, the ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Sealed {
    #[sqlx(rename = "master_key_id")]
    pub key_id: String,
    pub nonce: String,
    pub ciphertext: String,
}

/// The current master key (encrypts and decrypts) and earlier ones (decrypt only).
#[derive(Default)]
pub struct Keyring {
    current: Option<MasterKey>,
    previous: Vec<MasterKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Ids only: the keys themselves are never printed.
        f.debug_struct("Keyring")
            .field("current", &self.current_id())
            .field(
                "previous",
                &self.previous.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Keyring {
    /// From hex keys; an empty current key leaves BYOK disabled.
    pub fn new(current: &str, previous: &str) -> Result<Self, KeyError> {
        let current = match current.trim() {
            "" => None,
            key => Some(MasterKey::parse(key, MASTER_KEY_ENV)?),
        };
        let previous = previous
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| MasterKey::parse(k, PREVIOUS_MASTER_KEYS_ENV))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Keyring { current, previous })
    }

    /// From `TOLLGATE_MASTER_KEY` and `TOLLGATE_MASTER_KEY_PREVIOUS`.
    pub fn from_env() -> Result<Self, KeyError> {
        let var = |name| std::env::var(name).unwrap_or_default();
        Self::new(&var(MASTER_KEY_ENV), &var(PREVIOUS_MASTER_KEYS_ENV))
    }

    pub fn current_id(&self) -> Option<&str> {
        self.current.as_ref().map(|k| k.id.as_str())
    }

    pub fn seal(&self, plaintext: &str, aad: &str) -> Result<Sealed, KeyError> {
        let key = self.current.as_ref().ok_or(KeyError::NoMasterKey)?;
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::getrandom(&mut nonce).map_err(|_| KeyError::NoRandom)?;
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: aad.as_bytes(),
        };
        let ciphertext = key
            .cipher
            .encrypt(&XNonce::from(nonce), payload)
            .map_err(|_| KeyError::Encryption)?;
        Ok(Sealed {
            key_id: key.id.clone(),
            nonce: hex::encode(nonce),
            ciphertext: hex::encode(ciphertext),
        })
    }

    /// The plaintext, if a known master key opens it with this associated data.
    pub fn open(&self, sealed: &Sealed, aad: &str) -> Result<String, KeyError> {
        let key = self
            .current
            .iter()
            .chain(&self.previous)
            .find(|k| k.id == sealed.key_id)
            .ok_or_else(|| KeyError::UnknownMasterKey(sealed.key_id.clone()))?;
        let nonce: [u8; NONCE_BYTES] = hex::decode(&sealed.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or(KeyError::Malstored)?;
        let ciphertext = hex::decode(&sealed.ciphertext).map_err(|_| KeyError::Malstored)?;
        let payload = Payload {
            msg: &ciphertext,
            aad: aad.as_bytes(),
        };
        let plain = key
            .cipher
            .decrypt(&XNonce::from(nonce), payload)
            .map_err(|_| KeyError::DoesNotOpen(key.id.clone()))?;
        String::from_utf8(plain).map_err(|_| KeyError::NotUtf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const K2: &str = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";

    #[test]
    fn seals_and_opens_bound_to_its_context() {
        let ring = Keyring::new(K1, "").unwrap();
        let sealed = ring.seal("sk-secret", "pw|openai").unwrap();
        assert!(!sealed.ciphertext.contains(&hex::encode("sk-secret")));
        assert_eq!(ring.open(&sealed, "pw|openai").unwrap(), "sk-secret");
        assert!(ring.open(&sealed, "other|openai").is_err());
        let again = ring.seal("sk-secret", "pw|openai").unwrap();
        assert_ne!(again.nonce, sealed.nonce);
        assert_ne!(again.ciphertext, sealed.ciphertext);
    }

    #[test]
    fn tampering_is_detected() {
        let ring = Keyring::new(K1, "").unwrap();
        let mut sealed = ring.seal("sk-secret", "a").unwrap();
        let mut bytes = hex::decode(&sealed.ciphertext).unwrap();
        bytes[0] ^= 1;
        sealed.ciphertext = hex::encode(bytes);
        assert!(ring.open(&sealed, "a").is_err());
    }

    #[test]
    fn rotation_keeps_old_secrets_readable() {
        let old = Keyring::new(K1, "").unwrap();
        let sealed = old.seal("sk-secret", "a").unwrap();
        let rotated = Keyring::new(K2, K1).unwrap();
        assert_ne!(rotated.current_id(), old.current_id());
        assert_eq!(rotated.open(&sealed, "a").unwrap(), "sk-secret");
        let without_old = Keyring::new(K2, "").unwrap();
        let err = without_old.open(&sealed, "a").unwrap_err();
        assert_eq!(
            err,
            KeyError::UnknownMasterKey(old.current_id().unwrap().into())
        );
        assert!(err.to_string().contains("not configured"), "{err}");
    }

    #[test]
    fn refuses_bad_keys_and_never_prints_them() {
        assert!(Keyring::new("abcd", "").is_err());
        assert!(Keyring::new(K1, "zz").is_err());
        let none = Keyring::new("", "").unwrap();
        assert!(none.seal("x", "a").is_err());
        let ring = Keyring::new(K1, K2).unwrap();
        let shown = format!("{ring:?}");
        assert!(!shown.contains(K1) && !shown.contains(K2), "{shown}");
    }
}
