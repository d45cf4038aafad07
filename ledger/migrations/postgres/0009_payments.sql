-- Migration 9: payments through Stripe Checkout. A session is credited at
-- most once (credited_at is set by a conditional update in the deposit's own
-- transaction; the deposit transfer is unique), and each Stripe event id is
-- handled at most once (its row is inserted in the same transaction).
CREATE TABLE IF NOT EXISTS checkout_sessions (
    id                  TEXT PRIMARY KEY,       -- Stripe's cs_… id
    paywall_id          TEXT NOT NULL,
    user_id             TEXT NOT NULL,
    link_hash           TEXT,                   -- SHA-256 of the top-up link's token
    amount_minor        BIGINT NOT NULL,        -- in the currency's minor unit (Stripe's amount_total once paid)
    currency            TEXT NOT NULL,
    state               TEXT NOT NULL,          -- open | processing | credited | failed | wrong_currency
    payment_intent      TEXT,
    wallet_account      TEXT,                   -- the wallet it credited
    deposit_transfer_id TEXT UNIQUE,
    credited_at         BIGINT,
    credit_source       TEXT,                   -- the Stripe event id, reconcile, success_page, refund_lookup
    refunded_minor      BIGINT NOT NULL,        -- the charge's amount_refunded debited so far
    last_refund_minor   BIGINT NOT NULL,        -- the part the last refund debited
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS checkout_sessions_payment_intent ON checkout_sessions (payment_intent);
CREATE INDEX IF NOT EXISTS checkout_sessions_link ON checkout_sessions (link_hash);
CREATE INDEX IF NOT EXISTS checkout_sessions_user ON checkout_sessions (paywall_id, user_id);

CREATE TABLE IF NOT EXISTS stripe_events (
    id          TEXT PRIMARY KEY,               -- Stripe's evt_… id
    type        TEXT NOT NULL,
    outcome     TEXT NOT NULL,                  -- credited | pending | failed | refunded | already_applied | ignored | error
    session_id  TEXT,
    detail      TEXT,
    received_at BIGINT NOT NULL
);
