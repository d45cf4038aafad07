-- Migration 5: provider keys a paywall brings (BYOK), built-in keys read from
-- files, and the provider's cost on each charge.

-- One key per paywall and provider, sealed with the operator's master key
-- (XChaCha20-Poly1305, associated data `paywall|provider`). The plaintext is
-- never stored and never returned; the fingerprint (a short digest) only
-- tells two keys apart.
CREATE TABLE IF NOT EXISTS provider_keys (
    paywall_id     TEXT NOT NULL REFERENCES paywalls(id),
    provider_id    TEXT NOT NULL REFERENCES providers(id),
    master_key_id  TEXT NOT NULL,
    nonce          TEXT NOT NULL,
    ciphertext     TEXT NOT NULL,
    fingerprint    TEXT NOT NULL,
    version        BIGINT NOT NULL,          -- 1, then one more at each rotation
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    PRIMARY KEY (paywall_id, provider_id)
);

-- A file holding the operator's key (a mounted secret), beside api_key_env.
ALTER TABLE providers ADD COLUMN api_key_file TEXT;

-- Whose key a request used: byok (the paywall's) or built_in (the operator's).
-- NULL on holds and charges from before this migration.
ALTER TABLE holds ADD COLUMN key_source TEXT;
ALTER TABLE charges ADD COLUMN key_source TEXT;
-- What the provider bills the operator for the usage (prices without markup);
-- 0 under BYOK, where the provider bills the paywall's owner.
ALTER TABLE charges ADD COLUMN provider_cost BIGINT;
