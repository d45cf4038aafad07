//! What happened, for others to read: the events outbox (written in the same
//! transaction as the money movement it describes) and the webhooks that
//! deliver its events to operator endpoints, signed and retried.

pub mod events;
pub mod webhooks;
