-- Migration 6: fallback providers. A model may name providers to try, in
-- order, when its own answers 429 or 5xx or cannot be reached. One hold, one
-- charge; the charge names the provider that answered.
CREATE TABLE IF NOT EXISTS model_fallbacks (
    model           TEXT NOT NULL REFERENCES models(name),
    position        BIGINT NOT NULL,        -- 1 is tried right after the model's own provider
    provider_id     TEXT NOT NULL REFERENCES providers(id),
    upstream_model  TEXT,
    PRIMARY KEY (model, position)
);

-- Whose key each fallback provider of a request was given, `provider=source`
-- comma-separated (the route's own provider is in key_source).
ALTER TABLE holds ADD COLUMN fallback_key_sources TEXT;
