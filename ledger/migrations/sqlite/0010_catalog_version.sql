-- Migration 10: a version number for the catalog (paywalls, their keys and
-- limits, providers, models, prices, fallbacks, paywalls' provider keys).
-- Every write to those tables bumps it, whoever makes it (admin API, CLI,
-- another sidecar, SQL by hand); each authorize reads it and serves the
-- catalog from memory while it has not moved (ledger/src/catalog/cache.rs).
CREATE TABLE IF NOT EXISTS catalog_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO catalog_version (id, version) VALUES (1, 1) ON CONFLICT (id) DO NOTHING;
CREATE TRIGGER IF NOT EXISTS paywalls_insert_bumps_catalog AFTER INSERT ON paywalls
BEGIN UPDATE catalog_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS paywalls_update_bumps_catalog AFTER UPDATE ON paywalls
BEGIN UPDATE catalog_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS paywalls_delete_bumps_catalog AFTER DELETE ON paywalls
BEGIN UPDATE catalog_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS paywall_keys_insert_bumps_catalog AFTER INSERT ON paywall_keys
BEGIN UPDATE catalog_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS paywall_keys_update_bumps_catalog AFTER UPDATE ON paywall_keys
BEGIN UPDATE catalog_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS paywall_keys_delete_bumps_catalog AFTER DELETE ON paywall_keys
BEGIN UPDATE catalog_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS providers_insert_bumps_catalog AFTER INSERT ON providers
BEGIN UPDATE catalog_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS providers_update_bumps_catalog AFTER UPDATE ON providers
BEGIN UPDATE catalog_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS providers_delete_bumps_catalog AFTER DELETE ON providers
BEGIN UPDATE catalog_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS models_insert_bumps_catalog AFTER INSERT ON models
BEGIN UPDATE catalog_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS models_update_bumps_catalog AFTER UPDATE ON models
BEGIN UPDATE catalog_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS models_delete_bumps_catalog AFTER DELETE ON models
BEGIN UPDATE catalog_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS price_rules_insert_bumps_catalog AFTER INSERT ON price_rules
BEGIN UPDATE catalog_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS price_rules_update_bumps_catalog AFTER UPDATE ON price_rules
BEGIN UPDATE catalog_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS price_rules_delete_bumps_catalog AFTER DELETE ON price_rules
BEGIN UPDATE catalog_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS limits_insert_bumps_catalog AFTER INSERT ON limits
BEGIN UPDATE catalog_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS limits_update_bumps_catalog AFTER UPDATE ON limits
BEGIN UPDATE catalog_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS limits_delete_bumps_catalog AFTER DELETE ON limits
BEGIN UPDATE catalog_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS provider_keys_insert_bumps_catalog AFTER INSERT ON provider_keys
BEGIN UPDATE catalog_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS provider_keys_update_bumps_catalog AFTER UPDATE ON provider_keys
BEGIN UPDATE catalog_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS provider_keys_delete_bumps_catalog AFTER DELETE ON provider_keys
BEGIN UPDATE catalog_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS model_fallbacks_insert_bumps_catalog AFTER INSERT ON model_fallbacks
BEGIN UPDATE catalog_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS model_fallbacks_update_bumps_catalog AFTER UPDATE ON model_fallbacks
BEGIN UPDATE catalog_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS model_fallbacks_delete_bumps_catalog AFTER DELETE ON model_fallbacks
BEGIN UPDATE catalog_version SET version = version + 1; END;
