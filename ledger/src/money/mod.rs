//! The money: double-entry accounts and immutable transfers (`book`), the
//! two-phase holds of metered requests (`holds`: authorize, settle, expiry),
//! money coming in (`deposits`; the processors are in `crate::payments`),
//! money owed after a refund (`owed`), money going out by hand
//! (`manual_charges`), which wallet a user spends from (`wallets`), replay
//! safety for side-effecting calls (`idempotency`) and the book checker
//! (`verify`). Every movement runs in one transaction with its event.

pub mod book;
pub mod deposits;
pub mod holds;
pub mod idempotency;
pub mod manual_charges;
pub mod owed;
pub mod verify;
pub mod wallets;
