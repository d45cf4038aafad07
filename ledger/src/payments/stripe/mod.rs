//! Stripe Checkout: the API client, the objects it returns, and the webhook
//! events that credit, fail and refund payments.

pub mod client;
pub mod objects;
pub mod start;
pub mod webhook;
