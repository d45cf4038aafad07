//! Storage: the queries are one SQL dialect subset run through sqlx's `Any`
//! driver, so the same ledger code (and the same test suite) serves SQLite and
//! PostgreSQL. Only the schema differs a little: its migrations live in one
//! folder per dialect (`ledger/migrations/`), run by sqlx's migrator.

use std::sync::Arc;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{Migrate, Migrator};
use sqlx::{AnyPool, Connection, Executor};

use crate::catalog::cache::CatalogCache;

pub mod group_commit;

use group_commit::GroupCommit;

/// Schema migrations, one folder per dialect (`ledger/migrations/`), run by
/// sqlx's migrator and recorded in `_sqlx_migrations`. Never edit a released
/// one (its checksum is checked at every start): add the next, to both folders.
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// The table in which databases made before sqlx's migrator recorded their
/// versions; see [`Db::adopt_legacy_history`].
const LEGACY_HISTORY: &str = "schema_migrations";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Db {
    /// Where writes go. On SQLite one connection: the single writer.
    pub pool: AnyPool,
    /// Read-only queries that need no transaction (the catalog's version,
    /// balances shown to apps). On SQLite a pool of query-only connections
    /// reading the last commit beside the writer (WAL); on PostgreSQL the
    /// same pool as writes.
    pub reader: AnyPool,
    /// Authorizations and settlements, committed in batches.
    pub writes: GroupCommit,
    pub backend: Backend,
    /// The catalog as authorize reads it, shared by every clone of this Db.
    pub catalog: Arc<CatalogCache>,
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
        let (pool, reader) = match backend {
            // SQLite has one writer anyway; a single connection serializes every
            // money movement without SQLITE_BUSY upgrades.
            Backend::Sqlite => {
                let url = sqlite_url_with_create(url);
                let pool = sqlite_pool(&url, 1, false).await?;
                // After the writer, which creates the file and turns WAL on.
                let reader = sqlite_pool(&url, SQLITE_READERS, true).await?;
                (pool, reader)
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    // sqlx pings on every acquire by default: a network round trip
                    // per authorize. A busy connection proves itself; only one
                    // that sat idle is checked (a restarted server is then seen
                    // before a request meets the dead connection).
                    .test_before_acquire(false)
                    .before_acquire(|conn, meta| {
                        Box::pin(async move {
                            if meta.idle_for >= IDLE_BEFORE_PING {
                                conn.ping().await?;
                            }
                            Ok(true)
                        })
                    })
                    .connect(url)
                    .await?;
                (pool.clone(), pool)
            }
        };
        let writes = match backend {
            Backend::Sqlite => GroupCommit::batched(pool.clone())?,
            Backend::Postgres => GroupCommit::per_job(pool.clone()),
        };
        let db = Db {
            writes,
            pool,
            reader,
            backend,
            catalog: Arc::default(),
        };
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

    /// Applies the migrations this database has not seen.
    async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        self.adopt_legacy_history(migrator).await?;
        migrator.run(&self.pool).await?;
        Ok(())
    }

    /// Databases created before sqlx's migrator kept their applied versions
    /// in `schema_migrations`. Those versions are the same files, so they are
    /// recorded in sqlx's table as applied (with the checksums sqlx expects)
    /// and the old table is dropped; the migrator then applies only what is
    /// new. One transaction, so a crash leaves the old history in place.
    async fn adopt_legacy_history(&self, migrator: &Migrator) -> anyhow::Result<()> {
        let exists_sql = match self.backend {
            Backend::Sqlite => {
                "SELECT CAST(COUNT(*) AS BIGINT) FROM sqlite_master WHERE type = 'table' AND name = $1"
            }
            Backend::Postgres => {
                "SELECT CAST(COUNT(*) AS BIGINT) FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_name = $1"
            }
        };
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            // Several sidecars may start at once against one database.
            sqlx::query("SELECT pg_advisory_xact_lock(7461726)")
                .execute(&mut *tx)
                .await?;
        }
        let legacy: i64 = sqlx::query_scalar(exists_sql)
            .bind(LEGACY_HISTORY)
            .fetch_one(&mut *tx)
            .await?;
        if legacy == 0 {
            return Ok(());
        }
        let applied: Vec<i64> = sqlx::query_scalar(&format!(
            "SELECT version FROM {LEGACY_HISTORY} ORDER BY version"
        ))
        .fetch_all(&mut *tx)
        .await?;
        tx.ensure_migrations_table().await?;
        for version in &applied {
            let m = migrator
                .iter()
                .find(|m| m.version == *version)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "the database has migration {version}, which this build does not know"
                    )
                })?;
            sqlx::query(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
                 VALUES ($1, $2, TRUE, $3, 0) ON CONFLICT (version) DO NOTHING",
            )
            .bind(m.version)
            .bind(m.description.as_ref())
            .bind(m.checksum.as_ref())
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(&format!("DROP TABLE {LEGACY_HISTORY}"))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(
            versions = applied.len(),
            "schema history moved to sqlx's migrator"
        );
        Ok(())
    }
}

/// Read connections beside SQLite's one writer.
const SQLITE_READERS: u32 = 4;

/// A pooled PostgreSQL connection idle this long is pinged before use.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

async fn sqlite_pool(url: &str, connections: u32, read_only: bool) -> anyhow::Result<AnyPool> {
    Ok(AnyPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(10))
        // A file has no far end to lose: the ping sqlx sends on every acquire
        // would only cost a hop to the connection's worker thread.
        .test_before_acquire(false)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                conn.execute("PRAGMA journal_mode=WAL").await?;
                conn.execute("PRAGMA busy_timeout=5000").await?;
                conn.execute("PRAGMA foreign_keys=ON").await?;
                conn.execute("PRAGMA synchronous=FULL").await?;
                // Each job of a batch runs in a savepoint, and SQLite keeps the
                // pages a savepoint may roll back to in a statement journal: a
                // temporary file by default once it passes 64 KiB, written for
                // every page a job touches (16 % of the sidecar's CPU at peak,
                // in `pwrite`). In memory it costs no system calls.
                conn.execute("PRAGMA temp_store=MEMORY").await?;
                if read_only {
                    conn.execute("PRAGMA query_only=ON").await?;
                }
                Ok(())
            })
        })
        .connect(url)
        .await?)
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
