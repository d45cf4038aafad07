//! Who may spend, and how much: paywall keys (stored hashed, compared in
//! constant time), the links shown to end users (top-up, consent) with their
//! single-use tokens, shared mode's consent, and the per-paywall limits that
//! authorize enforces atomically with the hold.

pub mod consent;
pub mod limits;
pub mod links;
pub mod paywall_keys;
pub mod secrets;
