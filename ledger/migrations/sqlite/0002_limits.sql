-- Migration 2: per-paywall limits, enforced atomically with the hold.

-- NULL column = no such limit.
CREATE TABLE IF NOT EXISTS limits (
    paywall_id              TEXT PRIMARY KEY REFERENCES paywalls(id),
    max_tokens_per_request  BIGINT,
    requests_per_minute     BIGINT,
    tokens_per_minute       BIGINT,
    max_open_holds          BIGINT,
    daily_spend_cap         BIGINT,
    monthly_spend_cap       BIGINT
);

-- Fixed-window counters per wallet: window is minute | day | month (UTC),
-- window_start its first millisecond. Reserved at authorize, corrected at settle.
CREATE TABLE IF NOT EXISTS usage_windows (
    wallet_account  TEXT NOT NULL,
    window_kind     TEXT NOT NULL,
    window_start    BIGINT NOT NULL,
    requests        BIGINT NOT NULL DEFAULT 0,
    tokens          BIGINT NOT NULL DEFAULT 0,
    spent           BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (wallet_account, window_kind, window_start)
);

-- Open holds per wallet, for the concurrency cap.
ALTER TABLE accounts ADD COLUMN open_holds BIGINT NOT NULL DEFAULT 0;

-- Which windows a hold was counted in (NULL: no limits applied), and the
-- tokens it reserved, so settle can give back what was not used.
ALTER TABLE holds ADD COLUMN reserved_tokens BIGINT;
ALTER TABLE holds ADD COLUMN minute_window BIGINT;
ALTER TABLE holds ADD COLUMN day_window BIGINT;
ALTER TABLE holds ADD COLUMN month_window BIGINT;
