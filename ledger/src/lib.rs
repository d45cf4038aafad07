//! Tollgate ledger sidecar: decides whether a user may spend, keeps the money
//! in a double-entry ledger (SQLite or PostgreSQL), and serves the public API
//! and end-user pages.

pub mod admin;
pub mod book;
pub mod calendar;
pub mod catalog;
pub mod config;
pub mod consent;
pub mod db;
pub mod deposits;
pub mod envoy_providers;
pub mod error;
pub mod events;
pub mod faults;
pub mod holds;
pub mod http;
pub mod idempotency;
pub mod keys;
pub mod limits;
pub mod links;
pub mod manual_charges;
pub mod master_key;
pub mod metrics;
pub mod payments;
pub mod paywall_keys;
pub mod provider_keys;
pub mod provider_registry;
pub mod providers;
pub use tollgate_protocol::pricing;
pub mod server;
pub mod settings;
pub mod verify;
pub mod wallets;
pub mod webhooks;
