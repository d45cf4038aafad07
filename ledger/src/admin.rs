//! Operator operations shared by the admin API and the CLI: paywalls and
//! their modes, keys, limits, models and prices. Everything the TOML seeds can
//! be changed here too; at the next start the TOML wins for what it names.

use crate::catalog::{PriceRow, PRICE_COLUMNS};
use serde::Serialize;

use crate::access::paywall_keys::{self, CreatedKey};
use crate::calendar::now_ms;
use crate::catalog::{self, Paywall};
use crate::config::{LimitsSeed, ModelSeed};
use crate::db::Db;
use crate::error::{LedgerError, LedgerResult};
use crate::pricing::PriceRule;
use tollgate_protocol::PaywallMode;

fn check_id(id: &str) -> LedgerResult<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(LedgerError::Invalid(
            "paywall ids are 1 to 64 of a-z, 0-9, '-' and '_'".into(),
        ))
    }
}

fn check_mode(mode: &str) -> LedgerResult<PaywallMode> {
    PaywallMode::parse(mode)
        .ok_or_else(|| LedgerError::Invalid("mode must be \"isolated\" or \"shared\"".into()))
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct PaywallInfo {
    pub id: String,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub mode: PaywallMode,
    pub created_at: i64,
}

pub async fn list_paywalls(db: &Db) -> LedgerResult<Vec<PaywallInfo>> {
    Ok(
        sqlx::query_as("SELECT id, name, mode, created_at FROM paywalls ORDER BY id")
            .fetch_all(&db.pool)
            .await?,
    )
}

/// Creates a paywall and its first key (returned once, in plaintext).
pub async fn create_paywall(
    db: &Db,
    id: &str,
    name: &str,
    mode: &str,
) -> LedgerResult<(Paywall, CreatedKey)> {
    check_id(id)?;
    let mode = check_mode(mode)?;
    let inserted = sqlx::query("INSERT INTO paywalls (id, name, mode, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
        .bind(id)
        .bind(name)
        .bind(mode.as_str())
        .bind(now_ms())
        .execute(&db.pool)
        .await?;
    if inserted.rows_affected() != 1 {
        return Err(LedgerError::Conflict(format!(
            "paywall {id} already exists"
        )));
    }
    let key = paywall_keys::create(db, id, "initial").await?;
    Ok((
        Paywall {
            id: id.into(),
            name: name.into(),
            mode,
        },
        key,
    ))
}

pub async fn update_paywall(
    db: &Db,
    id: &str,
    name: Option<&str>,
    mode: Option<&str>,
) -> LedgerResult<PaywallInfo> {
    if let Some(m) = mode {
        check_mode(m)?;
    }
    let done = sqlx::query(
        "UPDATE paywalls SET name = COALESCE($1, name), mode = COALESCE($2, mode) WHERE id = $3",
    )
    .bind(name)
    .bind(mode)
    .bind(id)
    .execute(&db.pool)
    .await?;
    if done.rows_affected() != 1 {
        return Err(LedgerError::NotFound(format!("no paywall {id}")));
    }
    list_paywalls(db)
        .await?
        .into_iter()
        .find(|p| p.id == id)
        .ok_or_else(|| LedgerError::NotFound(format!("no paywall {id}")))
}

pub async fn set_limits(db: &Db, id: &str, limits: &LimitsSeed) -> LedgerResult<()> {
    let mut tx = db.pool.begin().await?;
    let exists = sqlx::query("SELECT id FROM paywalls WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_none() {
        return Err(LedgerError::NotFound(format!("no paywall {id}")));
    }
    catalog::seed_limits(&mut tx, id, Some(limits))
        .await
        .map_err(|e| LedgerError::Invalid(e.to_string()))?;
    tx.commit().await?;
    Ok(())
}

/// Creates or updates a model and returns its current price rule. Its
/// fallbacks are left as the TOML set them.
pub async fn put_model(db: &Db, model: &ModelSeed) -> LedgerResult<PriceRule> {
    if !model.fallbacks.is_empty() {
        return Err(LedgerError::Invalid(
            "fallbacks are set in the ledger's TOML: Envoy's fallback routes are generated from it"
                .into(),
        ));
    }
    let mut tx = db.pool.begin().await?;
    catalog::put_model(&mut tx, model, now_ms())
        .await
        .map_err(|e| LedgerError::Invalid(e.to_string()))?;
    tx.commit().await?;
    catalog::model_route(db, &model.name)
        .await?
        .map(|r| r.price)
        .ok_or_else(|| LedgerError::Internal(format!("model {} vanished", model.name)))
}

/// Every version of a model's price, newest first.
pub async fn price_history(db: &Db, model: &str) -> LedgerResult<Vec<PriceRule>> {
    let sql = format!(
        "SELECT {PRICE_COLUMNS} FROM price_rules p WHERE p.model = $1 ORDER BY p.version DESC"
    );
    let rows: Vec<PriceRow> = sqlx::query_as(&sql).bind(model).fetch_all(&db.pool).await?;
    Ok(rows.into_iter().map(PriceRule::from).collect())
}
