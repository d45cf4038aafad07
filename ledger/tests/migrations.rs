//! Schema migrations: a new database gets every migration, and a database
//! made before sqlx's migrator (history in `schema_migrations`, see
//! `tests/fixtures/README.md`) opens with today's code, keeps its data and
//! its books, and is not migrated twice.

mod common;

use common::*;
use tollgate_ledger::calendar::now_ms;
use tollgate_ledger::db::Db;
use tollgate_ledger::money::{book, holds};

const VERSIONS: &[i64] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10];

async fn applied(db: &Db) -> Vec<i64> {
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

async fn has_legacy_table(db: &Db) -> bool {
    sqlx::query("SELECT 1 FROM schema_migrations")
        .fetch_optional(&db.pool)
        .await
        .is_ok()
}

/// What the fixture holds must still be there, and the books must add up.
async fn assert_fixture_data(db: &Db) {
    assert_eq!(applied(db).await, VERSIONS);
    assert!(
        !has_legacy_table(db).await,
        "the old history table is dropped"
    );
    let b = book::balance(db, "wallet:app:alice").await.unwrap();
    let holds: Vec<(String, String)> =
        sqlx::query_as("SELECT request_id, state FROM holds ORDER BY request_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        holds,
        [
            ("req-fixture-1".to_string(), "posted".to_string()),
            ("req-fixture-2".to_string(), "pending".to_string())
        ]
    );
    assert!(b.held > 0, "the open hold still reserves money: {b:?}");
    assert!(
        b.available + b.held < 5_000_000,
        "the settled charge is kept: {b:?}"
    );
    assert_books_balance_then(db).await;
}

/// The books checked as of when the fixture was made: its open hold has
/// long passed its TTL since (no sweeper ran on the file).
async fn assert_books_balance_then(db: &Db) {
    let made: i64 = sqlx::query_scalar("SELECT CAST(MAX(created_at) AS BIGINT) FROM holds")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let report = tollgate_ledger::money::verify::verify(db, made, 60_000)
        .await
        .unwrap();
    assert!(report.is_clean(), "{:#?}", report.violations);
}

/// A hold left pending with fallback providers packed the old way
/// (`provider=key_source,…`), written before the database is migrated.
const PACKED_HOLD: &str = "UPDATE holds SET fallback_key_sources = 'azure=byok,groq=built_in' WHERE request_id = 'req-fixture-2'";

/// Migration 8 split the packed list into one row per fallback.
async fn assert_fallbacks_unpacked(db: &Db) {
    let rows: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT f.position, f.provider_id, f.key_source FROM hold_fallbacks f
         JOIN holds h ON h.id = f.hold_id WHERE h.request_id = 'req-fixture-2' ORDER BY f.position",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            (1, "azure".to_string(), "byok".to_string()),
            (2, "groq".to_string(), "built_in".to_string())
        ]
    );
}

/// The legacy database keeps working: a new deposit and a request go through.
async fn assert_usable(db: &Db) {
    tollgate_ledger::money::deposits::deposit(db, "app", "alice", 1_000_000, "after-migration")
        .await
        .unwrap();
    hold_for(db, "alice", "req-after-migration", 10, 20).await;
    // The sweeper resolves the fixture's long-expired hold; then all is clean now.
    holds::expire_holds(db, now_ms(), holds::ExpiryPolicy::Void)
        .await
        .unwrap();
    assert_books_balance(db).await;
}

#[tokio::test]
async fn a_new_sqlite_database_gets_every_migration() {
    let t = open("sqlite").await.unwrap();
    assert_eq!(applied(&t.db).await, VERSIONS);
    assert!(!has_legacy_table(&t.db).await);
}

#[tokio::test]
async fn a_sqlite_file_made_by_the_old_runner_migrates_forward() {
    let dir = temp_folder();
    let path = dir.join("ledger.db");
    std::fs::copy("tests/fixtures/ledger-schema7.sqlite", &path).unwrap();
    let url = format!("sqlite://{}", path.display());
    let raw = Db::connect_raw(&url).await.unwrap();
    sqlx::query(PACKED_HOLD).execute(&raw).await.unwrap();
    raw.close().await;
    let db = Db::connect(&url).await.unwrap();
    assert_fixture_data(&db).await;
    assert_fallbacks_unpacked(&db).await;
    db.pool.close().await;
    // Opening it again changes nothing.
    let db = Db::connect(&url).await.unwrap();
    assert_fixture_data(&db).await;
    let t = adopt(db, url, None, Some(dir));
    assert_usable(&t.db).await;
}

#[tokio::test]
async fn a_postgres_database_made_by_the_old_runner_migrates_forward() {
    let Some((url, cleanup)) = empty_postgres().await else {
        return;
    };
    let raw = Db::connect_raw(&url).await.unwrap();
    let dump = std::fs::read_to_string("tests/fixtures/ledger-schema7.postgres.sql").unwrap();
    sqlx::raw_sql(&dump).execute(&raw).await.unwrap();
    raw.close().await;
    // The dump empties search_path for its own session; a new one has it back.
    let raw = Db::connect_raw(&url).await.unwrap();
    sqlx::query(PACKED_HOLD).execute(&raw).await.unwrap();
    raw.close().await;
    let db = Db::connect(&url).await.unwrap();
    assert_fixture_data(&db).await;
    assert_fallbacks_unpacked(&db).await;
    db.pool.close().await;
    let db = Db::connect(&url).await.unwrap();
    assert_fixture_data(&db).await;
    let t = adopt(db, url, Some(cleanup), None);
    assert_usable(&t.db).await;
}

#[tokio::test]
async fn a_new_postgres_database_gets_every_migration() {
    let Some(t) = open("postgres").await else {
        return;
    };
    assert_eq!(applied(&t.db).await, VERSIONS);
}
