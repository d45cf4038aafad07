//! The provider registry: the providers requests can go to, as the TOML seeds
//! them and the admin API and CLI list and change them. A provider's key is
//! never stored here: only where the operator keeps it (an environment
//! variable or a file); paywalls' own keys are in `provider_keys`.

use serde::Serialize;
use sqlx::{Any, Transaction};

use crate::catalog::provider_kinds::{key_available, BuiltInKeyRef, ProviderKind};
use crate::config::ProviderSeed;
use crate::db::Db;
use crate::error::{LedgerError, LedgerResult};

/// Creates or updates a provider after checking the entry (kind, URL, header).
pub async fn put_provider(
    tx: &mut Transaction<'static, Any>,
    p: &ProviderSeed,
) -> anyhow::Result<()> {
    let r = p.resolve()?;
    anyhow::ensure!(
        !p.id.is_empty() && !p.cluster.is_empty(),
        "a provider needs an id and a cluster"
    );
    sqlx::query(
        "INSERT INTO providers (id, cluster, auth_header, auth_scheme, api_key_env, kind, base_url, api_version,
            api_key_file)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (id) DO UPDATE SET cluster = excluded.cluster, auth_header = excluded.auth_header,
            auth_scheme = excluded.auth_scheme, api_key_env = excluded.api_key_env, kind = excluded.kind,
            base_url = excluded.base_url, api_version = excluded.api_version, api_key_file = excluded.api_key_file",
    )
    .bind(&p.id)
    .bind(&p.cluster)
    .bind(&r.auth_header)
    .bind(&r.auth_scheme)
    .bind(&r.api_key_env)
    .bind(r.kind.as_str())
    .bind(&r.base_url)
    .bind(&r.api_version)
    .bind(&r.api_key_file)
    .execute(&mut **tx)
    .await?;
    if r.api_key_env.is_empty() && r.api_key_file.is_empty() && r.kind.requires_key() {
        tracing::info!(provider = %p.id, "provider has no operator key: only paywalls with their own key can use it");
    }
    Ok(())
}

/// A provider as listed: where its key comes from, never the key.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ProviderInfo {
    pub id: String,
    pub kind: String,
    pub cluster: String,
    pub base_url: Option<String>,
    pub api_version: Option<String>,
    pub auth_header: String,
    /// `env:NAME`, `file:PATH` or `none` (paywalls bring their own, or no key is needed).
    pub operator_key: String,
    /// Whether the operator's key can be read now.
    pub operator_key_available: bool,
}

pub async fn list_providers(db: &Db) -> LedgerResult<Vec<ProviderInfo>> {
    #[derive(sqlx::FromRow)]
    struct ProviderRow {
        id: String,
        kind: String,
        cluster: String,
        base_url: Option<String>,
        api_version: Option<String>,
        auth_header: String,
        api_key_env: String,
        api_key_file: Option<String>,
    }
    let rows: Vec<ProviderRow> = sqlx::query_as(
        "SELECT id, kind, cluster, base_url, api_version, auth_header, api_key_env, api_key_file
         FROM providers ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let env = r.api_key_env;
            let file = r.api_key_file.unwrap_or_default();
            let kind = r.kind;
            let operator_key = match (env.is_empty(), file.is_empty()) {
                (false, _) => format!("env:{env}"),
                (true, false) => format!("file:{file}"),
                (true, true) => "none".into(),
            };
            let at = BuiltInKeyRef {
                env: &env,
                file: &file,
            };
            let available = (!env.is_empty() || !file.is_empty())
                && ProviderKind::parse(&kind).is_some_and(|k| key_available(k, false, at));
            ProviderInfo {
                id: r.id,
                kind,
                cluster: r.cluster,
                base_url: r.base_url,
                api_version: r.api_version,
                auth_header: r.auth_header,
                operator_key,
                operator_key_available: available,
            }
        })
        .collect())
}

/// Creates or updates a provider from the admin API or CLI.
pub async fn put(db: &Db, p: &ProviderSeed) -> LedgerResult<ProviderInfo> {
    let mut tx = db.pool.begin().await?;
    put_provider(&mut tx, p)
        .await
        .map_err(|e| LedgerError::Invalid(e.to_string()))?;
    tx.commit().await?;
    list_providers(db)
        .await?
        .into_iter()
        .find(|i| i.id == p.id)
        .ok_or_else(|| LedgerError::Internal(format!("provider {} vanished", p.id)))
}
