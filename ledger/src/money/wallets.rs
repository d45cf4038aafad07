//! Which wallet a (paywall, user) pair spends from.
//!
//! - `isolated` paywalls: one wallet per paywall and user, `wallet:<paywall>:<user>`.
//! - `shared` paywalls: one wallet per user across all shared paywalls,
//!   `wallet:shared:<user>`, usable by a paywall only after the user consented
//!   through an authorization link (see [`crate::access::consent`]).

use crate::db::Db;
use crate::error::{LedgerError, LedgerResult};
use crate::money::book::{self, Tx};
use tollgate_protocol::PaywallMode;

pub fn isolated_wallet(paywall_id: &str, user_id: &str) -> String {
    format!("wallet:{paywall_id}:{user_id}")
}

pub fn shared_wallet(user_id: &str) -> String {
    format!("wallet:shared:{user_id}")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalletFor {
    Ready(String),
    /// Shared paywall, and the user has not authorized it (or revoked it).
    NeedsConsent,
}

async fn mode_and_connection<'e, E>(
    executor: E,
    paywall_id: &str,
    user_id: &str,
) -> LedgerResult<(PaywallMode, bool)>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let (mode, connected_at): (String, Option<i64>) = sqlx::query_as(
        "SELECT p.mode, c.connected_at FROM paywalls p
         LEFT JOIN connections c ON c.paywall_id = p.id AND c.user_id = $2 AND c.revoked_at IS NULL
         WHERE p.id = $1",
    )
    .bind(paywall_id)
    .bind(user_id)
    .fetch_optional(executor)
    .await?
    .ok_or_else(|| LedgerError::NotFound(format!("no paywall {paywall_id}")))?;
    let mode = PaywallMode::parse(&mode)
        .ok_or_else(|| LedgerError::Internal(format!("paywall {paywall_id} has mode {mode:?}")))?;
    Ok((mode, connected_at.is_some()))
}

fn decide(paywall_id: &str, user_id: &str, mode: PaywallMode, connected: bool) -> WalletFor {
    match (mode, connected) {
        (PaywallMode::Shared, true) => WalletFor::Ready(shared_wallet(user_id)),
        (PaywallMode::Shared, false) => WalletFor::NeedsConsent,
        (PaywallMode::Isolated, _) => WalletFor::Ready(isolated_wallet(paywall_id, user_id)),
    }
}

/// The wallet, read outside a transaction (balances, listings).
pub async fn wallet_for(db: &Db, paywall_id: &str, user_id: &str) -> LedgerResult<WalletFor> {
    let (mode, connected) = mode_and_connection(&db.pool, paywall_id, user_id).await?;
    Ok(decide(paywall_id, user_id, mode, connected))
}

/// The wallet inside a money transaction, created if it does not exist yet.
pub async fn open_wallet(tx: &mut Tx, paywall_id: &str, user_id: &str) -> LedgerResult<WalletFor> {
    let (mode, connected) = mode_and_connection(&mut **tx, paywall_id, user_id).await?;
    let wallet = decide(paywall_id, user_id, mode, connected);
    if let WalletFor::Ready(account) = &wallet {
        open_account(tx, account, paywall_id, mode, user_id).await?;
    }
    Ok(wallet)
}

/// The wallet a request spends from, for a paywall whose mode the caller
/// already knows (authorize reads it from the catalog in memory): only a
/// shared paywall costs a read, of the user's consent. The account may not
/// exist yet; see [`open_account`].
pub async fn spending_wallet(
    tx: &mut Tx,
    paywall_id: &str,
    mode: PaywallMode,
    user_id: &str,
) -> LedgerResult<WalletFor> {
    let connected = match mode {
        PaywallMode::Isolated => false,
        PaywallMode::Shared => {
            let found: Option<i64> = sqlx::query_scalar(
                "SELECT connected_at FROM connections
                 WHERE paywall_id = $1 AND user_id = $2 AND revoked_at IS NULL",
            )
            .bind(paywall_id)
            .bind(user_id)
            .fetch_optional(&mut **tx)
            .await?;
            found.is_some()
        }
    };
    Ok(decide(paywall_id, user_id, mode, connected))
}

/// Creates a wallet's account if it does not exist (a user's first request or payment).
pub async fn open_account(
    tx: &mut Tx,
    account: &str,
    paywall_id: &str,
    mode: PaywallMode,
    user_id: &str,
) -> LedgerResult<()> {
    let owner = (mode == PaywallMode::Isolated).then_some(paywall_id);
    book::ensure_account(tx, account, "wallet", owner, Some(user_id)).await
}

/// The wallet a completed payment credits, created if needed: the user paid,
/// so the money lands in the user's wallet even if a shared paywall's
/// authorization was revoked between the link and the payment.
pub async fn payment_wallet(tx: &mut Tx, paywall_id: &str, user_id: &str) -> LedgerResult<String> {
    let (mode, _) = mode_and_connection(&mut **tx, paywall_id, user_id).await?;
    let WalletFor::Ready(account) = decide(paywall_id, user_id, mode, true) else {
        return Err(LedgerError::Internal(
            "a connected user has a wallet".into(),
        ));
    };
    open_account(tx, &account, paywall_id, mode, user_id).await?;
    Ok(account)
}

/// Like [`open_wallet`], for callers that cannot ask for consent (deposits,
/// manual charges): a shared paywall without the user's consent is refused.
pub async fn require_wallet(tx: &mut Tx, paywall_id: &str, user_id: &str) -> LedgerResult<String> {
    match open_wallet(tx, paywall_id, user_id).await? {
        WalletFor::Ready(w) => Ok(w),
        WalletFor::NeedsConsent => Err(LedgerError::NotConnected(format!(
            "user {user_id} has not authorized this paywall"
        ))),
    }
}
