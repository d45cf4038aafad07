-- Migration 3: shared mode. A user's consent lets a paywall charge the user's
-- shared wallet (one per user across paywalls); consent links carry
-- single-use, expiring tokens (only their hash is stored).

CREATE TABLE IF NOT EXISTS connections (
    paywall_id    TEXT NOT NULL REFERENCES paywalls(id),
    user_id       TEXT NOT NULL,
    connected_at  BIGINT NOT NULL,
    revoked_at    BIGINT,
    PRIMARY KEY (paywall_id, user_id)
);

CREATE TABLE IF NOT EXISTS consent_links (
    token_hash  TEXT PRIMARY KEY,
    paywall_id  TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT,
    created_at  BIGINT NOT NULL
);

-- On whose behalf a transfer was made: a shared wallet's owner sees all of
-- it, a paywall only its own.
ALTER TABLE transfers ADD COLUMN paywall_id TEXT;
