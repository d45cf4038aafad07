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

-- Constraint triggers deferred to commit: the version row is locked only in
-- the last moment of a writing transaction (two sidecars seeding at once
-- cannot deadlock on it), and moves in the same commit as the data.
CREATE OR REPLACE FUNCTION bump_catalog_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE catalog_version SET version = version + 1;
    RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER paywalls_bumps_catalog AFTER INSERT OR UPDATE OR DELETE ON paywalls
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_catalog_version();
CREATE CONSTRAINT TRIGGER paywall_keys_bumps_catalog AFTER INSERT OR UPDATE OR DELETE ON paywall_keys
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_catalog_version();
CREATE CONSTRAINT TRIGGER providers_bumps_catalog AFTER INSERT OR UPDATE OR DELETE ON providers
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_catalog_version();
CREATE CONSTRAINT TRIGGER models_bumps_catalog AFTER INSERT OR UPDATE OR DELETE ON models
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_catalog_version();
CREATE CONSTRAINT TRIGGER price_rules_bumps_catalog AFTER INSERT OR UPDATE OR DELETE ON price_rules
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_catalog_version();
CREATE CONSTRAINT TRIGGER limits_bumps_catalog AFTER INSERT OR UPDATE OR DELETE ON limits
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_catalog_version();
CREATE CONSTRAINT TRIGGER provider_keys_bumps_catalog AFTER INSERT OR UPDATE OR DELETE ON provider_keys
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_catalog_version();
CREATE CONSTRAINT TRIGGER model_fallbacks_bumps_catalog AFTER INSERT OR UPDATE OR DELETE ON model_fallbacks
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_catalog_version();
