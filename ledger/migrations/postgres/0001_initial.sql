-- Migration 1: the initial ledger schema.
-- PostgreSQL dialect; migrations/sqlite/ holds the same schema for SQLite.
-- Money columns are integer micro-units; times are Unix milliseconds.

CREATE TABLE IF NOT EXISTS paywalls (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    mode        TEXT NOT NULL,              -- isolated | shared
    created_at  BIGINT NOT NULL
);

-- A paywall's API keys: only their SHA-256 is stored; a key is shown once.
CREATE TABLE IF NOT EXISTS paywall_keys (
    id          TEXT PRIMARY KEY,
    paywall_id  TEXT NOT NULL REFERENCES paywalls(id),
    key_hash    TEXT NOT NULL UNIQUE,
    label       TEXT NOT NULL,              -- "config" for the key seeded from the TOML
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE TABLE IF NOT EXISTS providers (
    id           TEXT PRIMARY KEY,
    cluster      TEXT NOT NULL,             -- value of the filter's route header
    auth_header  TEXT NOT NULL,
    auth_scheme  TEXT NOT NULL,             -- prefix before the key, e.g. "Bearer "
    api_key_env  TEXT NOT NULL              -- environment variable holding the key (never stored)
);

CREATE TABLE IF NOT EXISTS models (
    name                      TEXT PRIMARY KEY,
    provider_id               TEXT NOT NULL REFERENCES providers(id),
    upstream_model            TEXT,
    default_max_output_tokens BIGINT NOT NULL
);

-- Append-only: a price change is a new version; charges name the version used.
CREATE TABLE IF NOT EXISTS price_rules (
    id                  TEXT PRIMARY KEY,   -- "<model>@v<version>"
    model               TEXT NOT NULL,
    version             BIGINT NOT NULL,
    input_per_m         BIGINT NOT NULL,    -- micro-units per million tokens
    cached_input_per_m  BIGINT NOT NULL,
    output_per_m        BIGINT NOT NULL,
    markup_bps          BIGINT NOT NULL,    -- 1/100 of a percent on top
    min_charge          BIGINT NOT NULL,
    created_at          BIGINT NOT NULL,
    UNIQUE (model, version)
);

-- TigerBeetle-style accounts: balances are derived from four running sums.
CREATE TABLE IF NOT EXISTS accounts (
    id               TEXT PRIMARY KEY,      -- wallet:<paywall>:<user>, revenue:<paywall>, cash:external
    kind             TEXT NOT NULL,
    paywall_id       TEXT,
    user_id          TEXT,
    debits_pending   BIGINT NOT NULL DEFAULT 0,
    debits_posted    BIGINT NOT NULL DEFAULT 0,
    credits_pending  BIGINT NOT NULL DEFAULT 0,
    credits_posted   BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL
);

-- Immutable movements between two accounts.
CREATE TABLE IF NOT EXISTS transfers (
    seq             BIGSERIAL PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,          -- deposit | hold | post | void
    debit_account   TEXT NOT NULL REFERENCES accounts(id),
    credit_account  TEXT NOT NULL REFERENCES accounts(id),
    amount          BIGINT NOT NULL,
    pending_id      TEXT,                   -- the hold transfer a post/void resolves
    hold_id         TEXT,
    request_id      TEXT,
    memo            TEXT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS transfers_debit ON transfers (debit_account, seq);
CREATE INDEX IF NOT EXISTS transfers_credit ON transfers (credit_account, seq);

CREATE TABLE IF NOT EXISTS holds (
    id                 TEXT PRIMARY KEY,
    paywall_id         TEXT NOT NULL,
    user_id            TEXT NOT NULL,
    wallet_account     TEXT NOT NULL REFERENCES accounts(id),
    revenue_account    TEXT NOT NULL REFERENCES accounts(id),
    request_id         TEXT NOT NULL,
    model              TEXT NOT NULL,
    provider_id        TEXT NOT NULL,
    prompt_tokens_est  BIGINT NOT NULL,
    max_output_tokens  BIGINT NOT NULL,
    amount             BIGINT NOT NULL,
    price_rule_id      TEXT NOT NULL REFERENCES price_rules(id),
    state              TEXT NOT NULL,       -- pending | posted | voided
    transfer_id        TEXT NOT NULL,
    expires_at         BIGINT NOT NULL,
    created_at         BIGINT NOT NULL,
    resolved_at        BIGINT
);
CREATE INDEX IF NOT EXISTS holds_open ON holds (state, expires_at);

CREATE TABLE IF NOT EXISTS charges (
    id                       TEXT PRIMARY KEY,
    hold_id                  TEXT NOT NULL UNIQUE REFERENCES holds(id),
    request_id               TEXT NOT NULL,
    paywall_id               TEXT NOT NULL,
    user_id                  TEXT NOT NULL,
    model                    TEXT NOT NULL,
    provider_id              TEXT NOT NULL,
    prompt_tokens            BIGINT NOT NULL,
    cached_prompt_tokens     BIGINT NOT NULL,
    completion_tokens        BIGINT NOT NULL,
    local_completion_tokens  BIGINT,
    usage_source             TEXT NOT NULL,  -- provider | local (estimated)
    outcome                  TEXT NOT NULL,
    price_rule_id            TEXT NOT NULL,
    price_version            BIGINT NOT NULL,
    cost                     BIGINT NOT NULL, -- price of the usage before the hold cap
    amount                   BIGINT NOT NULL, -- what was posted (min of cost and hold)
    transfer_id              TEXT NOT NULL,
    created_at               BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS charges_request ON charges (request_id);

-- Links shown to end users (top-up, consent): single use, expiring, bound to
-- one paywall and one user; only the token's hash is stored.
CREATE TABLE IF NOT EXISTS links (
    token_hash  TEXT PRIMARY KEY,
    purpose     TEXT NOT NULL,              -- topup | consent
    paywall_id  TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT,
    created_at  BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS idempotency_keys (
    paywall_id    TEXT NOT NULL,
    idem_key      TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    state         TEXT NOT NULL,            -- in_flight | done
    status        BIGINT,
    body          TEXT,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (paywall_id, idem_key)
);

-- Outbox for webhooks and audit.
CREATE TABLE IF NOT EXISTS events (
    seq         BIGSERIAL PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    request_id  TEXT,
    paywall_id  TEXT,
    user_id     TEXT,
    payload     TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
