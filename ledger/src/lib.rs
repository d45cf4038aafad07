//! Tollgate ledger sidecar: decides whether a user may spend, keeps the money
//! in a double-entry ledger (SQLite or PostgreSQL), and serves the public API
//! and end-user pages.
//!
//! The parts, and which way they depend (an arrow points at what is used):
//!
//! ```text
//! http ──▶ money ──▶ catalog ──▶ db, config, error
//!   │        │  └──▶ access  ──▶ money::book, outbox::events
//!   │        └─────▶ outbox (events in the same transaction as the money)
//!   └──▶ admin (operator writes shared by the admin API and the CLI)
//! ```
//!
//! - [`money`]: book, holds (authorize/settle/expiry), deposits, wallets, verify.
//! - [`catalog`]: paywalls, models and prices, providers and their keys.
//! - [`access`]: paywall keys, links and consent, limits.
//! - [`outbox`]: events and webhooks.
//! - [`payments`]: the top-up page's processors (Stripe Checkout, development).
//! - [`http`]: the internal, public and admin APIs and the end-user pages.
//! - [`envoy_config`] writes Envoy YAML for the configured providers; it reads
//!   the configuration only and never touches the books.

pub mod access;
pub mod admin;
pub mod calendar;
pub mod catalog;
pub mod config;
pub mod db;
pub mod envoy_config;
pub mod error;
pub mod faults;
pub mod http;
pub mod metrics;
pub mod money;
pub mod outbox;
pub mod payments;
pub use tollgate_protocol::pricing;
pub mod server;
pub mod settings;
