-- Migration 3: shared mode. A user's consent (given through a `links` row of
-- purpose `consent`) lets a paywall charge the user's shared wallet, one per
-- user across paywalls.

CREATE TABLE IF NOT EXISTS connections (
    paywall_id    TEXT NOT NULL REFERENCES paywalls(id),
    user_id       TEXT NOT NULL,
    connected_at  BIGINT NOT NULL,
    revoked_at    BIGINT,
    PRIMARY KEY (paywall_id, user_id)
);

-- On whose behalf a transfer was made: a shared wallet's owner sees all of
-- it, a paywall only its own.
ALTER TABLE transfers ADD COLUMN paywall_id TEXT;
