//! Errors of the money operations, and whether retrying can help.

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    /// A shared-mode paywall the user has not authorized.
    #[error("{0}")]
    NotConnected(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Internal(String),
    /// A service the ledger calls (Stripe) failed or could not be reached.
    #[error("{0}")]
    Unavailable(String),
}

impl LedgerError {
    /// True when the same call may succeed later (database or Stripe hiccup).
    pub fn is_transient(&self) -> bool {
        matches!(self, LedgerError::Db(_) | LedgerError::Unavailable(_))
    }
}

pub type LedgerResult<T> = Result<T, LedgerError>;
