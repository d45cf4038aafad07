//! Storage: one SQL dialect subset run through sqlx's `Any` driver, so the
//! same ledger code (and the same test suite) serves SQLite and PostgreSQL.

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

/// Schema migrations in order; each runs once, recorded in `schema_migrations`.
/// Never edit a released one: add the next.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("0001_initial.sql")),
    (2, include_str!("0002_limits.sql")),
    (3, include_str!("0003_shared_mode.sql")),
    (4, include_str!("0004_provider_kinds.sql")),
    (5, include_str!("0005_byok_provider_cost.sql")),
    (6, include_str!("0006_model_fallbacks.sql")),
    (7, include_str!("0007_webhooks.sql")),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
}

impl Db {
    /// Connects and applies the schema. `sqlite://path` (created if missing) or `postgres://…`.
    pub async fn connect(url: &str) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            anyhow::bail!("unsupported database URL (use sqlite:// or postgres://)");
        };
        let pool = match backend {
            // SQLite has one writer anyway; a single connection serializes every
            // money movement without SQLITE_BUSY upgrades.
            Backend::Sqlite => {
                AnyPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(10))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute("PRAGMA journal_mode=WAL").await?;
                            conn.execute("PRAGMA busy_timeout=5000").await?;
                            conn.execute("PRAGMA foreign_keys=ON").await?;
                            conn.execute("PRAGMA synchronous=FULL").await?;
                            Ok(())
                        })
                    })
                    .connect(&sqlite_url_with_create(url))
                    .await?
            }
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(url)
                    .await?
            }
        };
        let db = Db { pool, backend };
        db.migrate().await?;
        Ok(db)
    }

    /// A plain pool without schema (administration, tests).
    pub async fn connect_raw(url: &str) -> anyhow::Result<AnyPool> {
        sqlx::any::install_default_drivers();
        Ok(AnyPoolOptions::new()
            .max_connections(2)
            .connect(url)
            .await?)
    }

    /// Applies the migrations this database has not seen, in one transaction.
    async fn migrate(&self) -> anyhow::Result<()> {
        let serial = match self.backend {
            Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
            Backend::Postgres => "BIGSERIAL PRIMARY KEY",
        };
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            // Several sidecars may start at once against one database.
            sqlx::query("SELECT pg_advisory_xact_lock(7461726)")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        let applied: i64 =
            sqlx::query("SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) FROM schema_migrations")
                .fetch_one(&mut *tx)
                .await?
                .get(0);
        for (version, script) in MIGRATIONS.iter().filter(|(v, _)| *v > applied) {
            for stmt in split_statements(&script.replace("{{SERIAL}}", serial)) {
                sqlx::query(&stmt).execute(&mut *tx).await.map_err(|e| {
                    anyhow::anyhow!("migration {version} failed at `{}`: {e}", first_line(&stmt))
                })?;
            }
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(version)
                .bind(crate::calendar::now_ms())
                .execute(&mut *tx)
                .await?;
            tracing::info!(version, "applied schema migration");
        }
        tx.commit().await?;
        Ok(())
    }
}

fn first_line(stmt: &str) -> &str {
    stmt.lines().next().unwrap_or(stmt)
}

/// Drops `--` comments, then splits on `;` (the schema has no string literals).
fn split_statements(sql: &str) -> Vec<String> {
    let uncommented: String = sql
        .lines()
        .map(|l| l.split("--").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    uncommented
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn sqlite_url_with_create(url: &str) -> String {
    if url.contains("mode=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// Reads an optional BIGINT column.
pub fn opt_i64(row: &AnyRow, col: &str) -> Option<i64> {
    row.try_get::<Option<i64>, _>(col).ok().flatten()
}
