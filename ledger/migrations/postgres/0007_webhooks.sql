-- Migration 7: webhooks. Operator-configured endpoints receive the outbox's
-- events, signed with HMAC-SHA256; every delivery and its attempts are kept.
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    id           TEXT PRIMARY KEY,
    url          TEXT NOT NULL,
    secret_env   TEXT NOT NULL,             -- environment variable holding the signing secret
    paywall_id   TEXT,                      -- only this paywall's events; NULL: all
    event_kinds  TEXT,                      -- comma-separated event names; NULL: all
    cursor_seq   BIGINT NOT NULL,           -- last events.seq considered for this endpoint
    created_at   BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id               TEXT PRIMARY KEY,
    endpoint_id      TEXT NOT NULL REFERENCES webhook_endpoints(id),
    event_id         TEXT NOT NULL,
    state            TEXT NOT NULL,         -- pending | delivered | failed
    attempts         BIGINT NOT NULL,
    next_attempt_at  BIGINT NOT NULL,
    last_status      BIGINT,                -- HTTP status of the last attempt (NULL: no answer)
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    delivered_at     BIGINT,
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
