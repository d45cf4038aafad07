-- Migration 4: provider kinds. How a request reaches a provider (its path, the
-- header carrying the key, Azure's deployment and api-version) follows from
-- the provider's kind and base URL. An empty api_key_env means the provider has
-- no built-in key (self-hosted without auth, or bring-your-own-key only).
ALTER TABLE providers ADD COLUMN kind TEXT NOT NULL DEFAULT 'openai';
ALTER TABLE providers ADD COLUMN base_url TEXT;
ALTER TABLE providers ADD COLUMN api_version TEXT;
